//! The UDP load tools against real servers on loopback: `echo-mux-bench --udp` and
//! `scripts/hammer.sh --udp` against the C peer `udp-echo-mmsg` (bench/peers/, compiled with
//! gcc into a temp dir), and against faulty servers (a byte flipped, datagrams dropped,
//! duplicated or answered late) to show that both tools notice. The daemon's own UDP tests are in the root
//! crate's `tests/`. Needs gcc and nc (netcat-openbsd), which `.ci/run` installs.

mod support;

use std::time::Duration;

use support::{bench_udp, field, hammer_udp, number, run_bounded, Fault, Faulty, Reference, BENCH};

#[test]
/// 16 sockets × 20,000 datagrams of 512 B, then one socket with the largest datagram: every
/// reply verified, nothing lost, and the server echoed exactly what the bench counted.
fn bench_udp_against_udp_echo_mmsg() {
    let server = Reference::start();
    let (code, json) = bench_udp(server.port, &["-c", "16", "-s", "512", "-n", "20000"]);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(field(&json, "requests"), 20_000, "{json}");
    assert_eq!(field(&json, "errors"), 0, "{json}");
    assert_eq!(field(&json, "lost"), 0, "{json}");
    assert!(json.contains("\"protocol\":\"udp\""), "{json}");

    let (code, json) = bench_udp(server.port, &["-c", "1", "-s", "65507", "-n", "200"]);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(field(&json, "requests"), 200, "{json}");
    assert_eq!(
        server.stop(),
        20_200,
        "the server's own count of echoed datagrams"
    );
}

#[test]
/// Every 10th reply has a byte flipped: those 40 of 400 are wrong echoes (not also counted
/// lost), the run exits 3 and says where the first wrong byte was, and -n ends it (not -d).
/// A socket waits out its reply timeout after a wrong reply: 1 s, so 10 s in all (a
/// shorter one could count a reply a loaded machine delays as lost).
fn bench_udp_detects_a_flipped_byte() {
    let server = Faulty::start(Fault::Flip(10));
    let args = [
        "-c",
        "4",
        "-s",
        "100",
        "-n",
        "400",
        "-d",
        "30s",
        "--reply-timeout",
        "1s",
    ];
    let (code, json) = bench_udp(server.port, &args);
    assert_eq!(code, Some(3), "{json}");
    assert!(
        number(&json, "elapsed_s") < 30.0,
        "-n did not end the run: {json}"
    );
    assert_eq!(field(&json, "mismatches"), 40, "{json}");
    assert_eq!(field(&json, "lost"), 0, "{json}");
    assert_eq!(field(&json, "requests"), 360, "{json}");
    assert!(json.contains("wrong bytes (first at offset 50)"), "{json}");
}

#[test]
/// Every 10th datagram gets no reply: exactly those are lost after --reply-timeout, the rest
/// answered, and -n still ends the run after 400 datagrams. The timeout (500 ms; about 5 s
/// in all, 10 per socket) leaves a loaded machine room to answer the others in time.
fn bench_udp_detects_dropped_datagrams() {
    let server = Faulty::start(Fault::Drop(10));
    let args = [
        "-c",
        "4",
        "-s",
        "64",
        "-n",
        "400",
        "--reply-timeout",
        "500ms",
    ];
    let (code, json) = bench_udp(server.port, &args);
    assert_eq!(code, Some(3), "{json}");
    assert_eq!(field(&json, "lost"), 40, "{json}");
    assert_eq!(field(&json, "mismatches"), 0, "{json}");
    assert_eq!(field(&json, "requests"), 360, "{json}");
    assert!(json.contains("no reply within 500 ms"), "{json}");
}

#[test]
/// A reply sent twice is an error; a reply that comes after its datagram was counted lost is
/// not a second error (it is "late"). Late is 1.5 s against a 500 ms timeout, so that only
/// the held replies miss it, however loaded the machine.
fn bench_udp_tells_duplicates_from_late_replies() {
    let dup = Faulty::start(Fault::Duplicate(10));
    let (code, json) = bench_udp(dup.port, &["-c", "4", "-n", "400"]);
    assert_eq!(code, Some(3), "{json}");
    // The duplicate of the very last reply may come after the run has ended.
    let dups = field(&json, "mismatches");
    assert!((39..=40).contains(&dups), "{json}");
    assert_eq!(field(&json, "lost"), 0, "{json}");
    assert!(json.contains("the same reply came twice"), "{json}");

    let slow = Faulty::start(Fault::Delay(10, Duration::from_millis(1500)));
    let args = ["-c", "4", "-n", "400", "--reply-timeout", "500ms"];
    let (code, json) = bench_udp(slow.port, &args);
    assert_eq!(code, Some(3), "{json}");
    assert_eq!(field(&json, "lost"), 40, "{json}");
    assert_eq!(field(&json, "mismatches"), 0, "{json}");
    assert!(field(&json, "late") >= 1, "{json}");
}

#[test]
/// Options that make no sense over UDP are usage errors (exit 2, one line).
fn bench_udp_refuses_stream_options() {
    let unix = ["--udp", "-a", "unix:/tmp/x.sock"].map(String::from);
    let (code, text) = run_bounded(BENCH, &unix, Duration::from_secs(10));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("not a unix socket"), "{text}");
    for (args, why) in [
        (["-s", "65508"], "at most 65507 bytes"),
        (["--pipeline", "2"], "one datagram outstanding"),
        (["--idle", "5"], "no connections"),
    ] {
        let (code, text) = bench_udp(9, &args);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        assert!(text.starts_with("echo-mux-bench: "), "{args:?}: {text}");
        assert!(text.contains(why), "{args:?}: {text}");
    }
}

#[test]
/// 8 nc -u clients × 2 rounds, 4,000 bytes each (one datagram per client): all checksums match.
fn hammer_udp_against_udp_echo_mmsg() {
    let server = Reference::start();
    let args = ["--clients", "8", "--bytes", "4000", "--rounds", "2"];
    let (code, out) = hammer_udp(server.port, &args);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("16 passed, 0 failed"), "{out}");
    assert_eq!(
        server.stop(),
        17,
        "16 clients' datagrams and hammer.sh's probe"
    );
}

#[test]
/// hammer.sh --udp must be able to fail: a byte flipped in every reply fails every client.
fn hammer_udp_detects_a_flipped_byte() {
    let server = Faulty::start(Fault::Flip(1));
    let (code, out) = hammer_udp(server.port, &["--clients", "2", "--bytes", "1000"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("0 passed, 2 failed"), "{out}");
    assert!(out.contains("echo differs"), "{out}");
}

#[test]
/// Every 2nd datagram dropped (the probe is the 1st, answered): of 4 one-datagram clients,
/// exactly 2 get nothing back and fail (after --timeout), the other 2 pass.
fn hammer_udp_detects_dropped_datagrams() {
    let server = Faulty::start(Fault::Drop(2));
    let args = ["--clients", "4", "--bytes", "1000", "--timeout", "5"];
    let (code, out) = hammer_udp(server.port, &args);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("2 passed, 2 failed"), "{out}");
    assert!(out.contains("got 0 back"), "{out}");
}
