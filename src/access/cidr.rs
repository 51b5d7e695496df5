//! `--allow`/`--deny` values: an address or a network prefix (`10.0.0.0/8`, `192.0.2.7`,
//! `2001:db8::/32`, `[2001:db8::]/32`), and the source a peer address counts as (SPEC §10).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const EXPECTED: &str = "expected an address or CIDR such as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32";

/// A network prefix. IPv4-mapped IPv6 prefixes (`::ffff:10.0.0.0/104`) are stored as the IPv4
/// prefix they cover, because mapped peers are looked up as IPv4 (see [`fold`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Cidr {
    /// An IPv4 prefix: the address (host bits zero) and its length, 0..=32.
    V4 {
        /// Network address, host bits zero.
        addr: u32,
        /// Prefix length.
        len: u8,
    },
    /// An IPv6 prefix: the address (host bits zero) and its length, 0..=128.
    V6 {
        /// Network address, host bits zero.
        addr: u128,
        /// Prefix length.
        len: u8,
    },
}

/// The network mask of a `len`-bit prefix in a `bits`-wide address, as the low bits of a u128.
pub(crate) fn mask(len: u8, bits: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let width = u128::MAX >> (128 - u32::from(bits));
    (u128::MAX << (bits - len)) & width
}

impl Cidr {
    /// Parse `--allow`/`--deny`'s value; the error is the reason for the usage line.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (host, len) = match s.split_once('/') {
            Some((host, len)) => (host, Some(len)),
            None => (s, None),
        };
        let ip: IpAddr = if let Some(inner) = host.strip_prefix('[') {
            // Brackets only around IPv6, as in `[2001:db8::]/32` (SPEC §10).
            let inner = inner.strip_suffix(']').ok_or(EXPECTED)?;
            IpAddr::V6(inner.parse::<Ipv6Addr>().map_err(|_| EXPECTED)?)
        } else {
            if crate::config::octal_looking(host) {
                // SPEC §1: 010.0.0.1 is never read as octal (std refuses it too): say why.
                return Err(crate::config::octal_why(host));
            }
            host.parse().map_err(|_| EXPECTED)?
        };
        let bits: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => bits,
            Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u8 = l.parse().map_err(|_| EXPECTED)?;
                if n > bits {
                    return Err(format!(
                        "a prefix length of /{n} is longer than {bits} bits"
                    ));
                }
                n
            }
            Some(_) => return Err(EXPECTED.into()),
        };
        let addr = match ip {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let network = addr & mask(len, bits);
        if network != addr {
            // 10.1.2.3/8 is more often a typo for /24 or /32 than a wish for 10.0.0.0/8.
            let fixed = Cidr::from_parts(network, len, bits);
            return Err(format!(
                "host bits are set beyond the /{len} prefix (did you mean {fixed}?)"
            ));
        }
        Ok(Cidr::from_parts(network, len, bits))
    }

    fn from_parts(addr: u128, len: u8, bits: u8) -> Cidr {
        if bits == 32 {
            return Cidr::V4 {
                addr: addr as u32,
                len,
            };
        }
        // ::ffff:0:0/96 and longer cover IPv4-mapped addresses only: make them IPv4 rules.
        const MAPPED: u128 = 0xffff << 32;
        if len >= 96 && addr & mask(96, 128) == MAPPED {
            return Cidr::V4 {
                addr: addr as u32,
                len: len - 96,
            };
        }
        Cidr::V6 { addr, len }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Cidr::V4 { addr, len } => write!(f, "{}/{len}", Ipv4Addr::from(addr)),
            Cidr::V6 { addr, len } => write!(f, "{}/{len}", Ipv6Addr::from(addr)),
        }
    }
}

