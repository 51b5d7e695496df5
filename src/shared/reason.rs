//! Why a connection or a datagram is refused: the reasons every counter, shared cell and
//! log line keeps apart, each at its own index.

/// Why a connection was closed at once; the text in parentheses of the log line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reason {
    /// Over `--max-clients`.
    MaxClients,
    /// Denied by `--allow`/`--deny`.
    Denied,
    /// Over `--max-per-source`.
    MaxPerSource,
    /// Over `--rate-per-source`.
    RatePerSource,
    /// A new source while every slot it could use holds a source with connections open
    /// (SPEC §10: `table full`, counted as `limited`).
    SourcesFull,
    /// A `--proxy-from` peer whose PROXY header was missing, malformed, too long or not
    /// complete in time (SPEC §14).
    Proxy,
}

/// How many [`Reason`]s there are.
pub const REASONS: usize = 6;

impl Reason {
    /// Every reason, each at its own index (`reason as usize`).
    pub const ALL: [Reason; REASONS] = [
        Reason::MaxClients,
        Reason::Denied,
        Reason::MaxPerSource,
        Reason::RatePerSource,
        Reason::SourcesFull,
        Reason::Proxy,
    ];

    /// The name in the log line: the option's name, or `denied`.
    pub fn name(self) -> &'static str {
        match self {
            Reason::MaxClients => "max-clients",
            Reason::Denied => "denied",
            Reason::MaxPerSource => "max-per-source",
            Reason::RatePerSource => "rate-per-source",
            Reason::SourcesFull => "table full",
            Reason::Proxy => "proxy",
        }
    }
}
