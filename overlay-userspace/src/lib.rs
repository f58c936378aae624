//! overlay-bpf: Docker-style multi-host overlay networking with the data path
//! in eBPF. The binary (`overlay-bpf`) is a thin CLI over this library.

// The layers, each using only those listed before it (the test
// `layers::each_layer_uses_only_those_below` holds this; docs/design.md
// draws them).
pub mod exit;
pub mod task;

pub mod state;

pub mod plan;

pub mod host;

pub mod error;

pub mod agent;

// Front ends: they speak their protocol and call the layers above.
pub mod cni;
#[cfg(feature = "docker")]
pub mod docker;

/// The tables docs/ shows are the code's own: each generated table there
/// (between `<!-- NAME: begin -->` and `<!-- NAME: end -->`) is equal to what
/// the code generates, so docs and code cannot drift.
#[cfg(test)]
mod docs_tables {
    /// The table `name` of `doc` (the page `file`) is `want`.
    fn same_table(doc: &str, file: &str, name: &str, want: &str) {
        let (begin, end) = (format!("<!-- {name}: begin -->\n"), format!("<!-- {name}: end -->"));
        let start = doc.find(&begin).unwrap_or_else(|| panic!("{file}: no {begin:?} marker")) + begin.len();
        let stop = doc[start..].find(&end).unwrap_or_else(|| panic!("{file}: no {end:?} marker")) + start;
        assert!(
            doc[start..stop] == *want,
            "{file}'s table of {name} is out of date; put this between its markers:\n{want}"
        );
    }

    #[test]
    fn the_data_path_page_lists_every_reason_as_the_table_has_it() {
        let doc = include_str!("../../docs/data-path.md");
        same_table(doc, "docs/data-path.md", "reasons", &crate::agent::status::reasons_markdown());
    }

    /// The example at the top of docs/state-file.md is a state every rule
    /// accepts, without a warning.
    #[test]
    fn the_state_page_example_is_valid() {
        let doc = include_str!("../../docs/state-file.md");
        let start = doc.find("```yaml\n").expect("the example") + "```yaml\n".len();
        let example = &doc[start..start + doc[start..].find("```").expect("its end")];
        let state = crate::state::model::parse_state("docs/state-file.md", example.as_bytes()).unwrap();
        let c =
            crate::state::model::resolve("docs/state-file.md", &state, crate::state::model::Capabilities::default())
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!((c.hosts.len(), c.networks.len(), c.endpoints.len()), (1, 3, 1));
    }

    #[test]
    fn the_state_page_lists_every_rule_as_the_model_has_it() {
        let doc = include_str!("../../docs/state-file.md");
        same_table(doc, "docs/state-file.md", "rules", &crate::state::model::rules_markdown());
    }
}