/// A peer address as SPEC §10 sees it: an IPv4-mapped IPv6 address is its IPv4 address.
/// The one place this is decided: access checks, per-source keys, the UDP loop guard and
/// every log line that shows a peer go through it (or [`fold_socket`]).
pub fn fold(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// A peer's socket address with its IP [`fold`]ed: `[::ffff:127.0.0.1]:5` is `127.0.0.1:5`.
pub fn fold_socket(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(fold(addr.ip()), addr.port())
}

/// What the per-source limits count by: an IPv4 address, or the /64 of an IPv6 address
/// (one host usually owns a whole /64, and a client could otherwise take a fresh address
/// per connection).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SourceKey {
    /// An IPv4 address (also an IPv4-mapped IPv6 peer).
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl SourceKey {
    /// The source `ip` belongs to.
    pub fn of(ip: IpAddr) -> SourceKey {
        match fold(ip) {
            IpAddr::V4(a) => SourceKey::V4(u32::from(a)),
            IpAddr::V6(a) => SourceKey::V6((u128::from(a) >> 64) as u64),
        }
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SourceKey::V4(a) => write!(f, "{}", Ipv4Addr::from(a)),
            SourceKey::V6(p) => write!(f, "{}/64", Ipv6Addr::from(u128::from(p) << 64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        Cidr::parse(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .to_string()
    }

    #[test]
    fn the_forms_of_spec_10() {
        assert_eq!(ok("10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(ok("192.0.2.7"), "192.0.2.7/32");
        assert_eq!(ok("2001:db8::/32"), "2001:db8::/32");
        assert_eq!(ok("[2001:db8::]/32"), "2001:db8::/32");
        assert_eq!(ok("[::1]"), "::1/128");
        assert_eq!(ok("0.0.0.0/0"), "0.0.0.0/0");
        assert_eq!(ok("::/0"), "::/0");
        assert_eq!(ok(" 127.0.0.0/8 "), "127.0.0.0/8");
    }

    #[test]
    fn mapped_prefixes_become_ipv4() {
        assert_eq!(ok("::ffff:192.0.2.7"), "192.0.2.7/32");
        assert_eq!(ok("::ffff:10.0.0.0/104"), "10.0.0.0/8");
        assert_eq!(ok("::ffff:0:0/96"), "0.0.0.0/0");
        // Shorter than /96, a prefix also covers real IPv6 addresses: it stays IPv6.
        assert_eq!(ok("::fffe:0:0/95"), "::fffe:0:0/95");
    }

    #[test]
    fn leading_zeros_are_refused_not_read_as_octal() {
        for bad in ["010.0.0.1", "010.0.0.0/8", "192.168.001.0/24"] {
            let why = Cidr::parse(bad).unwrap_err();
            assert!(why.contains("leading zero"), "{bad}: {why}");
        }
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn bad_values_say_why() {
        for bad in [
            "",
            "x",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/+8",
            "10.0.0/8",
            "[10.0.0.0]/8",
            "[2001:db8::/32",
            "2001:db8::]/32",
            "10.0.0.0/8/8",
            "10.0.0.0/0008",
            "1.2.3.4 /8",
        ] {
            assert!(
                Cidr::parse(bad)
                    .unwrap_err()
                    .starts_with("expected an address or CIDR"),
                "{bad:?}"
            );
        }
        assert_eq!(
            Cidr::parse("10.0.0.0/33").unwrap_err(),
            "a prefix length of /33 is longer than 32 bits"
        );
        assert!(Cidr::parse("::/129").unwrap_err().contains("128 bits"));
        assert_eq!(
            Cidr::parse("10.1.2.3/8").unwrap_err(),
            "host bits are set beyond the /8 prefix (did you mean 10.0.0.0/8?)"
        );
        assert!(Cidr::parse("2001:db8::1/32")
            .unwrap_err()
            .contains("did you mean 2001:db8::/32?"));
    }

    #[test]
    fn sources() {
        let key = |s: &str| SourceKey::of(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), SourceKey::V4(0xc000_0207));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2::ffff"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2::9").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("127.0.0.3").to_string(), "127.0.0.3");
    }
}
