//! What an agent keeps in the store beside the state: its backends' health
//! (`agents/<host>/health`), which it also serves at `GET /health`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Health of one backend as its host's agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendHealth {
    pub up: bool,
    /// The last probe's error, if it failed.
    pub detail: Option<String>,
}

/// What an agent serves at `GET /health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub host: String,
    pub backends: BTreeMap<String, BackendHealth>,
}

impl Report {
    pub fn down(&self) -> impl Iterator<Item = &String> {
        self.backends.iter().filter(|(_, h)| !h.up).map(|(n, _)| n)
    }
}
