//! The Debian package's logic that can be checked without building it (SPEC §11): the unit's
//! ExecStart= is the packaged binary, install.sh's rewrite is the only difference between
//! the source unit and an installed one, debian/expected-contents follows Cargo.toml's
//! `[package.metadata.deb]`, and the changelog names the crate's version.
//! scripts/check-deb.sh then checks the real package against the same files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use xtask::repo_root;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn manifest() -> toml::Table {
    read("Cargo.toml").parse().expect("Cargo.toml parses")
}

fn deb_metadata() -> toml::Table {
    manifest()["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

/// `(source, destination path in the package, mode)` for each asset, destinations resolved
/// the way cargo-deb does (a destination ending in `/` is a directory).
fn assets() -> Vec<(String, String, String)> {
    deb_metadata()["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| {
            let a = a.as_array().expect("an asset is [source, dest, mode]");
            let (src, dest, mode) = (
                a[0].as_str().unwrap().to_string(),
                a[1].as_str().unwrap().to_string(),
                a[2].as_str().unwrap().to_string(),
            );
            let dest = if dest.ends_with('/') {
                let name = Path::new(&src).file_name().unwrap().to_str().unwrap();
                format!("{dest}{name}")
            } else {
                dest
            };
            (src, format!("/{}", dest.trim_start_matches('/')), mode)
        })
        .collect()
}

fn exec_start_lines(unit: &str) -> Vec<String> {
    unit.lines()
        .filter(|l| l.starts_with("ExecStart="))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_unit_runs_the_packaged_binary() {
    let bin = assets()
        .into_iter()
        .find(|(src, _, _)| src == "target/release/echo-mux")
        .expect("the daemon is an asset")
        .1;
    assert_eq!(bin, "/usr/bin/echo-mux");
    let lines = exec_start_lines(&read("systemd/echo-mux.service"));
    // install.sh rewrites the first word of each ExecStart= line: one line, path first.
    assert_eq!(lines.len(), 1, "{lines:?}");
    let rest = lines[0]
        .strip_prefix(&format!("ExecStart={bin} "))
        .unwrap_or_else(|| panic!("{:?} does not run {bin}", lines[0]));
    assert!(rest.starts_with("--backend "), "{rest}");
}

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("xtask-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The service unit scripts/install.sh stages for `--prefix prefix`.
fn installed_service(prefix: &str) -> String {
    let dest = TempDir::new(&format!("install{}", prefix.replace('/', "-")));
    // Any executable will do: install.sh only copies it.
    let me = std::env::current_exe().unwrap();
    let out = Command::new(repo_root().join("scripts/install.sh"))
        .args(["--destdir", dest.0.to_str().unwrap(), "--prefix", prefix])
        .args(["--unitdir", "/lib/systemd/system", "--binary"])
        .arg(&me)
        .output()
        .expect("cannot run scripts/install.sh");
    assert!(
        out.status.success(),
        "install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dest.0.join("lib/systemd/system/echo-mux.service")).unwrap()
}

#[test]
fn install_sh_rewrites_only_the_binary_path() {
    let source = read("systemd/echo-mux.service");
    // At the package's prefix the rewrite is the identity: the same unit either way.
    assert_eq!(installed_service("/usr"), source);
    // Elsewhere exactly one line differs, and only in the path.
    let local = installed_service("/usr/local");
    let differing: Vec<(&str, &str)> = source
        .lines()
        .zip(local.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(source.lines().count(), local.lines().count());
    assert_eq!(
        differing,
        [(
            "ExecStart=/usr/bin/echo-mux --backend epoll --workers auto",
            "ExecStart=/usr/local/bin/echo-mux --backend epoll --workers auto"
        )]
    );
}

/// `(mode, path)` entries of debian/expected-contents, paths without the leading `.`.
fn expected_contents() -> Vec<(String, String)> {
    read("debian/expected-contents")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (mode, path) = l.split_once(' ').expect("'mode path'");
            let path = path.strip_prefix('.').expect("paths start with ./");
            (mode.to_string(), path.trim_end_matches('/').to_string())
        })
        .collect()
}

#[test]
fn expected_contents_follow_the_metadata() {
    let meta = deb_metadata();
    let mut want: BTreeSet<(String, String)> = BTreeSet::new();
    for (src, dest, mode) in assets() {
        assert!(
            src.starts_with("target/release/") || repo_root().join(&src).is_file(),
            "asset source {src} does not exist"
        );
        // cargo-deb compresses man pages and doc changelogs.
        let gz = dest.starts_with("/usr/share/man/") || dest.ends_with("/changelog");
        let dest = if gz { format!("{dest}.gz") } else { dest };
        let mode = match mode.as_str() {
            "755" => "-rwxr-xr-x",
            "644" => "-rw-r--r--",
            other => panic!("unexpected mode {other} for {src}"),
        };
        want.insert((mode.to_string(), dest));
    }
    // The copyright file (license-file) and every unit in the unit-scripts directory.
    assert_eq!(meta["license-file"].as_str(), Some("debian/copyright"));
    want.insert((
        "-rw-r--r--".into(),
        "/usr/share/doc/echo-mux/copyright".into(),
    ));
    let units_dir = meta["systemd-units"]["unit-scripts"].as_str().unwrap();
    for entry in std::fs::read_dir(repo_root().join(units_dir)).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        want.insert((
            "-rw-r--r--".into(),
            format!("/usr/lib/systemd/system/{name}"),
        ));
    }
    // ...and the directories that hold them, up to /usr.
    let dirs: BTreeSet<String> = want
        .iter()
        .flat_map(|(_, p)| Path::new(p).ancestors().skip(1).map(Path::to_path_buf))
        .filter(|d| d.starts_with("/usr"))
        .map(|d| d.to_str().unwrap().to_string())
        .collect();
    want.extend(dirs.into_iter().map(|d| ("drwxr-xr-x".to_string(), d)));

    let have: BTreeSet<(String, String)> = expected_contents().into_iter().collect();
    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "debian/expected-contents does not match Cargo.toml's [package.metadata.deb]:\n\
         missing from the list: {missing:?}\nnot from the metadata: {extra:?}"
    );
    // SPEC §11's paths, spelled out once more.
    for path in [
        "/usr/bin/echo-mux",
        "/usr/lib/systemd/system/echo-mux.service",
        "/usr/lib/systemd/system/echo-mux.socket",
        "/usr/share/man/man8/echo-mux.8.gz",
        "/usr/share/bash-completion/completions/echo-mux",
        "/usr/share/zsh/vendor-completions/_echo-mux",
        "/usr/share/fish/vendor_completions.d/echo-mux.fish",
        "/usr/share/doc/echo-mux/README.md",
        "/usr/share/doc/echo-mux/copyright",
    ] {
        assert!(have.iter().any(|(_, p)| p == path), "{path} not packaged");
    }
    // The load tools stay out of the package.
    assert!(!have
        .iter()
        .any(|(_, p)| p.contains("bench") || p.contains("plot")));
}

#[test]
fn changelog_names_the_crate_version() {
    let version = manifest()["package"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let deb_version = match deb_metadata().get("revision").and_then(|r| r.as_str()) {
        Some("") | Some("0") => version.clone(),
        Some(rev) => format!("{version}-{rev}"),
        None => format!("{version}-1"),
    };
    let changelog = read("debian/changelog");
    let first = changelog.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("echo-mux ({deb_version}) ")),
        "debian/changelog starts with {first:?}, but the package version is {deb_version}: \
         add a changelog entry for it"
    );
}

