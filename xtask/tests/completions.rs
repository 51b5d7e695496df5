//! The shell completions offer the values of the options that take a fixed set (`--backend`,
//! `--mode`, `--workers auto`, and any other option whose clap definition names its values),
//! not file names (issue 16, item 5).

use std::path::{Path, PathBuf};
use std::process::Command;

use xtask::outputs;

/// Options whose values the completions must offer, with those values. Taken from the clap
/// definition (`echo_mux::cli::Choices`), which must name at least the fixed sets below.
fn fixed_sets() -> Vec<(String, Vec<String>)> {
    let cmd = echo_mux::cli::command();
    let sets: Vec<(String, Vec<String>)> = cmd
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            let values: Vec<String> = a
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            (!values.is_empty()).then_some((long, values))
        })
        .collect();
    let want: &[(&str, &[&str])] = &[
        ("backend", &["epoll", "poll", "select", "auto"]),
        ("mode", &["raw", "stamp"]),
        ("workers", &["auto"]),
    ];
    for (name, values) in want {
        let found = sets.iter().find(|(n, _)| n == name);
        assert_eq!(
            found.map(|(_, v)| v.clone()),
            Some(values.iter().map(|v| v.to_string()).collect()),
            "--{name} must name its values for the completions (value_parser = a cli::Choices)"
        );
    }
    // --log-format takes a fixed set where it exists.
    if cmd
        .get_arguments()
        .any(|a| a.get_long() == Some("log-format"))
    {
        assert!(
            sets.iter().any(|(n, _)| n == "log-format"),
            "--log-format must name its values"
        );
    }
    sets
}

fn completion(file: &str) -> String {
    let o = outputs()
        .into_iter()
        .find(|o| o.path.ends_with(file))
        .unwrap_or_else(|| panic!("{file} is generated"));
    String::from_utf8(o.bytes).unwrap()
}

#[test]
fn generated_completions_hold_the_values() {
    let bash = completion("echo-mux.bash");
    let zsh = completion("_echo-mux");
    let fish = completion("echo-mux.fish");
    for (name, values) in fixed_sets() {
        // bash: the case for `--backend)` answers with `compgen -W "epoll poll select auto"`.
        let case = bash
            .split(&format!("\n                --{name})\n"))
            .nth(1)
            .and_then(|rest| rest.split(";;").next())
            .unwrap_or_else(|| panic!("bash: no case for --{name}"));
        let words = format!("compgen -W \"{}\"", values.join(" "));
        assert!(case.contains(&words), "bash: --{name} offers {case:?}");
        assert!(
            !case.contains("compgen -f"),
            "bash: --{name} offers file names"
        );

        // zsh: '--backend=[help]:NAME:((epoll\:"..." ...))'.
        let spec = zsh
            .lines()
            .find(|l| l.starts_with(&format!("'--{name}=[")))
            .unwrap_or_else(|| panic!("zsh: no spec for --{name}"));
        let at = zsh.find(spec).unwrap();
        let rest = &zsh[at..];
        let spec = &rest[..rest.find("' \\").unwrap_or(rest.len())];
        for v in &values {
            assert!(
                spec.contains(&format!("(({v}\\:")) || spec.contains(&format!("\n{v}\\:")),
                "zsh: --{name} does not offer {v}: {spec}"
            );
        }
        assert!(
            !spec.contains("_default") && !spec.contains("_files"),
            "zsh: --{name} offers files: {spec}"
        );

        // fish: `complete -c echo-mux ... -l backend ... -r -f -a "epoll\t'...'` (-f: no files).
        let line = fish
            .lines()
            .find(|l| l.contains(&format!(" -l {name} ")))
            .unwrap_or_else(|| panic!("fish: no line for --{name}"));
        assert!(
            line.contains(" -r -f -a \""),
            "fish: --{name} may offer files: {line}"
        );
        let at = fish.find(line).unwrap();
        let rest = &fish[at..];
        let end = rest.find("\"\n").unwrap_or(rest.len());
        for v in &values {
            assert!(
                rest[..end].contains(&format!("{v}\\t")),
                "fish: --{name} does not offer {v}"
            );
        }
    }
}

/// A scratch directory holding the generated completions and a few files that a file-name
/// completion would offer (`epoll.txt`, `stamp-notes`, `zzz`).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xtask-complete-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for o in outputs() {
            if o.path.starts_with("dist/completions") {
                std::fs::write(dir.join(o.path.file_name().unwrap()), &o.bytes).unwrap();
            }
        }
        for decoy in ["epoll.txt", "stamp-notes", "zzz"] {
            std::fs::write(dir.join(decoy), "").unwrap();
        }
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Option<String> {
    let out = match Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env("XDG_DATA_HOME", dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// What bash offers for `echo-mux <words...> <cur>`, with the generated completion loaded
/// as bash-completion would (the function `complete -p echo-mux` names).
fn bash_offers(s: &Scratch, words: &[&str], cur: &str) -> Vec<String> {
    let mut line = format!("echo-mux {}", words.join(" "));
    line.push(' ');
    line.push_str(cur);
    let all: Vec<String> = std::iter::once("echo-mux")
        .chain(words.iter().copied())
        .chain([cur])
        .map(|w| format!("'{w}'"))
        .collect();
    let prev = words.last().copied().unwrap_or("echo-mux");
    let script = format!(
        "source {file}\n\
         fn=$(complete -p echo-mux | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p')\n\
         COMP_WORDS=({all}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n\
         \"$fn\" echo-mux '{cur}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file = s.path("echo-mux.bash").display(),
        all = all.join(" "),
        cword = words.len() + 1,
    );
    let out = run(&s.0, "bash", &["-c", &script]).expect("bash is installed");
    out.lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn bash_completes_values_not_file_names() {
    let s = Scratch::new("bash");
    for (name, values) in fixed_sets() {
        let offered = bash_offers(&s, &[&format!("--{name}")], "");
        assert_eq!(offered, values, "bash: echo-mux --{name} <TAB>");
    }
    assert_eq!(bash_offers(&s, &["--mode"], "s"), ["stamp"]);
    assert_eq!(bash_offers(&s, &["-b"], "p"), ["poll"]);
    assert_eq!(bash_offers(&s, &["--workers"], ""), ["auto"]);
    // An option still completes as before.
    assert_eq!(bash_offers(&s, &[], "--max-b"), ["--max-buffer"]);
}

#[test]
fn fish_completes_values_not_file_names() {
    let s = Scratch::new("fish");
    let file = s.path("echo-mux.fish");
    for (name, values) in fixed_sets() {
        let script = format!(
            "source {}; complete -C 'echo-mux --{name} '",
            file.display()
        );
        let Some(out) = run(&s.0, "fish", &["--no-config", "-c", &script]) else {
            // scripts/check-deb.sh (CI) runs the same check where fish is installed.
            eprintln!("fish is not installed: live fish check skipped (apt-get install fish)");
            return;
        };
        let mut offered: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
        offered.sort();
        let mut want: Vec<&str> = values.iter().map(String::as_str).collect();
        want.sort();
        assert_eq!(offered, want, "fish: echo-mux --{name} <TAB>:\n{out}");
    }
}

#[test]
fn zsh_completion_is_valid_zsh() {
    let s = Scratch::new("zsh");
    let file = s.path("_echo-mux");
    if run(&s.0, "zsh", &["-n", file.to_str().unwrap()]).is_none() {
        eprintln!("zsh is not installed: zsh -n skipped (apt-get install zsh)");
    }
}
