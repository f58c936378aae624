//! Where the cluster state lives (docs/etcd.md): the YAML file (the default) or
//! an etcd v3 cluster, one key per object (`layout`). Every command reads the
//! state through a [`Store`] and changes it with [`Store::edit`], which on
//! etcd is one compare-and-swap transaction, retried when another writer got
//! there first.

use std::{path::PathBuf, str::FromStr};

use crate::{
    state::error::{Error, Result},
    state::model::{self, Capabilities, EndpointSpec, State},
};

mod etcd;
pub mod file;
pub mod layout;
pub mod report;

pub use etcd::{AgentView, Agents, EtcdStore, StoreStats};

/// The default etcd client port, when an endpoint names none.
pub const ETCD_PORT: u16 = 2379;

/// A `--store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file:///etc/overlay-bpf/cluster.yaml`, or a plain path.
    File(PathBuf),
    /// `etcd://h1:2379,h2:2379[/prefix]`.
    Etcd { endpoints: Vec<String>, prefix: String },
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<StoreUrl, StoreError> {
        let bad = |why: &str| StoreError::BadUrl { url: s.to_string(), why: why.to_string() };
        if let Some(path) = s.strip_prefix("file://") {
            if path.is_empty() {
                return Err(bad("names no file"));
            }
            return Ok(StoreUrl::File(PathBuf::from(path)));
        }
        let Some(rest) = s.strip_prefix("etcd://") else {
            if let Some((scheme, _)) = s.split_once("://") {
                return Err(bad(&format!(
                    "the scheme {scheme}:// is not a store; use file://PATH or etcd://HOST:PORT"
                )));
            }
            if s.is_empty() {
                return Err(bad("is empty"));
            }
            return Ok(StoreUrl::File(PathBuf::from(s)));
        };
        let (hosts, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, layout::DEFAULT_PREFIX),
        };
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(bad("names an empty prefix; leave it out for /overlay-bpf"));
        }
        let mut endpoints = Vec::new();
        for h in hosts.split(',') {
            if h.is_empty() {
                return Err(bad("names no etcd endpoint (etcd://HOST:PORT[,HOST:PORT...][/prefix])"));
            }
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) => {
                    let port: u16 = port.parse().map_err(|_| bad(&format!("{port:?} in {h:?} is not a port")))?;
                    (host, port)
                }
                None => (h, ETCD_PORT),
            };
            if host.is_empty() {
                return Err(bad(&format!("{h:?} names no host")));
            }
            endpoints.push(format!("{host}:{port}"));
        }
        Ok(StoreUrl::Etcd { endpoints, prefix: prefix.to_string() })
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::File(p) => write!(f, "{}", p.display()),
            StoreUrl::Etcd { endpoints, prefix } => write!(f, "etcd://{}{prefix}", endpoints.join(",")),
        }
    }
}

/// TLS to etcd (`--etcd-cacert`, `--etcd-cert`, `--etcd-key`).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl EtcdTls {
    pub fn enabled(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("--store {url:?} {why}")]
    BadUrl { url: String, why: String },
    #[error("give the state with --state FILE or --store URL, not both ({state} and {store})")]
    BothGiven { state: String, store: String },
    #[error(
        "cannot reach etcd at {endpoints}: {why} (is etcd running there? start one with `etcd`, or check --store)"
    )]
    Unreachable { endpoints: String, why: String },
    #[error("etcd at {endpoints}: {op}: {source}")]
    Etcd { endpoints: String, op: &'static str, source: etcd_client::Error },
    #[error(
        "etcd at {endpoints} refused the change as too big ({source}); raise etcd's --max-txn-ops and \
         --max-request-bytes, which bound one transaction"
    )]
    TooBig { endpoints: String, source: etcd_client::Error },
    #[error("{what} {path}: {source}")]
    Tls { what: &'static str, path: String, source: std::io::Error },
    #[error("--etcd-cert and --etcd-key go together: {given} given alone")]
    TlsPair { given: &'static str },
    #[error("the store {store} holds no cluster yet; load one with `overlay-bpf store import FILE --store {store}`")]
    Empty { store: String },
    #[error(
        "the store {store} already holds a cluster ({summary}); `store import --replace` overwrites it, or export it \
         first with `store export`"
    )]
    NotEmpty { store: String, summary: String },
    #[error("the store {store} does not follow its layout: {source}")]
    Layout { store: String, source: layout::LayoutError },
    #[error("the store {store} kept changing under this command ({tries} tries); try again")]
    Contended { store: String, tries: u32 },
}

