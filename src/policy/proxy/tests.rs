//! The parser, by example and by property: random, truncated and mutated inputs never panic
//! and give the same answer however they are split; what an independent builder (the `ppp`
//! crate) writes parses back to what it was built from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;

/// splitmix64: a small seeded generator, so a failure names the seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    /// Fewer than `max` random bytes.
    fn some(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
}

/// The seed: `ECHO_MUX_SEED` to replay one, else a fixed one (the suite is deterministic).
fn seed() -> u64 {
    std::env::var("ECHO_MUX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0019)
}

/// The outcome of a whole input, independent of how it was split: where in the stream the
/// header ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Incomplete,
    Done {
        source: Option<SocketAddr>,
        len: usize,
        end: usize,
    },
    Invalid(Invalid),
}

/// Feed `input` in pieces of the given sizes (the last piece takes the rest).
fn run(input: &[u8], sizes: &[usize]) -> Outcome {
    let mut p = Parser::new();
    let (mut at, mut sizes) = (0, sizes.iter());
    loop {
        let n = sizes
            .next()
            .copied()
            .unwrap_or(input.len() - at)
            .min(input.len() - at);
        match p.feed(&input[at..at + n]) {
            Progress::Incomplete if at + n < input.len() => at += n,
            Progress::Incomplete => return Outcome::Incomplete,
            Progress::Done(h) => {
                assert!(h.consumed <= n, "consumed {} of {n}", h.consumed);
                return Outcome::Done {
                    source: h.source,
                    len: h.len,
                    end: at + h.consumed,
                };
            }
            Progress::Invalid(why) => return Outcome::Invalid(why),
        }
    }
}

fn whole(input: &[u8]) -> Outcome {
    run(input, &[input.len()])
}

fn bytewise(input: &[u8]) -> Outcome {
    run(input, &vec![1; input.len()])
}

fn random_split(rng: &mut Rng, input: &[u8]) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = input.len();
    while left > 0 {
        let n = 1 + rng.below(left.min(40));
        sizes.push(n);
        left -= n;
    }
    sizes
}

fn v4(a: [u8; 4], port: u16) -> Option<SocketAddr> {
    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
}

fn v2(command: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.push(0x20 | command);
    h.push(fam);
    h.extend((block.len() as u16).to_be_bytes());
    h.extend(block);
    h
}

fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut block = src.to_vec();
    block.extend([192, 0, 2, 1]);
    block.extend(sport.to_be_bytes());
    block.extend(50007u16.to_be_bytes());
    v2(1, 0x11, &block)
}

#[test]
fn v1_examples() {
    let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 53412 50007\r\nhello";
    let done = Outcome::Done {
        source: v4([192, 0, 2, 7], 53412),
        len: 47,
        end: 47,
    };
    assert_eq!(whole(line), done);
    assert_eq!(bytewise(line), done);
    let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 1 0\r\n";
    let want = "[2001:db8::7]:1".parse().ok();
    assert!(matches!(whole(six), Outcome::Done { source, .. } if source == want));
    for unknown in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
    ] {
        let end = unknown.len();
        let keep = Outcome::Done {
            source: None,
            len: end,
            end,
        };
        assert_eq!(whole(unknown), keep);
    }
    let bad: &[(&[u8], Invalid)] = &[
        (b"GET / HTTP/1.0\r\n", Invalid::Signature),
        (b"PROXX TCP4", Invalid::Signature),
        (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Invalid::Malformed),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Invalid::Malformed),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", Invalid::Malformed),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", Invalid::Malformed),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            Invalid::Malformed,
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", Invalid::Malformed),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", Invalid::Malformed),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", Invalid::Malformed),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", Invalid::Malformed),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", Invalid::Family),
        (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", Invalid::Family),
    ];
    for (input, why) in bad {
        let text = String::from_utf8_lossy(input);
        assert_eq!(whole(input), Outcome::Invalid(*why), "{text}");
        assert_eq!(bytewise(input), Outcome::Invalid(*why), "{text}");
    }
}

