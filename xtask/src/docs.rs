//! Checks on the documentation that unit tests run: every relative link in
//! README.md and docs/ leads to a file of the repository, and to a heading
//! of it where it names one; and nothing in the repository points outside
//! it (the design input the project was built from is not part of it).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// The Markdown files the checks read: README.md and docs/*.md.
pub fn pages(root: &Path) -> Vec<PathBuf> {
    let mut v = vec![root.join("README.md")];
    if let Ok(rd) = std::fs::read_dir(root.join("docs")) {
        let mut docs: Vec<PathBuf> =
            rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "md")).collect();
        docs.sort();
        v.extend(docs);
    }
    v
}

/// The anchor GitHub gives a heading: lower case, punctuation other than
/// `-` and `_` dropped, spaces turned into `-`.
pub fn slug(heading: &str) -> String {
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

/// The anchors of a page's headings (outside code blocks).
pub fn anchors(text: &str) -> BTreeSet<String> {
    prose_lines(text).filter_map(|l| l.strip_prefix('#')).map(|h| slug(h.trim_start_matches('#'))).collect()
}

/// The lines outside fenced code blocks.
fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |l| {
        if l.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The targets of the inline links `[text](target)` of a page, outside code
/// blocks and code spans.
pub fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose_lines(text) {
        // Code spans hold commands, not links.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

/// Every relative link of the pages that leads nowhere: "file: target (why)".
pub fn dead_links(root: &Path) -> Vec<String> {
    let mut dead = Vec::new();
    for page in pages(root) {
        let text = std::fs::read_to_string(&page).unwrap_or_default();
        let shown = page.strip_prefix(root).unwrap_or(&page).display().to_string();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() { page.clone() } else { page.parent().unwrap_or(root).join(path) };
            let Ok(file) = file.canonicalize() else {
                dead.push(format!("{shown}: {target} (no such file)"));
                continue;
            };
            if !file.starts_with(root) {
                dead.push(format!("{shown}: {target} (outside the repository)"));
                continue;
            }
            if let Some(a) = anchor {
                let has = file.extension().is_some_and(|e| e == "md")
                    && anchors(&std::fs::read_to_string(&file).unwrap_or_default()).contains(a);
                if !has {
                    dead.push(format!("{shown}: {target} (no heading #{a} there)"));
                }
            }
        }
    }
    dead
}

/// Files of the repository (tracked by git) that name a place outside it.
pub fn outside_references(root: &Path) -> Vec<String> {
    let out = std::process::Command::new("git").arg("-C").arg(root).args(["ls-files", "-z"]).output();
    let Ok(out) = out else { return vec!["git ls-files did not run".into()] };
    let mut found = Vec::new();
    for f in out.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = String::from_utf8_lossy(f).into_owned();
        let Ok(text) = std::fs::read_to_string(root.join(&rel)) else { continue };
        for (n, line) in text.lines().enumerate() {
            if line.contains(concat!("shared", "/spec")) || line.contains(concat!("../", "shared/")) {
                found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_githubs() {
        assert_eq!(slug("What `up` sets on the host"), "what-up-sets-on-the-host");
        assert_eq!(slug("dockerd's restarts and crashes"), "dockerds-restarts-and-crashes");
        assert_eq!(slug("A bare Debian 12: fresh-check"), "a-bare-debian-12-fresh-check");
    }

    #[test]
    fn links_outside_code_are_found() {
        let t = "See [a](docs/a.md#x) and `[not](a link)`.\n```\n[no](link)\n```\n[b](../b.md)";
        assert_eq!(links(t), ["docs/a.md#x", "../b.md"]);
    }

    #[test]
    fn every_relative_link_in_the_docs_leads_somewhere() {
        let root = crate::util::root();
        assert!(pages(&root).len() > 10, "README.md and docs/ pages");
        let dead = dead_links(&root);
        assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
    }

    #[test]
    fn nothing_in_the_repository_points_outside_it() {
        let found = outside_references(&crate::util::root());
        assert!(found.is_empty(), "references outside the repository:\n{}", found.join("\n"));
    }
}
