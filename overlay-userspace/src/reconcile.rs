//! The reconciler: a pure function from (cluster, host) to the desired content
//! of every map, and a diff against what the maps hold. Applying the diff
//! touches only changed entries, which is what makes re-applying a changed
//! state file hitless.

use std::collections::{BTreeMap, BTreeSet};

use overlay_common::*;

use crate::{
    maglev,
    model::{Cluster, EndpointMode, PublishMode},
};

/// What the reconciler needs to know about the machine: the ifindexes it
/// cannot compute from the state file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostFacts {
    pub underlay_ifindex: u32,
    /// Endpoint name -> its host-side veth, for local endpoints.
    pub veths: BTreeMap<String, Veth>,
    /// Backends (endpoint names) the health checks took out.
    pub unhealthy: BTreeSet<String>,
}

/// A local endpoint's host-side veth.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Veth {
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// Key of the subnet LPM trie: (prefix length, network address).
pub type SubnetKey = (u32, [u8; 4]);

/// The content of every map, as typed entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapContents {
    pub config: BTreeMap<u32, HostConfig>,
    pub endpoints: BTreeMap<EndpointKey, EndpointValue>,
    pub networks: BTreeMap<u32, NetworkValue>,
    pub subnets: BTreeMap<SubnetKey, SubnetValue>,
    pub ifaces: BTreeMap<u32, IfaceValue>,
    pub vteps: BTreeMap<[u8; 4], VtepValue>,
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    /// Maglev tables by lb slot.
    pub maglev: BTreeMap<u32, Vec<[u8; 4]>>,
    pub backends: BTreeMap<BackendKey, BackendValue>,
}

/// A service's stable id: 32 bits of a hash of its name.
pub fn service_id(name: &str) -> u32 {
    crate::model::fnv1a(name.as_bytes()) as u32
}

