//! Changes applied as they arrive (issue 15): an agent watching etcd applies
//! an endpoint created, moved or removed on another host by writing that
//! endpoint's one OB_ENDPOINTS entry, at a cost that does not grow with the
//! cluster. That is the change a big cluster sees most: containers starting
//! and stopping elsewhere.
//!
//! Anything else goes through the full reconcile, which stays the reference:
//! a change to hosts, networks, services or the cluster settings; an
//! endpoint on this host (a veth to make), one a service names by name or
//! alias (Maglev tables), one that publishes ports, one whose name another
//! endpoint shares (its key, `name@network`, depends on the order), one
//! without its address and MAC written out, or one breaking a rule. So the
//! fast path only takes changes whose effect on the maps is exactly one
//! endpoint entry, and the unit tests check it against [`desired`].
//!
//! An endpoint's own rules (its address in its network's subnets, not a
//! gateway or an aux address, a unicast MAC, a valid netns and ifname, an
//! attachable network) are checked by the resolver itself, on a state of
//! that endpoint and its network; the rules between endpoints (unique name,
//! address, MAC, interface) by the indexes here.
//!
//! [`desired`]: crate::plan::reconcile::desired

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    path::PathBuf,
};

use overlay_common::{EndpointKey, EndpointValue};

use crate::{
    plan::reconcile,
    state::model::{self, Capabilities, Cluster, ClusterSpec, EndpointSpec, HostSpec, Mac, NetworkSpec, State},
};

pub use crate::state::store::EndpointChange;

/// One write to OB_ENDPOINTS.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointWrite {
    Put(EndpointKey, EndpointValue),
    Delete(EndpointKey),
}

struct Net {
    /// The VNI when this host programs the network's endpoints (an overlay
    /// network it has endpoints of, or the mesh's): where writes go.
    programmed: Option<u32>,
    spec: NetworkSpec,
}

/// Where an endpoint is, as resolved.
#[derive(Debug, Clone)]
struct Placed {
    ip: Ipv4Addr,
    mac: Mac,
    netns: PathBuf,
    ifname: String,
}

/// What a change needs to know of the cluster, kept up to date by the
/// changes applied: built from the state and its resolution at every full
/// reconcile.
pub struct Incremental {
    me: usize,
    /// What the machine can do, as the full resolve was told.
    caps: Capabilities,
    settings: ClusterSpec,
    host_specs: Vec<HostSpec>,
    /// Host name -> (index, underlay address).
    hosts: HashMap<String, (usize, Ipv4Addr)>,
    nets: HashMap<String, Net>,
    /// Endpoints of each name, on every network.
    names: HashMap<String, u32>,
    /// (network, name) that a service's backends list.
    referenced: HashSet<(String, String)>,
    placed: HashMap<(String, String), Placed>,
    /// (network, address) claimed: endpoints, gateways, aux addresses, VIPs.
    taken: HashSet<(String, Ipv4Addr)>,
    macs: HashSet<Mac>,
    /// Interfaces in use in each netns.
    ifaces: HashMap<PathBuf, BTreeSet<String>>,
}

/// Why a change goes through the full reconcile rather than the fast path:
/// the fast path takes only changes whose effect on the maps is exactly one
/// endpoint entry and whose rules it can check on its own indexes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FullReconcile {
    #[error("network {0:?} is not known here")]
    UnknownNetwork(String),
    #[error("host {0:?} is not known")]
    UnknownHost(String),
    #[error("an endpoint not known here")]
    UnknownEndpoint,
    #[error("an endpoint renamed")]
    Renamed,
    #[error("an endpoint on this host (its veth)")]
    OnThisHost,
    #[error("an endpoint publishing ports")]
    Publishes,
    #[error("an endpoint a service names")]
    ServiceNamesIt,
    #[error("an endpoint leaving a netns it shares")]
    LeavesSharedNetns,
    #[error("an endpoint whose name {0:?} another endpoint has too")]
    NameShared(String),
    #[error("an endpoint without its address and MAC written out")]
    NotWrittenOut,
    #[error("address {ip} is taken on {network:?}")]
    AddressTaken { ip: Ipv4Addr, network: String },
    #[error("MAC {0} is taken")]
    MacTaken(Mac),
    #[error("interface {ifname} is taken in {netns}")]
    IfnameTaken { ifname: String, netns: String },
    #[error("an endpoint moved to a netns with others, without an ifname")]
    MovedWithoutIfname,
    /// One of the endpoint's own rules, as the resolver checks it.
    #[error(transparent)]
    Rule(#[from] model::StateError),
    #[error("an endpoint resolved otherwise alone")]
    ResolvedOtherwise,
}

