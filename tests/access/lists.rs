//! `--allow`/`--deny`: longest prefix, ties, defaults, counting.

use super::{connect_from, ip, served, stat};
use crate::util::Daemon;

for_each_backend!(longest_prefix_decides_and_a_tie_denies);
/// /8 allows, /16 denies, /24 allows, /32 denies; the same /24 both allowed and denied
/// denies. Denied connections are closed with nothing sent and counted.
fn longest_prefix_decides_and_a_tie_denies(backend: &'static str) {
    let Some(d) = Daemon::spawn(
        backend,
        &[
            "--allow",
            "127.0.0.0/8",
            "--deny",
            "127.0.0.0/16",
            "--allow",
            "127.0.2.0/24",
            "--deny",
            "127.0.2.3",
            "--allow",
            "127.0.3.0/24",
            "--deny",
            "127.0.3.0/24",
        ],
    ) else {
        return;
    };
    let cases = [
        ("127.1.0.1", true, "/8 allows"),
        ("127.0.0.2", false, "/16 beats /8"),
        ("127.0.2.2", true, "/24 beats /16"),
        ("127.0.2.3", false, "/32 beats /24"),
        ("127.0.3.1", false, "a tie at /24 denies"),
        ("127.0.4.1", false, "/16 again"),
    ];
    for (source, want, why) in cases {
        let s = connect_from(&d, ip(source)).unwrap_or_else(|e| d.fail(&format!("{source}: {e}")));
        if served(&d, &s) != want {
            d.fail(&format!("{source}: want served={want} ({why})"));
        }
    }
    let (denied, rejected) = (stat(&d, "denied"), stat(&d, "rejected"));
    let (limited, accepted) = (stat(&d, "limited"), stat(&d, "accepted"));
    if (denied, rejected, limited, accepted) != (4, 4, 0, 2) {
        d.fail(&format!(
            "want denied=4 rejected=4 limited=0 accepted=2, got {denied} {rejected} {limited} {accepted}"
        ));
    }
}

for_each_backend!(allow_only_refuses_the_rest_deny_only_serves_it);
/// With only `--allow`, what matches nothing is refused; with only `--deny`, it is served.
fn allow_only_refuses_the_rest_deny_only_serves_it(backend: &'static str) {
    let Some(allow) = Daemon::spawn(backend, &["--allow", "127.0.0.2"]) else {
        return;
    };
    let s = connect_from(&allow, ip("127.0.0.2")).unwrap();
    assert!(served(&allow, &s), "127.0.0.2 is allowed");
    let s = connect_from(&allow, ip("127.0.0.3")).unwrap();
    assert!(!served(&allow, &s), "127.0.0.3 matches nothing: refused");
    assert_eq!(stat(&allow, "denied"), 1);
    let Some(deny) = Daemon::spawn(backend, &["--deny", "127.0.0.3"]) else {
        return;
    };
    let s = connect_from(&deny, ip("127.0.0.2")).unwrap();
    assert!(served(&deny, &s), "127.0.0.2 matches nothing: served");
    let s = connect_from(&deny, ip("127.0.0.3")).unwrap();
    assert!(!served(&deny, &s), "127.0.0.3 is denied");
    assert_eq!(stat(&deny, "denied"), 1);
    // Without any list or limit, the stats line keeps its SPEC §5 prefix only.
    let Some(plain) = Daemon::spawn(backend, &[]) else {
        return;
    };
    let st = plain.stats();
    if st.contains_key("denied") || st.contains_key("limited") {
        plain.fail(&format!(
            "denied=/limited= without any list or limit: {st:?}"
        ));
    }
}

/// IPv6 peers: `--deny ::1` refuses them (an IPv4 rule would not), and under
/// `--max-per-source 1` two connections from ::1 are one source (its /64).
#[test]
fn ipv6_peers_match_ipv6_rules_and_count_by_their_64() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        println!("note: no IPv6 loopback here; skipping");
        return;
    }
    let v6 = ["--listen", "[::1]:0"];
    let Some(d) = Daemon::spawn("epoll", &[&v6[..], &["--deny", "127.0.0.0/8"]].concat()) else {
        return;
    };
    assert!(served(&d, &d.connect()), "an IPv4 rule does not match ::1");
    let Some(d) = Daemon::spawn("epoll", &[&v6[..], &["--deny", "[::1]/128"]].concat()) else {
        return;
    };
    assert!(!served(&d, &d.connect()), "::1 is denied");
    assert_eq!(stat(&d, "denied"), 1);
    let Some(d) = Daemon::spawn("epoll", &[&v6[..], &["--max-per-source", "1"]].concat()) else {
        return;
    };
    let first = d.connect();
    assert!(served(&d, &first));
    assert!(!served(&d, &d.connect()), "the second from ::1's /64");
    assert_eq!(stat(&d, "limited"), 1);
}
