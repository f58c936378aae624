//! What the resolver answers (docs/dns.md), from the cluster and the health
//! checks' verdicts: pure logic, rebuilt on every change the agent applies.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
};

use crate::state::model::{Cluster, EndpointMode};

/// The TTL of every answer: clients must not cache a dead task for long.
pub const TTL: u32 = 5;

/// One network's names.
#[derive(Debug, Default, Clone)]
struct NetZone {
    name: String,
    internal: bool,
    /// Endpoint names and aliases (lowercase) -> addresses.
    names: HashMap<String, Vec<Ipv4Addr>>,
    services: HashMap<String, ServiceZone>,
    /// An endpoint's address -> its name.
    ptr: HashMap<Ipv4Addr, String>,
}

#[derive(Debug, Default, Clone)]
struct ServiceZone {
    /// The VIP of a `vip` service; None for `dnsrr`.
    vip: Option<Ipv4Addr>,
    /// Healthy backends.
    backends: Vec<Ipv4Addr>,
}

/// What a question gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A records (to be shuffled by the caller when there are several).
    Addrs(Vec<Ipv4Addr>),
    /// A PTR record: `<endpoint>.<network>`.
    Ptr(String),
    /// The name exists; not with this type (AAAA of a known name).
    NoData,
    /// No such name for this client (isolation included).
    NxDomain,
    /// Not ours: ask the upstream resolvers.
    Forward,
    /// Asked at an address we do not serve.
    Refused,
}

/// The resolver's view of the cluster.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    nets: Vec<NetZone>,
    /// A network's gateway -> the network.
    gateways: HashMap<Ipv4Addr, usize>,
    /// An endpoint's address -> the networks of its netns, its own first.
    clients: HashMap<Ipv4Addr, Vec<usize>>,
    /// Every overlay subnet: reverse lookups inside them are ours.
    subnets: Vec<ipnet::Ipv4Net>,
}

impl Zone {
    /// The names of `c`; backends in `unhealthy` (endpoint keys) are left
    /// out of `tasks.*` and dnsrr answers.
    pub fn build(c: &Cluster, unhealthy: &BTreeSet<String>) -> Zone {
        let mut z = Zone::default();
        for (i, n) in c.networks.iter().enumerate() {
            z.nets.push(NetZone { name: n.name.to_lowercase(), internal: n.internal, ..Default::default() });
            for s in &n.subnets {
                // A macvlan network is not served (docs/dns.md): its gateway is
                // the LAN's router.
                if n.macvlan().is_none() {
                    z.gateways.insert(s.gateway, i);
                }
                z.subnets.push(s.subnet);
            }
        }
        for e in &c.endpoints {
            let nz = &mut z.nets[e.network];
            nz.names.entry(e.name.to_lowercase()).or_default().push(e.ip);
            for a in &e.aliases {
                let v = nz.names.entry(a.to_lowercase()).or_default();
                if !v.contains(&e.ip) {
                    v.push(e.ip);
                }
            }
            nz.ptr.insert(e.ip, e.name.clone());
        }
        for s in &c.services {
            let backends = s
                .backends
                .iter()
                .map(|&b| &c.endpoints[b])
                .filter(|e| !unhealthy.contains(&e.key))
                .map(|e| e.ip)
                .collect();
            let vip = match s.endpoint_mode {
                EndpointMode::Vip => s.vip,
                EndpointMode::Dnsrr => None,
            };
            z.nets[s.network].services.insert(s.name.to_lowercase(), ServiceZone { vip, backends });
        }
        // A client's networks: those of every endpoint in its netns, on its host.
        let mut by_netns: HashMap<(usize, &std::path::Path), Vec<usize>> = HashMap::new();
        let served = |e: &&crate::state::model::Endpoint| c.networks[e.network].macvlan().is_none();
        for e in c.endpoints.iter().filter(served) {
            by_netns.entry((e.host, e.netns.as_path())).or_default().push(e.network);
        }
        for e in c.endpoints.iter().filter(served) {
            let mut nets = vec![e.network];
            nets.extend(by_netns[&(e.host, e.netns.as_path())].iter().copied().filter(|n| *n != e.network));
            z.clients.insert(e.ip, nets);
        }
        z
    }

    /// The gateways the resolver listens on for host `h`: those of the
    /// networks with an endpoint there.
    pub fn served(c: &Cluster, h: usize) -> BTreeSet<Ipv4Addr> {
        // Not a macvlan network's: its gateway is the LAN's router, and its
        // containers cannot reach their own host anyway.
        let nets: BTreeSet<usize> =
            c.local_endpoints(h).map(|e| e.network).filter(|&n| c.networks[n].macvlan().is_none()).collect();
        nets.iter().flat_map(|&n| c.networks[n].subnets.iter().map(|s| s.gateway)).collect()
    }

    /// Whether the network served at `gateway` forwards (not `internal`).
    pub fn forwards(&self, gateway: Ipv4Addr) -> bool {
        self.gateways.get(&gateway).is_some_and(|&n| !self.nets[n].internal)
    }

