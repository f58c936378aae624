//! `overlay-bpf host join/ls/rm`: the cluster's hosts, on either store
//! (Docker: `swarm join`, `node ls`, `node rm`).

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::Serialize;

use crate::{
    state::model::{HostSpec, State},
    state::store::AgentView,
};

/// What `host join/rm` refuse (user errors, exit 1).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "host {name} is in the cluster already with {have}; `host rm {name}` first to join it with {want}, or pick \
         another --name"
    )]
    Differs { name: String, have: String, want: String },
    #[error("host {name} is not in the cluster (hosts: {known})")]
    NotFound { name: String, known: String },
    #[error("host {name} still has endpoints [{endpoints}]; remove them first, or `host rm {name} --force` removes them too")]
    HasEndpoints { name: String, endpoints: String },
    #[error("--name: cannot read this machine's hostname ({0}); pass --name")]
    NoHostname(String),
}

fn describe(h: &HostSpec) -> String {
    match &h.interface {
        Some(i) => format!("address {} on {i}", h.address),
        None => format!("address {}", h.address),
    }
}

/// Adds host `name`. Joining again as the same host changes nothing
/// (`Ok(false)`); a host of that name with another address or interface is
/// refused.
pub fn join(state: &mut State, name: &str, address: Ipv4Addr, interface: Option<String>) -> Result<bool, HostError> {
    let want =
        HostSpec { name: name.to_string(), address, interface, wireguard_key: None, unknown: Default::default() };
    if let Some(have) = state.hosts.iter().find(|h| h.name == name) {
        // Its published key is its own business, not the joiner's.
        if have.address == want.address && have.interface == want.interface {
            return Ok(false);
        }
        return Err(HostError::Differs { name: name.into(), have: describe(have), want: describe(&want) });
    }
    state.hosts.push(want);
    Ok(true)
}

/// Sets host `name`'s WireGuard public key; true when it changed.
pub fn set_key(state: &mut State, name: &str, key: &str) -> Result<bool, HostError> {
    let known: Vec<String> = state.hosts.iter().map(|h| h.name.clone()).collect();
    let Some(h) = state.hosts.iter_mut().find(|h| h.name == name) else {
        return Err(HostError::NotFound { name: name.into(), known: known.join(", ") });
    };
    let changed = h.wireguard_key.as_deref() != Some(key);
    h.wireguard_key = Some(key.to_string());
    Ok(changed)
}

/// Removes host `name`; with `force`, its endpoints too (and their places in
/// services' backends). Returns the endpoints removed.
pub fn remove(state: &mut State, name: &str, force: bool) -> Result<Vec<String>, HostError> {
    let Some(i) = state.hosts.iter().position(|h| h.name == name) else {
        let known: Vec<&str> = state.hosts.iter().map(|h| h.name.as_str()).collect();
        return Err(HostError::NotFound { name: name.into(), known: known.join(", ") });
    };
    let eps: Vec<String> = state.endpoints.iter().filter(|e| e.host == name).map(|e| e.name.clone()).collect();
    if !eps.is_empty() && !force {
        return Err(HostError::HasEndpoints { name: name.into(), endpoints: eps.join(", ") });
    }
    crate::state::model::remove_endpoints(state, |e| e.host == name);
    state.hosts.remove(i);
    Ok(eps)
}

/// The name a host joins under by default: this machine's hostname.
pub fn default_name() -> Result<String, HostError> {
    nix::unistd::gethostname()
        .map_err(|e| HostError::NoHostname(e.to_string()))
        .map(|h| h.to_string_lossy().into_owned())
}

/// One row of `host ls`: the state's fields, and what its agent reports.
#[derive(Debug, Serialize)]
pub struct HostRow {
    pub name: String,
    pub address: Ipv4Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Its agent runs (etcd: its lease is live; file: it answers on its health port).
    pub alive: bool,
    /// When its agent was last seen (RFC 3339); null when never.
    pub last_seen: Option<String>,
    /// Endpoints on the host.
    pub endpoints: usize,
}