impl StoreError {
    pub fn exit_code(&self) -> i32 {
        use crate::exit::{SYSTEM as EXIT_SYSTEM, USER as EXIT_USER};
        match self {
            StoreError::BadUrl { .. }
            | StoreError::BothGiven { .. }
            | StoreError::Tls { .. }
            | StoreError::TlsPair { .. }
            | StoreError::Empty { .. }
            | StoreError::NotEmpty { .. }
            | StoreError::Contended { .. } => EXIT_USER,
            StoreError::Unreachable { .. }
            | StoreError::Etcd { .. }
            | StoreError::TooBig { .. }
            | StoreError::Layout { .. } => EXIT_SYSTEM,
        }
    }
}

/// Which store a command uses: `--state` and `--store` are one option, and a
/// flag wins over the environment (`$OVERLAY_BPF_STATE`, `$OVERLAY_BPF_STORE`).
pub fn choose(
    state_flag: Option<PathBuf>,
    store_flag: Option<String>,
    state_env: Option<String>,
    store_env: Option<String>,
) -> Result<StoreUrl, StoreError> {
    let both = |state: String, store: String| StoreError::BothGiven { state, store };
    match (state_flag, store_flag) {
        (Some(p), Some(u)) => Err(both(p.display().to_string(), u)),
        (Some(p), None) => Ok(StoreUrl::File(p)),
        (None, Some(u)) => u.parse(),
        (None, None) => match (state_env.filter(|s| !s.is_empty()), store_env.filter(|s| !s.is_empty())) {
            (Some(p), Some(u)) => Err(both(format!("$OVERLAY_BPF_STATE={p}"), format!("$OVERLAY_BPF_STORE={u}"))),
            (Some(p), None) => Ok(StoreUrl::File(PathBuf::from(p))),
            (None, Some(u)) => u.parse(),
            (None, None) => Ok(StoreUrl::File(PathBuf::from(model::DEFAULT_STATE_FILE))),
        },
    }
}

/// An open store, and what the machine it runs on can do (its rules
/// depend on it: encrypted networks need WireGuard).
pub struct Store {
    backend: Backend,
    caps: Capabilities,
}

/// Where the state lives.
pub enum Backend {
    File(PathBuf),
    Etcd(Box<EtcdStore>),
}

/// How a state is summed up in messages.
pub fn summary(s: &State) -> String {
    format!(
        "{} hosts, {} networks, {} endpoints, {} services",
        s.hosts.len(),
        s.networks.len(),
        s.endpoints.len(),
        s.services.len()
    )
}

/// What changed in a store, as a watcher hears of it.
#[derive(Debug)]
pub enum Change {
    /// These keys, each with its value before and after (`None`: absent).
    Objects(Vec<ObjectChange>),
    /// Unknown: read the whole store again.
    Resync,
}

/// One endpoint's change, as the store reports it: its value before and
/// after (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointChange {
    pub old: Option<EndpointSpec>,
    pub new: Option<EndpointSpec>,
}

/// One key's change.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectChange {
    pub key: String,
    pub old: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
}

impl Store {
    /// Opens the store `url` names; etcd is connected to now.
    pub async fn open(url: &StoreUrl, tls: &EtcdTls, caps: Capabilities) -> Result<Store> {
        let backend = match url {
            StoreUrl::File(p) => Backend::File(p.clone()),
            StoreUrl::Etcd { endpoints, prefix } => {
                Backend::Etcd(Box::new(EtcdStore::connect(endpoints, prefix, tls, caps).await?))
            }
        };
        Ok(Store { backend, caps })
    }

    /// The state file, for a file store.
    pub fn file(&self) -> Option<&std::path::Path> {
        match &self.backend {
            Backend::File(p) => Some(p),
            Backend::Etcd(_) => None,
        }
    }

    /// The etcd store, for an etcd store.
    pub fn etcd(&self) -> Option<&EtcdStore> {
        match &self.backend {
            Backend::Etcd(e) => Some(e),
            Backend::File(_) => None,
        }
    }

    /// The etcd store, for an etcd store, to change.
    pub fn etcd_mut(&mut self) -> Option<&mut EtcdStore> {
        match &mut self.backend {
            Backend::Etcd(e) => Some(e),
            Backend::File(_) => None,
        }
    }

