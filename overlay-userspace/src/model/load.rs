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
    serde_yaml::from_str::<State>(text).map_err(|e| {
        let entry = match e.location() {
            Some(l) => format!("line {} column {}", l.line(), l.column()),
            None => "document".to_string(),
        };
        // serde_yaml appends " at line L column C"; the entry already says it.
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        StateError::one(file, Rule::Syntax, entry, msg)
    })
}

/// What the validator may ask of the machine it runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capabilities {
    /// The kernel can encrypt the overlay (`encrypted: true`).
    pub encryption: bool,
}

impl Capabilities {
    /// What this machine's kernel can do (asked once per process).
    pub fn here() -> Capabilities {
        Capabilities { encryption: crate::wireguard::kernel_support() }
    }
}

/// Why `encrypted: true` cannot be honoured here (the kernel has no WireGuard).
pub const ENCRYPTION_UNSUPPORTED: &str = crate::wireguard::UNSUPPORTED;

/// Reads, parses, validates and resolves a state file.
pub fn load(path: &Path, caps: Capabilities) -> Result<Cluster, StateError> {
    let state = read_state(path)?;
    resolve(&path.display().to_string(), &state, caps)
}
