//! Validation and resolution: every rule of the state checked (all problems
//! reported, not just the first), every default resolved, and the
//! deterministic allocation of VNIs, addresses, MACs and interface names.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    path::PathBuf,
};

use ipnet::Ipv4Net;

use super::*;

struct Checker<'a> {
    file: &'a str,
    problems: Vec<Problem>,
    /// What is worth saying but breaks no rule: the state applies.
    warnings: Vec<Problem>,
}

impl Checker<'_> {
    fn err(&mut self, rule: Rule, entry: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { entry: entry.into(), rule, message: message.into() });
    }

    fn warn(&mut self, rule: Rule, entry: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem { entry: entry.into(), rule, message: message.into() });
    }
}

fn entry(kind: &str, i: usize, name: &str) -> String {
    if name.is_empty() {
        format!("{kind}[{i}]")
    } else {
        format!("{kind}[{i}] ({name})")
    }
}

/// Checks every name in a list is non-empty and unique; returns name -> index.
fn unique_names<'s>(c: &mut Checker, kind: &str, names: impl Iterator<Item = &'s str>) -> HashMap<&'s str, usize> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, n) in names.enumerate() {
        if n.trim().is_empty() {
            c.err(Rule::EmptyName, format!("{kind}[{i}]"), "name is empty; give every entry a unique name");
            continue;
        }
        if let Some(first) = seen.get(n) {
            c.err(
                Rule::DuplicateName,
                entry(kind, i, n),
                format!("duplicate name: {kind}[{first}] is already called {n:?}; names must be unique"),
            );
        } else {
            seen.insert(n, i);
        }
    }
    seen
}

/// The addresses endpoints and VIPs of one network may be given, in a stable order.
struct Pool {
    /// (first address, count) per subnet, in file order.
    ranges: Vec<(u32, u32)>,
    total: u64,
}

impl Pool {
    fn new(subnets: &[Subnet]) -> Pool {
        let mut ranges = Vec::new();
        for s in subnets {
            let net = s.ip_range.unwrap_or(s.subnet);
            // Never the subnet's own network or broadcast address.
            let lo = u32::from(net.network()).max(u32::from(s.subnet.network()) + 1);
            let hi = u32::from(net.broadcast()).min(u32::from(s.subnet.broadcast()).saturating_sub(1));
            if hi >= lo {
                ranges.push((lo, hi - lo + 1));
            }
        }
        let total = ranges.iter().map(|r| r.1 as u64).sum();
        Pool { ranges, total }
    }

    fn at(&self, mut i: u64) -> Ipv4Addr {
        for (lo, n) in &self.ranges {
            if i < *n as u64 {
                return Ipv4Addr::from(lo + i as u32);
            }
            i -= *n as u64;
        }
        unreachable!("pool index out of range")
    }

    /// The free address for `key`: start at hash(key) and probe upwards, so an
    /// entry's address depends on its own name, not on its place in the file.
    fn allocate(&self, key: &str, taken: &mut BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        if self.total == 0 {
            return None;
        }
        let start = fnv1a(key.as_bytes()) % self.total;
        for step in 0..self.total {
            let ip = self.at((start + step) % self.total);
            if taken.insert(ip) {
                return Some(ip);
            }
        }
        None
    }
}

/// Validates `state` against every rule (docs/state-file.md) and resolves every default.
/// `file` names the source in errors. All problems are reported, not just the first.
/// The state being checked, and what the phases learn of it: the index of
/// every name. Every rule is a phase below; every problem is collected, so a
/// file's mistakes are all reported at once.
struct Resolver<'s> {
    c: Checker<'s>,
    state: &'s State,
    host_ix: HashMap<&'s str, usize>,
    net_ix: HashMap<&'s str, usize>,
}

/// Validates `state` against every rule (docs/state-file.md) and resolves every default.
/// `file` names the source in errors. All problems are reported, not just the first.
pub fn resolve(file: &str, state: &State, caps: Capabilities) -> Result<Cluster, StateError> {
    let mut r = Resolver {
        c: Checker { file, problems: Vec::new(), warnings: Vec::new() },
        state,
        host_ix: HashMap::new(),
        net_ix: HashMap::new(),
    };
    r.cluster_settings();
    r.hosts();
    r.networks(caps);
    r.subnet_overlaps();
    let networks = resolve_networks(state);
    let backs_a_service = r.service_references();
    // Per network: addresses already claimed (gateways, aux, explicit IPs and
    // VIPs), and who claimed each, for duplicate errors.
    let (mut taken, mut owners) = claims(&networks, &state.hosts);
    let ep_net = r.endpoint_fields(&networks, &backs_a_service, &mut taken, &mut owners);
    r.service_vips(&networks, &mut taken, &mut owners);
    r.ports();
    r.passthru();
    let pools: Vec<Pool> = networks.iter().map(|n| Pool::new(&n.subnets)).collect();
    let mut endpoints = r.allocate_endpoints(&networks, &pools, &ep_net, &mut taken);
    default_routes(&mut endpoints, &networks);
    let mut services = r.allocate_services(&networks, &pools, &mut taken, &endpoints);
    services.extend(published_by_endpoints(state, &networks, &endpoints));

    let (c, cl) = (r.c, &state.cluster);
    if !c.problems.is_empty() {
        return Err(StateError { file: c.file.to_string(), problems: c.problems });
    }
    Ok(Cluster {
        caps,
        vxlan_port: cl.vxlan_port,
        underlay_mtu: cl.underlay_mtu,
        conntrack_tcp_timeout: cl.conntrack_tcp_timeout,
        conntrack_udp_timeout: cl.conntrack_udp_timeout,
        wireguard_port: cl.wireguard_port,
        hosts: state
            .hosts
            .iter()
            .map(|h| Host {
                name: h.name.clone(),
                address: h.address,
                interface: h.interface.clone(),
                wireguard_key: h
                    .wireguard_key
                    .as_deref()
                    .and_then(|k| crate::state::model::Key::parse(k).ok())
                    .map(|k| k.0),
            })
            .collect(),
        networks,
        endpoints,
        services,
        warnings: c.warnings,
    })
}