impl MapContents {
    /// (map name, entries, capacity) for every map the loader fills.
    pub fn sizes(&self) -> [(&'static str, usize, u32); 9] {
        [
            (MAP_CONFIG, self.config.len(), 1),
            (MAP_ENDPOINTS, self.endpoints.len(), MAX_ENDPOINTS),
            (MAP_NETWORKS, self.networks.len(), MAX_NETWORKS),
            (MAP_SUBNETS, self.subnets.len(), MAX_SUBNETS),
            (MAP_IFACES, self.ifaces.len(), MAX_IFACES),
            (MAP_VTEPS, self.vteps.len(), MAX_VTEPS),
            (MAP_SERVICES, self.services.len(), MAX_SERVICES),
            (MAP_MAGLEV, self.maglev.len(), MAX_LB_SLOTS),
            (MAP_BACKENDS, self.backends.len(), MAX_BACKENDS),
        ]
    }
}

/// Keeps the backend flag on endpoints that had it in `current` (the maps as
/// they are) and still exist. A backend leaving a service's list still has
/// flows in flight: their replies need the connection-table lookup the flag
/// turns on, or they leave untranslated and the clients reset them. The
/// hosts apply a change up to a poll interval apart, so the ingress host may
/// still send such a backend new flows for a moment. The cost is that lookup
/// for the endpoint's packets, as while it was a backend.
pub fn keep_backend_flags(desired: &mut MapContents, current: &MapContents) {
    for (k, v) in desired.endpoints.iter_mut() {
        if current.endpoints.get(k).is_some_and(|c| c.flags & ENDPOINT_F_BACKEND != 0) {
            v.flags |= ENDPOINT_F_BACKEND;
        }
    }
    for (k, v) in desired.ifaces.iter_mut() {
        if current.ifaces.get(k).is_some_and(|c| c.ip == v.ip && c.vni == v.vni && c.flags & ENDPOINT_F_BACKEND != 0) {
            v.flags |= ENDPOINT_F_BACKEND;
        }
    }
}

/// The desired content of every map on host `host` (an index into `cluster.hosts`).
pub fn desired(cluster: &Cluster, host: usize, facts: &HostFacts) -> MapContents {
    let mut m = MapContents::default();
    let me = &cluster.hosts[host];
    m.config.insert(
        0,
        HostConfig {
            underlay_ip: me.address.octets(),
            underlay_ifindex: facts.underlay_ifindex,
            vxlan_port: cluster.vxlan_port,
            underlay_mtu: cluster.underlay_mtu.min(u16::MAX as u32) as u16,
            host_id: host as u32,
            ct_tcp_timeout: cluster.conntrack_tcp_timeout,
            ct_udp_timeout: cluster.conntrack_udp_timeout,
        },
    );
    for (i, h) in cluster.hosts.iter().enumerate() {
        m.vteps.insert(h.address.octets(), VtepValue { host_id: i as u32, flags: 0 });
    }
    for (ni, n) in cluster.networks.iter().enumerate() {
        let local = cluster.endpoints.iter().any(|e| e.network == ni && e.host == host);
        let gw = n.subnets[0].gateway;
        let flags = (if n.internal { NETWORK_F_INTERNAL } else { 0 })
            | (if n.ingress { NETWORK_F_INGRESS } else { 0 })
            | (if local { NETWORK_F_LOCAL } else { 0 });
        m.networks.insert(
            n.vni,
            NetworkValue {
                gateway: gw.octets(),
                gateway_mac: gateway_mac(gw.octets()),
                mtu: n.mtu.min(u16::MAX as u32) as u16,
                flags,
            },
        );
        for s in &n.subnets {
            m.subnets.insert(
                (s.subnet.prefix_len() as u32, s.subnet.network().octets()),
                SubnetValue { vni: n.vni, gateway: s.gateway.octets() },
            );
        }
    }
    // Every configured backend, healthy or not: replies of flows it already
    // has are translated until the flows end.
    let backends: BTreeSet<usize> = cluster.services.iter().flat_map(|s| s.backends.iter().copied()).collect();
    for (i, e) in cluster.endpoints.iter().enumerate() {
        let vni = cluster.networks[e.network].vni;
        let local = if e.host == host { facts.veths.get(&e.name).copied() } else { None };
        let local_ifindex = local.map(|v| v.ifindex);
        let backend = if backends.contains(&i) { ENDPOINT_F_BACKEND } else { 0 };
        m.endpoints.insert(
            EndpointKey { vni, ip: e.ip.octets() },
            EndpointValue {
                mac: e.mac.0,
                _pad: [0; 2],
                ifindex: local_ifindex.unwrap_or(0),
                vtep: cluster.hosts[e.host].address.octets(),
                flags: if local_ifindex.is_some() { ENDPOINT_F_LOCAL } else { 0 } | backend,
            },
        );
        if let Some(v) = local {
            let iv = IfaceValue { vni, ip: e.ip.octets(), mac: e.mac.0, host_mac: v.mac, flags: backend };
            m.ifaces.insert(v.ifindex, iv);
        }
    }
    // Load balancing: one Maglev table per service with a VIP or an ingress
    // published port (all healthy backends), one more per service published in
    // host mode with backends here (the local healthy ones). Slots are handed
    // out in file order; services with the same backends (same order) share
    // one table, so the slot limit counts distinct backend lists, not services.
    let mut next_slot = 0u32;
    let mut slots: BTreeMap<Vec<usize>, u32> = BTreeMap::new();
    let mut slot_for = |m: &mut MapContents, backends: Vec<usize>| -> u32 {
        if let Some(&slot) = slots.get(&backends) {
            return slot;
        }
        let slot = next_slot;
        next_slot += 1;
        slots.insert(backends.clone(), slot);
        let names: Vec<&str> = backends.iter().map(|&b| cluster.endpoints[b].name.as_str()).collect();
        let table = maglev::table(&names, MAGLEV_SIZE as usize)
            .map(|t| t.into_iter().map(|i| cluster.endpoints[backends[i as usize]].ip.octets()).collect())
            .unwrap_or_else(|| vec![[0u8; 4]; MAGLEV_SIZE as usize]);
        m.maglev.insert(slot, table);
        slot
    };
    for s in &cluster.services {
        let vni = cluster.networks[s.network].vni;
        let id = service_id(&s.name);
        let healthy: Vec<usize> =
            s.backends.iter().copied().filter(|&b| !facts.unhealthy.contains(&cluster.endpoints[b].name)).collect();
        let local: Vec<usize> = healthy.iter().copied().filter(|&b| cluster.endpoints[b].host == host).collect();
        for &b in &healthy {
            let e = &cluster.endpoints[b];
            let flags = if e.host == host { BACKEND_F_LOCAL } else { 0 };
            m.backends.insert(BackendKey { service_id: id, ip: e.ip.octets() }, BackendValue { flags });
        }
        let needs_all = s.ports.iter().any(|p| {
            (s.endpoint_mode == EndpointMode::Vip && s.vip.is_some())
                || (p.published.is_some() && p.mode == PublishMode::Ingress)
        });
        let all_slot = needs_all.then(|| slot_for(&mut m, healthy.clone()));
        let needs_local = s.ports.iter().any(|p| p.published.is_some() && p.mode == PublishMode::Host)
            && s.backends.iter().any(|&b| cluster.endpoints[b].host == host);
        let local_slot = needs_local.then(|| slot_for(&mut m, local.clone()));
        for p in &s.ports {
            let base = ServiceValue {
                service_id: id,
                vni,
                target_port: p.target,
                _pad: 0,
                backend_count: healthy.len() as u32,
                flags: 0,
                lb_slot: all_slot.unwrap_or(0),
            };
            if let (EndpointMode::Vip, Some(vip)) = (s.endpoint_mode, s.vip) {
                m.endpoints.insert(
                    EndpointKey { vni, ip: vip.octets() },
                    EndpointValue { mac: gateway_mac(vip.octets()), flags: ENDPOINT_F_VIP, ..Default::default() },
                );
                m.services.insert(
                    ServiceKey { addr: vip.octets(), port: p.target, proto: p.protocol.number(), _pad: 0 },
                    base,
                );
            }
            let Some(published) = p.published else { continue };
            let key = ServiceKey { addr: [0; 4], port: published, proto: p.protocol.number(), _pad: 0 };
            match (p.mode, local_slot) {
                (PublishMode::Ingress, _) => {
                    m.services.insert(key, ServiceValue { flags: SERVICE_F_PUBLISHED, ..base });
                }
                // Only hosts running a backend open a host-mode port.
                (PublishMode::Host, Some(slot)) => {
                    m.services.insert(
                        key,
                        ServiceValue {
                            flags: SERVICE_F_PUBLISHED | SERVICE_F_HOST_MODE,
                            backend_count: local.len() as u32,
                            lb_slot: slot,
                            ..base
                        },
                    );
                }
                (PublishMode::Host, None) => {}
            }
        }
    }
    m
}

/// The changes that turn one map's content into another's.
#[derive(Debug, Clone, PartialEq)]
pub struct MapDiff<K, V> {
    /// Entries to add or overwrite.
    pub upsert: Vec<(K, V)>,
    /// Keys to remove.
    pub delete: Vec<K>,
}

impl<K, V> Default for MapDiff<K, V> {
    fn default() -> Self {
        MapDiff { upsert: Vec::new(), delete: Vec::new() }
    }
}

impl<K, V> MapDiff<K, V> {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.delete.is_empty()
    }
}

