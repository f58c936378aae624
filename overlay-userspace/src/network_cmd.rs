//! `overlay-bpf network create/ls/inspect/rm`: edit and show the networks of a
//! state file with Docker's flags and output shapes.

use std::{
    net::Ipv4Addr,
    path::Path,
};

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use crate::{
    error::UserError,
    model::{self, Capabilities, Cluster, NetworkSpec, State, StateError, SubnetSpec},
};

/// `network create` as parsed from Docker-style flags.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub name: String,
    pub subnets: Vec<Ipv4Net>,
    pub gateways: Vec<Ipv4Addr>,
    pub ip_ranges: Vec<Ipv4Net>,
    pub aux_addresses: Vec<(String, Ipv4Addr)>,
    /// `--opt key=value`.
    pub opts: Vec<(String, String)>,
    pub attachable: bool,
    pub internal: bool,
    pub ingress: bool,
    pub vni: Option<u32>,
}

/// Parses `name=ip` (`--aux-address`).
pub fn parse_aux(s: &str) -> Result<(String, Ipv4Addr), String> {
    let (n, ip) = s.split_once('=').ok_or_else(|| format!("{s:?} is not name=ip (e.g. my-router=10.0.0.5)"))?;
    let ip = ip.parse().map_err(|_| format!("{ip:?} in {s:?} is not an IPv4 address"))?;
    Ok((n.to_string(), ip))
}

/// Parses `key=value` (`--opt`).
pub fn parse_opt(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not key=value (e.g. mtu=1400)"))?;
    Ok((k.to_string(), v.to_string()))
}

/// Reads a state file for editing; a missing file starts an empty state.
pub fn read_for_edit(path: &Path) -> Result<State, StateError> {
    if !path.exists() {
        return Ok(State {
            version: 1,
            cluster: Default::default(),
            hosts: vec![],
            networks: vec![],
            endpoints: vec![],
            services: vec![],
        });
    }
    model::read_state(path)
}

