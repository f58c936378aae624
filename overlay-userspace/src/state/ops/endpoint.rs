//! `overlay-bpf endpoint create/rm/ls`: register, remove and list endpoints
//! (container interfaces) in the store.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::state::model::{remove_endpoints, Cluster, EndpointPort, EndpointSpec, Mac, Runtime, State};

/// What `endpoint create/rm` refuse (user errors, exit 1).
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {name} exists on network {network} already; names are unique within a network")]
    Exists { name: String, network: String },
    #[error("network {0} does not exist; create it with `overlay-bpf network create`")]
    NoNetwork(String),
    #[error("host {0} does not exist; add it with `overlay-bpf host join`")]
    NoHost(String),
    #[error("endpoint {name} not found{on}")]
    NotFound { name: String, on: String },
    #[error("endpoint {name} is on networks {networks}: say which with --network")]
    Ambiguous { name: String, networks: String },
}

/// `endpoint create` as parsed.
#[derive(Debug, Clone)]
pub struct CreateOpts {
    pub name: String,
    pub network: String,
    pub host: String,
    pub netns: String,
    pub ifname: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<Mac>,
    pub aliases: Vec<String>,
}

/// Registers an endpoint; its address and MAC are allocated when the state
/// is resolved, unless given.
pub fn create(state: &mut State, o: &CreateOpts) -> Result<(), EndpointError> {
    if !state.networks.iter().any(|n| n.name == o.network) {
        return Err(EndpointError::NoNetwork(o.network.clone()));
    }
    if !state.hosts.iter().any(|h| h.name == o.host) {
        return Err(EndpointError::NoHost(o.host.clone()));
    }
    if state.endpoints.iter().any(|e| e.name == o.name && e.network == o.network) {
        return Err(EndpointError::Exists { name: o.name.clone(), network: o.network.clone() });
    }
    state.endpoints.push(EndpointSpec {
        name: o.name.clone(),
        host: o.host.clone(),
        network: o.network.clone(),
        netns: o.netns.clone(),
        ifname: o.ifname.clone(),
        ip: o.ip,
        mac: o.mac,
        aliases: o.aliases.clone(),
        runtime: None,
        container_id: None,
        endpoint_id: None,
        publish: Vec::new(),
        unknown: Default::default(),
    });
    Ok(())
}

/// Removes endpoint `name` (on `network`, needed when the name is on several
/// networks) and its places as a service backend. Returns the network it was on.
pub fn remove(state: &mut State, name: &str, network: Option<&str>) -> Result<String, EndpointError> {
    let on: Vec<String> = state
        .endpoints
        .iter()
        .filter(|e| e.name == name && network.is_none_or(|n| e.network == n))
        .map(|e| e.network.clone())
        .collect();
    let net = match on.as_slice() {
        [] => {
            return Err(EndpointError::NotFound {
                name: name.into(),
                on: network.map(|n| format!(" on network {n}")).unwrap_or_default(),
            })
        }
        [one] => one.clone(),
        many => return Err(EndpointError::Ambiguous { name: name.into(), networks: many.join(", ") }),
    };
    remove_endpoints(state, |e| e.name == name && e.network == net);
    Ok(net)
}

/// One endpoint as `endpoint ls -o json` and `endpoint create -o json` show
/// it: the state file's fields, with the allocated values filled in.
#[derive(Debug, Serialize)]
pub struct EndpointRow {
    pub name: String,
    pub host: String,
    pub network: String,
    pub netns: String,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: Mac,
    pub gateway: Ipv4Addr,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Docker's EndpointID, for a Docker endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<EndpointPort>,
}

