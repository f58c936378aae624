//! `overlay-bpf network create/ls/inspect/rm`: edit and show the networks of a
//! state file with Docker's flags and output shapes.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use crate::{
    state::error::Result,
    state::model::{self, Cluster, NetworkKind, NetworkSpec, State, SubnetSpec},
};

/// What `network create/rm/inspect` refuse (all user errors, exit 1).
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network with name {0} already exists")]
    Exists(String),
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network {name} is in use by endpoints [{endpoints}] and services [{services}]; remove them from the state file first")]
    InUse { name: String, endpoints: String, services: String },
    #[error("driver {0:?} is not supported; overlay-bpf does `overlay` and `macvlan`")]
    Driver(String),
    #[error(
        "a macvlan network needs -o parent=DEVICE, the host device its containers' sub-interfaces hang off \
         (e.g. -o parent=eth0)"
    )]
    NeedsParent,
    #[error(
        "a macvlan network sits on the hosts' LAN: give that LAN's --subnet (and --gateway, its router), \
         e.g. --subnet 192.168.246.0/24 --gateway 192.168.246.1"
    )]
    MacvlanNeedsSubnet,
    #[error("--gateway, --ip-range and --aux-address need a --subnet")]
    NeedsSubnet,
    #[error("no free 10.0.N.0/24 left for a default subnet; pass --subnet")]
    NoFreeSubnet,
    #[error("{flag} {ip} is in none of the --subnet ranges")]
    NotInSubnet { flag: &'static str, ip: Ipv4Addr },
    #[error("two {flag} values for subnet {subnet}")]
    Twice { flag: &'static str, subnet: Ipv4Net },
    #[error("--opt {key}={value}: {why}")]
    BadOpt { key: String, value: String, why: &'static str },
    #[error(
        "--opt {0}: unknown option; supported: mtu, com.docker.network.driver.mtu, encrypted, \
         com.docker.network.driver.overlay.vxlanid_list, and for -d macvlan parent and macvlan_mode"
    )]
    UnknownOpt(String),
}

/// `network create` as parsed from Docker-style flags.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub name: String,
    pub driver: model::Driver,
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

/// Parses `key=value` (`--opt`); a flag alone (`encrypted`, as Docker
/// spells it) is `key=`.
pub fn parse_opt(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None if s == "encrypted" => Ok((s.to_string(), String::new())),
        None => Err(format!("{s:?} is not key=value (e.g. mtu=1400)")),
    }
}

/// The first free 10.0.N.0/24, as Docker's default swarm address pool would give.
fn default_subnet(state: &State) -> Option<Ipv4Net> {
    let used: Vec<Ipv4Net> = state.networks.iter().flat_map(|n| n.subnets.iter().map(|s| s.subnet)).collect();
    (0u32..=255).map(|n| Ipv4Net::new(Ipv4Addr::new(10, 0, n as u8, 0), 24).unwrap()).find(|c| {
        !used.iter().any(|u| u.contains(c) || c.contains(u)) && !state.hosts.iter().any(|h| c.contains(&h.address))
    })
}

/// Adds a network to `state`, Docker-style: each `--gateway`, `--ip-range` and
/// `--aux-address` goes to the `--subnet` that contains it.
pub fn create(state: &mut State, o: &CreateOpts) -> Result<(), NetworkError> {
    if state.networks.iter().any(|n| n.name == o.name) {
        return Err(NetworkError::Exists(o.name.clone()));
    }
    let mut subnets: Vec<SubnetSpec> = o
        .subnets
        .iter()
        .map(|s| SubnetSpec { subnet: *s, gateway: None, ip_range: None, aux_addresses: Default::default() })
        .collect();
    let macvlan = o.driver == model::Driver::Macvlan;
    if subnets.is_empty() && macvlan {
        return Err(NetworkError::MacvlanNeedsSubnet);
    }
    if subnets.is_empty() {
        if !(o.gateways.is_empty() && o.ip_ranges.is_empty() && o.aux_addresses.is_empty()) {
            return Err(NetworkError::NeedsSubnet);
        }
        let s = default_subnet(state).ok_or(NetworkError::NoFreeSubnet)?;
        subnets.push(SubnetSpec { subnet: s, gateway: None, ip_range: None, aux_addresses: Default::default() });
    }
    let holder = |subnets: &mut Vec<SubnetSpec>, ip: Ipv4Addr, flag: &'static str| -> Result<usize, NetworkError> {
        subnets.iter().position(|s| s.subnet.contains(&ip)).ok_or(NetworkError::NotInSubnet { flag, ip })
    };
    for g in &o.gateways {
        let i = holder(&mut subnets, *g, "--gateway")?;
        if subnets[i].gateway.replace(*g).is_some() {
            return Err(NetworkError::Twice { flag: "--gateway", subnet: subnets[i].subnet });
        }
    }
    for r in &o.ip_ranges {
        let i = holder(&mut subnets, r.network(), "--ip-range")?;
        if subnets[i].ip_range.replace(*r).is_some() {
            return Err(NetworkError::Twice { flag: "--ip-range", subnet: subnets[i].subnet });
        }
    }
    for (n, a) in &o.aux_addresses {
        let i = holder(&mut subnets, *a, "--aux-address")?;
        subnets[i].aux_addresses.insert(n.clone(), *a);
    }
    let mut net = NetworkSpec {
        name: o.name.clone(),
        driver: o.driver,
        ingress: o.ingress,
        vni: o.vni,
        subnets,
        attachable: o.attachable,
        internal: o.internal,
        ..Default::default()
    };
    for (k, v) in &o.opts {
        set_opt(&mut net, k, v)?;
    }
    if macvlan && net.parent.is_none() {
        return Err(NetworkError::NeedsParent);
    }
    state.networks.push(net);
    Ok(())
}

