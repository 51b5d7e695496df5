//! One description of the daemon, true everywhere it is shown, and a man page whose sections
//! each say what they must (issue 16, items 4 and 7).
//!
//! `echo_mux::cli::DESCRIPTION` is Cargo.toml's `description` (`env!`), so `--help`, the man
//! page's NAME and the package's short description cannot differ; the texts written by hand
//! (the package's long description, the systemd units' first comment, README.md) are checked
//! here against it.

use echo_mux::cli::DESCRIPTION;
use xtask::{outputs, repo_root};

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn manifest() -> toml::Table {
    read("Cargo.toml").parse().expect("Cargo.toml parses")
}

fn deb_field(name: &str) -> String {
    manifest()["package"]["metadata"]["deb"][name]
        .as_str()
        .unwrap_or_else(|| panic!("[package.metadata.deb] has no {name}"))
        .to_string()
}

/// `echo-mux` → `echo\-mux`, as clap_mangen and the fragments write text in roff.
fn roff(text: &str) -> String {
    text.replace('-', "\\-")
}

/// Whitespace runs as one space, so that wrapped text compares with one-line text.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_description_says_what_the_daemon_is_now() {
    // TCP, UDP and unix sockets, one or more worker processes.
    for needle in ["TCP", "UDP", "unix", "one or more", "worker processes"] {
        assert!(
            DESCRIPTION.contains(needle),
            "the description {DESCRIPTION:?} does not say {needle:?}"
        );
    }
    // The package's short description (the synopsis): under 80 characters, no final period,
    // no leading article (Debian's rules for a synopsis; lintian checks them too).
    assert!(DESCRIPTION.len() < 80, "{DESCRIPTION:?} is too long");
    assert!(
        !DESCRIPTION.ends_with('.'),
        "{DESCRIPTION:?} ends with a period"
    );
    let first = DESCRIPTION.split_whitespace().next().unwrap_or_default();
    assert!(
        !["A", "An", "The"].contains(&first),
        "{DESCRIPTION:?} starts with an article"
    );
}

#[test]
fn cargo_toml_and_help_carry_the_description() {
    let package = manifest()["package"]["description"]
        .as_str()
        .expect("[package] description")
        .to_string();
    assert_eq!(package, DESCRIPTION, "Cargo.toml's description");
    let help = echo_mux::cli::command().render_help().to_string();
    assert_eq!(
        help.lines().next(),
        Some(DESCRIPTION),
        "--help's first line:\n{help}"
    );
}

#[test]
fn the_package_long_description_starts_with_the_description() {
    let long = flat(&deb_field("extended-description"));
    let want = format!("echo-mux is a {DESCRIPTION}");
    assert!(
        long.starts_with(&want),
        "Cargo.toml [package.metadata.deb] extended-description must start with {want:?}:\n{long}"
    );
}

#[test]
fn each_unit_file_starts_with_the_description() {
    let want = format!("# echo-mux: {DESCRIPTION}.");
    for unit in ["systemd/echo-mux.service", "systemd/echo-mux.socket"] {
        let text = read(unit);
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(first, want, "{unit}: first line");
    }
}

#[test]
fn readme_opens_with_the_description() {
    let readme = read("README.md");
    let mut lines = readme.lines();
    assert_eq!(lines.next(), Some("# echo-mux"), "README.md's title");
    // The first paragraph after the title.
    let paragraph: Vec<&str> = lines
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let paragraph = flat(&paragraph.join(" "));
    assert!(
        paragraph.starts_with(&format!("echo-mux is a {DESCRIPTION}")),
        "README.md's first paragraph must start with \"echo-mux is a {DESCRIPTION}\":\n{paragraph}"
    );
}

#[test]
fn the_maintainer_is_a_project_identity_not_a_placeholder() {
    let maintainer = deb_field("maintainer");
    // "Name <address>", a project's identity, not a person's nor a generated placeholder.
    let (name, address) = maintainer
        .strip_suffix('>')
        .and_then(|m| m.split_once(" <"))
        .unwrap_or_else(|| panic!("maintainer {maintainer:?} is not \"Name <address>\""));
    assert!(name.contains("echo-mux"), "maintainer name {name:?}");
    let (user, host) = address
        .split_once('@')
        .unwrap_or_else(|| panic!("maintainer address {address:?}"));
    assert!(
        !user.is_empty() && host.contains('.'),
        "address {address:?}"
    );
    for placeholder in ["noreply", "example", "localhost", "invalid", "seed"] {
        assert!(
            !maintainer.to_lowercase().contains(placeholder),
            "maintainer {maintainer:?} looks like a placeholder ({placeholder})"
        );
    }
    // The changelog's trailer names the same identity.
    let changelog = read("debian/changelog");
    let trailer = changelog
        .lines()
        .find(|l| l.starts_with(" -- "))
        .expect("debian/changelog has a trailer line");
    assert!(
        trailer.starts_with(&format!(" -- {maintainer}  ")),
        "debian/changelog's trailer {trailer:?} does not name {maintainer:?}"
    );
}