#[test]
fn v1_is_at_most_107_bytes() {
    // The specification's worst case is exactly 107 bytes: accepted.
    let six = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let line = format!("PROXY UNKNOWN {six} {six} 65535 65535\r\n");
    assert_eq!(line.len(), V1_MAX);
    assert!(matches!(
        bytewise(line.as_bytes()),
        Outcome::Done { len: 107, .. }
    ));
    // One byte more is refused at the 107th byte, without waiting for the rest.
    let long = format!("PROXY UNKNOWN {six} {six} 65535 655350\r\n");
    assert_eq!(whole(long.as_bytes()), Outcome::Invalid(Invalid::TooLong));
    assert_eq!(
        whole(&long.as_bytes()[..V1_MAX]),
        Outcome::Invalid(Invalid::TooLong)
    );
    assert_eq!(whole(&long.as_bytes()[..V1_MAX - 1]), Outcome::Incomplete);
    // A line that never ends: refused at 107 bytes, however much more comes.
    let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 4000]].concat();
    assert_eq!(whole(&endless), Outcome::Invalid(Invalid::TooLong));
}

#[test]
fn v2_examples() {
    let h = v2_tcp4([192, 0, 2, 7], 53412);
    let mut input = h.clone();
    input.extend(b"data after the header");
    let done = Outcome::Done {
        source: v4([192, 0, 2, 7], 53412),
        len: 28,
        end: 28,
    };
    assert_eq!(whole(&input), done);
    assert_eq!(bytewise(&input), done);
    // IPv6, with TLVs after the addresses (skipped).
    let mut block = Vec::new();
    block.extend(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7).octets());
    block.extend(Ipv6Addr::LOCALHOST.octets());
    block.extend([0xd0, 0x5e, 0xc3, 0x57]);
    block.extend([0x04, 0x00, 0x03, 1, 2, 3, 0xe0, 0x00, 0x00]);
    let six = v2(1, 0x21, &block);
    let want = "[2001:db8::7]:53342".parse().ok();
    assert!(matches!(bytewise(&six), Outcome::Done { source, len: 61, end: 61 } if source == want));
    // LOCAL keeps the balancer, whatever the block holds or the family says.
    for fam in [0x00, 0x11, 0xff] {
        let local = v2(0, fam, &[9; 40]);
        assert_eq!(
            whole(&local),
            Outcome::Done {
                source: None,
                len: 56,
                end: 56
            }
        );
    }
    let bare = v2(0, 0, &[]);
    assert!(matches!(
        bytewise(&bare),
        Outcome::Done {
            source: None,
            len: 16,
            end: 16
        }
    ));
    // UNSPEC and AF_UNIX under PROXY: the real endpoints (the specification's fallback).
    assert!(matches!(
        whole(&v2(1, 0x00, &[])),
        Outcome::Done { source: None, .. }
    ));
    assert!(matches!(
        whole(&v2(1, 0x31, &[0; 216])),
        Outcome::Done { source: None, .. }
    ));
    let bad: &[(Vec<u8>, Invalid)] = &[
        (v2(2, 0x11, &[0; 12]), Invalid::Malformed),
        (v2(1, 0x41, &[0; 12]), Invalid::Malformed),
        (v2(1, 0x13, &[0; 12]), Invalid::Malformed),
        (v2(1, 0x12, &[0; 12]), Invalid::Family),
        (v2(1, 0x22, &[0; 36]), Invalid::Family),
        (v2(1, 0x11, &[0; 11]), Invalid::Family),
        (v2(1, 0x21, &[0; 12]), Invalid::Family),
        (v2(1, 0x31, &[0; 108]), Invalid::Family),
    ];
    for (input, why) in bad {
        assert_eq!(whole(input), Outcome::Invalid(*why), "{input:02x?}");
        assert_eq!(bytewise(input), Outcome::Invalid(*why), "{input:02x?}");
    }
    let mut version1 = v2_tcp4([1, 2, 3, 4], 5);
    version1[12] = 0x11;
    assert_eq!(whole(&version1), Outcome::Invalid(Invalid::Signature));
}