    fn lookup(&self, n: usize, name: &str) -> Option<Vec<Ipv4Addr>> {
        let nz = &self.nets[n];
        if let Some(s) = name.strip_prefix("tasks.").and_then(|s| nz.services.get(s)) {
            return Some(s.backends.clone());
        }
        // A service wins over an alias of the same name.
        if let Some(s) = nz.services.get(name) {
            return Some(s.vip.map_or_else(|| s.backends.clone(), |v| vec![v]));
        }
        nz.names.get(name).cloned()
    }

    /// The answer to `qname` of type `qtype` asked by `client` at `gateway`.
    pub fn answer(&self, gateway: Ipv4Addr, client: Ipv4Addr, qname: &str, qtype: QType) -> Answer {
        let Some(&primary) = self.gateways.get(&gateway) else { return Answer::Refused };
        let q = qname.trim_end_matches('.').to_lowercase();
        let fallback = vec![primary];
        let mine: &Vec<usize> = match self.clients.get(&client) {
            // A client answers for the networks of its netns, asked through one of them.
            Some(nets) if nets.contains(&primary) => nets,
            _ => &fallback,
        };
        let outside = || if self.nets[primary].internal { Answer::NxDomain } else { Answer::Forward };
        if qtype == QType::Ptr {
            let Some(ip) = reverse(&q) else { return outside() };
            for &n in mine {
                if let Some(name) = self.nets[n].ptr.get(&ip) {
                    return Answer::Ptr(format!("{name}.{}", self.nets[n].name));
                }
            }
            return if self.subnets.iter().any(|s| s.contains(&ip)) { Answer::NxDomain } else { outside() };
        }
        let found = |addrs: Vec<Ipv4Addr>| match qtype {
            QType::A => Answer::Addrs(addrs),
            _ => Answer::NoData,
        };
        // `<name>.<network>`: that network only, if the client is on it.
        for (i, nz) in self.nets.iter().enumerate() {
            if let Some(name) = q.strip_suffix(&format!(".{}", nz.name)) {
                if mine.contains(&i) {
                    if let Some(a) = self.lookup(i, name) {
                        return found(a);
                    }
                }
            }
        }
        for &n in mine {
            if let Some(a) = self.lookup(n, &q) {
                return found(a);
            }
        }
        // Names of networks the client is not on do not exist for it.
        let elsewhere = (0..self.nets.len()).filter(|n| !mine.contains(n)).any(|n| {
            self.lookup(n, &q).is_some()
                || q.strip_suffix(&format!(".{}", self.nets[n].name)).is_some_and(|s| self.lookup(n, s).is_some())
        });
        if elsewhere {
            return Answer::NxDomain;
        }
        outside()
    }
}

/// The question types the zone tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    A,
    Ptr,
    Other,
}

