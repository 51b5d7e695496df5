//! Token layout: who an event is for. 0 is the signal pipe, then the listeners, the UDP
//! sockets, then the connections (by slot), so dispatch is one `match` on [`Source`].

use crate::reactor::Token;

const LISTENER_BASE: usize = 1;
/// The metrics listener and its connections (`crate::metrics::TOKENS` of them).
pub(super) const HTTP_BASE: usize = 1 << 14;
const UDP_BASE: usize = 1 << 15;
const CONN_BASE: usize = 1 << 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Source {
    Signal,
    Listener(usize),
    Udp(usize),
    Conn(usize),
    /// `--metrics`: the listener or one of its connections.
    Http,
}

impl From<Token> for Source {
    fn from(t: Token) -> Source {
        match t.0 {
            0 => Source::Signal,
            n if (HTTP_BASE..HTTP_BASE + crate::metrics::TOKENS).contains(&n) => Source::Http,
            n if n < UDP_BASE => Source::Listener(n - LISTENER_BASE),
            n if n < CONN_BASE => Source::Udp(n - UDP_BASE),
            n => Source::Conn(n - CONN_BASE),
        }
    }
}

impl From<Source> for Token {
    fn from(s: Source) -> Token {
        Token(match s {
            Source::Signal => 0,
            Source::Listener(i) => LISTENER_BASE + i,
            Source::Udp(i) => UDP_BASE + i,
            Source::Conn(i) => CONN_BASE + i,
            Source::Http => HTTP_BASE,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_survives_the_round_trip() {
        for s in [
            Source::Signal,
            Source::Listener(0),
            Source::Listener(UDP_BASE - LISTENER_BASE - 1),
            Source::Udp(0),
            Source::Udp(CONN_BASE - UDP_BASE - 1),
            Source::Conn(0),
            Source::Conn(1 << 20),
            Source::Http,
        ] {
            assert_eq!(Source::from(Token::from(s)), s);
        }
        let last_http = Token(HTTP_BASE + crate::metrics::TOKENS - 1);
        assert_eq!(Source::from(last_http), Source::Http);
    }
}
