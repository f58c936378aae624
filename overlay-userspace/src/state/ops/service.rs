//! `overlay-bpf service create/update/rm/ls/inspect`: services in the store,
//! with Docker's `--publish` syntax.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::state::model::{Cluster, EndpointMode, PortSpec, Protocol, PublishMode, ServiceSpec, State};

/// What the service commands refuse (user errors, exit 1).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service {0} exists already")]
    Exists(String),
    #[error("service {0} not found")]
    NotFound(String),
    #[error("network {0} does not exist; create it with `overlay-bpf network create`")]
    NoNetwork(String),
    #[error("--publish {spec:?}: {why} (Docker's `published=8080,target=80[,protocol=udp][,mode=host]`, or `8080:80[/udp]`)")]
    BadPublish { spec: String, why: String },
    #[error("--vip and --endpoint-mode dnsrr do not go together: a dnsrr service has no virtual IP")]
    DnsrrVip,
    #[error("service {service} has no backend {backend}")]
    NoSuchBackend { service: String, backend: String },
    #[error("service {service} publishes no port {published}")]
    NoSuchPublish { service: String, published: u16 },
}

/// Parses a `--publish` value: Docker's long form
/// `published=8080,target=80[,protocol=udp][,mode=host]` or the short
/// `8080:80[/udp]` (ingress mode).
pub fn parse_publish(spec: &str) -> Result<PortSpec, ServiceError> {
    let bad = |why: &str| ServiceError::BadPublish { spec: spec.into(), why: why.into() };
    let port = |v: &str, what: &str| -> Result<u16, ServiceError> {
        match v.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad(&format!("{what} {v:?} is not a port 1..65535"))),
            Ok(p) => Ok(p),
        }
    };
    let protocol = |v: &str| match v {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(bad(&format!("protocol {v:?} is neither tcp nor udp"))),
    };
    if spec.contains('=') {
        let (mut published, mut target, mut proto, mut mode) = (None, None, Protocol::Tcp, PublishMode::Ingress);
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| bad(&format!("{part:?} is not key=value")))?;
            match k {
                "published" => published = Some(port(v, "published")?),
                "target" => target = Some(port(v, "target")?),
                "protocol" => proto = protocol(v)?,
                "mode" => {
                    mode = match v {
                        "ingress" => PublishMode::Ingress,
                        "host" => PublishMode::Host,
                        _ => return Err(bad(&format!("mode {v:?} is neither ingress nor host"))),
                    }
                }
                _ => return Err(bad(&format!("unknown key {k:?}"))),
            }
        }
        let target = target.ok_or_else(|| bad("target= is missing"))?;
        return Ok(PortSpec { protocol: proto, target, published, mode });
    }
    let (ports, proto) = match spec.split_once('/') {
        Some((p, pr)) => (p, protocol(pr)?),
        None => (spec, Protocol::Tcp),
    };
    let (published, target) = ports.split_once(':').ok_or_else(|| bad("is neither key=value nor P:T"))?;
    Ok(PortSpec {
        protocol: proto,
        target: port(target, "target")?,
        published: Some(port(published, "published")?),
        mode: PublishMode::Ingress,
    })
}

/// `service create` as parsed.
#[derive(Debug, Clone)]
pub struct CreateOpts {
    pub name: String,
    pub network: String,
    pub vip: Option<Ipv4Addr>,
    pub endpoint_mode: EndpointMode,
    pub ports: Vec<PortSpec>,
    pub backends: Vec<String>,
}

pub fn create(state: &mut State, o: &CreateOpts) -> Result<(), ServiceError> {
    if state.services.iter().any(|s| s.name == o.name) {
        return Err(ServiceError::Exists(o.name.clone()));
    }
    if !state.networks.iter().any(|n| n.name == o.network) {
        return Err(ServiceError::NoNetwork(o.network.clone()));
    }
    if o.endpoint_mode == EndpointMode::Dnsrr && o.vip.is_some() {
        return Err(ServiceError::DnsrrVip);
    }
    state.services.push(ServiceSpec {
        name: o.name.clone(),
        network: o.network.clone(),
        endpoint_mode: o.endpoint_mode,
        vip: o.vip,
        ports: o.ports.clone(),
        backends: o.backends.clone(),
        unknown: Default::default(),
    });
    Ok(())
}

/// `service update` as parsed.
#[derive(Debug, Clone, Default)]
pub struct UpdateOpts {
    pub backend_add: Vec<String>,
    pub backend_rm: Vec<String>,
    pub publish_add: Vec<PortSpec>,
    pub publish_rm: Vec<u16>,
}

pub fn update(state: &mut State, name: &str, o: &UpdateOpts) -> Result<(), ServiceError> {
    let s = state.services.iter_mut().find(|s| s.name == name).ok_or_else(|| ServiceError::NotFound(name.into()))?;
    for b in &o.backend_rm {
        let before = s.backends.len();
        s.backends.retain(|x| x != b);
        if s.backends.len() == before {
            return Err(ServiceError::NoSuchBackend { service: name.into(), backend: b.clone() });
        }
    }
    for b in &o.backend_add {
        if !s.backends.contains(b) {
            s.backends.push(b.clone());
        }
    }
    for p in &o.publish_rm {
        let before = s.ports.len();
        s.ports.retain(|x| x.published != Some(*p));
        if s.ports.len() == before {
            return Err(ServiceError::NoSuchPublish { service: name.into(), published: *p });
        }
    }
    s.ports.extend(o.publish_add.iter().cloned());
    Ok(())
}

pub fn remove(state: &mut State, name: &str) -> Result<(), ServiceError> {
    let before = state.services.len();
    state.services.retain(|s| s.name != name);
    if state.services.len() == before {
        return Err(ServiceError::NotFound(name.into()));
    }
    Ok(())
}