/// Validates and writes the state atomically (temp file + rename): a state that
/// breaks a rule is never written.
pub fn write_state(path: &Path, state: &State) -> anyhow::Result<()> {
    model::resolve(&path.display().to_string(), state, Capabilities::default())?;
    let text = serde_yaml::to_string(state)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The first free 10.0.N.0/24, as Docker's default swarm address pool would give.
fn default_subnet(state: &State) -> Option<Ipv4Net> {
    let used: Vec<Ipv4Net> = state.networks.iter().flat_map(|n| n.subnets.iter().map(|s| s.subnet)).collect();
    (0u32..=255)
        .map(|n| Ipv4Net::new(Ipv4Addr::new(10, 0, n as u8, 0), 24).unwrap())
        .find(|c| !used.iter().any(|u| u.contains(c) || c.contains(u)) && !state.hosts.iter().any(|h| c.contains(&h.address)))
}

/// Adds a network to `state`, Docker-style: each `--gateway`, `--ip-range` and
/// `--aux-address` goes to the `--subnet` that contains it.
pub fn create(state: &mut State, o: &CreateOpts) -> Result<(), UserError> {
    if state.networks.iter().any(|n| n.name == o.name) {
        return Err(UserError(format!("network with name {} already exists", o.name)));
    }
    let mut subnets: Vec<SubnetSpec> = o
        .subnets
        .iter()
        .map(|s| SubnetSpec { subnet: *s, gateway: None, ip_range: None, aux_addresses: Default::default() })
        .collect();
    if subnets.is_empty() {
        if !(o.gateways.is_empty() && o.ip_ranges.is_empty() && o.aux_addresses.is_empty()) {
            return Err(UserError("--gateway, --ip-range and --aux-address need a --subnet".into()));
        }
        let s = default_subnet(state).ok_or_else(|| UserError("no free 10.0.N.0/24 left for a default subnet; pass --subnet".into()))?;
        subnets.push(SubnetSpec { subnet: s, gateway: None, ip_range: None, aux_addresses: Default::default() });
    }
    let holder = |subnets: &mut Vec<SubnetSpec>, ip: Ipv4Addr, what: &str| -> Result<usize, UserError> {
        subnets
            .iter()
            .position(|s| s.subnet.contains(&ip))
            .ok_or_else(|| UserError(format!("{what} {ip} is in none of the --subnet ranges")))
    };
    for g in &o.gateways {
        let i = holder(&mut subnets, *g, "--gateway")?;
        if subnets[i].gateway.replace(*g).is_some() {
            return Err(UserError(format!("two --gateway values for subnet {}", subnets[i].subnet)));
        }
    }
    for r in &o.ip_ranges {
        let i = holder(&mut subnets, r.network(), "--ip-range")?;
        if subnets[i].ip_range.replace(*r).is_some() {
            return Err(UserError(format!("two --ip-range values for subnet {}", subnets[i].subnet)));
        }
    }
    for (n, a) in &o.aux_addresses {
        let i = holder(&mut subnets, *a, "--aux-address")?;
        subnets[i].aux_addresses.insert(n.clone(), *a);
    }
    let mut net = NetworkSpec {
        name: o.name.clone(),
        ingress: o.ingress,
        vni: o.vni,
        subnets,
        attachable: o.attachable,
        internal: o.internal,
        ..Default::default()
    };
    for (k, v) in &o.opts {
        match k.as_str() {
            "mtu" | "com.docker.network.driver.mtu" => {
                net.mtu = Some(v.parse().map_err(|_| UserError(format!("--opt {k}={v}: the MTU must be a number")))?);
            }
            "encrypted" => net.encrypted = v.is_empty() || v == "true",
            "com.docker.network.driver.overlay.vxlanid_list" => {
                net.vni = Some(v.parse().map_err(|_| UserError(format!("--opt {k}={v}: one VNI number is supported")))?);
            }
            _ => {
                return Err(UserError(format!(
                    "--opt {k}: unknown option; supported: mtu, com.docker.network.driver.mtu, encrypted, com.docker.network.driver.overlay.vxlanid_list"
                )))
            }
        }
    }
    state.networks.push(net);
    Ok(())
}

/// Removes networks; refuses one that endpoints or services still use.
pub fn remove(state: &mut State, names: &[String]) -> Result<(), UserError> {
    for name in names {
        let Some(i) = state.networks.iter().position(|n| &n.name == name) else {
            return Err(UserError(format!("network {name} not found")));
        };
        let eps: Vec<&str> = state.endpoints.iter().filter(|e| &e.network == name).map(|e| e.name.as_str()).collect();
        let svcs: Vec<&str> = state.services.iter().filter(|s| &s.network == name).map(|s| s.name.as_str()).collect();
        if !eps.is_empty() || !svcs.is_empty() {
            return Err(UserError(format!(
                "network {name} is in use by endpoints [{}] and services [{}]; remove them from the state file first",
                eps.join(", "),
                svcs.join(", ")
            )));
        }
        state.networks.remove(i);
    }
    Ok(())
}

/// A stable 64-hex-digit ID, shaped like Docker's network IDs.
pub fn network_id(name: &str, vni: u32) -> String {
    let a = model::fnv1a(format!("{name}/{vni}").as_bytes());
    let b = model::fnv1a(format!("{vni}/{name}").as_bytes());
    let c = model::fnv1a(&a.to_le_bytes());
    let d = model::fnv1a(&b.to_le_bytes());
    format!("{a:016x}{b:016x}{c:016x}{d:016x}")
}

/// `docker network ls` columns.
pub fn ls(cluster: &Cluster, quiet: bool) -> String {
    let mut out = String::new();
    if !quiet {
        out.push_str(&format!("{:<14}{:<20}{:<10}{:<8}{:<10}{}\n", "NETWORK ID", "NAME", "DRIVER", "SCOPE", "VNI", "SUBNETS"));
    }
    for n in &cluster.networks {
        let id = &network_id(&n.name, n.vni)[..12];
        if quiet {
            out.push_str(&format!("{id}\n"));
            continue;
        }
        let subnets: Vec<String> = n.subnets.iter().map(|s| s.subnet.to_string()).collect();
        out.push_str(&format!("{:<14}{:<20}{:<10}{:<8}{:<10}{}\n", id, n.name, "overlay", "swarm", n.vni, subnets.join(",")));
    }
    out
}

/// `docker network inspect` output for one network.
pub fn inspect(cluster: &Cluster, ni: usize) -> Value {
    let n = &cluster.networks[ni];
    let config: Vec<Value> = n
        .subnets
        .iter()
        .map(|s| {
            let mut c = json!({"Subnet": s.subnet.to_string(), "Gateway": s.gateway.to_string()});
            if let Some(r) = s.ip_range {
                c["IPRange"] = json!(r.to_string());
            }
            if !s.aux_addresses.is_empty() {
                c["AuxiliaryAddresses"] = json!(s.aux_addresses.iter().map(|(k, v)| (k.clone(), json!(v.to_string()))).collect::<serde_json::Map<_, _>>());
            }
            c
        })
        .collect();
    let mut containers = serde_json::Map::new();
    for e in cluster.endpoints.iter().filter(|e| e.network == ni) {
        containers.insert(
            e.name.clone(),
            json!({
                "Name": e.name,
                "EndpointID": network_id(&e.name, n.vni),
                "MacAddress": e.mac.to_string(),
                "IPv4Address": format!("{}/{}", e.ip, e.prefix_len),
                "IPv6Address": "",
                "Host": cluster.hosts[e.host].name,
                "Netns": e.netns.display().to_string(),
                "Ifname": e.ifname,
            }),
        );
    }
    let mut services = serde_json::Map::new();
    for s in cluster.services.iter().filter(|s| s.network == ni) {
        let tasks: Vec<Value> = s
            .backends
            .iter()
            .map(|&b| {
                let e = &cluster.endpoints[b];
                json!({"Name": e.name, "EndpointIP": e.ip.to_string(), "Info": {"Host IP": cluster.hosts[e.host].address.to_string()}})
            })
            .collect();
        services.insert(
            s.name.clone(),
            json!({"VIP": s.vip.map(|v| v.to_string()).unwrap_or_default(), "Ports": s.ports, "LocalLBIndex": 0, "Tasks": tasks}),
        );
    }
    let peers: Vec<Value> = {
        let mut hs: Vec<usize> = cluster.endpoints.iter().filter(|e| e.network == ni).map(|e| e.host).collect();
        hs.sort();
        hs.dedup();
        hs.into_iter().map(|h| json!({"Name": cluster.hosts[h].name, "IP": cluster.hosts[h].address.to_string()})).collect()
    };
    json!({
        "Name": n.name,
        "Id": network_id(&n.name, n.vni),
        "Scope": "swarm",
        "Driver": "overlay",
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": n.internal,
        "Attachable": n.attachable,
        "Ingress": n.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": {
            "com.docker.network.driver.overlay.vxlanid_list": n.vni.to_string(),
            "com.docker.network.driver.mtu": n.mtu.to_string(),
        },
        "Labels": {},
        "Peers": peers,
        "Services": services,
    })
}