#[test]
fn v2_length_is_bounded() {
    let fits = v2(1, 0x11, &vec![0; V2_MAX - 16]);
    assert!(matches!(bytewise(&fits), Outcome::Done { len: V2_MAX, .. }));
    // One byte over: refused at the length field, before a byte of the block arrives.
    let over = v2(1, 0x11, &vec![0; V2_MAX - 15]);
    assert_eq!(whole(&over[..16]), Outcome::Invalid(Invalid::TooLong));
    let mut max = v2(0, 0, &[]);
    max[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(whole(&max), Outcome::Invalid(Invalid::TooLong));
}

#[test]
fn the_parser_is_small_and_never_allocates() {
    // No heap field at all: a pending connection costs this, boxed, and nothing more.
    let size = std::mem::size_of::<Parser>();
    assert!(size <= 116, "a parser takes {size} bytes");
}

#[test]
fn trusted_peers() {
    let cidrs = ["10.0.0.0/8", "2001:db8::/32"].map(|c| Cidr::parse(c).unwrap());
    let t = Trusted::new(&cidrs);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(t.trusts(ip("10.1.2.3")));
    assert!(t.trusts(ip("::ffff:10.1.2.3")));
    assert!(t.trusts(ip("2001:db8::1")));
    assert!(!t.trusts(ip("11.0.0.1")));
    assert!(!Trusted::new(&[]).trusts(ip("10.1.2.3")));
}

/// Inputs near the grammar: valid headers, their prefixes, mutations and splices, and
/// plain random bytes.
fn near_valid(rng: &mut Rng) -> Vec<u8> {
    let base = match rng.below(6) {
        0 => v1_header(rng).0,
        1 | 2 => v2_header(rng).0,
        3 => rng.some(200),
        4 => [V2_SIG.as_slice(), &rng.some(80)].concat(),
        _ => [b"PROXY ".as_slice(), &rng.some(120)].concat(),
    };
    let mut input = base;
    match rng.below(4) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] = rng.byte();
        }
        1 => input.truncate(rng.below(input.len() + 1)),
        2 => {
            let extra = rng.some(64);
            input.extend(extra);
        }
        _ => {}
    }
    input
}

/// A random v1 header written by `ppp`, and the source it names.
fn v1_header(rng: &mut Rng) -> (Vec<u8>, Option<SocketAddr>) {
    use ppp::v1::Addresses;
    let (sport, dport) = (rng.next() as u16, rng.next() as u16);
    let (addresses, source) = match rng.below(3) {
        0 => {
            let (s, d) = (
                Ipv4Addr::from(rng.next() as u32),
                Ipv4Addr::from(rng.next() as u32),
            );
            (
                Addresses::new_tcp4(s, d, sport, dport),
                Some(SocketAddr::new(s.into(), sport)),
            )
        }
        1 => {
            let (s, d) = (
                Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next())),
                Ipv6Addr::from(u128::from(rng.next())),
            );
            (
                Addresses::new_tcp6(s, d, sport, dport),
                Some(SocketAddr::new(s.into(), sport)),
            )
        }
        _ => (Addresses::Unknown, None),
    };
    (addresses.to_string().into_bytes(), source)
}

/// A random v2 header built by `ppp` (PROXY over TCP, or LOCAL, with random TLVs that fit
/// in [`V2_MAX`]), and the source it names.
fn v2_header(rng: &mut Rng) -> (Vec<u8>, Option<SocketAddr>) {
    use ppp::v2::{Addresses, Builder, Command, IPv4, IPv6, Protocol, Version};
    let (sport, dport) = (rng.next() as u16, rng.next() as u16);
    let (addresses, source): (Addresses, _) = match rng.below(3) {
        0 => {
            let (s, d) = (
                Ipv4Addr::from(rng.next() as u32),
                Ipv4Addr::from(rng.next() as u32),
            );
            (
                IPv4::new(s, d, sport, dport).into(),
                Some(SocketAddr::new(s.into(), sport)),
            )
        }
        1 => {
            let s = Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
            let d = Ipv6Addr::from(u128::from(rng.next()));
            (
                IPv6::new(s, d, sport, dport).into(),
                Some(SocketAddr::new(s.into(), sport)),
            )
        }
        _ => (Addresses::Unspecified, None),
    };
    let local = rng.below(4) == 0;
    let command = if local {
        Command::Local
    } else {
        Command::Proxy
    };
    let mut b = Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses);
    let mut room = V2_MAX - 16 - 36;
    for _ in 0..rng.below(4) {
        let len = rng.below(room.min(600));
        let kind = [0x04u8, 0x05, 0x02, 0xe0, 0xf1][rng.below(5)];
        if len + 3 > room {
            break;
        }
        room -= len + 3;
        b = b.write_tlv(kind, &rng.bytes(len)).unwrap();
    }
    let source = if local { None } else { source };
    (b.build().unwrap(), source)
}