pub fn diff_map<K: Ord + Clone, V: PartialEq + Clone>(
    desired: &BTreeMap<K, V>,
    current: &BTreeMap<K, V>,
) -> MapDiff<K, V> {
    MapDiff {
        upsert: desired
            .iter()
            .filter(|(k, v)| current.get(k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        delete: current.keys().filter(|k| !desired.contains_key(k)).cloned().collect(),
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    pub config: MapDiff<u32, HostConfig>,
    pub endpoints: MapDiff<EndpointKey, EndpointValue>,
    pub networks: MapDiff<u32, NetworkValue>,
    pub subnets: MapDiff<SubnetKey, SubnetValue>,
    pub ifaces: MapDiff<u32, IfaceValue>,
    pub vteps: MapDiff<[u8; 4], VtepValue>,
    pub services: MapDiff<ServiceKey, ServiceValue>,
    /// Per lb slot, the (index, backend) entries that change. Slots no
    /// longer used keep their content: nothing points at them.
    pub maglev: BTreeMap<u32, Vec<(u32, [u8; 4])>>,
    pub backends: MapDiff<BackendKey, BackendValue>,
}

/// The entries of each desired Maglev table that differ from the current one.
fn diff_maglev(
    desired: &BTreeMap<u32, Vec<[u8; 4]>>,
    current: &BTreeMap<u32, Vec<[u8; 4]>>,
) -> BTreeMap<u32, Vec<(u32, [u8; 4])>> {
    let mut out = BTreeMap::new();
    for (slot, want) in desired {
        let have = current.get(slot);
        let changed: Vec<(u32, [u8; 4])> = want
            .iter()
            .enumerate()
            .filter(|(i, ip)| have.and_then(|h| h.get(*i)) != Some(*ip))
            .map(|(i, ip)| (i as u32, *ip))
            .collect();
        if !changed.is_empty() {
            out.insert(*slot, changed);
        }
    }
    out
}

/// One write of a diff: an entry added or changed, in the map it names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Upsert<'a> {
    Vtep(&'a [u8; 4], &'a VtepValue),
    Network(&'a u32, &'a NetworkValue),
    Subnet(&'a SubnetKey, &'a SubnetValue),
    Endpoint(&'a EndpointKey, &'a EndpointValue),
    Iface(&'a u32, &'a IfaceValue),
    /// (lb slot, index in its table, backend address).
    Maglev(u32, u32, [u8; 4]),
    Backend(&'a BackendKey, &'a BackendValue),
    Service(&'a ServiceKey, &'a ServiceValue),
    Config(&'a HostConfig),
}

/// One removal of a diff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delete<'a> {
    Vtep(&'a [u8; 4]),
    Network(&'a u32),
    Subnet(&'a SubnetKey),
    Endpoint(&'a EndpointKey),
    Iface(&'a u32),
    Backend(&'a BackendKey),
    Service(&'a ServiceKey),
    /// The config slot cleared (an array keeps its slot).
    Config,
}

/// Where a diff is written: the kernel maps, or a recorder in the tests.
pub trait MapSink {
    type Error;
    fn upsert(&mut self, u: Upsert<'_>) -> Result<(), Self::Error>;
    fn delete(&mut self, d: Delete<'_>) -> Result<(), Self::Error>;
}

impl Diff {
    pub fn between(desired: &MapContents, current: &MapContents) -> Diff {
        Diff {
            config: diff_map(&desired.config, &current.config),
            endpoints: diff_map(&desired.endpoints, &current.endpoints),
            networks: diff_map(&desired.networks, &current.networks),
            subnets: diff_map(&desired.subnets, &current.subnets),
            ifaces: diff_map(&desired.ifaces, &current.ifaces),
            vteps: diff_map(&desired.vteps, &current.vteps),
            services: diff_map(&desired.services, &current.services),
            maglev: diff_maglev(&desired.maglev, &current.maglev),
            backends: diff_map(&desired.backends, &current.backends),
        }
    }

    /// Writes the diff make-before-break across all maps: every addition and
    /// change first, each map after the maps its entries point into (hosts,
    /// networks and endpoints before the Maglev slots and services that lead
    /// to them), then every removal, in the reverse order. So a removed
    /// backend's Maglev slots are re-pointed before its endpoint goes, and a
    /// packet in flight never finds a hole that neither state had.
    pub fn write_to<S: MapSink>(&self, sink: &mut S) -> Result<(), S::Error> {
        for (k, v) in &self.vteps.upsert {
            sink.upsert(Upsert::Vtep(k, v))?;
        }
        for (k, v) in &self.networks.upsert {
            sink.upsert(Upsert::Network(k, v))?;
        }
        for (k, v) in &self.subnets.upsert {
            sink.upsert(Upsert::Subnet(k, v))?;
        }
        for (k, v) in &self.endpoints.upsert {
            sink.upsert(Upsert::Endpoint(k, v))?;
        }
        for (k, v) in &self.ifaces.upsert {
            sink.upsert(Upsert::Iface(k, v))?;
        }
        for (slot, entries) in &self.maglev {
            for (i, ip) in entries {
                sink.upsert(Upsert::Maglev(*slot, *i, *ip))?;
            }
        }
        for (k, v) in &self.backends.upsert {
            sink.upsert(Upsert::Backend(k, v))?;
        }
        for (k, v) in &self.services.upsert {
            sink.upsert(Upsert::Service(k, v))?;
        }
        for (_, v) in &self.config.upsert {
            sink.upsert(Upsert::Config(v))?;
        }
        if !self.config.delete.is_empty() {
            sink.delete(Delete::Config)?;
        }
        for k in &self.services.delete {
            sink.delete(Delete::Service(k))?;
        }
        for k in &self.backends.delete {
            sink.delete(Delete::Backend(k))?;
        }
        for k in &self.ifaces.delete {
            sink.delete(Delete::Iface(k))?;
        }
        for k in &self.endpoints.delete {
            sink.delete(Delete::Endpoint(k))?;
        }
        for k in &self.subnets.delete {
            sink.delete(Delete::Subnet(k))?;
        }
        for k in &self.networks.delete {
            sink.delete(Delete::Network(k))?;
        }
        for k in &self.vteps.delete {
            sink.delete(Delete::Vtep(k))?;
        }
        Ok(())
    }

    /// (entries written, entries deleted) over all maps.
    pub fn counts(&self) -> (usize, usize) {
        let u = self.config.upsert.len()
            + self.endpoints.upsert.len()
            + self.networks.upsert.len()
            + self.subnets.upsert.len()
            + self.ifaces.upsert.len()
            + self.vteps.upsert.len()
            + self.services.upsert.len()
            + self.maglev.values().map(Vec::len).sum::<usize>()
            + self.backends.upsert.len();
        let d = self.config.delete.len()
            + self.endpoints.delete.len()
            + self.networks.delete.len()
            + self.subnets.delete.len()
            + self.ifaces.delete.len()
            + self.vteps.delete.len()
            + self.services.delete.len()
            + self.backends.delete.len();
        (u, d)
    }

    pub fn is_empty(&self) -> bool {
        self.counts() == (0, 0)
    }
}

#[cfg(test)]
mod tests;