impl Resolver<'_> {
    /// A passthru sub-interface takes its parent whole: on each host, a
    /// parent a passthru network uses carries that one endpoint and no other
    /// macvlan endpoint (the kernel refuses the second).
    fn passthru(&mut self) {
        let Resolver { c, state, net_ix, .. } = self;
        let macvlan_of = |net: &str| {
            let n = &state.networks[*net_ix.get(net)?];
            (n.driver == Driver::Macvlan).then_some(n)
        };
        let mut first: HashMap<(&str, &str), (usize, bool)> = HashMap::new();
        for (ei, e) in state.endpoints.iter().enumerate() {
            let Some(n) = macvlan_of(&e.network) else { continue };
            let Some(parent) = n.parent.as_deref() else { continue };
            let passthru = n.macvlan_mode == Some(MacvlanMode::Passthru);
            match first.get(&(e.host.as_str(), parent)) {
                Some(&(other, other_passthru)) if passthru || other_passthru => c.err(
                    Rule::Macvlan,
                    entry("endpoints", ei, &e.name),
                    format!(
                        "host {} already has endpoints[{other}] ({}) on parent {parent}, and a passthru macvlan \
                         network's sub-interface takes its parent whole: one endpoint per host; use mode bridge \
                         for more",
                        e.host, state.endpoints[other].name
                    ),
                ),
                Some(_) => {}
                None => {
                    first.insert((e.host.as_str(), parent), (ei, passthru));
                }
            }
        }
    }

    /// `version` and the `cluster:` settings.
    fn cluster_settings(&mut self) {
        let Resolver { c, state, .. } = self;
        if state.version != 1 {
            c.err(
                Rule::Version,
                "version",
                format!("unsupported version {}; this overlay-bpf reads `version: 1`", state.version),
            );
        }
        let cl = &state.cluster;
        if cl.vxlan_port == 0 {
            c.err(Rule::VxlanPort, "cluster.vxlan_port", "must be 1..65535 (VXLAN's standard port is 4789)");
        }
        if cl.wireguard_port == 0 || cl.wireguard_port == cl.vxlan_port {
            c.err(
                Rule::WireguardPort,
                "cluster.wireguard_port",
                format!(
                    "{} cannot carry WireGuard: use a port of 1..65535 other than vxlan_port (WireGuard's usual is 51820)",
                    cl.wireguard_port
                ),
            );
        }
        if cl.conntrack_tcp_timeout == 0 || cl.conntrack_udp_timeout == 0 {
            c.err(
                Rule::ConntrackTimeout,
                "cluster",
                "conntrack_tcp_timeout and conntrack_udp_timeout must be at least 1 second",
            );
        }
        if !(576..=65535).contains(&cl.underlay_mtu) {
            c.err(
                Rule::UnderlayMtu,
                "cluster.underlay_mtu",
                format!("{} is out of range; an IPv4 underlay MTU is 576..65535", cl.underlay_mtu),
            );
        }
    }

    /// Host names, addresses and interfaces.
    fn hosts(&mut self) {
        let Resolver { c, state, host_ix, .. } = self;
        *host_ix = unique_names(c, "hosts", state.hosts.iter().map(|h| h.name.as_str()));
        let mut host_addrs: HashMap<Ipv4Addr, usize> = HashMap::new();
        for (i, h) in state.hosts.iter().enumerate() {
            let e = entry("hosts", i, &h.name);
            if h.address.is_unspecified()
                || h.address.is_multicast()
                || h.address.is_broadcast()
                || h.address.is_loopback()
            {
                c.err(
                    Rule::HostAddress,
                    &e,
                    format!(
                        "address {} cannot be a data-path address; use the host's unicast underlay IPv4",
                        h.address
                    ),
                );
            }
            if let Some(first) = host_addrs.insert(h.address, i) {
                c.err(
                    Rule::DuplicateHostAddress,
                    &e,
                    format!("duplicate address {}: hosts[{first}] already has it", h.address),
                );
            }
            if let Some(ifn) = &h.interface {
                if !valid_ifname(ifn) {
                    c.err(
                        Rule::InterfaceName,
                        &e,
                        format!("interface {ifn:?} is not a valid interface name (1-15 characters, no '/' or ':')"),
                    );
                }
            }
            if let Some(Err(why)) = h.wireguard_key.as_deref().map(crate::state::model::Key::parse) {
                c.err(
                    Rule::WireguardKey,
                    &e,
                    format!("wireguard_key: {why}; `overlay-bpf host key --host {}` prints the host's key", h.name),
                );
            }
        }
    }

    /// Network names, the ingress network, VNIs, MTUs, encryption, and each
    /// subnet's own rules (host bits, size, gateway, ip_range, aux addresses,
    /// no host address inside).
    fn networks(&mut self, caps: Capabilities) {
        let Resolver { c, state, net_ix, .. } = self;
        let cl = &state.cluster;
        *net_ix = unique_names(c, "networks", state.networks.iter().map(|n| n.name.as_str()));
        let mut ingress_seen: Option<usize> = None;
        let mut vnis: HashMap<u32, usize> = HashMap::new();
        for (i, n) in state.networks.iter().enumerate() {
            let e = entry("networks", i, &n.name);
            if n.ingress {
                if let Some(first) = ingress_seen {
                    c.err(Rule::SecondIngress, &e, format!("a second ingress network: networks[{first}] is already `ingress: true`; at most one network may set it"));
                } else {
                    ingress_seen = Some(i);
                }
            }
            if let Some(v) = n.vni {
                if !(1..=MAX_VNI).contains(&v) {
                    c.err(Rule::VniRange, &e, format!("vni {v} is outside 1..{MAX_VNI}"));
                } else if let Some(first) = vnis.insert(v, i) {
                    c.err(Rule::DuplicateVni, &e, format!("duplicate VNI {v}: networks[{first}] already uses it"));
                }
            }
            let macvlan = n.driver == Driver::Macvlan;
            if macvlan {
                match &n.parent {
                    None => c.err(
                        Rule::Macvlan,
                        &e,
                        "a macvlan network needs `parent`, the host device its sub-interfaces hang off, e.g. `parent: eth0`",
                    ),
                    Some(p) if !valid_ifname(p) => c.err(
                        Rule::InterfaceName,
                        &e,
                        format!("parent {p:?} is not a valid interface name (1-15 characters, no '/' or ':')"),
                    ),
                    Some(_) => {}
                }
                for (set, what) in [(n.vni.is_some(), "vni"), (n.encrypted, "encrypted"), (n.ingress, "ingress")] {
                    if set {
                        c.err(
                            Rule::Macvlan,
                            &e,
                            format!("`{what}` is for overlay networks; a macvlan network has no VXLAN"),
                        );
                    }
                }
            } else if n.parent.is_some() || n.macvlan_mode.is_some() {
                c.err(Rule::Macvlan, &e, "`parent` and `macvlan_mode` are for `driver: macvlan` networks");
            }
            if n.encrypted && !caps.encryption {
                c.err(Rule::Encryption, &e, ENCRYPTION_UNSUPPORTED);
            }
            let (mtu, overhead) = (network_mtu(n, cl.underlay_mtu), super::overhead(n));
            if macvlan {
                // The parent's MTU bounds it on each host (`up` checks).
                if n.mtu.is_some_and(|m| m < 68) {
                    c.err(Rule::MtuTooSmall, &e, format!("mtu {mtu} is below the IPv4 minimum of 68"));
                }
            } else if mtu < 68 {
                c.err(Rule::MtuTooSmall, &e, format!("mtu {mtu} is below the IPv4 minimum of 68"));
            } else if mtu + overhead > cl.underlay_mtu {
                let around = if n.encrypted { "VXLAN and WireGuard" } else { "VXLAN" };
                c.err(
                    Rule::MtuTooLarge,
                    &e,
                    format!(
                        "mtu {mtu} plus {overhead} bytes of {around} exceeds underlay_mtu {}; use mtu <= {}",
                        cl.underlay_mtu,
                        cl.underlay_mtu.saturating_sub(overhead)
                    ),
                );
            }
            if n.subnets.is_empty() {
                c.err(Rule::NoSubnets, &e, "has no subnets; add at least one, e.g. `subnets: [{subnet: 10.0.1.0/24}]`");
            }
            for (j, s) in n.subnets.iter().enumerate() {
                let se = format!("{e}.subnets[{j}]");
                if s.subnet.trunc() != s.subnet {
                    c.err(
                        Rule::HostBits,
                        &se,
                        format!("subnet {} has host bits set; did you mean {}?", s.subnet, s.subnet.trunc()),
                    );
                }
                if s.subnet.prefix_len() > 30 {
                    c.err(
                        Rule::SubnetTooSmall,
                        &se,
                        format!(
                            "subnet {} is too small: a /30 is the smallest with room for a gateway and an endpoint",
                            s.subnet
                        ),
                    );
                }
                let net = s.subnet.trunc();
                let usable = |ip: Ipv4Addr| net.contains(&ip) && ip != net.network() && ip != net.broadcast();
                if let Some(g) = s.gateway {
                    if !usable(g) {
                        c.err(
                            Rule::GatewayOutside,
                            &se,
                            format!("gateway {g} is outside subnet {net} (or is its network/broadcast address)"),
                        );
                    }
                }
                if let Some(r) = s.ip_range {
                    if r.trunc() != r {
                        c.err(
                            Rule::HostBits,
                            &se,
                            format!("ip_range {r} has host bits set; did you mean {}?", r.trunc()),
                        );
                    } else if !net.contains(&r) {
                        c.err(Rule::IpRangeOutside, &se, format!("ip_range {r} is outside subnet {net}"));
                    }
                }
                for (name, a) in &s.aux_addresses {
                    if !usable(*a) {
                        c.err(
                            Rule::AuxOutside,
                            &se,
                            format!(
                                "aux address {name}={a} is outside subnet {net} (or is its network/broadcast address)"
                            ),
                        );
                    }
                }
                // A macvlan network is the hosts' own LAN: their addresses
                // may sit in it (the allocator never hands them out below).
                for (hi, h) in state.hosts.iter().enumerate().filter(|_| !macvlan) {
                    if net.contains(&h.address) {
                        c.err(Rule::SubnetHoldsHost, &se, format!("subnet {net} contains {}, the address of {}; overlay subnets must not hold underlay addresses", h.address, entry("hosts", hi, &h.name)));
                    }
                }
            }
        }
    }

    /// No two subnets overlap, in any network, including within one network.
    fn subnet_overlaps(&mut self) {
        let Resolver { c, state, .. } = self;
        // Overlapping subnets, in any network, including within one network.
        let all_subnets: Vec<(usize, usize, Ipv4Net)> = state
            .networks
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.subnets.iter().enumerate().map(move |(j, s)| (i, j, s.subnet.trunc())))
            .collect();
        for (a, (ia, ja, na)) in all_subnets.iter().enumerate() {
            for (ib, jb, nb) in &all_subnets[a + 1..] {
                if na.contains(nb) || nb.contains(na) {
                    c.err(
                        Rule::SubnetOverlap,
                        format!("{}.subnets[{jb}]", entry("networks", *ib, &state.networks[*ib].name)),
                        format!(
                            "subnet {nb} overlaps {na} of {}.subnets[{ja}]; subnets of all networks must not overlap",
                            entry("networks", *ia, &state.networks[*ia].name)
                        ),
                    );
                }
            }
        }
    }

    /// Endpoint and service names, and what services point at: their network
    /// and backends. Returns the endpoints that back a service.
    fn service_references(&mut self) -> BTreeSet<usize> {
        let Resolver { c, state, net_ix, .. } = self;
        endpoint_names(c, state);
        let _ = unique_names(c, "services", state.services.iter().map(|s| s.name.as_str()));

        let mut backs_a_service: BTreeSet<usize> = BTreeSet::new();
        let named = Named::new(state);
        for (si, s) in state.services.iter().enumerate() {
            let e = entry("services", si, &s.name);
            let snet = net_ix.get(s.network.as_str()).copied();
            if snet.is_some_and(|n| state.networks[n].driver == Driver::Macvlan) {
                c.err(
                    Rule::MacvlanService,
                    &e,
                    format!(
                        "network {:?} is a macvlan network, which has no VIPs and no routing mesh (as Docker's \
                         macvlan); put the service on an overlay network, or reach the containers by address",
                        s.network
                    ),
                );
            }
            if snet.is_none() {
                c.err(
                    Rule::UnknownNetwork,
                    &e,
                    format!("network {:?} does not exist; define it under `networks:`", s.network),
                );
            }
            for b in &s.backends {
                // A name or an alias on the service's network; an alias
                // stands for every endpoint carrying it.
                let here = named.backends(&s.network, b);
                if !here.is_empty() {
                    backs_a_service.extend(here);
                    continue;
                }
                // An endpoint's name elsewhere is a mistake; a name or alias
                // that no endpoint of the network carries (yet, or any more:
                // the last container of a service removed) leaves the
                // service without that backend, and breaks no rule.
                let named_elsewhere = state.endpoints.iter().find(|ep| ep.name == *b);
                let alias_elsewhere = state.endpoints.iter().find(|ep| ep.aliases.contains(b));
                match (named_elsewhere, alias_elsewhere) {
                    (Some(ep), _) if snet.is_some() => c.err(
                        Rule::BackendNetwork,
                        &e,
                        format!(
                            "backend {b:?} is on network {:?}, not on the service's network {:?}",
                            ep.network, s.network
                        ),
                    ),
                    (Some(_), _) => {}
                    (None, elsewhere) => {
                        let hint = match elsewhere {
                            Some(ep) => format!(" (endpoints on network {:?} carry it)", ep.network),
                            None => String::new(),
                        };
                        c.warn(
                            Rule::UnknownBackend,
                            &e,
                            format!(
                                "backend {b:?} matches no endpoint or alias on network {:?}{hint}: the service has \
                                 no backend from it until one joins with that name or alias",
                                s.network
                            ),
                        )
                    }
                }
            }
        }
        backs_a_service
    }

    /// Each endpoint's host, network, attachability, netns, ifname, MAC and
    /// explicit address. Returns each endpoint's network, where it exists.
    fn endpoint_fields(
        &mut self,
        networks: &[Network],
        backs_a_service: &BTreeSet<usize>,
        taken: &mut [BTreeSet<Ipv4Addr>],
        owners: &mut HashMap<Ipv4Addr, String>,
    ) -> Vec<Option<usize>> {
        let Resolver { c, state, host_ix, net_ix, .. } = self;
        // Explicit endpoint IPs.
        let mut ep_net: Vec<Option<usize>> = Vec::new();
        for (i, ep) in state.endpoints.iter().enumerate() {
            let e = entry("endpoints", i, &ep.name);
            if !host_ix.contains_key(ep.host.as_str()) {
                c.err(Rule::UnknownHost, &e, format!("host {:?} does not exist; define it under `hosts:`", ep.host));
            }
            let ni = net_ix.get(ep.network.as_str()).copied();
            ep_net.push(ni);
            let Some(ni) = ni else {
                c.err(
                    Rule::UnknownNetwork,
                    &e,
                    format!("network {:?} does not exist; define it under `networks:`", ep.network),
                );
                continue;
            };
            let nspec = &state.networks[ni];
            // A macvlan network has no services, so no backends: like
            // Docker's macvlan, any container may join it.
            if !nspec.attachable && !backs_a_service.contains(&i) && nspec.driver != Driver::Macvlan {
                c.err(Rule::NotAttachable, &e, format!("network {:?} is not attachable and this endpoint backs no service; set `attachable: true` on the network or list the endpoint in a service's backends", ep.network));
            }
            if ep.netns.is_empty() || (!ep.netns.starts_with('/') && ep.netns.contains('/')) {
                c.err(
                    Rule::Netns,
                    &e,
                    format!("netns {:?} must be a name under /run/netns or an absolute path", ep.netns),
                );
            }
            if let Some(ifn) = &ep.ifname {
                if !valid_ifname(ifn) {
                    c.err(
                        Rule::InterfaceName,
                        &e,
                        format!("ifname {ifn:?} is not a valid interface name (1-15 characters, no '/' or ':')"),
                    );
                }
            }
            if let Some(m) = ep.mac {
                if m.is_multicast() || m.0 == [0; 6] {
                    c.err(
                        Rule::Mac,
                        &e,
                        format!("mac {m} is not a unicast address (the first byte must be even, e.g. 02:...)"),
                    );
                }
            }
            if let Some(ip) = ep.ip {
                check_explicit_addr(
                    c,
                    &e,
                    "ip",
                    ip,
                    &networks[ni],
                    in_other_network(networks, ni, ip),
                    &mut taken[ni],
                    owners,
                    &format!("endpoint {}", ep.name),
                );
            }
        }
        ep_net
    }

    /// dnsrr services' limits, and explicit VIPs.
    fn service_vips(
        &mut self,
        networks: &[Network],
        taken: &mut [BTreeSet<Ipv4Addr>],
        owners: &mut HashMap<Ipv4Addr, String>,
    ) {
        let Resolver { c, state, net_ix, .. } = self;
        // Explicit VIPs.
        for (si, s) in state.services.iter().enumerate() {
            let e = entry("services", si, &s.name);
            if s.endpoint_mode == EndpointMode::Dnsrr {
                if s.vip.is_some() {
                    c.err(Rule::DnsrrVip, &e, "vip is not allowed with endpoint_mode: dnsrr (dnsrr services have no virtual IP); remove `vip` or use endpoint_mode: vip");
                }
                if s.ports.iter().any(|p| p.published.is_some() && p.mode == PublishMode::Ingress) {
                    c.err(Rule::DnsrrIngress, &e, "endpoint_mode: dnsrr cannot publish ports in ingress mode (the routing mesh needs a VIP); use `mode: host` or endpoint_mode: vip");
                }
            }
            if let (Some(vip), Some(&ni)) = (s.vip, net_ix.get(s.network.as_str())) {
                check_explicit_addr(
                    c,
                    &e,
                    "vip",
                    vip,
                    &networks[ni],
                    in_other_network(networks, ni, vip),
                    &mut taken[ni],
                    owners,
                    &format!("service {}", s.name),
                );
            }
        }
    }

    /// Ports: valid numbers and one owner per published (protocol, port).
    fn ports(&mut self) {
        let Resolver { c, state, .. } = self;
        let cl = &state.cluster;
        // Ports: valid numbers and one owner per published (protocol, port).
        let mut published: HashMap<(Protocol, u16), usize> = HashMap::new();
        for (si, s) in state.services.iter().enumerate() {
            let e = entry("services", si, &s.name);
            for (pi, p) in s.ports.iter().enumerate() {
                if p.target == 0 {
                    c.err(Rule::PortZero, format!("{e}.ports[{pi}]"), "target port 0 is not a port; use 1..65535");
                }
                if let Some(pp) = p.published {
                    if pp == 0 {
                        c.err(
                            Rule::PortZero,
                            format!("{e}.ports[{pi}]"),
                            "published port 0 is not a port; use 1..65535",
                        );
                    } else if let Some(first) = published.insert((p.protocol, pp), si) {
                        c.err(
                            Rule::PublishedTwice,
                            format!("{e}.ports[{pi}]"),
                            format!(
                                "published port {pp}/{} is already published by {}",
                                p.protocol,
                                entry("services", first, &state.services[first].name)
                            ),
                        );
                    }
                    if pp == cl.vxlan_port && p.protocol == Protocol::Udp {
                        c.err(
                            Rule::VxlanPortPublished,
                            format!("{e}.ports[{pi}]"),
                            format!("published port {pp}/udp is the cluster's vxlan_port"),
                        );
                    }
                }
            }
        }
        // Endpoints' own published ports (docker run -p): one owner per
        // (host, protocol, port), and none a service publishes.
        let mut on_host: HashMap<(&str, Protocol, u16), usize> = HashMap::new();
        for (i, ep) in state.endpoints.iter().enumerate() {
            let e = entry("endpoints", i, &ep.name);
            let on_macvlan = state.networks.iter().any(|n| n.name == ep.network && n.driver == Driver::Macvlan);
            if on_macvlan && !ep.publish.is_empty() {
                c.err(
                    Rule::MacvlanService,
                    &e,
                    format!(
                        "network {:?} is a macvlan network: its containers are on the LAN at their own addresses, \
                         and no host port leads to them; drop the published ports (-p) and connect to the \
                         container's address",
                        ep.network
                    ),
                );
                continue;
            }
            for (pi, p) in ep.publish.iter().enumerate() {
                let at = format!("{e}.publish[{pi}]");
                if p.published == 0 || p.target == 0 {
                    c.err(Rule::PortZero, &at, "port 0 is not a port; use 1..65535");
                    continue;
                }
                if let Some(&si) = published.get(&(p.protocol, p.published)) {
                    c.err(
                        Rule::PublishedTwice,
                        &at,
                        format!(
                            "published port {}/{} is already published by {}",
                            p.published,
                            p.protocol,
                            entry("services", si, &state.services[si].name)
                        ),
                    );
                } else if let Some(first) = on_host.insert((ep.host.as_str(), p.protocol, p.published), i) {
                    c.err(
                        Rule::PublishedTwice,
                        &at,
                        format!(
                            "published port {}/{} is already published on host {:?} by {}",
                            p.published,
                            p.protocol,
                            ep.host,
                            entry("endpoints", first, &state.endpoints[first].name)
                        ),
                    );
                }
                if p.published == cl.vxlan_port && p.protocol == Protocol::Udp {
                    c.err(
                        Rule::VxlanPortPublished,
                        &at,
                        format!("published port {}/udp is the cluster's vxlan_port", p.published),
                    );
                }
            }
        }
    }

    /// Endpoints' addresses (from their network's pool where not given),
    /// MACs and interface names, each unique.
    fn allocate_endpoints(
        &mut self,
        networks: &[Network],
        pools: &[Pool],
        ep_net: &[Option<usize>],
        taken: &mut [BTreeSet<Ipv4Addr>],
    ) -> Vec<Endpoint> {
        let Resolver { c, state, host_ix, .. } = self;
        // Allocation: endpoints, then VIPs, each from its network's pool.
        let mut endpoints = Vec::new();
        let mut ifnames: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
        for ep in &state.endpoints {
            if let Some(ifn) = &ep.ifname {
                ifnames.entry(netns_path(&ep.netns)).or_default().insert(ifn.clone());
            }
        }
        let mut seen_if: HashMap<(PathBuf, String), usize> = HashMap::new();
        let mut macs: HashMap<Mac, usize> = HashMap::new();
        let mut keys: BTreeSet<&str> = BTreeSet::new();
        for (i, ep) in state.endpoints.iter().enumerate() {
            let e = entry("endpoints", i, &ep.name);
            let (Some(ni), Some(&hi)) = (ep_net[i], host_ix.get(ep.host.as_str())) else { continue };
            let ip = match ep.ip {
                Some(ip) => ip,
                None => match pools[ni].allocate(&format!("endpoint/{}", ep.name), &mut taken[ni]) {
                    Some(ip) => ip,
                    None => {
                        c.err(Rule::PoolExhausted, &e, format!("network {:?}: address pool {} has no free address left; widen the subnet or ip_range, or add a subnet", networks[ni].name, pool_desc(&networks[ni])));
                        continue;
                    }
                },
            };
            let Some(sub) = networks[ni].subnet_of(ip) else { continue };
            let mac = ep.mac.unwrap_or_else(|| Mac::from_ipv4(ip));
            if let Some(first) = macs.insert(mac, i) {
                c.err(
                    Rule::DuplicateMac,
                    &e,
                    format!(
                        "duplicate MAC {mac}: {} already has it",
                        entry("endpoints", first, &state.endpoints[first].name)
                    ),
                );
            }
            let netns = netns_path(&ep.netns);
            let ifname = match &ep.ifname {
                Some(n) => n.clone(),
                None => {
                    let used = ifnames.entry(netns.clone()).or_default();
                    let n = (0..).map(|k| format!("eth{k}")).find(|n| !used.contains(n)).expect("an unused ethN");
                    used.insert(n.clone());
                    n
                }
            };
            if let Some(first) = seen_if.insert((netns.clone(), ifname.clone()), i) {
                c.err(
                    Rule::InterfaceTaken,
                    &e,
                    format!(
                        "interface {ifname} in netns {} is already used by {}; give one of them another ifname",
                        netns.display(),
                        entry("endpoints", first, &state.endpoints[first].name)
                    ),
                );
            }
            let key = match keys.insert(ep.name.as_str()) {
                true => ep.name.clone(),
                false => format!("{}@{}", ep.name, ep.network),
            };
            endpoints.push(Endpoint {
                name: ep.name.clone(),
                key,
                aliases: ep.aliases.clone(),
                host: hi,
                network: ni,
                netns,
                ifname,
                ip,
                prefix_len: sub.subnet.prefix_len(),
                gateway: sub.gateway,
                mac,
                default_route: false,
                runtime: ep.runtime,
                endpoint_id: ep.endpoint_id.clone(),
            });
        }
        endpoints
    }

    /// Services with their VIPs (from the pool where not given) and backends.
    fn allocate_services(
        &mut self,
        networks: &[Network],
        pools: &[Pool],
        taken: &mut [BTreeSet<Ipv4Addr>],
        endpoints: &[Endpoint],
    ) -> Vec<Service> {
        let Resolver { c, state, net_ix, .. } = self;
        let named = Named::new(state);
        // Resolved endpoints by their index in the state (some may be missing
        // when the state has problems, which are reported anyway).
        let resolved: HashMap<(&str, &str), usize> = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| ((networks[e.network].name.as_str(), e.name.as_str()), i))
            .collect();
        let mut services = Vec::new();
        for (si, s) in state.services.iter().enumerate() {
            let e = entry("services", si, &s.name);
            let Some(&ni) = net_ix.get(s.network.as_str()) else { continue };
            let vip = match (s.endpoint_mode, s.vip) {
                (EndpointMode::Dnsrr, _) => None,
                (EndpointMode::Vip, Some(v)) => Some(v),
                (EndpointMode::Vip, None) => match pools[ni].allocate(&format!("service/{}", s.name), &mut taken[ni]) {
                    Some(v) => Some(v),
                    None => {
                        c.err(Rule::PoolExhausted, &e, format!("network {:?}: address pool {} has no free address left for the VIP; widen the subnet or ip_range, or set `vip:`", networks[ni].name, pool_desc(&networks[ni])));
                        None
                    }
                },
            };
            services.push(Service {
                name: s.name.clone(),
                network: ni,
                endpoint_mode: s.endpoint_mode,
                vip,
                ports: s.ports.clone(),
                backends: {
                    let mut out: Vec<usize> = Vec::new();
                    for b in &s.backends {
                        for si in named.backends(&s.network, b) {
                            let ep = &state.endpoints[si];
                            if let Some(&ri) = resolved.get(&(ep.network.as_str(), ep.name.as_str())) {
                                if !out.contains(&ri) {
                                    out.push(ri);
                                }
                            }
                        }
                    }
                    out
                },
            });
        }
        services
    }
}