#[test]
fn what_ppp_writes_parses_back_whole_truncated_and_split() {
    let mut rng = Rng(seed());
    for round in 0..3000 {
        let (header, source) = if round % 2 == 0 {
            v1_header(&mut rng)
        } else {
            v2_header(&mut rng)
        };
        let payload = rng.some(100);
        let input = [header.as_slice(), &payload].concat();
        let want = Outcome::Done {
            source,
            len: header.len(),
            end: header.len(),
        };
        let split = random_split(&mut rng, &input);
        for got in [whole(&input), bytewise(&input), run(&input, &split)] {
            assert_eq!(got, want, "seed {} round {round}: {header:02x?}", seed());
        }
        // Every strict prefix of a header is only incomplete.
        let cut = rng.below(header.len());
        assert_eq!(
            whole(&header[..cut]),
            Outcome::Incomplete,
            "seed {} round {round}: prefix {cut} of {header:02x?}",
            seed()
        );
    }
}

#[test]
fn any_input_any_split_same_answer_no_panic() {
    let mut rng = Rng(seed() ^ 0xdead_beef);
    for round in 0..20_000 {
        let input = near_valid(&mut rng);
        let at_once = whole(&input);
        let split = random_split(&mut rng, &input);
        let ctx = || format!("seed {} round {round}: {input:02x?}", seed());
        assert_eq!(run(&input, &split), at_once, "{}", ctx());
        assert_eq!(bytewise(&input), at_once, "{}", ctx());
        match at_once {
            Outcome::Done { len, end, .. } => {
                assert_eq!(len, end, "{}", ctx());
                assert!(len <= V2_MAX, "{}", ctx());
                if input[0] == b'P' {
                    assert!(len <= V1_MAX, "{}", ctx());
                }
            }
            // Nothing is refused or left waiting past a limit: a v1 line is decided by
            // its 107th byte, a v2 header by its announced length (at most V2_MAX).
            Outcome::Incomplete => {
                let limit = if input.first() == Some(&b'P') {
                    V1_MAX - 1
                } else {
                    V2_MAX - 1
                };
                assert!(input.len() <= limit, "{}", ctx());
            }
            Outcome::Invalid(_) => {}
        }
    }
}

#[test]
fn agrees_with_ppp_where_both_decide() {
    let mut rng = Rng(seed() ^ 0x0bad_cafe);
    for round in 0..5000 {
        let input = near_valid(&mut rng);
        let ours = whole(&input);
        let ctx = || format!("seed {} round {round}: {input:02x?}", seed());
        let theirs = match ppp::HeaderResult::parse(&input) {
            ppp::HeaderResult::V1(Ok(h)) => match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => Some(Some(SocketAddr::new(
                    a.source_address.into(),
                    a.source_port,
                ))),
                ppp::v1::Addresses::Tcp6(a) => Some(Some(SocketAddr::new(
                    a.source_address.into(),
                    a.source_port,
                ))),
                ppp::v1::Addresses::Unknown => Some(None),
            },
            _ => None,
        };
        // Where ppp reads a v1 line, we read the same client from it.
        if let Some(source) = theirs {
            match ours {
                Outcome::Done { source: s, .. } => assert_eq!(s, source, "{}", ctx()),
                other => panic!("{}: ppp accepted, we said {other:?}", ctx()),
            }
        }
    }
}

#[test]
fn a_parser_saved_halfway_through_a_header_goes_on_where_it_was() {
    use crate::reload::state::{Reader, Writer};
    let v1 = b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 2000\r\nhello";
    for cut in [3usize, 20] {
        let mut p = Parser::new();
        assert_eq!(p.feed(&v1[..cut]), Progress::Incomplete);
        let mut w = Writer::new();
        p.save(&mut w);
        let (bytes, _) = w.finish();
        let mut again = Parser::load(&mut Reader::new(&bytes).unwrap()).unwrap();
        match again.feed(&v1[cut..]) {
            Progress::Done(h) => {
                assert_eq!(h.source, Some("192.0.2.1:1000".parse().unwrap()));
                assert_eq!(&v1[cut..][h.consumed..], b"hello");
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}