#[test]
fn copyright_is_machine_readable() {
    let copyright = read("debian/copyright");
    assert!(copyright.starts_with(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    ));
    // Every licence the Files paragraph names has its own paragraph with the text.
    let files_license = copyright
        .lines()
        .skip_while(|l| !l.starts_with("Files: *"))
        .find_map(|l| l.strip_prefix("License: "))
        .expect("a Files: * paragraph with a License: line");
    for name in files_license.split(" or ") {
        assert!(
            copyright.contains(&format!("\n\nLicense: {name}\n ")),
            "no License: {name} paragraph"
        );
    }
}

/// SPEC §11: an upgrade reloads the running daemon instead of restarting it. cargo-deb must
/// neither stop (prerm) nor restart (postinst) a unit on upgrade — a restarted
/// echo-mux.socket takes echo-mux.service down with it (Requires=) — and debian/postinst
/// reloads a running service after its snippets (which do the daemon-reload). The behaviour
/// itself is replayed by scripts/check-deb-systemd.sh on the built package.
#[test]
fn an_upgrade_reloads_instead_of_restarting() {
    let units = &deb_metadata()["systemd-units"];
    assert_eq!(units["restart-after-upgrade"].as_bool(), Some(false));
    assert_eq!(units["stop-on-upgrade"].as_bool(), Some(false));
    let postinst = read("debian/postinst");
    assert_eq!(postinst.matches("#DEBHELPER#").count(), 1, "{postinst}");
    let snippets = postinst.find("#DEBHELPER#").unwrap();
    let reload = postinst
        .find("deb-systemd-invoke reload echo-mux.service")
        .expect("debian/postinst does not reload echo-mux.service");
    assert!(
        snippets < reload,
        "the reload must follow the snippets' daemon-reload"
    );
    // The one restart is for an upgrade from 0.2.0, whose daemon ignores SIGHUP.
    let code: Vec<&str> = postinst
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let restarts: Vec<&&str> = code.iter().filter(|l| l.contains("restart")).collect();
    assert_eq!(
        restarts,
        [&"\t\t\tdeb-systemd-invoke restart echo-mux.service >/dev/null || true"],
        "debian/postinst restarts something else:\n{postinst}"
    );
    assert!(
        postinst.contains(r#"dpkg --compare-versions "$2" lt 0.3.0"#),
        "the restart is not limited to upgrades from 0.2.0:\n{postinst}"
    );
    let check = Command::new("sh")
        .args(["-n", "debian/postinst"])
        .current_dir(repo_root())
        .status()
        .unwrap();
    assert!(check.success(), "debian/postinst is not valid sh");
}
