//! The layers of overlay-userspace, and who uses whom: `cargo xtask layers`
//! draws the graph of its modules, and the unit test below fails when a
//! module uses one of a higher layer, or when two modules use each other.
//!
//! A module is a folder or file under `src/` two levels deep at most
//! (`state::model`, `host::kmaps`, `agent::dns`); the binary's `main.rs` and
//! `cli/` are the module `cli`. An edge is any path the module names that
//! starts with `crate::` (`overlay_bpf::` in the binary) or `super::`, in a
//! `use` or in code, tests included.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use syn::visit::Visit;

/// The layers, lowest first. A module may use its own layer's modules and
/// those of the layers before it; within a layer, no two modules may use
/// each other.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("base", &["exit", "task"]),
    ("state", &["state"]),
    ("plan", &["plan"]),
    ("host", &["host"]),
    ("errors", &["error"]),
    ("agent", &["agent"]),
    ("front ends", &["cni", "docker", "cli"]),
];

/// Where `src/` is.
fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlay-userspace/src")
}

/// The module a source file belongs to, and the module path of the file
/// itself (for `super::`).
fn module_of(rel: &Path) -> (String, Vec<String>) {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let file = parts.pop().unwrap_or_default();
    let stem = file.trim_end_matches(".rs").to_string();
    let mut path = parts.clone();
    if stem != "mod" && stem != "lib" && stem != "main" {
        path.push(stem);
    }
    if file == "main.rs" || parts.first().map(String::as_str) == Some("cli") {
        return ("cli".into(), path);
    }
    (node(&path), path)
}

/// The node a module path falls in: its first two elements (one for the
/// base modules and the front ends, whose insides are one module).
fn node(path: &[String]) -> String {
    let Some(first) = path.first() else { return "lib".into() };
    let depth = match first.as_str() {
        "state" | "plan" | "host" | "agent" => 2,
        _ => 1,
    };
    path.iter().take(depth).cloned().collect::<Vec<_>>().join("::")
}

/// The node a path names: the longest of its first two elements that is a
/// module (`agent::Agent` is an item of `agent`, `agent::dns` a module).
fn node_in(path: &[String], modules: &BTreeSet<String>) -> String {
    let n = node(path);
    match modules.contains(&n) {
        true => n,
        false => node(&path[..1.min(path.len())]),
    }
}

/// Collects the crate paths a file names, resolved to module paths.
struct Paths {
    /// The module path of the code being visited (inline modules included).
    here: Vec<String>,
    out: BTreeSet<Vec<String>>,
}

impl Paths {
    fn add(&mut self, segs: Vec<String>) {
        let Some(first) = segs.first() else { return };
        let mut abs: Vec<String> = match first.as_str() {
            "crate" | "overlay_bpf" => segs[1..].to_vec(),
            "super" => {
                let mut base = self.here.to_vec();
                let mut rest = &segs[..];
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                base
            }
            _ => return,
        };
        // A path ends at an item, not a module: the node needs two elements at most.
        abs.truncate(3);
        self.out.insert(abs);
    }

    fn use_tree(&mut self, prefix: Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                let mut next = prefix;
                next.push(p.ident.to_string());
                self.use_tree(next, &p.tree)
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix;
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.add(full)
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix;
                full.push(r.ident.to_string());
                self.add(full)
            }
            syn::UseTree::Glob(_) => self.add(prefix),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix.clone(), t)),
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.here.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.here.pop();
    }
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(Vec::new(), &u.tree);
    }
    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.add(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // Paths inside macro calls (assert!, format!, matches!) are tokens.
        let text = m.tokens.to_string().replace(' ', "");
        for start in ["crate::", "overlay_bpf::", "super::"] {
            for (at, _) in text.match_indices(start) {
                let segs: Vec<String> = text[at..]
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or_default()
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                self.add(segs);
            }
        }
        syn::visit::visit_macro(self, m);
    }
}

