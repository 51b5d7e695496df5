//! `--allow-file`/`--deny-file`: one address or CIDR per line, in the syntax of `--allow`;
//! `#` starts a comment (a whole line, or after the entry); blank lines and the whitespace
//! around an entry are ignored (so are CRLF line ends). Read while the command line is parsed,
//! so that a reload's check of the new configuration reads the files as they are then.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::cidr::Cidr;
use super::rules::{Action, Lists};
use crate::error::{Cut, Plain};

/// Add every entry of the file at `path` to `lists` as an `action` (the list counts as given
/// even if the file holds no entry). The error is one line for the usage message:
/// `/etc/echo-mux/allow:7: invalid CIDR '10.0.0.0/33': a prefix length of /33 is longer than
/// 32 bits`, or `/etc/echo-mux/allow: no such file or directory`.
pub fn read(path: &Path, action: Action, lists: &mut Lists) -> Result<(), String> {
    let name = path.to_string_lossy();
    let fail = |e: std::io::Error| format!("{}: {}", Cut(&name), Plain(&e));
    let mut file = BufReader::with_capacity(64 << 10, File::open(path).map_err(fail)?);
    lists.given(action);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if file.read_until(b'\n', &mut line).map_err(fail)? == 0 {
            return Ok(());
        }
        number += 1;
        let entry = match line.iter().position(|&b| b == b'#') {
            Some(hash) => &line[..hash],
            None => &line[..],
        };
        let entry = entry.trim_ascii();
        if entry.is_empty() {
            continue;
        }
        let at = |why: &str| {
            let text = String::from_utf8_lossy(entry);
            format!(
                "{}:{number}: invalid CIDR '{}': {why}",
                Cut(&name),
                Cut(&text)
            )
        };
        let text = std::str::from_utf8(entry).map_err(|_| at("not UTF-8 text"))?;
        lists.add(Cidr::parse(text).map_err(|why| at(&why))?, action);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::access::Rules;
    use std::io::Write;
    use std::path::PathBuf;

    /// A file in a directory of this test's own, removed when dropped.
    struct Temp(PathBuf);

    impl Temp {
        fn new(tag: &str, text: &[u8]) -> Temp {
            let dir =
                std::env::temp_dir().join(format!("echo-mux-lists-{}-{tag}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("list");
            std::fs::File::create(&path)
                .unwrap()
                .write_all(text)
                .unwrap();
            Temp(path)
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn rules_from(tag: &str, allow: &str, deny: &str) -> Result<Rules, String> {
        let (a, d) = (
            Temp::new(&format!("{tag}-a"), allow.as_bytes()),
            Temp::new(&format!("{tag}-d"), deny.as_bytes()),
        );
        let mut lists = Lists::default();
        read(&a.0, Action::Allow, &mut lists)?;
        read(&d.0, Action::Deny, &mut lists)?;
        Ok(lists.build().expect("lists given"))
    }

    fn error(tag: &str, text: &[u8]) -> String {
        let t = Temp::new(tag, text);
        let e = read(&t.0, Action::Allow, &mut Lists::default()).unwrap_err();
        let path = t.0.display().to_string();
        assert!(e.starts_with(&path), "{e}");
        assert!(!e.contains('\n'), "one line: {e:?}");
        e[path.len()..].to_string()
    }

    fn allowed(r: &Rules, ip: &str) -> bool {
        r.decide(ip.parse().unwrap()) == Action::Allow
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let allow = "# the office\n\n   \n10.0.0.0/8   # all of it\n\t192.0.2.7\t\r\n\
                     2001:db8::/32#no space\n[2001:db8:1::]/48\n::ffff:198.51.100.0/120\n#last";
        let r = rules_from("comments", allow, "10.1.0.0/16\n").unwrap();
        for (ip, want) in [
            ("10.2.3.4", true),
            ("10.1.2.3", false),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("2001:db8:5::1", true),
            ("198.51.100.9", true),
            ("::ffff:198.51.100.9", true),
            ("::ffff:10.1.0.1", false),
            ("2001:db9::1", false),
        ] {
            assert_eq!(allowed(&r, ip), want, "{ip}");
        }
    }

    #[test]
    fn duplicates_and_both_lists() {
        let r = rules_from(
            "dups",
            "192.0.2.7\n192.0.2.7/32\n192.0.2.7\n",
            "192.0.2.7\n",
        )
        .unwrap();
        assert!(!allowed(&r, "192.0.2.7"), "a tie goes to deny");
        let r = rules_from("dups2", "192.0.2.7\n192.0.2.7\n", "").unwrap();
        assert!(allowed(&r, "192.0.2.7"));
        assert_eq!(r.cuts(), (2, 0), "one range however often it is listed");
    }

    #[test]
    fn empty_files_still_count_as_given() {
        let r = rules_from("empty", "# nothing yet\n", "").unwrap();
        assert!(!allowed(&r, "127.0.0.1"), "an empty allow file denies");
        let t = Temp::new("deny-only", b"");
        let mut lists = Lists::default();
        read(&t.0, Action::Deny, &mut lists).unwrap();
        assert!(allowed(&lists.build().unwrap(), "127.0.0.1"));
    }

    #[test]
    fn a_bad_line_is_named_by_file_and_number() {
        assert_eq!(
            error("bad-len", b"# header\n10.0.0.0/8\n\n10.0.0.0/33\n"),
            ":4: invalid CIDR '10.0.0.0/33': a prefix length of /33 is longer than 32 bits"
        );
        assert_eq!(
            error("bad-host", b"10.1.2.3/8 # typo\n"),
            ":1: invalid CIDR '10.1.2.3/8': host bits are set beyond the /8 prefix (did you mean 10.0.0.0/8?)"
        );
        assert!(error("garbage", b"\n\nexample.com\n")
            .starts_with(":3: invalid CIDR 'example.com': expected an address or CIDR"));
        assert!(error("two", b"10.0.0.1 10.0.0.2\n")
            .starts_with(":1: invalid CIDR '10.0.0.1 10.0.0.2'"));
        assert!(error("octal", b"010.0.0.1\n").contains("leading zero"));
        assert_eq!(
            error("utf8", b"10.0.0.1\n\xff\xfe\n"),
            ":2: invalid CIDR '\u{fffd}\u{fffd}': not UTF-8 text"
        );
        let long = format!("1.2.3.4\n{}\n", "9".repeat(5000));
        let e = error("long", long.as_bytes());
        assert!(
            e.starts_with(":2: invalid CIDR '999") && e.contains('…') && e.len() < 400,
            "{e}"
        );
        let e = error("control", b"1.2.3.4\x1b[2J\n");
        assert!(e.contains("\\u{1b}") && !e.contains('\x1b'), "{e:?}");
    }

    #[test]
    fn unreadable_files_say_why_without_os_error() {
        let missing = Path::new("/nonexistent/echo-mux/allow");
        let e = read(missing, Action::Allow, &mut Lists::default()).unwrap_err();
        assert_eq!(e, "/nonexistent/echo-mux/allow: no such file or directory");
        let dir = std::env::temp_dir();
        let e = read(&dir, Action::Deny, &mut Lists::default()).unwrap_err();
        assert!(e.ends_with(": is a directory"), "{e}");
        assert!(!e.contains("os error"), "{e}");
    }

    #[test]
    fn a_huge_file_is_read_whole() {
        let mut text = String::with_capacity(3 << 20);
        for i in 0..200_000u32 {
            let a = 0x0a00_0000 + i * 2; // every other address: no two merge
            text.push_str(&format!("{}\n", std::net::Ipv4Addr::from(a)));
            if i % 1000 == 0 {
                text.push_str("# a comment every thousand lines\n\n");
            }
        }
        text.push_str("2001:db8::1\n");
        let r = rules_from("huge", &text, "").unwrap();
        assert_eq!(r.cuts(), (400_000, 2));
        assert!(allowed(&r, "10.0.0.0"));
        assert!(!allowed(&r, "10.0.0.1"));
        assert!(allowed(
            &r,
            &std::net::Ipv4Addr::from(0x0a00_0000u32 + 399_998).to_string()
        ));
        assert!(!allowed(
            &r,
            &std::net::Ipv4Addr::from(0x0a00_0000u32 + 400_000).to_string()
        ));
        assert!(allowed(&r, "2001:db8::1"));
        let bad = format!("{text}300.0.0.1\n");
        let t = Temp::new("huge-bad", bad.as_bytes());
        let e = read(&t.0, Action::Allow, &mut Lists::default()).unwrap_err();
        let lines = bad.lines().count();
        assert!(
            e.contains(&format!(":{lines}: invalid CIDR '300.0.0.1'")),
            "{e}"
        );
    }

    /// Reading and compiling a file of 1,000,000 lines: IPv4 /32s, and IPv6 prefixes of mixed
    /// lengths. Run it alone, in release:
    /// `cargo test --release --lib access::file::tests::parse_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark: prints the time to read and compile a 1,000,000-line file"]
    fn parse_cost() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for v6 in [false, true] {
            let mut text = String::with_capacity(40 << 20);
            for _ in 0..1_000_000 {
                if v6 {
                    let len = [48u8, 64, 128, 128][(next() % 4) as usize];
                    let random = (u128::from(next()) << 64) | u128::from(next());
                    let addr = ((0x2001u128 << 112) | (random >> 16))
                        & crate::policy::access::cidr::mask(len, 128);
                    text.push_str(&format!("{}/{len}\n", std::net::Ipv6Addr::from(addr)));
                } else {
                    text.push_str(&format!("{}\n", std::net::Ipv4Addr::from(next() as u32)));
                }
            }
            let t = Temp::new(if v6 { "cost6" } else { "cost4" }, text.as_bytes());
            let start = std::time::Instant::now();
            let mut lists = Lists::default();
            read(&t.0, Action::Allow, &mut lists).unwrap();
            let read_in = start.elapsed();
            let rules = lists.build().unwrap();
            let total = start.elapsed();
            println!(
                "1,000,000 {} lines ({} MB): read {:.0} ms, compiled {:.0} ms, total {:.0} ms; {:.1} bytes per entry kept",
                if v6 { "IPv6 /48, /64 and /128" } else { "IPv4 /32" },
                text.len() / 1_000_000,
                read_in.as_secs_f64() * 1e3,
                (total - read_in).as_secs_f64() * 1e3,
                total.as_secs_f64() * 1e3,
                rules.heap_bytes() as f64 / 1e6,
            );
        }
    }
}
