//! The docs point at things that exist, and quote the figures that were
//! measured.
//!
//! A student follows the links and the file names in `README.md` and
//! `docs/`; a reader compares the README's performance sentence with the
//! measurements. Both go stale silently when code moves or a benchmark is
//! re-run, so this test reads them:
//!
//! * every relative link resolves (to a file or folder of this repository,
//!   and a `#fragment` into a Markdown file to one of its headings);
//! * every backticked repository path (`raft-core/src/node.rs`, or a path
//!   relative to a crate such as `storage/log_store.rs`) names a file or
//!   folder that exists, and nothing points outside the repository;
//! * the README's performance summary is the one in `docs/benchmarks.md`,
//!   word for word (the block between `<!-- summary -->` and
//!   `<!-- /summary -->` in each).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The Markdown files a reader is pointed at.
fn docs() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every file and folder of the repository, relative to its root, with `/`
/// separators (folders end in `/`), leaving out build output and git.
fn repository_paths() -> BTreeSet<String> {
    let root = root();
    let mut paths = BTreeSet::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if name == "target" || name == ".git" {
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            if path.is_dir() {
                paths.insert(format!("{rel}/"));
                dirs.push(path);
            } else {
                paths.insert(rel);
            }
        }
    }
    paths
}

/// The lines of `text` outside fenced code blocks, with their numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// The targets of the Markdown links `[text](target)` in `line`.
fn link_targets(line: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        targets.push(after[..end].split_whitespace().next().unwrap_or(""));
        rest = &after[end..];
    }
    targets
}

/// The inline code spans of `line`.
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped,
/// spaces turned into hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings.
fn anchors(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    prose_lines(&text)
        .into_iter()
        .filter_map(|(_, l)| l.strip_prefix('#'))
        .map(|h| slug(h.trim_start_matches('#')))
        .collect()
}

/// Whether a code span looks like a path into this repository: it names a
/// top-level folder, or ends in a source or document extension.
fn looks_like_repository_path(span: &str) -> bool {
    const TOP: [&str; 7] = ["raft-core/", "kv-app/", "jepsen/", "maelstrom/", "docs/", "scripts/", ".ci/"];
    const EXTENSIONS: [&str; 6] = [".rs", ".md", ".sh", ".py", ".toml", ".svg"];
    let plain = !span.contains(char::is_whitespace) && !span.contains(['<', '>', '*', '$', '{', '=', ':']);
    plain
        && !span.starts_with('/')
        && (TOP.iter().any(|t| span.starts_with(t))
            || (span.contains('/') && EXTENSIONS.iter().any(|e| span.ends_with(e))))
}

#[test]
fn every_relative_link_and_repository_path_resolves() {
    let root = root();
    let paths = repository_paths();
    let mut broken = Vec::new();
    for file in docs() {
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap();
        let shown = file.strip_prefix(&root).unwrap().display().to_string();
        for (n, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, fragment) = match target.split_once('#') {
                    Some((p, f)) => (p, Some(f)),
                    None => (target, None),
                };
                let resolved = if path.is_empty() { file.clone() } else { dir.join(path) };
                let inside =
                    resolved.canonicalize().ok().filter(|p| p.starts_with(root.canonicalize().unwrap()));
                match inside {
                    None => broken
                        .push(format!("{shown}:{n}: link {target} does not resolve inside the repository")),
                    Some(p) => {
                        let anchor_ok = match fragment {
                            Some(f) if p.extension().is_some_and(|e| e == "md") => anchors(&p).contains(f),
                            _ => true,
                        };
                        if !anchor_ok {
                            broken.push(format!("{shown}:{n}: link {target}: no such heading"));
                        }
                    }
                }
            }
            for span in code_spans(line) {
                if span.starts_with("../")
                    && !dir.join(span).canonicalize().is_ok_and(|p| p.starts_with(&root))
                {
                    broken.push(format!("{shown}:{n}: `{span}` points outside the repository"));
                    continue;
                }
                if !looks_like_repository_path(span) {
                    continue;
                }
                let span = span.trim_start_matches("./");
                let exists = paths.contains(span)
                    || paths.contains(&format!("{span}/"))
                    || dir.join(span).exists()
                    // A path relative to a crate (`storage/db.rs`): the end of a real one.
                    || paths.iter().any(|p| p.ends_with(&format!("/{span}")) || p.ends_with(&format!("/{span}/")));
                if !exists {
                    broken.push(format!("{shown}:{n}: `{span}` names no file or folder of the repository"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{} broken references:\n{}", broken.len(), broken.join("\n"));
}

/// The text between `<!-- summary -->` and `<!-- /summary -->`, with line
/// breaks and runs of spaces folded, and links to the benchmarks page
/// written the same way from both files.
fn summary(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let start = text
        .find("<!-- summary -->")
        .unwrap_or_else(|| panic!("{}: no <!-- summary --> block", file.display()));
    let end = text
        .find("<!-- /summary -->")
        .unwrap_or_else(|| panic!("{}: no <!-- /summary --> marker", file.display()));
    let block = &text[start + "<!-- summary -->".len()..end];
    block.replace("(docs/benchmarks.md", "(benchmarks.md").split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_readme_quotes_the_benchmark_summary_word_for_word() {
    let root = root();
    let readme = summary(&root.join("README.md"));
    let measured = summary(&root.join("docs/benchmarks.md"));
    assert!(readme.contains('×'), "the summary quotes no ratio: {readme}");
    assert_eq!(readme, measured, "README.md's performance summary differs from docs/benchmarks.md's");
}

#[test]
fn the_checks_catch_what_they_are_for() {
    // A path that does not exist, one outside the repository, and a heading
    // that is not there would each be reported.
    assert!(looks_like_repository_path("raft-core/src/no_such_file.rs"));
    assert!(looks_like_repository_path("storage/log_store.rs"));
    assert!(!looks_like_repository_path("/v1/kv/users/42"));
    assert!(!looks_like_repository_path("store/register/<time>/"));
    let paths = repository_paths();
    assert!(paths.contains("raft-core/src/lib.rs") && !paths.contains("raft-core/src/no_such_file.rs"));
    assert_eq!(link_targets("see [a](b.md#c) and [d](../e/)"), vec!["b.md#c", "../e/"]);
    assert_eq!(code_spans("a `x/y.rs` b `z`"), vec!["x/y.rs", "z"]);
    assert_eq!(slug("The transport: frames — and `TLS`"), "the-transport-frames--and-tls");
    assert!(anchors(&root().join("docs/architecture/raft-core.md")).contains("the-transport"));
}