/// The `.rs` files under `root`.
fn rust_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Each module and the modules it uses (itself left out).
pub fn graph() -> Result<BTreeMap<String, BTreeSet<String>>> {
    let root = src();
    let mut files = rust_files(&root)?;
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    files.retain(|f| !f.ends_with("src/lib.rs")); // it declares the modules, and tests the docs against them
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f.strip_prefix(&root).unwrap()).0).collect();
    for f in files {
        let rel = f.strip_prefix(&root)?.to_path_buf();
        let text = std::fs::read_to_string(&f)?;
        let ast = syn::parse_file(&text).with_context(|| format!("parse {}", f.display()))?;
        let (module, here) = module_of(&rel);
        let mut paths = Paths { here, out: BTreeSet::new() };
        paths.visit_file(&ast);
        let used = g.entry(module.clone()).or_default();
        for p in paths.out {
            let n = node_in(&p, &modules);
            // A child module's `super::` inside one node is no edge.
            if n != module && !n.is_empty() && layer(&n).is_some() {
                used.insert(n);
            }
        }
    }
    Ok(g)
}

/// The index of the layer `module` is in.
pub fn layer(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|(_, mods)| mods.contains(&top))
}

/// What breaks the layering: a module using one of a higher layer, or two
/// modules using each other (directly or around a cycle). A layer's `error`
/// module is the sum of its subsystems' errors, which return it: its edges
/// name their error types only, and are left out of the cycle search.
pub fn violations(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (m, used) in g {
        let Some(lm) = layer(m) else {
            out.push(format!("{m}: in no layer; add it to LAYERS in xtask/src/layers.rs"));
            continue;
        };
        for u in used {
            let lu = layer(u).expect("filtered in graph()");
            if lu > lm {
                out.push(format!("{m} ({}) uses {u} ({}), a higher layer", LAYERS[lm].0, LAYERS[lu].0));
            }
        }
    }
    // Cycles: a depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        out: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|s| *s == m) {
            let mut cycle: Vec<&str> = stack[at..].to_vec();
            cycle.push(m);
            out.push(format!("cycle: {}", cycle.join(" -> ")));
            return;
        }
        if !done.insert(m) {
            return;
        }
        stack.push(m);
        let sum_of_errors = m == "error" || m.ends_with("::error");
        for u in g.get(m).into_iter().flatten().filter(|_| !sum_of_errors) {
            visit(u, g, stack, done, out);
        }
        stack.pop();
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(m, g, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

/// (lines, what), longest first.
pub type Sizes = Vec<(usize, String)>;

/// Every function of the `.rs` files under `root` (methods and nested ones
/// included, test modules too) as (lines, `file:name`), and every file as
/// (lines, file), each longest first.
pub fn sizes(root: &Path) -> Result<(Sizes, Sizes)> {
    struct Fns<'f> {
        file: &'f str,
        out: Vec<(usize, String)>,
    }
    impl Fns<'_> {
        fn add(&mut self, name: &syn::Ident, span: proc_macro2::Span) {
            let lines = span.end().line - span.start().line + 1;
            self.out.push((lines, format!("{}:{name}", self.file)));
        }
    }
    impl<'ast> Visit<'ast> for Fns<'_> {
        fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
            self.add(&f.sig.ident, syn::spanned::Spanned::span(f));
            syn::visit::visit_item_fn(self, f);
        }
        fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
            self.add(&f.sig.ident, syn::spanned::Spanned::span(f));
            syn::visit::visit_impl_item_fn(self, f);
        }
    }
    let (mut fns, mut files) = (Vec::new(), Vec::new());
    for f in rust_files(root)? {
        let rel = f.strip_prefix(root)?.display().to_string();
        let text = std::fs::read_to_string(&f)?;
        files.push((text.lines().count(), rel.clone()));
        let ast = syn::parse_file(&text).with_context(|| format!("parse {}", f.display()))?;
        let mut v = Fns { file: &rel, out: Vec::new() };
        v.visit_file(&ast);
        fns.extend(v.out);
    }
    let longest_first = |v: &mut Vec<(usize, String)>| v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    longest_first(&mut fns);
    longest_first(&mut files);
    Ok((fns, files))
}