    /// Names the store in messages: the file's path, or the etcd URL.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::File(p) => p.display().to_string(),
            Backend::Etcd(e) => e.describe(),
        }
    }

    /// The store revision of the last read or write through this handle
    /// (etcd); None for a file.
    pub fn revision(&self) -> Option<i64> {
        match &self.backend {
            Backend::File(_) => None,
            Backend::Etcd(e) => Some(e.revision()),
        }
    }

    /// The state as it is now, not yet validated.
    pub async fn read(&mut self) -> Result<State> {
        match &mut self.backend {
            Backend::File(p) => Ok(model::read_state(p)?),
            Backend::Etcd(e) => Ok(e.read().await?.0),
        }
    }

    /// The state as it is now, validated and resolved.
    pub async fn load(&mut self) -> Result<model::Cluster> {
        let state = self.read().await?;
        Ok(model::resolve(&self.describe(), &state, self.caps)?)
    }

    /// Changes the state with `change` and writes it back only when the result
    /// passes every rule. On etcd: one transaction against the revision read,
    /// retried from a fresh read when another writer changed the store in
    /// between; allocations (VNIs, addresses, MACs, VIPs) are written out, so
    /// they never move. A missing file or an empty store starts empty.
    pub async fn edit<T>(&mut self, change: impl FnMut(&mut State) -> Result<T>) -> Result<(T, State)> {
        self.edit_with(change).await
    }

    /// [`Store::edit`] with a `change` that fails with its caller's own
    /// error (a runtime plugin's), into which the store's errors convert.
    pub async fn edit_with<T, E: From<Error>>(
        &mut self,
        mut change: impl FnMut(&mut State) -> Result<T, E>,
    ) -> Result<(T, State), E> {
        let caps = self.caps;
        match &mut self.backend {
            Backend::File(p) => {
                let mut state = file::read_for_edit(p).map_err(Error::from)?;
                let out = change(&mut state)?;
                file::write_state(p, &state, caps)?;
                Ok((out, state))
            }
            Backend::Etcd(e) => e.edit(&mut change).await,
        }
    }

    /// Writes `state` (validated first) as the whole store: refused when the
    /// store holds a cluster, unless `replace`.
    pub async fn import(&mut self, state: &State, replace: bool) -> Result<()> {
        let (cluster, store) = (model::resolve(&self.describe(), state, self.caps)?, self.describe());
        let caps = self.caps;
        match &mut self.backend {
            Backend::File(p) => {
                if !replace && p.exists() {
                    if let Ok(old) = model::read_state(p) {
                        return Err(StoreError::NotEmpty { store, summary: summary(&old) }.into());
                    }
                }
                file::write_state(p, state, caps)
            }
            Backend::Etcd(e) => e.import(&model::pinned(state, &cluster), replace).await,
        }
    }

    /// Returns when the state may have changed: the file's next poll after
    /// `interval` ([`Change::Resync`]: read it), or etcd's next change to the
    /// store (the keys changed, or a resync after a lost watch).
    pub async fn changed(&mut self, interval: std::time::Duration) -> Change {
        match &mut self.backend {
            Backend::File(_) => {
                tokio::time::sleep(interval.max(std::time::Duration::from_secs(1))).await;
                Change::Resync
            }
            Backend::Etcd(e) => e.changed().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_as_the_spec_writes_them() {
        let etcd = |e: &[&str], p: &str| StoreUrl::Etcd {
            endpoints: e.iter().map(|s| s.to_string()).collect(),
            prefix: p.to_string(),
        };
        assert_eq!(
            "etcd://h1:2379,h2:2379".parse::<StoreUrl>().unwrap(),
            etcd(&["h1:2379", "h2:2379"], "/overlay-bpf")
        );
        assert_eq!("etcd://10.0.0.1/team/a/".parse::<StoreUrl>().unwrap(), etcd(&["10.0.0.1:2379"], "/team/a"));
        assert_eq!("file:///etc/c.yaml".parse::<StoreUrl>().unwrap(), StoreUrl::File("/etc/c.yaml".into()));
        assert_eq!("c.yaml".parse::<StoreUrl>().unwrap(), StoreUrl::File("c.yaml".into()));
        for (bad, why) in [
            ("consul://h:8500", "consul:// is not a store"),
            ("etcd://", "names no etcd endpoint"),
            ("etcd://h:x", "\"x\" in \"h:x\" is not a port"),
            ("etcd://h1,,h2", "names no etcd endpoint"),
            ("etcd://:2379", "names no host"),
            ("file://", "names no file"),
        ] {
            let e = bad.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
        assert_eq!(etcd(&["h:1"], "/p").to_string(), "etcd://h:1/p");
    }

    #[test]
    fn one_store_option_and_flags_win_over_the_environment() {
        let file = |p: &str| StoreUrl::File(p.into());
        let s = |v: &str| Some(v.to_string());
        assert_eq!(choose(None, None, None, None).unwrap(), file(model::DEFAULT_STATE_FILE));
        assert!(matches!(choose(Some("a.yaml".into()), s("etcd://h"), None, None), Err(StoreError::BothGiven { .. })));
        assert_eq!(choose(Some("a.yaml".into()), None, None, s("etcd://h")).unwrap(), file("a.yaml"));
        assert!(matches!(choose(None, s("etcd://h"), s("b.yaml"), None).unwrap(), StoreUrl::Etcd { .. }));
        assert_eq!(choose(None, None, s("b.yaml"), None).unwrap(), file("b.yaml"));
        assert!(matches!(choose(None, None, None, s("etcd://h")).unwrap(), StoreUrl::Etcd { .. }));
        assert!(matches!(choose(None, None, s("b.yaml"), s("etcd://h")), Err(StoreError::BothGiven { .. })));
    }
}
