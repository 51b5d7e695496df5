//! The one error type of the daemon and its mapping to exit codes (SPEC §2).

use std::fmt;
use std::io;

/// Everything that can end `echo-mux` with a non-zero exit code.
#[derive(Debug)]
pub enum Error {
    /// Bad command line or bad value: exit 2. The message is complete (no prefix).
    Usage(String),
    /// A listener could not be set up: exit 1.
    Listen {
        /// The address as the user wrote it (or as systemd handed it in).
        addr: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// The readiness backend failed (could not be created, or its wait failed): exit 1.
    Backend {
        /// `epoll`, `poll` or `select`.
        name: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
    /// Any other runtime failure, with what was being done: exit 1.
    Io {
        /// What we were doing, e.g. "cannot create the signal pipe".
        context: String,
        /// What the kernel said.
        source: io::Error,
    },
}

impl Error {
    /// The process exit code for this error: 2 for usage, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// An `io::Error` as a user reads it: "address already in use", not
/// "Address already in use (os error 98)". The one way an I/O error is shown, in the exit
/// line and in every log line alike.
pub struct Plain<'a>(pub &'a io::Error);

impl fmt::Display for Plain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        let text = match text.rfind(" (os error ") {
            Some(i) => &text[..i],
            None => &text,
        };
        let mut chars = text.chars();
        match chars.next() {
            Some(c) => write!(f, "{}{}", c.to_lowercase(), chars.as_str()),
            None => Ok(()),
        }
    }
}

/// Most characters of a value quoted in a message (SPEC §2: "about 100").
pub const QUOTE_MAX: usize = 100;

/// A value as a message quotes it (SPEC §2): at most [`QUOTE_MAX`] characters, a longer one
/// cut with `…`, and control characters (a newline in a value) escaped, so that the message
/// stays one readable line whatever was typed. Every value a message quotes goes through it.
pub struct Cut<'a>(pub &'a str);

impl fmt::Display for Cut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let long = self.0.chars().nth(QUOTE_MAX).is_some();
        let keep = if long { QUOTE_MAX - 1 } else { QUOTE_MAX };
        for c in self.0.chars().take(keep) {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if long {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => f.write_str(msg),
            Error::Listen { addr, source } => {
                write!(f, "cannot listen on {}: {}", Cut(addr), Plain(source))
            }
            Error::Backend { name, source } => {
                write!(f, "{name} backend failed: {}", Plain(source))
            }
            Error::Io { context, source } => write!(f, "{context}: {}", Plain(source)),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Usage(_) => None,
            Error::Listen { source, .. }
            | Error::Backend { source, .. }
            | Error::Io { source, .. } => Some(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_io_errors_read_like_the_spec() {
        let e = Error::Listen {
            addr: "127.0.0.1:50007".into(),
            source: io::Error::from_raw_os_error(libc::EADDRINUSE),
        };
        assert_eq!(
            e.to_string(),
            "cannot listen on 127.0.0.1:50007: address already in use"
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
    }

    #[test]
    fn quoted_values_are_cut_and_one_line() {
        assert_eq!(Cut("kqueue").to_string(), "kqueue");
        let exact = "a".repeat(QUOTE_MAX);
        assert_eq!(Cut(&exact).to_string(), exact);
        let long = "é".repeat(70_000);
        let cut = Cut(&long).to_string();
        assert_eq!(cut.chars().count(), QUOTE_MAX);
        assert!(cut.ends_with("é…"), "{cut}");
        assert_eq!(Cut("a\nb\u{1b}").to_string(), "a\\nb\\u{1b}");
    }
}