/// A service as `service ls -o json` and `service inspect` show it: the
/// state file's fields, the VIP filled in, and its backends resolved.
#[derive(Debug, Serialize)]
pub struct ServiceRow {
    pub name: String,
    pub network: String,
    pub endpoint_mode: EndpointMode,
    pub vip: Option<Ipv4Addr>,
    pub ports: Vec<PortSpec>,
    /// As written: endpoint names or aliases.
    pub backends: Vec<String>,
    /// The endpoints they stand for, with their hosts and addresses.
    pub endpoints: Vec<ServiceBackend>,
}

#[derive(Debug, Serialize)]
pub struct ServiceBackend {
    pub name: String,
    pub host: String,
    pub ip: Ipv4Addr,
}

/// The services of the state (the endpoints' own published ports, which
/// resolve as services too, left out).
pub fn rows(state: &State, cluster: &Cluster) -> Vec<ServiceRow> {
    state
        .services
        .iter()
        .filter_map(|spec| {
            let s = cluster.services.iter().find(|s| s.name == spec.name)?;
            Some(ServiceRow {
                name: s.name.clone(),
                network: cluster.networks[s.network].name.clone(),
                endpoint_mode: s.endpoint_mode,
                vip: s.vip,
                ports: s.ports.clone(),
                backends: spec.backends.clone(),
                endpoints: s
                    .backends
                    .iter()
                    .map(|&b| {
                        let e = &cluster.endpoints[b];
                        ServiceBackend { name: e.name.clone(), host: cluster.hosts[e.host].name.clone(), ip: e.ip }
                    })
                    .collect(),
            })
        })
        .collect()
}

fn port_text(p: &PortSpec) -> String {
    match p.published {
        Some(pp) if p.mode == PublishMode::Host => format!("{pp}->{}/{} (host)", p.target, p.protocol),
        Some(pp) => format!("*:{pp}->{}/{}", p.target, p.protocol),
        None => format!("{}/{}", p.target, p.protocol),
    }
}

/// `service ls` as a table.
pub fn table(rows: &[ServiceRow]) -> String {
    let mut out =
        format!("{:<20} {:<16} {:<6} {:<16} {:<9} {}\n", "NAME", "NETWORK", "MODE", "VIP", "BACKENDS", "PORTS");
    for r in rows {
        out += &format!(
            "{:<20} {:<16} {:<6} {:<16} {:<9} {}\n",
            r.name,
            r.network,
            match r.endpoint_mode {
                EndpointMode::Vip => "vip",
                EndpointMode::Dnsrr => "dnsrr",
            },
            r.vip.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            r.endpoints.len(),
            r.ports.iter().map(port_text).collect::<Vec<_>>().join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{parse_state, resolve, Capabilities};

    #[test]
    fn publish_specs_parse_as_docker_writes_them() {
        let p = |s: &str| parse_publish(s).unwrap();
        assert_eq!(
            p("published=8080,target=80"),
            PortSpec { protocol: Protocol::Tcp, target: 80, published: Some(8080), mode: PublishMode::Ingress }
        );
        assert_eq!(
            p("published=53,target=5353,protocol=udp,mode=host"),
            PortSpec { protocol: Protocol::Udp, target: 5353, published: Some(53), mode: PublishMode::Host }
        );
        assert_eq!(p("target=80").published, None);
        assert_eq!(p("8080:80"), p("published=8080,target=80"));
        assert_eq!(p("53:53/udp").protocol, Protocol::Udp);
        for (bad, why) in [
            ("8080", "neither key=value nor P:T"),
            ("0:80", "published \"0\" is not a port"),
            ("8080:80/sctp", "protocol \"sctp\""),
            ("published=80", "target= is missing"),
            ("published=80,target=80,mode=swarm", "mode \"swarm\""),
            ("published=80,target=80,color=red", "unknown key \"color\""),
        ] {
            let e = parse_publish(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("published=8080,target=80"), "{bad}: {e}");
        }
    }

    #[test]
    fn create_update_and_remove_keep_the_state_valid() {
        let mut s =
            parse_state("t", include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cluster.yaml"))).unwrap();
        let o = CreateOpts {
            name: "api".into(),
            network: "uber-svc".into(),
            vip: None,
            endpoint_mode: EndpointMode::Vip,
            ports: vec![parse_publish("9090:80").unwrap()],
            backends: vec!["web.1".into()],
        };
        create(&mut s, &o).unwrap();
        assert!(matches!(create(&mut s, &o), Err(ServiceError::Exists(_))));
        let u = UpdateOpts {
            backend_add: vec!["web.2".into()],
            backend_rm: vec!["web.1".into()],
            publish_add: vec![parse_publish("9091:81/udp").unwrap()],
            publish_rm: vec![9090],
        };
        update(&mut s, "api", &u).unwrap();
        let c = resolve("t", &s, Capabilities::default()).unwrap();
        let r = rows(&s, &c);
        let api = r.iter().find(|r| r.name == "api").unwrap();
        assert_eq!(api.backends, ["web.2"]);
        assert_eq!(api.endpoints[0].ip, "10.0.0.4".parse::<Ipv4Addr>().unwrap());
        assert_eq!(api.ports.len(), 1);
        assert!(api.vip.is_some());
        assert!(table(&r).contains("*:9091->81/udp"), "{}", table(&r));
        let e = update(&mut s, "api", &UpdateOpts { publish_rm: vec![7], ..Default::default() }).unwrap_err();
        assert_eq!(e.to_string(), "service api publishes no port 7");
        remove(&mut s, "api").unwrap();
        assert!(matches!(remove(&mut s, "api"), Err(ServiceError::NotFound(_))));
    }
}