/// The endpoints of `cluster` (resolved from `state`), filtered.
pub fn rows(state: &State, cluster: &Cluster, network: Option<&str>, host: Option<&str>) -> Vec<EndpointRow> {
    let specs: std::collections::HashMap<(&str, &str), &EndpointSpec> =
        state.endpoints.iter().map(|e| ((e.network.as_str(), e.name.as_str()), e)).collect();
    cluster
        .endpoints
        .iter()
        .filter(|e| network.is_none_or(|n| cluster.networks[e.network].name == n))
        .filter(|e| host.is_none_or(|h| cluster.hosts[e.host].name == h))
        .map(|e| {
            let net = &cluster.networks[e.network].name;
            let spec = specs.get(&(net.as_str(), e.name.as_str())).copied();
            EndpointRow {
                name: e.name.clone(),
                host: cluster.hosts[e.host].name.clone(),
                network: net.clone(),
                netns: spec.map(|s| s.netns.clone()).unwrap_or_else(|| e.netns.display().to_string()),
                ifname: e.ifname.clone(),
                ip: e.ip,
                prefix_len: e.prefix_len,
                mac: e.mac,
                gateway: e.gateway,
                aliases: e.aliases.clone(),
                runtime: spec.and_then(|s| s.runtime),
                container_id: spec.and_then(|s| s.container_id.clone()),
                endpoint_id: spec.and_then(|s| s.endpoint_id.clone()),
                publish: spec.map(|s| s.publish.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

/// `endpoint ls` as a table.
pub fn table(rows: &[EndpointRow]) -> String {
    let mut out = format!(
        "{:<20} {:<16} {:<12} {:<18} {:<17} {:<16} {}\n",
        "NAME", "NETWORK", "HOST", "ADDRESS", "MAC", "NETNS", "ALIASES"
    );
    for r in rows {
        out += &format!(
            "{:<20} {:<16} {:<12} {:<18} {:<17} {:<16} {}\n",
            r.name,
            r.network,
            r.host,
            format!("{}/{}", r.ip, r.prefix_len),
            r.mac.to_string(),
            r.netns,
            if r.aliases.is_empty() { "-".to_string() } else { r.aliases.join(",") }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{parse_state, resolve, Capabilities};

    fn state() -> State {
        parse_state("t", include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cluster.yaml"))).unwrap()
    }

    fn opts(name: &str, network: &str) -> CreateOpts {
        CreateOpts {
            name: name.into(),
            network: network.into(),
            host: "node2".into(),
            netns: format!("ns-{name}"),
            ifname: None,
            ip: None,
            mac: None,
            aliases: vec!["api".into()],
        }
    }

    #[test]
    fn one_name_per_network_and_the_same_name_on_another() {
        let mut s = state();
        create(&mut s, &opts("web.2", "backend")).unwrap();
        let e = create(&mut s, &opts("web.2", "backend")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "endpoint web.2 exists on network backend already; names are unique within a network"
        );
        let c = resolve("t", &s, Capabilities::default()).unwrap();
        let twins: Vec<_> = c.endpoints.iter().filter(|e| e.name == "web.2").collect();
        assert_eq!(twins.len(), 2);
        // The first keeps its name as its key (its veth and health name); the later one is qualified.
        assert_eq!((twins[0].key.as_str(), twins[1].key.as_str()), ("web.2", "web.2@backend"));
        assert!(matches!(create(&mut s, &opts("x", "nope")), Err(EndpointError::NoNetwork(_))));
        let rows = rows(&s, &c, Some("backend"), Some("node2"));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].aliases, ["api"]);
    }

    #[test]
    fn removing_takes_the_endpoint_out_of_its_services_and_asks_which_when_ambiguous() {
        let mut s = state();
        create(&mut s, &opts("web.2", "backend")).unwrap();
        let e = remove(&mut s, "web.2", None).unwrap_err();
        assert_eq!(e.to_string(), "endpoint web.2 is on networks uber-svc, backend: say which with --network");
        assert_eq!(remove(&mut s, "web.2", Some("uber-svc")).unwrap(), "uber-svc");
        assert!(s.services[0].backends.iter().all(|b| b != "web.2"), "{:?}", s.services[0].backends);
        resolve("t", &s, Capabilities::default()).unwrap();
        assert!(matches!(remove(&mut s, "web.9", None), Err(EndpointError::NotFound { .. })));
    }

    #[test]
    fn a_backend_named_by_alias_stands_for_every_endpoint_carrying_it() {
        let mut s = state();
        let mut o = opts("api.1", "uber-svc");
        o.aliases = vec!["api".into()];
        create(&mut s, &o).unwrap();
        o.name = "api.2".into();
        create(&mut s, &o).unwrap();
        s.services[0].backends = vec!["api".into(), "web.1".into()];
        let c = resolve("t", &s, Capabilities::default()).unwrap();
        let names: Vec<&str> = c.services[0].backends.iter().map(|&b| c.endpoints[b].name.as_str()).collect();
        assert_eq!(names, ["api.1", "api.2", "web.1"]);
        // Removing every endpoint of the alias never fails because of the
        // service: it keeps its VIP with no backend, and a warning.
        remove(&mut s, "api.1", None).unwrap();
        remove(&mut s, "api.2", None).unwrap();
        assert_eq!(s.services[0].backends, ["api", "web.1"], "an alias stays: it stands for whoever carries it");
        let c = resolve("t", &s, Capabilities::default()).unwrap();
        let names: Vec<&str> = c.services[0].backends.iter().map(|&b| c.endpoints[b].name.as_str()).collect();
        assert_eq!(names, ["web.1"]);
        assert_eq!(c.warnings.iter().map(|w| w.rule).collect::<Vec<_>>(), [crate::state::model::Rule::UnknownBackend]);
    }
}
