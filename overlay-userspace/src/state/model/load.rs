//! Reading and parsing a state file, each failure a [`StateError`] naming
//! the file.

use std::path::Path;

use super::*;

/// Reads and parses a state file without validating it.
pub fn read_state(path: &Path) -> Result<State, StateError> {
    parse_state(&path.display().to_string(), &read_bytes(path)?)
}

/// Reads a state file's bytes, with an error that says how to provide one.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, StateError> {
    let file = path.display().to_string();
    std::fs::read(path).map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::NotFound {
            " (pass --state FILE, set $OVERLAY_BPF_STATE, or create it with `overlay-bpf network create`)"
        } else {
            ""
        };
        StateError::one(&file, Rule::Read, "file", format!("cannot read: {e}{fix}"))
    })
}

/// Parses state file bytes; `file` names them in errors.
pub fn parse_state(file: &str, bytes: &[u8]) -> Result<State, StateError> {
    if bytes.len() > MAX_STATE_BYTES {
        return Err(StateError::one(
            file,
            Rule::TooLarge,
            "file",
            format!("is {} bytes; state files are limited to {} bytes", bytes.len(), MAX_STATE_BYTES),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        StateError::one(
            file,
            Rule::NotUtf8,
            format!("byte {}", e.valid_up_to()),
            "the file is not valid UTF-8; save it as UTF-8",
        )
    })?;
    if text.trim().is_empty() {
        return Err(StateError::one(file, Rule::Empty, "file", "is empty; it needs at least `version: 1`"));
    }
    // Fields a state file does not know are mistakes (a typo, a field of
    // another release): refused, naming where. The types themselves accept
    // them, because the store must read what a newer release wrote.
    let mut unknown: Vec<(String, String)> = Vec::new();
    let state: State = serde_ignored::deserialize(serde_yaml::Deserializer::from_str(text), |path| {
        let full = path.to_string();
        let (at, field) = full.rsplit_once('.').unwrap_or(("document", &full));
        unknown.push((at.to_string(), field.to_string()));
    })
    .map_err(|e| {
        let entry = match e.location() {
            Some(l) => format!("line {} column {}", l.line(), l.column()),
            None => "document".to_string(),
        };
        // serde_yaml appends " at line L column C"; the entry already says it.
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        StateError::one(file, Rule::Syntax, entry, msg)
    })?;
    let mut kept = |at: String, u: &Unknown| unknown.extend(u.keys().map(|k| (at.clone(), k.clone())));
    kept("cluster".into(), &state.cluster.unknown);
    state.hosts.iter().enumerate().for_each(|(i, h)| kept(format!("hosts.{i}"), &h.unknown));
    state.networks.iter().enumerate().for_each(|(i, n)| kept(format!("networks.{i}"), &n.unknown));
    state.endpoints.iter().enumerate().for_each(|(i, e)| kept(format!("endpoints.{i}"), &e.unknown));
    state.services.iter().enumerate().for_each(|(i, s)| kept(format!("services.{i}"), &s.unknown));
    if unknown.is_empty() {
        return Ok(state);
    }
    let problems = unknown
        .into_iter()
        .map(|(at, field)| Problem {
            entry: key_position(text, &field).unwrap_or_else(|| at.clone()),
            rule: Rule::Syntax,
            message: format!("unknown field `{field}` in {at}; docs/state-file.md lists the fields"),
        })
        .collect();
    Err(StateError { file: file.to_string(), problems })
}

/// Where `field` is first written as a key in `text`, as serde_yaml's errors
/// say it (`line L column C`): the parser gives no position for a field the
/// types accepted.
fn key_position(text: &str, field: &str) -> Option<String> {
    text.lines().enumerate().find_map(|(i, line)| {
        line.match_indices(field).find_map(|(at, _)| {
            let before = line[..at].trim_end();
            let starts_key = before.is_empty() || before.ends_with(['-', '{', ',']);
            let is_key = line[at + field.len()..].trim_start().starts_with(':');
            (starts_key && is_key).then(|| format!("line {} column {}", i + 1, at + 1))
        })
    })
}

#[cfg(test)]
#[test]
fn an_unknown_field_is_found_where_it_is_a_key() {
    let text = "version: 1\nhosts:\n  - {name: colour, colour: red}\n  - colour: 1\n";
    assert_eq!(key_position(text, "colour").as_deref(), Some("line 3 column 20"));
    assert_eq!(key_position("a:\n  - colour: 1\n", "colour").as_deref(), Some("line 2 column 5"));
    assert_eq!(key_position("name: colourful\n", "colour"), None);
}

/// What the validator may ask of the machine it runs on: the host layer
/// finds out (`host::capabilities()`), the model only reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The kernel can encrypt the overlay (`encrypted: true`).
    pub encryption: bool,
}

/// Why `encrypted: true` cannot be honoured here (the kernel has no WireGuard).
pub const ENCRYPTION_UNSUPPORTED: &str =
    "encrypted: true needs WireGuard in the kernel (CONFIG_WIREGUARD=y or =m) and this \
     kernel has none (`modprobe wireguard` fails): run the hosts on a kernel with WireGuard (Debian's 6.1 and 6.12 \
     have it), or remove `encrypted`";

/// Reads, parses, validates and resolves a state file.
pub fn load(path: &Path, caps: Capabilities) -> Result<Cluster, StateError> {
    let state = read_state(path)?;
    resolve(&path.display().to_string(), &state, caps)
}