impl Incremental {
    /// The indexes for host `me` of `cluster`, which `state` resolved to.
    pub fn new(state: &State, cluster: &Cluster, me: usize) -> Incremental {
        let programmed = reconcile::programmed_networks(cluster, me);
        let mut nets = HashMap::new();
        let mut taken = HashSet::new();
        for (i, n) in cluster.networks.iter().enumerate() {
            let Some(spec) = state.networks.iter().find(|s| s.name == n.name) else { continue };
            for s in &n.subnets {
                taken.insert((n.name.clone(), s.gateway));
                taken.extend(s.aux_addresses.values().map(|a| (n.name.clone(), *a)));
            }
            nets.insert(
                n.name.clone(),
                Net { programmed: n.vni().filter(|_| programmed.contains(&i)), spec: spec.clone() },
            );
        }
        for s in &cluster.services {
            if let Some(vip) = s.vip {
                taken.insert((cluster.networks[s.network].name.clone(), vip));
            }
        }
        let mut inc = Incremental {
            me,
            caps: cluster.caps,
            settings: state.cluster.clone(),
            host_specs: state.hosts.clone(),
            hosts: cluster.hosts.iter().enumerate().map(|(i, h)| (h.name.clone(), (i, h.address))).collect(),
            nets,
            names: HashMap::new(),
            referenced: state
                .services
                .iter()
                .flat_map(|s| s.backends.iter().map(|b| (s.network.clone(), b.clone())))
                .collect(),
            placed: HashMap::new(),
            taken,
            macs: HashSet::new(),
            ifaces: HashMap::new(),
        };
        for e in &cluster.endpoints {
            let net = cluster.networks[e.network].name.clone();
            let p = Placed { ip: e.ip, mac: e.mac, netns: e.netns.clone(), ifname: e.ifname.clone() };
            inc.add(&net, &e.name, p);
        }
        inc
    }

    fn add(&mut self, net: &str, name: &str, p: Placed) {
        *self.names.entry(name.to_string()).or_default() += 1;
        self.taken.insert((net.to_string(), p.ip));
        self.macs.insert(p.mac);
        self.ifaces.entry(p.netns.clone()).or_default().insert(p.ifname.clone());
        self.placed.insert((net.to_string(), name.to_string()), p);
    }

