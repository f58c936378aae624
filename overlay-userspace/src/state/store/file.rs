//! The state file as a store: read whole, edited in memory, validated and
//! written back atomically.

use std::path::Path;

use crate::state::{
    error::{Error, Result},
    model::{self, Capabilities, State, StateError},
};

/// Reads a state file for editing; a missing file starts an empty state.
pub fn read_for_edit(path: &Path) -> Result<State, StateError> {
    if !path.exists() {
        return Ok(State::empty());
    }
    model::read_state(path)
}

/// Validates and writes the state atomically (temp file + rename): a state that
/// breaks a rule is never written.
pub fn write_state(path: &Path, state: &State, caps: Capabilities) -> Result<()> {
    model::resolve(&path.display().to_string(), state, caps)?;
    let text = serde_yaml::to_string(state)
        .map_err(|e| Error::io(format!("write {}", path.display()))(std::io::Error::other(e)))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    }
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).map_err(Error::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(Error::io(format!("rename {} to {}", tmp.display(), path.display())))?;
    Ok(())
}