/// Each endpoint's own published ports (`publish:`, docker run -p), as what
/// the data path already knows: a service with no VIP publishing the port in
/// host mode, whose one backend is the endpoint. Named
/// `<endpoint key>:<published>/<protocol>`.
fn published_by_endpoints(state: &State, networks: &[Network], endpoints: &[Endpoint]) -> Vec<Service> {
    let mut out = Vec::new();
    let specs: HashMap<(&str, &str), &EndpointSpec> = state
        .endpoints
        .iter()
        .filter(|e| !e.publish.is_empty())
        .map(|e| ((e.network.as_str(), e.name.as_str()), e))
        .collect();
    if specs.is_empty() {
        return out;
    }
    for (ri, ep) in endpoints.iter().enumerate() {
        let net = networks[ep.network].name.as_str();
        let Some(spec) = specs.get(&(net, ep.name.as_str())) else { continue };
        for p in &spec.publish {
            out.push(Service {
                name: format!("{}:{}/{}", ep.key, p.published, p.protocol),
                network: ep.network,
                endpoint_mode: EndpointMode::Dnsrr,
                vip: None,
                ports: vec![PortSpec {
                    protocol: p.protocol,
                    target: p.target,
                    published: Some(p.published),
                    mode: PublishMode::Host,
                }],
                backends: vec![ri],
            });
        }
    }
    out
}

