//! `cargo xtask dist`: regenerate the man page and the completions under `dist/`.
//! `cargo xtask check`: exit 1, naming each file, when the committed copies are stale.

use std::process::ExitCode;

use echo_mux::error::Plain;

fn main() -> ExitCode {
    let root = xtask::repo_root();
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("dist") => match xtask::write_all(&root) {
            Ok(written) => {
                for p in written {
                    println!("wrote {}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xtask: cannot write {}/: {}", xtask::DIST, Plain(&e));
                ExitCode::FAILURE
            }
        },
        Some("check") => match xtask::stale(&root) {
            Ok(problems) if problems.is_empty() => {
                println!("{}/ is up to date", xtask::DIST);
                ExitCode::SUCCESS
            }
            Ok(problems) => {
                for p in problems {
                    eprintln!("xtask: {p}");
                }
                eprintln!(
                    "xtask: regenerate with `{}` and commit the result",
                    xtask::REGENERATE
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("xtask: cannot read {}/: {}", xtask::DIST, Plain(&e));
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: cargo xtask dist|check");
            eprintln!(
                "  dist   regenerate dist/ (man page, bash/zsh/fish completions) from src/cli.rs"
            );
            eprintln!("  check  exit 1 if the committed dist/ differs from a fresh rendering");
            ExitCode::from(2)
        }
    }
}
