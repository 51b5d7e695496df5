//! The generated man page and completions (SPEC §11): the committed copies under dist/ must be
//! what the current clap definition renders, and the man page must carry every section and
//! every option.

use std::path::{Path, PathBuf};

use xtask::{outputs, repo_root, stale, write_all, REGENERATE};

#[test]
fn committed_dist_is_current() {
    let problems = stale(&repo_root()).expect("cannot read dist/");
    assert!(
        problems.is_empty(),
        "the generated files under dist/ are stale:\n  {}\nregenerate them with `{REGENERATE}` and commit the result",
        problems.join("\n  ")
    );
}

/// A scratch copy of the repository's dist/, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn with_fresh_dist(tag: &str) -> Scratch {
        let root = std::env::temp_dir().join(format!("xtask-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        write_all(&root).unwrap();
        Scratch(root)
    }
    fn file(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn stale_names_each_changed_missing_or_extra_file() {
    let s = Scratch::with_fresh_dist("stale");
    assert_eq!(stale(&s.0).unwrap(), Vec::<String>::new());

    // A hand edit of the output, a lost file and a file nobody generates any more.
    let page = s.file("dist/man/man8/echo-mux.8");
    let mut text = std::fs::read_to_string(&page).unwrap();
    text = text.replacen("SIGUSR1", "SIGUSR2", 1);
    std::fs::write(&page, text).unwrap();
    std::fs::remove_file(s.file("dist/completions/_echo-mux")).unwrap();
    std::fs::write(s.file("dist/completions/old.bash"), "stale").unwrap();

    let problems = stale(&s.0).unwrap();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("dist/man/man8/echo-mux.8 differs"));
    assert!(problems[0].contains("SIGUSR2"), "{}", problems[0]);
    assert_eq!(problems[1], "dist/completions/_echo-mux is missing");
    assert_eq!(
        problems[2],
        "dist/completions/old.bash is no longer generated"
    );

    // Regenerating repairs all three.
    write_all(&s.0).unwrap();
    assert_eq!(stale(&s.0).unwrap(), Vec::<String>::new());
}

#[test]
fn check_command_fails_and_says_how_to_regenerate() {
    // The binary itself, against a scratch root with one broken file: `cargo xtask check`
    // is what a person runs, so its exit status and message matter.
    let s = Scratch::with_fresh_dist("check");
    std::fs::write(
        s.file("dist/completions/echo-mux.fish"),
        "# edited by hand\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("check")
        .env("XTASK_ROOT", &s.0)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("dist/completions/echo-mux.fish differs"),
        "{stderr}"
    );
    assert!(stderr.contains(REGENERATE), "{stderr}");

    std::fs::write(s.file("dist/completions/echo-mux.fish"), b"").unwrap();
    write_all(&s.0).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("check")
        .env("XTASK_ROOT", &s.0)
        .output()
        .unwrap();
    assert!(out.status.success());
}

fn man_page() -> String {
    let page = outputs()
        .into_iter()
        .find(|o| o.path == Path::new("dist/man/man8/echo-mux.8"))
        .expect("the man page is generated");
    String::from_utf8(page.bytes).unwrap()
}

/// Long option names of the daemon's command line (`listen`, `max-buffer`, ...).
fn long_options() -> Vec<String> {
    let cmd = echo_mux::cli::command();
    let mut names: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    // clap adds --help and --version when the command is built.
    names.extend(["help".to_string(), "version".to_string()]);
    names
}

#[test]
fn man_page_has_the_sections_and_every_option() {
    let page = man_page();
    assert!(
        page.lines().any(|l| l.starts_with(".TH ECHO-MUX 8 ")),
        "no .TH line"
    );
    let sections: Vec<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|s| s.trim_matches('"'))
        .collect();
    assert_eq!(
        sections,
        [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "UDP",
            "METRICS AND STATUS",
            "SIGNALS",
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
            "SEE ALSO"
        ]
    );
    let options = page
        .split(".SH OPTIONS")
        .nth(1)
        .and_then(|rest| rest.split(".SH ").next())
        .unwrap();
    for name in long_options() {
        let roff = format!("\\-\\-{}", name.replace('-', "\\-"));
        assert!(options.contains(&roff), "--{name} missing from OPTIONS");
    }
    for reference in [".BR nc (1)", ".BR systemd.socket (5)"] {
        assert!(page.contains(reference), "SEE ALSO lacks {reference}");
    }
    for needle in ["nc 127.0.0.1 50007", "SIGTERM", "SIGUSR1", "SIGHUP"] {
        assert!(page.contains(needle), "{needle} missing");
    }
}

#[test]
fn completions_offer_every_option() {
    for o in outputs()
        .iter()
        .filter(|o| o.path.starts_with("dist/completions"))
    {
        let text = String::from_utf8_lossy(&o.bytes);
        for name in long_options() {
            // bash: --max-buffer; zsh: '--max-buffer=[...]'; fish: -l max-buffer
            let found = text.contains(&format!("--{name}")) || text.contains(&format!("-l {name}"));
            assert!(found, "{}: --{name} not offered", o.path.display());
        }
    }
}

#[test]
fn man_page_renders_without_warnings() {
    // What the committed copy will be: render the generated page itself.
    let s = Scratch::with_fresh_dist("render");
    let out = std::process::Command::new("man")
        .env("MANWIDTH", "80")
        .arg("-l")
        .arg(s.file("dist/man/man8/echo-mux.8"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run man ({e}): install man-db"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "MANWIDTH=80 man -l dist/man/man8/echo-mux.8 warns (fix the fragments in xtask/man/):\n{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("EXIT STATUS"));
}