/// `cargo xtask layers --sizes [--src DIR]`: the `top` longest files and
/// functions of `src` (overlay-userspace's by default; another tree's, such
/// as an older checkout, to compare).
pub fn print_sizes(src_dir: Option<&Path>, top: usize) -> Result<()> {
    let root = src_dir.map(Path::to_path_buf).unwrap_or_else(src);
    let (fns, files) = sizes(&root)?;
    let total: usize = files.iter().map(|(n, _)| n).sum();
    println!("{}: {} files, {total} lines", root.display(), files.len());
    println!("longest files:");
    for (n, f) in files.iter().take(top) {
        println!("  {n:>6}  {f}");
    }
    println!("longest functions:");
    for (n, f) in fns.iter().take(top) {
        println!("  {n:>6}  {f}");
    }
    Ok(())
}

/// `cargo xtask layers`: the graph, as text (a module per line, by layer) or
/// as Graphviz (`--dot`), and what breaks the layering.
pub fn print(dot: bool) -> Result<()> {
    let g = graph()?;
    if dot {
        println!("digraph overlay_userspace {{\n  rankdir=BT; node [shape=box];");
        for (i, (name, _)) in LAYERS.iter().enumerate() {
            let members: Vec<String> = g.keys().filter(|m| layer(m) == Some(i)).map(|m| format!("\"{m}\"")).collect();
            println!("  subgraph cluster_{i} {{ label=\"{name}\"; {} }}", members.join("; "));
        }
        for (m, used) in &g {
            for u in used {
                println!("  \"{m}\" -> \"{u}\";");
            }
        }
        println!("}}");
    } else {
        for (i, (name, _)) in LAYERS.iter().enumerate().rev() {
            println!("{name}:");
            for (m, used) in g.iter().filter(|(m, _)| layer(m) == Some(i)) {
                println!("  {m:<18} uses {}", used.iter().cloned().collect::<Vec<_>>().join(", "));
            }
        }
    }
    let bad = violations(&g);
    if !bad.is_empty() {
        anyhow::bail!("{} layering violations:\n{}", bad.len(), bad.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_each_function_and_file_by_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let code = "fn one() {}\n\nstruct S;\nimpl S {\n    fn three(&self) {\n        let _ = 1;\n    }\n}\n";
        std::fs::write(dir.path().join("a.rs"), code).unwrap();
        let (fns, files) = sizes(dir.path()).unwrap();
        assert_eq!(fns, [(3, "a.rs:three".to_string()), (1, "a.rs:one".to_string())]);
        assert_eq!(files, [(8, "a.rs".to_string())]);
    }

    #[test]
    fn each_layer_uses_only_those_below() {
        let g = graph().unwrap();
        // The graph sees the modules it should.
        for m in ["state::model", "state::store", "plan::reconcile", "host::kmaps", "agent::dns", "cli", "docker"] {
            assert!(g.contains_key(m), "no module {m} in {:?}", g.keys());
        }
        assert!(g["cli"].contains("state::ops"), "{:?}", g["cli"]);
        let bad = violations(&g);
        assert!(bad.is_empty(), "{} layering violations:\n{}", bad.len(), bad.join("\n"));
    }

    #[test]
    fn a_wrong_way_edge_and_a_cycle_are_found() {
        let edges = |list: &[(&str, &[&str])]| -> BTreeMap<String, BTreeSet<String>> {
            list.iter().map(|(m, u)| (m.to_string(), u.iter().map(|s| s.to_string()).collect())).collect()
        };
        let g = edges(&[("state::model", &["host::netdev"]), ("host::netdev", &["state::model"])]);
        assert_eq!(
            violations(&g),
            [
                "state::model (state) uses host::netdev (host), a higher layer",
                "cycle: host::netdev -> state::model -> host::netdev",
            ]
        );
        let g = edges(&[("agent::dns", &["agent::health"]), ("agent::health", &[]), ("nowhere", &[])]);
        assert_eq!(violations(&g), ["nowhere: in no layer; add it to LAYERS in xtask/src/layers.rs"]);
    }

    #[test]
    fn modules_are_named_by_their_first_two_folders() {
        assert_eq!(module_of(Path::new("state/model/resolve.rs")).0, "state::model");
        assert_eq!(module_of(Path::new("agent/mod.rs")), ("agent".into(), vec!["agent".into()]));
        assert_eq!(module_of(Path::new("docker/api.rs")).0, "docker");
        assert_eq!(module_of(Path::new("cli/up.rs")).0, "cli");
        assert_eq!(module_of(Path::new("error.rs")).0, "error");
    }
}