/// Endpoint names: non-empty, unique within each network (a container on two
/// networks keeps its name on each); aliases non-empty and without blanks.
fn endpoint_names(c: &mut Checker, state: &State) {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, ep) in state.endpoints.iter().enumerate() {
        if ep.name.trim().is_empty() {
            c.err(Rule::EmptyName, format!("endpoints[{i}]"), "name is empty; give every entry a unique name");
            continue;
        }
        if let Some(first) = seen.insert((ep.network.as_str(), ep.name.as_str()), i) {
            c.err(
                Rule::DuplicateName,
                entry("endpoints", i, &ep.name),
                format!(
                    "duplicate name: endpoints[{first}] is already called {:?} on network {:?}; endpoint names are \
                     unique within a network",
                    ep.name, ep.network
                ),
            );
        }
        for a in &ep.aliases {
            if a.is_empty() || a.len() > 253 || a.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
                c.err(
                    Rule::Alias,
                    entry("endpoints", i, &ep.name),
                    format!("alias {a:?} is not a name (1-253 characters, no blanks)"),
                );
            }
        }
    }
}

/// The state's endpoints by (network, name) and by (network, alias), for
/// resolving services' backends without a walk of every endpoint each.
struct Named<'s> {
    by_name: HashMap<(&'s str, &'s str), Vec<usize>>,
    by_alias: HashMap<(&'s str, &'s str), Vec<usize>>,
}