/// Sets `--opt key=value` on `net`, whose `driver` is set already: the one
/// reading of a network's options, for `network create` and for the
/// options Docker passes its network plugin (`-o`).
pub fn set_opt(net: &mut NetworkSpec, k: &str, v: &str) -> Result<(), NetworkError> {
    let bad = |why| NetworkError::BadOpt { key: k.to_string(), value: v.to_string(), why };
    match k {
        "mtu" | "com.docker.network.driver.mtu" => {
            net.mtu = Some(v.parse().map_err(|_| bad("the MTU must be a number"))?);
        }
        "encrypted" => net.encrypted = v.is_empty() || v == "true",
        "com.docker.network.driver.overlay.vxlanid_list" => {
            net.vni = Some(v.parse().map_err(|_| bad("one VNI number is supported"))?);
        }
        "parent" | "macvlan_mode" if net.driver != model::Driver::Macvlan => {
            return Err(bad("only for macvlan networks (-d macvlan, or -o parent=DEVICE through Docker)"))
        }
        "parent" => net.parent = Some(v.to_string()),
        "macvlan_mode" => {
            let m = model::MacvlanMode::parse(v).ok_or_else(|| bad("one of bridge, private, vepa, passthru"))?;
            net.macvlan_mode = Some(m);
        }
        _ => return Err(NetworkError::UnknownOpt(k.to_string())),
    }
    Ok(())
}

/// Removes networks; refuses one that endpoints or services still use.
pub fn remove(state: &mut State, names: &[String]) -> Result<(), NetworkError> {
    for name in names {
        let Some(i) = state.networks.iter().position(|n| &n.name == name) else {
            return Err(NetworkError::NotFound(name.clone()));
        };
        let eps: Vec<&str> = state.endpoints.iter().filter(|e| &e.network == name).map(|e| e.name.as_str()).collect();
        let svcs: Vec<&str> = state.services.iter().filter(|s| &s.network == name).map(|s| s.name.as_str()).collect();
        if !eps.is_empty() || !svcs.is_empty() {
            return Err(NetworkError::InUse {
                name: name.clone(),
                endpoints: eps.join(", "),
                services: svcs.join(", "),
            });
        }
        state.networks.remove(i);
    }
    Ok(())
}