    fn remove(&mut self, net: &str, name: &str) {
        let Some(p) = self.placed.remove(&(net.to_string(), name.to_string())) else { return };
        if let Some(n) = self.names.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.names.remove(name);
            }
        }
        self.taken.remove(&(net.to_string(), p.ip));
        self.macs.remove(&p.mac);
        if let Some(set) = self.ifaces.get_mut(&p.netns) {
            set.remove(&p.ifname);
            if set.is_empty() {
                self.ifaces.remove(&p.netns);
            }
        }
    }

    /// The writes that apply `change`, with the indexes updated; or why it
    /// needs the full reconcile (the indexes are then unchanged, and the full
    /// reconcile builds them anew anyway).
    pub fn plan(&mut self, change: &EndpointChange) -> Result<Vec<EndpointWrite>, FullReconcile> {
        let Some(any) = change.new.as_ref().or(change.old.as_ref()) else { return Ok(Vec::new()) };
        let (net_name, name) = (any.network.clone(), any.name.clone());
        let net = self.nets.get(&net_name).ok_or_else(|| FullReconcile::UnknownNetwork(net_name.clone()))?;
        let mut vtep = None;
        for e in [&change.old, &change.new].into_iter().flatten() {
            if e.network != net_name || e.name != name {
                return Err(FullReconcile::Renamed);
            }
            let &(hi, address) = self.hosts.get(&e.host).ok_or_else(|| FullReconcile::UnknownHost(e.host.clone()))?;
            if hi == self.me {
                return Err(FullReconcile::OnThisHost);
            }
            if !e.publish.is_empty() {
                return Err(FullReconcile::Publishes);
            }
            let key = (net_name.clone(), name.clone());
            if self.referenced.contains(&key)
                || e.aliases.iter().any(|a| self.referenced.contains(&(net_name.clone(), a.clone())))
            {
                return Err(FullReconcile::ServiceNamesIt);
            }
            vtep = Some(address);
        }
        let same = self.names.get(&name).copied().unwrap_or(0);
        let old = match &change.old {
            Some(_) => {
                let p = self.placed.get(&(net_name.clone(), name.clone())).ok_or(FullReconcile::UnknownEndpoint)?;
                // The others of its netns may be given other ethNs without it.
                let leaves = change.new.as_ref().is_none_or(|n| model::netns_path(&n.netns) != p.netns);
                if leaves && self.ifaces.get(&p.netns).is_some_and(|set| set.len() > 1) {
                    return Err(FullReconcile::LeavesSharedNetns);
                }
                Some(p.clone())
            }
            None => None,
        };
        if same != u32::from(old.is_some()) {
            return Err(FullReconcile::NameShared(name));
        }
        let mut placed = None;
        if let Some(new) = &change.new {
            let (Some(ip), Some(mac)) = (new.ip, new.mac) else {
                return Err(FullReconcile::NotWrittenOut);
            };
            let own = old.as_ref();
            if own.map(|p| p.ip) != Some(ip) && self.taken.contains(&(net_name.clone(), ip)) {
                return Err(FullReconcile::AddressTaken { ip, network: net_name });
            }
            if own.map(|p| p.mac) != Some(mac) && self.macs.contains(&mac) {
                return Err(FullReconcile::MacTaken(mac));
            }
            let netns = model::netns_path(&new.netns);
            let mut others = self.ifaces.get(&netns).cloned().unwrap_or_default();
            if let Some(p) = own.filter(|p| p.netns == netns) {
                others.remove(&p.ifname);
            }
            let ifname = match &new.ifname {
                Some(i) if others.contains(i) => {
                    return Err(FullReconcile::IfnameTaken { ifname: i.clone(), netns: netns.display().to_string() })
                }
                Some(i) => i.clone(),
                // Unchanged in its place in the order: the one it had.
                None if own.is_some_and(|p| p.netns == netns) => own.map(|p| p.ifname.clone()).unwrap_or_default(),
                // Elsewhere in the order, which ethN it gets depends on those after it.
                None if own.is_some() && !others.is_empty() => return Err(FullReconcile::MovedWithoutIfname),
                // A new endpoint is the last of its kind: the first ethN the
                // others leave, as the resolver gives it.
                None => (0..).map(|k| format!("eth{k}")).find(|n| !others.contains(n)).expect("an unused ethN"),
            };
            // The endpoint's own rules, by the resolver.
            let alone = State {
                version: 1,
                cluster: self.settings.clone(),
                hosts: self.host_specs.clone(),
                networks: vec![net.spec.clone()],
                endpoints: vec![EndpointSpec { ifname: Some(ifname.clone()), ..new.clone() }],
                services: vec![],
            };
            let r = model::resolve("change", &alone, self.caps)?;
            let e = &r.endpoints[0];
            if (e.ip, e.mac, &e.ifname) != (ip, mac, &ifname) {
                return Err(FullReconcile::ResolvedOtherwise);
            }
            placed = Some(Placed { ip, mac, netns, ifname });
        }
        let programmed = net.programmed;
        let key = |vni: u32, ip: Ipv4Addr| EndpointKey { vni, ip: ip.octets() };
        // The new entry before the old one goes (make-before-break).
        let mut writes = Vec::new();
        if let (Some(p), Some(vtep), Some(vni)) = (&placed, vtep, programmed) {
            writes.push(EndpointWrite::Put(key(vni, p.ip), reconcile::remote_endpoint(p.mac, vtep)));
        }
        if let Some(o) = &old {
            self.remove(&net_name, &name);
            if let Some(vni) = programmed.filter(|_| placed.as_ref().map(|p| p.ip) != Some(o.ip)) {
                writes.push(EndpointWrite::Delete(key(vni, o.ip)));
            }
        }
        if let Some(p) = placed {
            self.add(&net_name, &name, p);
        }
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::plan::reconcile::{desired, HostFacts, Veth};

    const STATE: &str = "version: 1
hosts:
  - {name: n1, address: 192.168.0.1}
  - {name: n2, address: 192.168.0.2}
  - {name: n3, address: 192.168.0.3}
networks:
  - {name: front, attachable: true, subnets: [{subnet: 10.10.0.0/24}]}
  - {name: back, attachable: true, subnets: [{subnet: 10.20.0.0/24, aux_addresses: {printer: 10.20.0.9}}]}
  - {name: lonely, attachable: true, subnets: [{subnet: 10.30.0.0/24}]}
endpoints:
  - {name: a, host: n1, network: front, netns: a}
  - {name: b, host: n2, network: front, netns: b}
  - {name: w, host: n2, network: front, netns: w, aliases: [web-alias]}
  - {name: c, host: n3, network: back, netns: c}
  - {name: d, host: n1, network: back, netns: d}
  - {name: twin, host: n2, network: front, netns: t1}
  - {name: twin, host: n3, network: back, netns: t2}
services:
  - {name: web, network: front, vip: 10.10.0.100, ports: [{protocol: tcp, target: 80}], backends: [w, web-alias]}
";

    /// The state with allocations written out, as the store holds it.
    fn stored(yaml: &str) -> State {
        let s = model::parse_state("t", yaml.as_bytes()).unwrap();
        let c = model::resolve("t", &s, Capabilities::default()).unwrap();
        model::pinned(&s, &c)
    }

    /// What `desired` puts in OB_ENDPOINTS on n1 for `state`.
    fn entries(state: &State) -> BTreeMap<EndpointKey, EndpointValue> {
        let c = model::resolve("t", state, Capabilities::default()).unwrap();
        let veths = c
            .local_endpoints(0)
            .enumerate()
            .map(|(i, e)| (e.key.clone(), Veth { ifindex: i as u32 + 10, mac: [2, 0, 0, 0, 0, i as u8] }))
            .collect();
        desired(&c, 0, &HostFacts { underlay_ifindex: 1, veths, ..Default::default() }).endpoints
    }

    fn incremental(state: &State) -> Incremental {
        Incremental::new(state, &model::resolve("t", state, Capabilities::default()).unwrap(), 0)
    }

    fn apply(m: &mut BTreeMap<EndpointKey, EndpointValue>, writes: Vec<EndpointWrite>) {
        for w in writes {
            match w {
                EndpointWrite::Put(k, v) => {
                    m.insert(k, v);
                }
                EndpointWrite::Delete(k) => {
                    m.remove(&k);
                }
            }
        }
    }

    fn ep(yaml: &str) -> EndpointSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn change(old: Option<&EndpointSpec>, new: Option<&EndpointSpec>) -> EndpointChange {
        EndpointChange { old: old.cloned(), new: new.cloned() }
    }

    /// Replaces (or adds, or removes) endpoint (network, name) in `state`,
    /// as the store would: a new one goes last.
    fn with(state: &State, net: &str, name: &str, new: Option<&EndpointSpec>) -> State {
        let mut s = state.clone();
        match (s.endpoints.iter().position(|e| e.network == net && e.name == name), new) {
            (Some(i), Some(e)) => s.endpoints[i] = e.clone(),
            (Some(i), None) => {
                s.endpoints.remove(i);
            }
            (None, Some(e)) => s.endpoints.push(e.clone()),
            (None, None) => {}
        }
        s
    }

    #[test]
    fn each_fast_change_writes_what_the_full_reconcile_would() {
        let mut state = stored(STATE);
        let mut inc = incremental(&state);
        let mut maps = entries(&state);
        let x = ep("{name: x, host: n2, network: front, netns: x, ip: 10.10.0.50, mac: '02:42:0a:0a:00:32'}");
        let x_moved = ep("{name: x, host: n3, network: front, netns: x, ip: 10.10.0.51, mac: '02:42:0a:0a:00:33'}");
        let x_aliased = ep(
            "{name: x, host: n3, network: front, netns: x, ip: 10.10.0.51, mac: '02:42:0a:0a:00:33', aliases: [other]}",
        );
        let y = ep("{name: y, host: n3, network: lonely, netns: y, ip: 10.30.0.7, mac: '02:42:0a:1e:00:07'}");
        let steps: Vec<(Option<&EndpointSpec>, Option<&EndpointSpec>, usize)> = vec![
            // Created on n2, on a network n1 has an endpoint of: one entry.
            (None, Some(&x), 1),
            // Moved to n3 with another address: the old entry goes.
            (Some(&x), Some(&x_moved), 2),
            // An alias no service names: the same entry again.
            (Some(&x_moved), Some(&x_aliased), 1),
            (Some(&x_aliased), None, 1),
            // On a network n1 does not program: nothing to write, but known.
            (None, Some(&y), 0),
            (Some(&y), None, 0),
        ];
        for (old, new, n) in steps {
            let any = new.or(old).unwrap();
            let writes = inc.plan(&change(old, new)).unwrap_or_else(|e| panic!("{any:?}: {e}"));
            assert_eq!(writes.len(), n, "{writes:?}");
            apply(&mut maps, writes);
            state = with(&state, &any.network, &any.name, new);
            assert_eq!(maps, entries(&state), "after {old:?} -> {new:?}");
        }
        // A second endpoint in a netns: the next ethN, as the resolver gives it.
        let b2 = ep("{name: b2, host: n2, network: back, netns: b, ip: 10.20.0.50, mac: '02:42:0a:14:00:32'}");
        let writes = inc.plan(&change(None, Some(&b2))).unwrap();
        apply(&mut maps, writes);
        state = with(&state, "back", "b2", Some(&b2));
        assert_eq!(maps, entries(&state));
        let resolved = model::resolve("t", &state, Capabilities::default()).unwrap();
        let r = resolved.endpoints.iter().find(|e| e.name == "b2").unwrap();
        assert_eq!(inc.placed[&("back".to_string(), "b2".to_string())].ifname, r.ifname);
        assert_eq!(r.ifname, "eth1");
        // Leaving it again could give the others other names: the full reconcile.
        assert_eq!(inc.plan(&change(Some(&b2), None)), Err(FullReconcile::LeavesSharedNetns));
        // Taken, then freed: the address is taken again only once the first
        // holder is gone.
        let z = ep("{name: z, host: n2, network: front, netns: z, ip: 10.10.0.50, mac: '02:42:0a:0a:00:34'}");
        assert!(inc.plan(&change(None, Some(&z))).is_ok());
    }

    #[test]
    fn changes_the_fast_path_refuses_go_to_the_full_reconcile() {
        use model::Rule;
        use FullReconcile as F;
        let state = stored(STATE);
        let named = |s: &State, net: &str, n: &str| {
            s.endpoints.iter().find(|e| e.network == net && e.name == n).unwrap().clone()
        };
        let b = named(&state, "front", "b");
        let (b_ip, b_mac) = (b.ip.unwrap(), b.mac.unwrap());
        let new = |yaml: &str| change(None, Some(&ep(yaml)));
        let taken = |ip: &str, network: &str| F::AddressTaken { ip: ip.parse().unwrap(), network: network.into() };
        // What each change is refused for: one of the fast path's own
        // reasons, or the rule of the resolver (the endpoint resolved alone).
        #[derive(Debug)]
        enum Want {
            Is(FullReconcile),
            Rule(Rule),
        }
        let cases: Vec<(EndpointChange, Want)> = vec![
            (new("{name: n, host: n1, network: front, netns: n, ip: 10.10.0.60, mac: '02:00:00:00:00:60'}"), Want::Is(F::OnThisHost)),
            (change(Some(&named(&state, "front", "w")), None), Want::Is(F::ServiceNamesIt)),
            (new("{name: web-alias, host: n2, network: front, netns: n, ip: 10.10.0.61, mac: '02:00:00:00:00:61'}"), Want::Is(F::ServiceNamesIt)),
            (new("{name: n, host: n2, network: front, netns: n, ip: 10.10.0.62, mac: '02:00:00:00:00:62', aliases: [w]}"), Want::Is(F::ServiceNamesIt)),
            (change(Some(&named(&state, "front", "twin")), None), Want::Is(F::NameShared("twin".into()))),
            (new("{name: b, host: n2, network: back, netns: n, ip: 10.20.0.70, mac: '02:00:00:00:00:70'}"), Want::Is(F::NameShared("b".into()))),
            (new("{name: n, host: n2, network: front, netns: n}"), Want::Is(F::NotWrittenOut)),
            (new(&format!("{{name: n, host: n2, network: front, netns: n, ip: {b_ip}, mac: '02:00:00:00:00:63'}}")), Want::Is(taken(&b_ip.to_string(), "front"))),
            (new("{name: n, host: n2, network: front, netns: n, ip: 10.10.0.100, mac: '02:00:00:00:00:64'}"), Want::Is(taken("10.10.0.100", "front"))),
            (new("{name: n, host: n2, network: back, netns: n, ip: 10.20.0.9, mac: '02:00:00:00:00:65'}"), Want::Is(taken("10.20.0.9", "back"))),
            (new(&format!("{{name: n, host: n2, network: front, netns: n, ip: 10.10.0.66, mac: '{b_mac}'}}")), Want::Is(F::MacTaken(b_mac))),
            (new("{name: n, host: n2, network: front, netns: b, ifname: eth0, ip: 10.10.0.68, mac: '02:00:00:00:00:68'}"), Want::Is(F::IfnameTaken { ifname: "eth0".into(), netns: "/run/netns/b".into() })),
            (new("{name: n, host: n2, network: front, netns: n, ip: 10.20.0.69, mac: '02:00:00:00:00:69'}"), Want::Rule(Rule::AddressOutside)),
            (new("{name: n, host: n2, network: front, netns: n, ip: 10.10.0.1, mac: '02:00:00:00:00:6a'}"), Want::Is(taken("10.10.0.1", "front"))),
            (new("{name: n, host: n2, network: front, netns: n, ip: 10.10.0.71, mac: '03:00:00:00:00:6b'}"), Want::Rule(Rule::Mac)),
            (new("{name: n, host: n9, network: front, netns: n, ip: 10.10.0.72, mac: '02:00:00:00:00:6c'}"), Want::Is(F::UnknownHost("n9".into()))),
            (new("{name: n, host: n2, network: nowhere, netns: n, ip: 10.10.0.73, mac: '02:00:00:00:00:6d'}"), Want::Is(F::UnknownNetwork("nowhere".into()))),
            (new("{name: n, host: n2, network: front, netns: n, ip: 10.10.0.74, mac: '02:00:00:00:00:6e', publish: [{published: 8080, target: 80}]}"), Want::Is(F::Publishes)),
        ];
        for (c, want) in cases {
            let mut inc = incremental(&state);
            let e = inc.plan(&c).expect_err(&format!("{c:?} needs the full reconcile"));
            match (&want, &e) {
                (Want::Is(w), e) => assert_eq!(e, w, "{c:?}"),
                (Want::Rule(r), F::Rule(se)) => {
                    assert_eq!(se.problems.iter().map(|p| p.rule).collect::<Vec<_>>(), [*r], "{c:?}: {se}")
                }
                (want, e) => panic!("{c:?}: {e:?}, not {want:?}"),
            }
        }
    }

    /// One generated change to an endpoint of `STATE`'s cluster.
    #[derive(Debug, Clone)]
    struct Op {
        name: usize,
        network: usize,
        /// None: the endpoint is removed.
        place: Option<Place>,
    }

    #[derive(Debug, Clone)]
    struct Place {
        host: usize,
        netns: usize,
        ifname: Option<usize>,
        /// Last octet of the address, and of the MAC; None: not written out.
        ip: Option<u8>,
        mac: Option<u8>,
        alias: Option<usize>,
        publish: bool,
    }

    const NAMES: [&str; 6] = ["p0", "p1", "p2", "b", "twin", "web-alias"];
    const NETWORKS: [&str; 4] = ["front", "back", "lonely", "nowhere"];
    const HOSTS: [&str; 4] = ["n1", "n2", "n3", "n9"];
    const NETNS: [&str; 4] = ["x0", "x1", "b", "c"];
    const ALIASES: [&str; 3] = ["other", "w", "web-alias"];

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let place = (
            0..HOSTS.len(),
            0..NETNS.len(),
            proptest::option::weighted(0.3, 0..3usize),
            proptest::option::weighted(0.9, 0..12u8),
            proptest::option::weighted(0.9, 0..12u8),
            proptest::option::weighted(0.15, 0..ALIASES.len()),
            proptest::bool::weighted(0.05),
        )
            .prop_map(|(host, netns, ifname, ip, mac, alias, publish)| Place {
                host,
                netns,
                ifname,
                ip,
                mac,
                alias,
                publish,
            });
        (0..NAMES.len(), 0..NETWORKS.len(), proptest::option::weighted(0.75, place))
            .prop_map(|(name, network, place)| Op { name, network, place })
    }

    /// The endpoint `op` makes, on the subnets of `STATE`'s networks.
    fn spec(op: &Op, p: &Place) -> EndpointSpec {
        let third = [10, 20, 30, 40][op.network];
        EndpointSpec {
            name: NAMES[op.name].into(),
            host: HOSTS[p.host].into(),
            network: NETWORKS[op.network].into(),
            netns: NETNS[p.netns].into(),
            ifname: p.ifname.map(|i| format!("eth{i}")),
            // Addresses from .1 (the gateway) on, to meet the taken ones too.
            ip: p.ip.map(|o| Ipv4Addr::new(10, third, 0, if o < 4 { [1, 2, 9, 100][o as usize] } else { 40 + o })),
            mac: p.mac.map(|o| Mac([2, 0, 0, 0, third, 40 + o])),
            aliases: p.alias.map(|a| ALIASES[a].to_string()).into_iter().collect(),
            publish: if p.publish {
                ep("{name: x, host: n2, network: front, netns: x, publish: [{published: 8080, target: 80}]}").publish
            } else {
                vec![]
            },
            ..ep("{name: x, host: n2, network: front, netns: x}")
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 96, ..Default::default() })]

        /// Any sequence of endpoint changes the store accepts leaves
        /// OB_ENDPOINTS as the full reconcile of the resulting state would,
        /// whether each change took the fast path or was refused to the
        /// full reconcile; the fast path never takes a change the resolver
        /// refuses.
        #[test]
        fn the_fast_path_and_the_full_reconcile_agree_on_any_sequence(ops in proptest::collection::vec(op(), 1..40)) {
            let mut state = stored(STATE);
            let mut inc = incremental(&state);
            let mut maps = entries(&state);
            for op in &ops {
                let (net, name) = (NETWORKS[op.network], NAMES[op.name]);
                let old = state.endpoints.iter().find(|e| e.network == net && e.name == name).cloned();
                let new = op.place.as_ref().map(|p| spec(op, p));
                if old.is_none() && new.is_none() {
                    continue;
                }
                let next = with(&state, net, name, new.as_ref());
                let valid = model::resolve("t", &next, Capabilities::default()).is_ok();
                match inc.plan(&change(old.as_ref(), new.as_ref())) {
                    Ok(writes) => {
                        proptest::prop_assert!(valid, "the fast path took a change the resolver refuses: {op:?}");
                        apply(&mut maps, writes);
                        state = next;
                        proptest::prop_assert_eq!(&maps, &entries(&state), "after {:?}", op);
                    }
                    // The store refuses it: nothing changes. (The indexes
                    // are unchanged by a refused plan.)
                    Err(_) if !valid => {}
                    Err(_) => {
                        state = next;
                        inc = incremental(&state);
                        maps = entries(&state);
                    }
                }
            }
        }
    }
}