impl<'s> Named<'s> {
    fn new(state: &'s State) -> Named<'s> {
        let mut n = Named { by_name: HashMap::new(), by_alias: HashMap::new() };
        for (i, e) in state.endpoints.iter().enumerate() {
            n.by_name.entry((e.network.as_str(), e.name.as_str())).or_default().push(i);
            for a in &e.aliases {
                n.by_alias.entry((e.network.as_str(), a.as_str())).or_default().push(i);
            }
        }
        n
    }

    /// The state's endpoints on `network` that `name` names: the endpoint of
    /// that name, else every endpoint carrying it as an alias.
    fn backends(&self, network: &str, name: &str) -> Vec<usize> {
        self.by_name.get(&(network, name)).or_else(|| self.by_alias.get(&(network, name))).cloned().unwrap_or_default()
    }
}

/// The networks with their VNIs: explicit ones, then from FIRST_AUTO_VNI
/// upwards in file order; gateways default to the first usable address.
fn resolve_networks(state: &State) -> Vec<Network> {
    let cl = &state.cluster;
    // VNIs: explicit ones, then from FIRST_AUTO_VNI upwards in file order.
    let mut used_vni: BTreeSet<u32> = state.networks.iter().filter_map(|n| n.vni).collect();
    let mut next = FIRST_AUTO_VNI;
    let mut networks = Vec::new();
    for n in &state.networks {
        let kind = match n.driver {
            Driver::Macvlan => NetworkKind::Macvlan(Macvlan {
                parent: n.parent.clone().unwrap_or_default(),
                mode: n.macvlan_mode.unwrap_or_default(),
                mtu: n.mtu,
            }),
            Driver::Overlay => {
                let vni = match n.vni {
                    Some(v) => v,
                    None => {
                        while used_vni.contains(&next) {
                            next += 1;
                        }
                        used_vni.insert(next);
                        next
                    }
                };
                NetworkKind::Overlay(Overlay {
                    vni,
                    mtu: network_mtu(n, cl.underlay_mtu),
                    encrypted: n.encrypted,
                    ingress: n.ingress,
                })
            }
        };
        let subnets = n
            .subnets
            .iter()
            .map(|s| Subnet {
                subnet: s.subnet.trunc(),
                gateway: s.gateway.unwrap_or_else(|| first_usable(s.subnet.trunc())),
                ip_range: s.ip_range,
                aux_addresses: s.aux_addresses.clone(),
            })
            .collect();
        networks.push(Network { name: n.name.clone(), subnets, attachable: n.attachable, internal: n.internal, kind });
    }
    networks
}

/// Addresses already claimed in each network (gateways and aux addresses),
/// and who owns each, for duplicate errors.
fn claims(networks: &[Network], hosts: &[HostSpec]) -> (Vec<BTreeSet<Ipv4Addr>>, HashMap<Ipv4Addr, String>) {
    // Per network: addresses already claimed (gateways, aux, explicit IPs and
    // VIPs; on a macvlan network, the hosts' own, which sit on its LAN).
    let taken: Vec<BTreeSet<Ipv4Addr>> = networks
        .iter()
        .map(|n| {
            let hosts = hosts.iter().map(|h| h.address).filter(|a| n.macvlan().is_some() && n.subnet_of(*a).is_some());
            n.subnets
                .iter()
                .flat_map(|s| std::iter::once(s.gateway).chain(s.aux_addresses.values().copied()))
                .chain(hosts)
                .collect()
        })
        .collect();
    // Owner of each explicitly given address, for duplicate errors.
    let mut owners: HashMap<Ipv4Addr, String> = HashMap::new();
    for n in networks {
        if n.macvlan().is_some() {
            for h in hosts.iter().filter(|h| n.subnet_of(h.address).is_some()) {
                owners.insert(h.address, format!("host {:?} (on macvlan network {:?}'s LAN)", h.name, n.name));
            }
        }
        for s in &n.subnets {
            owners.insert(s.gateway, format!("the gateway of network {:?}", n.name));
            for (an, a) in &s.aux_addresses {
                owners.insert(*a, format!("aux address {an:?} of network {:?}", n.name));
            }
        }
    }
    (taken, owners)
}

/// The other network whose subnet holds `ip`, if any.
fn in_other_network(networks: &[Network], own: usize, ip: Ipv4Addr) -> Option<&str> {
    networks.iter().enumerate().find(|(i, n)| *i != own && n.subnet_of(ip).is_some()).map(|(_, n)| n.name.as_str())
}

/// One default route per netns: the first endpoint that can leave the overlay.
fn default_routes(endpoints: &mut [Endpoint], networks: &[Network]) {
    // One default route per netns: the first endpoint that can leave the overlay.
    let mut by_netns: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
    for (i, e) in endpoints.iter().enumerate() {
        by_netns.entry(e.netns.clone()).or_default().push(i);
    }
    for idx in by_netns.values() {
        let pick = idx.iter().copied().find(|&i| !networks[endpoints[i].network].internal).unwrap_or(idx[0]);
        endpoints[pick].default_route = true;
    }
}

fn pool_desc(n: &Network) -> String {
    n.subnets.iter().map(|s| s.ip_range.unwrap_or(s.subnet).to_string()).collect::<Vec<_>>().join(", ")
}

#[allow(clippy::too_many_arguments)]
fn check_explicit_addr(
    c: &mut Checker,
    e: &str,
    field: &str,
    ip: Ipv4Addr,
    net: &Network,
    other: Option<&str>,
    taken: &mut BTreeSet<Ipv4Addr>,
    owners: &mut HashMap<Ipv4Addr, String>,
    owner: &str,
) {
    if let Some(other) = other {
        c.err(
            Rule::AddressInOtherNetwork,
            e,
            format!("{field} {ip} is inside network {other:?}'s subnet, not network {:?}'s", net.name),
        );
        return;
    }
    let Some(sub) = net.subnet_of(ip) else {
        let subs: Vec<String> = net.subnets.iter().map(|s| s.subnet.to_string()).collect();
        c.err(
            Rule::AddressOutside,
            e,
            format!("{field} {ip} is outside the subnets of network {:?} ({})", net.name, subs.join(", ")),
        );
        return;
    };
    if ip == sub.subnet.network() || ip == sub.subnet.broadcast() {
        c.err(
            Rule::NetworkOrBroadcast,
            e,
            format!("{field} {ip} is the network or broadcast address of {}", sub.subnet),
        );
        return;
    }
    if !taken.insert(ip) {
        let who = owners.get(&ip).cloned().unwrap_or_else(|| "another entry".into());
        c.err(Rule::DuplicateAddress, e, format!("duplicate address {ip}: already used by {who}"));
        return;
    }
    owners.insert(ip, owner.to_string());
}
