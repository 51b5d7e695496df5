//! Token layout: who an event is for. 0 is the signal pipe, then the listeners, the UDP
//! sockets, then the connections (by slot), so dispatch is one `match` on [`Target`].

use crate::event::reactor::Token;

const LISTENER_BASE: usize = 1;
/// The metrics listener and its connections (`crate::serve::metrics::TOKENS` of them).
pub(super) const HTTP_BASE: usize = 1 << 14;
/// The reload check's output pipe: right after the metrics tokens.
const RELOAD: usize = HTTP_BASE + crate::serve::metrics::TOKENS;
const UDP_BASE: usize = 1 << 15;
const CONN_BASE: usize = 1 << 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Target {
    Signal,
    Listener(usize),
    Udp(usize),
    Conn(usize),
    /// `--metrics`: the listener or one of its connections.
    Http,
    /// The reload check's output pipe (SPEC §13).
    Reload,
}

impl From<Token> for Target {
    fn from(t: Token) -> Target {
        match t.0 {
            0 => Target::Signal,
            RELOAD => Target::Reload,
            n if (HTTP_BASE..HTTP_BASE + crate::serve::metrics::TOKENS).contains(&n) => {
                Target::Http
            }
            n if n < UDP_BASE => Target::Listener(n - LISTENER_BASE),
            n if n < CONN_BASE => Target::Udp(n - UDP_BASE),
            n => Target::Conn(n - CONN_BASE),
        }
    }
}

impl From<Target> for Token {
    fn from(s: Target) -> Token {
        Token(match s {
            Target::Signal => 0,
            Target::Listener(i) => LISTENER_BASE + i,
            Target::Udp(i) => UDP_BASE + i,
            Target::Conn(i) => CONN_BASE + i,
            Target::Http => HTTP_BASE,
            Target::Reload => RELOAD,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_survives_the_round_trip() {
        for s in [
            Target::Signal,
            Target::Listener(0),
            Target::Listener(UDP_BASE - LISTENER_BASE - 1),
            Target::Udp(0),
            Target::Udp(CONN_BASE - UDP_BASE - 1),
            Target::Conn(0),
            Target::Conn(1 << 20),
            Target::Http,
            Target::Reload,
        ] {
            assert_eq!(Target::from(Token::from(s)), s);
        }
        let last_http = Token(HTTP_BASE + crate::serve::metrics::TOKENS - 1);
        assert_eq!(Target::from(last_http), Target::Http);
    }
}