fn man_page() -> String {
    let page = outputs()
        .into_iter()
        .find(|o| o.path.ends_with("man8/echo-mux.8"))
        .expect("the man page is generated");
    String::from_utf8(page.bytes).unwrap()
}

/// The text of section `name` (from after its `.SH` line up to the next `.SH`).
fn section(page: &str, name: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in page.lines() {
        if let Some(title) = line.strip_prefix(".SH ") {
            inside = title.trim_matches('"') == name;
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(!out.is_empty(), "the man page has no {name} section");
    out
}

#[test]
fn man_page_name_is_the_description() {
    let page = man_page();
    let name = section(&page, "NAME");
    let line = name
        .lines()
        .find(|l| !l.starts_with('.'))
        .expect("NAME has a line of text");
    assert_eq!(line, format!("echo\\-mux \\- {}", roff(DESCRIPTION)));
}

#[test]
fn man_page_sections_each_say_what_they_must() {
    let page = man_page();
    // Section → what it must mention (roff-escaped where the text has a hyphen).
    let must: &[(&str, &[&str])] = &[
        (
            "DESCRIPTION",
            &[
                "TCP",
                "UDP",
                "unix",
                "worker",
                "\\fBepoll\\fR",
                "\\fBpoll\\fR",
                "\\fBselect\\fR",
                "\\fBstamp\\fR",
                // The values: ADDR with the UDP forms, DUR, BYTES, CIDR.
                "\\fBudp:\\fIHOST",
                ".I ADDR",
                ".I DUR",
                ".I BYTES",
                ".I CIDR",
            ],
        ),
        (
            "UDP",
            &[
                "udp:",
                // Loop protection: the ports, our own addresses, broadcast and multicast.
                "0, 7, 13, 19 or 37",
                "own UDP listeners",
                "udp\\-loop\\-detect",
                "65,527",
                "broadcast",
                "multicast",
                "dropped",
                "65,507",
                // The stats fields.
                "datagrams_in=",
                "datagrams_out=",
                "dropped=",
                "ListenDatagram=",
                "\\-\\-workers",
            ],
        ),
        (
            "SIGNALS",
            &[
                "SIGTERM",
                "SIGINT",
                "SIGUSR1",
                "SIGHUP",
                "SIGPIPE",
                "stats: backend=",
                // Every field the SIGUSR1 line may carry, and what rejected counts.
                "workers=",
                "worker=",
                "denied=",
                "limited=",
                "datagrams_in=",
                "dropped=",
                "denied or limited",
                "reloads=",
                "reload refused:",
            ],
        ),
        ("EXIT STATUS", &[".B 0", ".B 1", ".B 2"]),
        (
            "ENVIRONMENT",
            &[
                "RUST_LOG",
                "TZ",
                "LISTEN_FDS",
                "NOTIFY_SOCKET",
                "JOURNAL_STREAM",
            ],
        ),
        (
            "FILES",
            &[
                "/usr/lib/systemd/system/echo\\-mux.socket",
                "/usr/lib/systemd/system/echo\\-mux.service",
            ],
        ),
        ("EXAMPLES", &["nc 127.0.0.1 50007", "\\-\\-mode stamp"]),
        ("SEE ALSO", &[".BR nc (1)", ".BR systemd.socket (5)"]),
    ];
    for (name, needles) in must {
        let text = flat(&section(&page, name));
        for needle in *needles {
            assert!(
                text.contains(needle),
                "the man page's {name} section does not mention {needle:?}:\n{text}"
            );
        }
    }
}

#[test]
fn man_page_files_shows_the_shipped_command_line() {
    // FILES says what the packaged service runs: exactly the unit's ExecStart= (as the
    // package installs it), so a change of the unit cannot leave the man page behind.
    let unit = read("systemd/echo-mux.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the service has ExecStart=");
    let files = flat(&section(&man_page(), "FILES"));
    let want = format!("\\fB{}\\fR", roff(exec));
    assert!(
        files.contains(&want),
        "the man page's FILES section does not show the unit's command line {want:?}:\n{files}"
    );
}