/// `4.3.2.1.in-addr.arpa` -> 1.2.3.4.
fn reverse(q: &str) -> Option<Ipv4Addr> {
    let rest = q.strip_suffix(".in-addr.arpa")?;
    let o: Vec<u8> = rest.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
    (o.len() == 4).then(|| Ipv4Addr::new(o[3], o[2], o[1], o[0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{self, Capabilities};

    fn cluster() -> Cluster {
        let y = "version: 1
hosts: [{name: h1, address: 192.168.1.1}, {name: h2, address: 192.168.1.2}]
networks:
  - {name: alpha, attachable: true, subnets: [{subnet: 10.0.0.0/24}]}
  - {name: beta, attachable: true, subnets: [{subnet: 10.1.0.0/24}]}
  - {name: quiet, internal: true, attachable: true, subnets: [{subnet: 10.2.0.0/24}]}
  - {name: lan, driver: macvlan, parent: eth0, subnets: [{subnet: 192.168.1.0/24}]}
endpoints:
  - {name: web1, host: h1, network: alpha, netns: c1, ip: 10.0.0.11, aliases: [web, front]}
  - {name: web2, host: h2, network: alpha, netns: c2, ip: 10.0.0.12, aliases: [web]}
  - {name: db, host: h1, network: beta, netns: c3, ip: 10.1.0.5}
  - {name: both, host: h1, network: alpha, netns: c4, ip: 10.0.0.20}
  - {name: both, host: h1, network: beta, netns: c4, ip: 10.1.0.20}
  - {name: q1, host: h1, network: quiet, netns: c5, ip: 10.2.0.5}
  - {name: lanbox, host: h1, network: lan, netns: c4, ip: 192.168.1.50}
services:
  - {name: api, network: alpha, backends: [web1, web2], ports: [{protocol: tcp, published: 8080, target: 80}]}
  - {name: rr, network: alpha, endpoint_mode: dnsrr, backends: [web1, web2]}
  - {name: front, network: alpha, vip: 10.0.0.200, backends: [web2], ports: [{protocol: tcp, published: 8081, target: 80}]}
";
        let s: model::State = serde_yaml::from_str(y).unwrap();
        model::resolve("t", &s, Capabilities::default()).unwrap()
    }

    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const WEB1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
    const WEB2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);

    fn sorted(a: Answer) -> Answer {
        match a {
            Answer::Addrs(mut v) => {
                v.sort();
                Answer::Addrs(v)
            }
            a => a,
        }
    }

    #[test]
    fn every_row_of_the_specs_table() {
        let c = cluster();
        let z = Zone::build(&c, &BTreeSet::new());
        let ask = |q: &str, t: QType| sorted(z.answer(GW, WEB1, q, t));
        assert_eq!(ask("web1", QType::A), Answer::Addrs(vec![WEB1]), "an endpoint's name");
        assert_eq!(ask("WEB2.", QType::A), Answer::Addrs(vec![WEB2]), "case and the root dot");
        assert_eq!(ask("web", QType::A), Answer::Addrs(vec![WEB1, WEB2]), "an alias two endpoints share");
        let vip = c.services[0].vip.unwrap();
        assert_eq!(ask("api", QType::A), Answer::Addrs(vec![vip]), "a vip service");
        assert_eq!(ask("rr", QType::A), Answer::Addrs(vec![WEB1, WEB2]), "a dnsrr service");
        assert_eq!(ask("tasks.api", QType::A), Answer::Addrs(vec![WEB1, WEB2]));
        assert_eq!(ask("front", QType::A), Answer::Addrs(vec![Ipv4Addr::new(10, 0, 0, 200)]), "service over alias");
        assert_eq!(ask("web1.alpha", QType::A), Answer::Addrs(vec![WEB1]), "<name>.<network>");
        assert_eq!(ask("web1", QType::Other), Answer::NoData, "AAAA of a known name");
        assert_eq!(ask("11.0.0.10.in-addr.arpa.", QType::Ptr), Answer::Ptr("web1.alpha".into()));
        assert_eq!(ask("99.0.0.10.in-addr.arpa", QType::Ptr), Answer::NxDomain, "an unused overlay address");
        assert_eq!(ask("8.8.8.8.in-addr.arpa", QType::Ptr), Answer::Forward);
        assert_eq!(ask("db", QType::A), Answer::NxDomain, "beta's name, asked from alpha");
        assert_eq!(ask("db.beta", QType::A), Answer::NxDomain);
        assert_eq!(ask("example.com", QType::A), Answer::Forward);
        assert_eq!(z.answer(Ipv4Addr::new(10, 9, 9, 1), WEB1, "web1", QType::A), Answer::Refused);
    }

    #[test]
    fn a_client_on_two_networks_resolves_both_and_internal_networks_forward_nothing() {
        let z = Zone::build(&cluster(), &BTreeSet::new());
        let both = Ipv4Addr::new(10, 0, 0, 20);
        assert_eq!(z.answer(GW, both, "db", QType::A), Answer::Addrs(vec![Ipv4Addr::new(10, 1, 0, 5)]));
        assert_eq!(z.answer(GW, both, "db.beta", QType::A), Answer::Addrs(vec![Ipv4Addr::new(10, 1, 0, 5)]));
        let q = Ipv4Addr::new(10, 2, 0, 5);
        let qgw = Ipv4Addr::new(10, 2, 0, 1);
        assert_eq!(z.answer(qgw, q, "q1", QType::A), Answer::Addrs(vec![q]));
        assert_eq!(z.answer(qgw, q, "example.com", QType::A), Answer::NxDomain, "internal: nothing forwarded");
        assert!(!z.forwards(qgw) && z.forwards(GW));
    }

    #[test]
    fn unhealthy_backends_leave_tasks_and_dnsrr_but_not_names() {
        let c = cluster();
        let z = Zone::build(&c, &BTreeSet::from(["web2".to_string()]));
        assert_eq!(z.answer(GW, WEB1, "tasks.api", QType::A), Answer::Addrs(vec![WEB1]));
        assert_eq!(z.answer(GW, WEB1, "rr", QType::A), Answer::Addrs(vec![WEB1]));
        assert_eq!(z.answer(GW, WEB1, "web2", QType::A), Answer::Addrs(vec![WEB2]), "its own name stays");
    }

    #[test]
    fn each_host_serves_the_gateways_of_its_networks() {
        let c = cluster();
        let h2 = c.host_index("h2").unwrap();
        assert_eq!(Zone::served(&c, h2), BTreeSet::from([GW]));
        assert_eq!(Zone::served(&c, 0).len(), 3);
    }

    #[test]
    fn macvlan_networks_are_not_served() {
        let c = cluster();
        let z = Zone::build(&c, &BTreeSet::new());
        let lan_gw = Ipv4Addr::new(192, 168, 1, 1);
        assert!(!Zone::served(&c, 0).contains(&lan_gw), "no resolver on the LAN's router address");
        let lanbox = Ipv4Addr::new(192, 168, 1, 50);
        assert_eq!(z.answer(lan_gw, lanbox, "web1", QType::A), Answer::Refused);
        // A client sharing its netns with a macvlan endpoint does not get its name.
        let both = Ipv4Addr::new(10, 0, 0, 20);
        assert_eq!(z.answer(GW, both, "lanbox", QType::A), Answer::NxDomain);
    }
}