/// A stable 64-hex-digit ID, shaped like Docker's network IDs, from a name
/// and its network's VNI (a macvlan network has none, and counts as 0: the
/// IDs it has always had).
pub fn network_id(name: &str, vni: Option<u32>) -> String {
    let vni = vni.unwrap_or(0);
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
        out.push_str(&format!(
            "{:<14}{:<20}{:<10}{:<8}{:<10}{}\n",
            "NETWORK ID", "NAME", "DRIVER", "SCOPE", "VNI", "SUBNETS"
        ));
    }
    for n in &cluster.networks {
        let id = &network_id(&n.name, n.vni())[..12];
        if quiet {
            out.push_str(&format!("{id}\n"));
            continue;
        }
        let subnets: Vec<String> = n.subnets.iter().map(|s| s.subnet.to_string()).collect();
        let (driver, vni) = match n.vni() {
            None => ("macvlan", "-".to_string()),
            Some(vni) => ("overlay", vni.to_string()),
        };
        out.push_str(&format!(
            "{:<14}{:<20}{:<10}{:<8}{:<10}{}\n",
            id,
            n.name,
            driver,
            "swarm",
            vni,
            subnets.join(",")
        ));
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
                c["AuxiliaryAddresses"] = json!(s
                    .aux_addresses
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v.to_string())))
                    .collect::<serde_json::Map<_, _>>());
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
                "EndpointID": network_id(&e.name, n.vni()),
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
        hs.into_iter()
            .map(|h| json!({"Name": cluster.hosts[h].name, "IP": cluster.hosts[h].address.to_string()}))
            .collect()
    };
    // Docker's options as `network create -o` sets them.
    let (driver, options) = match &n.kind {
        NetworkKind::Macvlan(m) => {
            let mut o = json!({"parent": m.parent, "macvlan_mode": m.mode.name()});
            if let Some(mtu) = m.mtu {
                o["com.docker.network.driver.mtu"] = json!(mtu.to_string());
            }
            ("macvlan", o)
        }
        NetworkKind::Overlay(o) => (
            "overlay",
            json!({
                "com.docker.network.driver.overlay.vxlanid_list": o.vni.to_string(),
                "com.docker.network.driver.mtu": o.mtu.to_string(),
            }),
        ),
    };
    let mut v = json!({
        "Name": n.name,
        "Id": network_id(&n.name, n.vni()),
        "Scope": "swarm",
        "Driver": driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": n.internal,
        "Attachable": n.attachable,
        "Ingress": n.ingress(),
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": {},
        "Peers": peers,
        "Services": services,
    });
    // Docker's macvlan networks have no peers (no VXLAN between hosts).
    if n.macvlan().is_some() {
        v.as_object_mut().expect("an object").remove("Peers");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{parse_state, resolve};

    fn empty() -> State {
        parse_state("t", b"version: 1\nhosts: [{name: n1, address: 192.168.1.1}]\n").unwrap()
    }

    fn net(o: CreateOpts) -> State {
        let mut s = empty();
        create(&mut s, &o).unwrap();
        s
    }

    #[test]
    fn flags_go_to_the_subnet_that_contains_them() {
        let s = net(CreateOpts {
            name: "uber-svc".into(),
            subnets: vec!["10.0.0.0/24".parse().unwrap(), "10.0.9.0/24".parse().unwrap()],
            gateways: vec!["10.0.9.254".parse().unwrap()],
            ip_ranges: vec!["10.0.0.128/25".parse().unwrap()],
            aux_addresses: vec![("my-router".into(), "10.0.0.5".parse().unwrap())],
            opts: vec![("com.docker.network.driver.mtu".into(), "1400".into())],
            attachable: true,
            ..Default::default()
        });
        let n = &s.networks[0];
        assert_eq!(n.subnets[0].gateway, None);
        assert_eq!(n.subnets[1].gateway, Some("10.0.9.254".parse().unwrap()));
        assert_eq!(n.subnets[0].ip_range, Some("10.0.0.128/25".parse().unwrap()));
        assert_eq!(n.subnets[0].aux_addresses["my-router"], "10.0.0.5".parse::<Ipv4Addr>().unwrap());
        assert_eq!(n.mtu, Some(1400));
        assert!(n.attachable && !n.internal);
    }

    #[test]
    fn default_subnet_is_the_first_free_10_0_n_0() {
        let mut s =
            net(CreateOpts { name: "a".into(), subnets: vec!["10.0.0.0/24".parse().unwrap()], ..Default::default() });
        create(&mut s, &CreateOpts { name: "b".into(), ..Default::default() }).unwrap();
        assert_eq!(s.networks[1].subnets[0].subnet, "10.0.1.0/24".parse().unwrap());
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let mut s = net(CreateOpts { name: "a".into(), ..Default::default() });
        let e = create(&mut s, &CreateOpts { name: "a".into(), ..Default::default() }).unwrap_err();
        assert!(matches!(e, NetworkError::Exists(ref n) if n == "a"), "{e}");
        let e = create(
            &mut s,
            &CreateOpts { name: "b".into(), opts: vec![("colour".into(), "x".into())], ..Default::default() },
        )
        .unwrap_err();
        assert!(matches!(e, NetworkError::UnknownOpt(ref k) if k == "colour"), "{e}");
        let e = create(
            &mut s,
            &CreateOpts {
                name: "c".into(),
                subnets: vec!["10.5.0.0/24".parse().unwrap()],
                gateways: vec!["10.6.0.1".parse().unwrap()],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, NetworkError::NotInSubnet { flag: "--gateway", .. }), "{e}");
        assert_eq!(e.to_string(), "--gateway 10.6.0.1 is in none of the --subnet ranges");
        assert_eq!(s.networks.len(), 1, "nothing added by refused requests");
    }

    #[test]
    fn macvlan_networks_take_dockers_flags() {
        let lan = |opts: &[(&str, &str)]| CreateOpts {
            name: "lan".into(),
            driver: model::Driver::Macvlan,
            subnets: vec!["192.168.246.0/24".parse().unwrap()],
            gateways: vec!["192.168.246.1".parse().unwrap()],
            opts: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        let mut s = empty();
        create(&mut s, &lan(&[("parent", "eth0"), ("macvlan_mode", "private")])).unwrap();
        let n = &s.networks[0];
        assert_eq!(
            (n.driver, n.parent.as_deref(), n.macvlan_mode),
            (model::Driver::Macvlan, Some("eth0"), Some(model::MacvlanMode::Private))
        );
        assert_eq!(n.vni, None);
        let c = resolve("t", &s, Default::default()).unwrap();
        let v = inspect(&c, 0);
        assert_eq!(v["Driver"], "macvlan");
        assert_eq!(v["Options"], json!({"parent": "eth0", "macvlan_mode": "private"}));
        assert_eq!(v["IPAM"]["Config"][0]["Gateway"], "192.168.246.1");
        assert!(v.get("Peers").is_none());
        let line = ls(&c, false).lines().nth(1).unwrap().to_string();
        assert!(line.contains("lan") && line.contains("macvlan") && line.contains(" - "), "{line}");

        let e = create(&mut empty(), &lan(&[])).unwrap_err();
        assert!(matches!(e, NetworkError::NeedsParent), "{e}");
        let e = create(&mut empty(), &lan(&[("parent", "eth0"), ("macvlan_mode", "bridged")])).unwrap_err();
        assert_eq!(e.to_string(), "--opt macvlan_mode=bridged: one of bridge, private, vepa, passthru");
        let e = create(&mut empty(), &CreateOpts { subnets: vec![], ..lan(&[("parent", "eth0")]) }).unwrap_err();
        assert!(matches!(e, NetworkError::MacvlanNeedsSubnet), "{e}");
        let overlay = CreateOpts { driver: model::Driver::Overlay, ..lan(&[("parent", "eth0")]) };
        let e = create(&mut empty(), &overlay).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--opt parent=eth0: only for macvlan networks (-d macvlan, or -o parent=DEVICE through Docker)"
        );
    }

    #[test]
    fn rm_refuses_a_network_in_use() {
        let mut s = parse_state(
            "t",
            b"version: 1\nhosts: [{name: n1, address: 192.168.1.1}]\nnetworks: [{name: a, attachable: true, subnets: [{subnet: 10.0.0.0/24}]}, {name: b, subnets: [{subnet: 10.0.1.0/24}]}]\nendpoints: [{name: e, host: n1, network: a, netns: e}]\n",
        )
        .unwrap();
        let e = remove(&mut s, &["a".into()]).unwrap_err();
        assert!(matches!(e, NetworkError::InUse { ref endpoints, .. } if endpoints == "e"), "{e}");
        remove(&mut s, &["b".into()]).unwrap();
        assert_eq!(s.networks.len(), 1);
        assert!(matches!(remove(&mut s, &["zz".into()]).unwrap_err(), NetworkError::NotFound(_)));
    }

    #[test]
    fn inspect_is_shaped_like_docker() {
        let s = parse_state(
            "t",
            b"version: 1\nhosts: [{name: n1, address: 192.168.1.1}]\nnetworks: [{name: a, attachable: true, subnets: [{subnet: 10.0.0.0/24, ip_range: 10.0.0.0/25}]}]\nendpoints: [{name: e, host: n1, network: a, netns: e, ip: 10.0.0.9}]\n",
        )
        .unwrap();
        let c = resolve("t", &s, Default::default()).unwrap();
        let v = inspect(&c, 0);
        assert_eq!(v["Name"], "a");
        assert_eq!(v["Driver"], "overlay");
        assert_eq!(v["Scope"], "swarm");
        assert_eq!(v["Id"].as_str().unwrap().len(), 64);
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");
        assert_eq!(v["IPAM"]["Config"][0]["Gateway"], "10.0.0.1");
        assert_eq!(v["IPAM"]["Config"][0]["IPRange"], "10.0.0.0/25");
        assert_eq!(v["Containers"]["e"]["IPv4Address"], "10.0.0.9/24");
        assert_eq!(v["Containers"]["e"]["MacAddress"], "02:42:0a:00:00:09");
        assert_eq!(v["Options"]["com.docker.network.driver.overlay.vxlanid_list"], "4096");
        assert_eq!(v["Attachable"], true);
        assert!(ls(&c, false).contains("a "));
    }
}
