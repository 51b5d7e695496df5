//! The files generated from the daemon's clap definition (`echo_mux::cli::command()`): the man
//! page `echo-mux(8)` and the bash, zsh and fish completions. They are committed under `dist/`
//! (cargo-deb packages them from there); `cargo xtask dist` rewrites them, and
//! `cargo xtask check` (run by `cargo test` too) fails when the committed copies are stale.
//!
//! The man page is clap_mangen's NAME, SYNOPSIS, DESCRIPTION and OPTIONS, followed by the
//! hand-written roff fragments in `xtask/man/` (edit those, never `dist/man/man8/echo-mux.8`).

use std::io;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// The command that rewrites every generated file; printed when a copy is stale.
pub const REGENERATE: &str = "cargo xtask dist";

/// Where the generated files live, relative to the repository root.
pub const DIST: &str = "dist";

/// Hand-written man page text, in this order after clap's OPTIONS. The first fragment goes on
/// with DESCRIPTION's text, so it is placed before OPTIONS.
const DESCRIPTION: &str = include_str!("../man/description.roff");
const AFTER_OPTIONS: [&str; 8] = [
    include_str!("../man/udp.roff"),
    include_str!("../man/metrics.roff"),
    include_str!("../man/signals.roff"),
    include_str!("../man/exit-status.roff"),
    include_str!("../man/environment.roff"),
    include_str!("../man/files.roff"),
    include_str!("../man/examples.roff"),
    include_str!("../man/see-also.roff"),
];

/// One generated file: its path below the repository root and its bytes.
pub struct Output {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// The repository root: the parent of this crate, or `XTASK_ROOT` when set (the tests run the
/// binary against a scratch copy).
pub fn repo_root() -> PathBuf {
    match std::env::var_os("XTASK_ROOT") {
        Some(root) => PathBuf::from(root),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask/ has a parent")
            .to_path_buf(),
    }
}

/// Every generated file, rendered in memory.
pub fn outputs() -> Vec<Output> {
    let dist = Path::new(DIST);
    let mut out = vec![Output {
        path: dist.join("man/man8/echo-mux.8"),
        bytes: man_page().expect("rendering into a Vec cannot fail"),
    }];
    for (shell, file) in [
        (Shell::Bash, "echo-mux.bash"),
        (Shell::Zsh, "_echo-mux"),
        (Shell::Fish, "echo-mux.fish"),
    ] {
        let mut bytes = Vec::new();
        clap_complete::generate(shell, &mut echo_mux::cli::command(), "echo-mux", &mut bytes);
        out.push(Output {
            path: dist.join("completions").join(file),
            bytes,
        });
    }
    out
}

/// echo-mux(8): clap_mangen's sections, then the fragments kept in `xtask/man/`.
pub fn man_page() -> io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(echo_mux::cli::command())
        .title("ECHO-MUX")
        .section("8")
        .manual("System Manager's Manual");
    let mut w = Vec::new();
    man.render_title(&mut w)?;
    man.render_name_section(&mut w)?;
    man.render_synopsis_section(&mut w)?;
    man.render_description_section(&mut w)?;
    w.extend_from_slice(DESCRIPTION.as_bytes());
    man.render_options_section(&mut w)?;
    for fragment in AFTER_OPTIONS {
        w.extend_from_slice(fragment.as_bytes());
    }
    Ok(w)
}

/// Write every generated file below `root`, and remove files under `root/dist` that are no
/// longer generated. Returns the paths written.
pub fn write_all(root: &Path) -> io::Result<Vec<PathBuf>> {
    let outputs = outputs();
    for extra in strays(root, &outputs)? {
        std::fs::remove_file(root.join(&extra))?;
    }
    let mut written = Vec::new();
    for o in outputs {
        let path = root.join(&o.path);
        std::fs::create_dir_all(path.parent().expect("dist paths have a parent"))?;
        std::fs::write(&path, &o.bytes)?;
        written.push(o.path);
    }
    Ok(written)
}

/// What differs between the committed `dist/` below `root` and a fresh rendering: one line per
/// file that is missing, different, or no longer generated. Empty when everything is current.
pub fn stale(root: &Path) -> io::Result<Vec<String>> {
    let outputs = outputs();
    let mut problems = Vec::new();
    for o in &outputs {
        match std::fs::read(root.join(&o.path)) {
            Ok(bytes) if bytes == o.bytes => {}
            Ok(bytes) => problems.push(format!(
                "{} differs from the generated copy{}",
                o.path.display(),
                first_difference(&bytes, &o.bytes)
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                problems.push(format!("{} is missing", o.path.display()))
            }
            Err(e) => return Err(e),
        }
    }
    for extra in strays(root, &outputs)? {
        problems.push(format!("{} is no longer generated", extra.display()));
    }
    Ok(problems)
}

/// ` (line N: committed "..." / generated "...")` for the first line that differs.
fn first_difference(committed: &[u8], generated: &[u8]) -> String {
    let (a, b) = (
        String::from_utf8_lossy(committed),
        String::from_utf8_lossy(generated),
    );
    let (mut la, mut lb) = (a.lines(), b.lines());
    for n in 1.. {
        match (la.next(), lb.next()) {
            (None, None) => return String::new(),
            (x, y) if x == y => continue,
            (x, y) => {
                return format!(
                    " (line {n}: committed {:?} / generated {:?})",
                    x.unwrap_or("<end of file>"),
                    y.unwrap_or("<end of file>")
                )
            }
        }
    }
    unreachable!("the loop above only ends by returning")
}

/// Files under `root/dist` that `outputs` does not name (relative to `root`).
fn strays(root: &Path, outputs: &[Output]) -> io::Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) -> io::Result<()> {
        let entries = match std::fs::read_dir(root.join(dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let rel = dir.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                walk(root, &rel, found)?;
            } else {
                found.push(rel);
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    walk(root, Path::new(DIST), &mut found)?;
    found.retain(|p| !outputs.iter().any(|o| &o.path == p));
    found.sort();
    Ok(found)
}