/// `host ls` rows from the state and the agents' views.
pub fn rows(state: &State, agents: &BTreeMap<String, AgentView>) -> Vec<HostRow> {
    state
        .hosts
        .iter()
        .map(|h| {
            let v = agents.get(&h.name).cloned().unwrap_or_default();
            HostRow {
                name: h.name.clone(),
                address: h.address,
                interface: h.interface.clone(),
                alive: v.alive,
                last_seen: v.last_seen,
                endpoints: state.endpoints.iter().filter(|e| e.host == h.name).count(),
            }
        })
        .collect()
}

/// `host ls` as a table.
pub fn table(rows: &[HostRow]) -> String {
    let mut out = format!(
        "{:<20} {:<16} {:<10} {:<7} {:<10} {}\n",
        "NAME", "ADDRESS", "INTERFACE", "ALIVE", "ENDPOINTS", "LAST SEEN"
    );
    for r in rows {
        out += &format!(
            "{:<20} {:<16} {:<10} {:<7} {:<10} {}\n",
            r.name,
            r.address.to_string(),
            r.interface.as_deref().unwrap_or("-"),
            if r.alive { "yes" } else { "no" },
            r.endpoints,
            r.last_seen.as_deref().unwrap_or("never")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::parse_state;

    fn state() -> State {
        parse_state("t", include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cluster.yaml"))).unwrap()
    }

    #[test]
    fn joining_twice_changes_nothing_and_a_different_twin_is_refused() {
        let mut s = state();
        assert!(join(&mut s, "node4", "192.168.100.14".parse().unwrap(), None).unwrap());
        assert!(!join(&mut s, "node4", "192.168.100.14".parse().unwrap(), None).unwrap());
        assert_eq!(s.hosts.len(), 4);
        let e = join(&mut s, "node4", "192.168.100.15".parse().unwrap(), None).unwrap_err();
        assert!(e.to_string().contains("address 192.168.100.14") && e.to_string().contains("host rm node4"), "{e}");
    }

    #[test]
    fn a_host_with_endpoints_goes_only_with_force_and_takes_them_along() {
        let mut s = state();
        let e = remove(&mut s, "node2", false).unwrap_err();
        assert!(e.to_string().contains("[web.2, lan.2]") && e.to_string().contains("--force"), "{e}");
        assert_eq!(remove(&mut s, "node2", true).unwrap(), ["web.2", "lan.2"]);
        assert!(s.hosts.iter().all(|h| h.name != "node2") && s.endpoints.iter().all(|e| e.name != "web.2"));
        assert!(s.services.iter().all(|svc| !svc.backends.contains(&"web.2".to_string())));
        assert!(matches!(remove(&mut s, "node9", true), Err(HostError::NotFound { .. })));
    }

    #[test]
    fn a_hosts_key_is_set_once_and_kept_when_it_joins_again() {
        let mut s = state();
        assert!(set_key(&mut s, "node1", "k1").unwrap());
        assert!(!set_key(&mut s, "node1", "k1").unwrap(), "the same key again changes nothing");
        let (address, interface) = (s.hosts[0].address, s.hosts[0].interface.clone());
        assert!(!join(&mut s, "node1", address, interface).unwrap());
        assert_eq!(s.hosts[0].wireguard_key.as_deref(), Some("k1"), "joining again keeps the key");
        assert!(matches!(set_key(&mut s, "node9", "k"), Err(HostError::NotFound { .. })));
    }

    #[test]
    fn rows_say_who_is_alive() {
        let s = state();
        let mut agents = BTreeMap::new();
        agents.insert(
            "node1".to_string(),
            AgentView { alive: true, last_seen: Some("2026-12-01T05:00:00Z".into()), report: None },
        );
        let r = rows(&s, &agents);
        assert!(r[0].alive && !r[1].alive && r[1].last_seen.is_none());
        assert_eq!(r[0].endpoints, 4);
        let t = table(&r);
        assert!(t.lines().nth(1).unwrap().contains("yes") && t.contains("never"), "{t}");
    }
}
