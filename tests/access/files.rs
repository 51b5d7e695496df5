//! `--allow-file`/`--deny-file`: entries from files decide like `--allow`/`--deny` and combine
//! with them; a bad line or a missing file is a usage error naming the file (and line); a
//! file of 100,000 entries starts.

use std::net::Ipv4Addr;
use std::path::Path;

use super::{connect_from, ip, served, stat};
use crate::util::{run, Daemon, Run, TempDir};

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path.display().to_string()
}

/// Connect from each source and check served or refused.
fn expect(d: &Daemon, cases: &[(&str, bool, &str)]) {
    for &(source, want, why) in cases {
        let s = connect_from(d, ip(source)).unwrap_or_else(|e| d.fail(&format!("{source}: {e}")));
        if served(d, &s) != want {
            d.fail(&format!("{source}: want served={want} ({why})"));
        }
    }
}

for_each_backend!(file_entries_decide_and_combine_with_the_command_line);
/// Two allow files and a deny file (comments, blank lines, CRLF, a mapped prefix) together
/// with `--allow` and `--deny`: one set of lists, the longest prefix deciding, a tie denying.
fn file_entries_decide_and_combine_with_the_command_line(backend: &'static str) {
    let dir = TempDir::new("allow-files");
    let allow = write(
        &dir.join("allow"),
        "# who may talk to us\n\n127.0.0.0/16   # the lab\r\n\t127.0.3.0/24\n::ffff:127.9.0.0/112\n",
    );
    let more = write(&dir.join("allow.d"), "127.0.2.3\n");
    let deny = write(
        &dir.join("deny"),
        "127.0.2.0/24\n127.0.3.0/24 # a tie with the allow file\n",
    );
    let Some(d) = Daemon::spawn(
        backend,
        &[
            "--allow-file",
            &allow,
            "--deny-file",
            &deny,
            "--allow",
            "127.5.0.0/16",
            "--allow-file",
            &more,
            "--deny",
            "127.0.1.7",
        ],
    ) else {
        return;
    };
    expect(
        &d,
        &[
            ("127.0.1.1", true, "/16 from the allow file"),
            ("127.0.1.7", false, "--deny /32 beats the file's /16"),
            ("127.0.2.2", false, "the deny file's /24 beats /16"),
            ("127.0.2.3", true, "the second allow file's /32 beats /24"),
            ("127.0.3.1", false, "a tie at /24 between files denies"),
            ("127.5.0.1", true, "--allow on the command line"),
            ("127.9.0.1", true, "a mapped prefix in a file is IPv4"),
            (
                "127.1.0.1",
                false,
                "matches nothing: an allow list is given",
            ),
        ],
    );
    let (denied, accepted) = (stat(&d, "denied"), stat(&d, "accepted"));
    if (denied, accepted) != (4, 4) {
        d.fail(&format!(
            "want denied=4 accepted=4, got {denied} {accepted}"
        ));
    }
}

for_each_backend!(an_empty_allow_file_serves_nobody_an_empty_deny_file_everybody);
/// A file with nothing but comments still makes its list given: an emptied allow file refuses
/// everyone (it never opens the daemon to all), an emptied deny file refuses no one.
fn an_empty_allow_file_serves_nobody_an_empty_deny_file_everybody(backend: &'static str) {
    let dir = TempDir::new("empty-lists");
    let empty = write(&dir.join("empty"), "# nobody yet\n\n");
    let Some(allow) = Daemon::spawn(backend, &["--allow-file", &empty]) else {
        return;
    };
    expect(&allow, &[("127.0.0.2", false, "an empty allow list")]);
    assert_eq!(stat(&allow, "denied"), 1);
    let Some(deny) = Daemon::spawn(backend, &["--deny-file", &empty]) else {
        return;
    };
    expect(&deny, &[("127.0.0.2", true, "an empty deny list")]);
    assert_eq!(stat(&deny, "denied"), 0, "the stats line carries denied=");
}

/// Exit 2 and one stderr line `echo-mux: <want>` (no panic, nothing on stdout).
fn usage_error(r: &Run, want: &str) {
    let lines: Vec<&str> = r.stderr.lines().collect();
    let ok = !r.timed_out
        && r.status.code() == Some(2)
        && r.stdout.is_empty()
        && lines == [format!("echo-mux: {want}")];
    assert!(ok, "want exit 2 and `echo-mux: {want}`:{}", r.describe());
}

#[test]
fn a_bad_line_is_a_usage_error_naming_file_and_line() {
    let dir = TempDir::new("bad-allow-file");
    let good = write(&dir.join("good"), "127.0.0.0/8\n");
    let bad = write(
        &dir.join("allow"),
        "# line 1\n10.0.0.0/8\n\n10.0.0.0/33   # line 4\n",
    );
    let r = run(&[
        "--listen",
        "127.0.0.1:0",
        "--allow-file",
        &good,
        "--allow-file",
        &bad,
    ]);
    usage_error(
        &r,
        &format!(
            "{bad}:4: invalid CIDR '10.0.0.0/33': a prefix length of /33 is longer than 32 bits"
        ),
    );
    let typo = write(&dir.join("deny"), "192.0.2.1\n2001:db8::/32\nexample.com\n");
    let r = run(&["--listen", "127.0.0.1:0", "--deny-file", &typo]);
    usage_error(
        &r,
        &format!("{typo}:3: invalid CIDR 'example.com': expected an address or CIDR such as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32"),
    );
}

#[test]
fn a_missing_or_unreadable_file_is_a_usage_error() {
    let dir = TempDir::new("missing-allow-file");
    let missing = dir.join("nope").display().to_string();
    let r = run(&["--listen", "127.0.0.1:0", "--allow-file", &missing]);
    usage_error(&r, &format!("{missing}: no such file or directory"));
    let a_dir = dir.path().display().to_string();
    let r = run(&["--listen", "127.0.0.1:0", "--deny-file", &a_dir]);
    usage_error(&r, &format!("{a_dir}: is a directory"));
}

for_each_backend!(a_file_of_100000_entries_starts_and_decides);
/// 100,000 /32s (every other address of 127.1.0.0 up: none merge) start the daemon, one
/// process and two workers, and decide at both ends of the list.
fn a_file_of_100000_entries_starts_and_decides(backend: &'static str) {
    let dir = TempDir::new("big-allow-file");
    let mut text = String::with_capacity(1_600_000);
    let first = u32::from(Ipv4Addr::new(127, 1, 0, 0));
    for i in 0..100_000u32 {
        text.push_str(&Ipv4Addr::from(first + 2 * i).to_string());
        text.push('\n');
    }
    let allow = write(&dir.join("allow"), &text);
    let last = Ipv4Addr::from(first + 2 * 99_999).to_string();
    let after = Ipv4Addr::from(first + 2 * 100_000).to_string();
    for workers in ["1", "2"] {
        let Some(d) = Daemon::spawn(backend, &["--allow-file", &allow, "--workers", workers])
        else {
            return;
        };
        expect(
            &d,
            &[
                ("127.1.0.0", true, "the first entry"),
                ("127.1.0.1", false, "between two entries"),
                (&last, true, "the last entry"),
                (&after, false, "past the last entry"),
            ],
        );
    }
}
