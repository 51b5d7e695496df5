//! The Markdown documentation (README.md, docs/, BENCHMARKS.md) as a reader sees it rendered
//! (issue 16, item 3): every table is a table, every local link leads somewhere, README
//! starts with the two commands CI runs, and the user docs speak for themselves (no SPEC
//! section numbers the reader cannot look up).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use xtask::repo_root;

/// The Markdown files a reader gets: README.md, BENCHMARKS.md and docs/*.md.
fn markdown_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn name(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The lines outside fenced code blocks, with their 1-based numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// Cells of a table row: unescaped `|` separate them (GitHub splits on them even inside
/// backticks, so a literal one must be written `\|`).
fn cells(row: &str) -> usize {
    let row = row.trim();
    let row = row.strip_prefix('|').unwrap_or(row);
    let row = row.strip_suffix('|').unwrap_or(row);
    let mut n = 1;
    let mut escaped = false;
    for c in row.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '|' if !escaped => n += 1,
            _ => escaped = false,
        }
    }
    n
}

fn is_delimiter(line: &str) -> bool {
    let t = line.trim();
    t.starts_with('|') && t.contains('-') && t.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

/// What is wrong with the tables of one file: a row that no header owns (e.g. after a blank
/// line inside a table, which ends it), a row with more cells than its header (the rest is
/// dropped when rendered), a table glued to the paragraph before or after it.
fn table_problems(text: &str) -> Vec<String> {
    let lines = prose(text);
    let mut problems = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (n, line) = lines[i];
        if !line.trim_start().starts_with('|') {
            i += 1;
            continue;
        }
        let header_ok = lines.get(i + 1).is_some_and(|(_, l)| is_delimiter(l));
        if !header_ok {
            problems.push(format!("line {n}: a table row outside a table: {line}"));
            i += 1;
            continue;
        }
        if i > 0 && !lines[i - 1].1.trim().is_empty() && lines[i - 1].0 == n - 1 {
            problems.push(format!("line {n}: no blank line before the table"));
        }
        let width = cells(line);
        let mut j = i + 1;
        while j < lines.len() && lines[j].1.trim_start().starts_with('|') {
            let (m, row) = lines[j];
            if cells(row) > width {
                problems.push(format!(
                    "line {m}: {} cells under a header of {width} (escape a literal | as \\|)",
                    cells(row)
                ));
            }
            j += 1;
        }
        if let Some((m, next)) = lines.get(j) {
            if !next.trim().is_empty() {
                problems.push(format!(
                    "line {m}: a paragraph glued to the table above (it renders as a row): {next}"
                ));
            }
        }
        i = j;
    }
    problems
}

#[test]
fn every_table_renders() {
    let mut all = Vec::new();
    for path in markdown_files() {
        for p in table_problems(&read(&path)) {
            all.push(format!("{}: {p}", name(&path)));
        }
    }
    assert!(
        all.is_empty(),
        "tables that do not render:\n{}",
        all.join("\n")
    );
}

#[test]
fn the_table_check_catches_what_broke_the_old_readme() {
    // The issue's example: a blank line inside the test table, then a paragraph glued to it.
    let broken = "text\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\nIt also runs\n";
    let problems = table_problems(broken);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("line 7: a table row outside"),
        "{problems:?}"
    );
    let glued = "| a | b |\n|---|---|\n| 1 | 2 |\nIt also runs\n";
    assert_eq!(table_problems(glued).len(), 1);
    let wide = "| a | b |\n|---|---|\n| `raw|stamp` | 2 |\n";
    assert_eq!(table_problems(wide).len(), 1);
    let fine = "| a | b |\n|---|---|\n| `raw\\|stamp` | 2 |\n| 3 |\n\nafter\n";
    assert!(table_problems(fine).is_empty());
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation but `-` and `_` gone.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .into_iter()
        .filter_map(|(_, l)| {
            let level = l.chars().take_while(|&c| c == '#').count();
            (level > 0 && l[level..].starts_with(' ')).then(|| slug(&l[level..]))
        })
        .collect()
}

/// `[text](target)` links of one line (images too), without their titles.
fn links(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        out.push(
            after[..end]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string(),
        );
        rest = &after[end..];
    }
    out
}

#[test]
fn every_local_link_leads_somewhere() {
    let mut broken = Vec::new();
    for path in markdown_files() {
        let text = read(&path);
        let dir = path.parent().unwrap();
        for (n, line) in prose(&text) {
            for target in links(line) {
                if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                    continue;
                }
                let (file, anchor) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                };
                let file = if file.is_empty() {
                    path.clone()
                } else {
                    dir.join(file)
                };
                if !file.exists() {
                    broken.push(format!("{}:{n}: {target}: no such file", name(&path)));
                    continue;
                }
                if let Some(anchor) = anchor {
                    let headings = anchors(&read(&file));
                    if !headings.contains(anchor) {
                        broken.push(format!("{}:{n}: {target}: no such heading", name(&path)));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn readme_starts_with_the_two_commands_ci_runs() {
    let readme = read(&repo_root().join("README.md"));
    // The first code block: one command runs the daemon, the other runs the tests.
    let block: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    let commands: Vec<&str> = block
        .iter()
        .map(|l| l.split(" #").next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(commands.len(), 2, "README's first code block: {block:?}");
    assert!(
        commands[0].starts_with("cargo run --release --bin echo-mux --"),
        "the first command runs the daemon: {:?}",
        commands[0]
    );
    assert_eq!(
        commands[1], "cargo test --locked --no-fail-fast",
        "the second runs the tests"
    );
    // .ci/run runs exactly that test command, on a line of its own.
    let ci = read(&repo_root().join(".ci/run"));
    assert!(
        ci.lines().any(|l| l.trim() == commands[1]),
        ".ci/run does not run `{}`",
        commands[1]
    );
    // Nothing but the title and one paragraph comes before them.
    let before: Vec<&str> = readme
        .lines()
        .take_while(|l| !l.starts_with("```"))
        .collect();
    assert!(
        before.len() <= 10,
        "{} lines before the commands",
        before.len()
    );
}

#[test]
fn user_docs_cite_no_spec_sections() {
    // README.md and docs/ must make sense on their own: the SPEC is not shipped.
    let mut found = Vec::new();
    for path in markdown_files() {
        if name(&path) == "BENCHMARKS.md" {
            continue; // a record of measurements, not user documentation
        }
        for (n, line) in read(&path).lines().enumerate() {
            if line.contains('§') || line.contains("SPEC") {
                found.push(format!("{}:{}: {line}", name(&path), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "SPEC references in user docs:\n{}",
        found.join("\n")
    );
}
