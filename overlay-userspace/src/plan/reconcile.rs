//! The reconciler: a pure function from (cluster, host) to the desired content
//! of every map, and a diff against what the maps hold. Applying the diff
//! touches only changed entries, which is what makes re-applying a changed
//! state file hitless.

use std::collections::{BTreeMap, BTreeSet};

use overlay_common::*;

use crate::{
    plan::maglev,
    state::model::{Cluster, EndpointMode, PublishMode},
};

/// What the reconciler needs to know about the machine: the ifindexes it
/// cannot compute from the state file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostFacts {
    pub underlay_ifindex: u32,
    /// Endpoint key (`Endpoint::key`) -> its host-side veth, for local endpoints.
    pub veths: BTreeMap<String, Veth>,
    /// Backends (endpoint keys) the health checks took out.
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

/// The maps `up` fills from the state, each named once: its `Upsert` and
/// `Delete` variant, its `MapContents`/`Diff` field, its map, its content
/// here and its handle in the kernel (`kmaps`). A new map of this kind is one
/// line here (and the code in `desired` that fills it); the compiler then asks
/// for whatever else is missing.
///
/// In dependency order: a map comes after the maps its entries point into
/// (hosts, networks and endpoints before the Maglev slots and services that
/// lead to them). Additions are written in this order and removals in the
/// reverse, so a change is make-before-break (`Diff::write_to`).
macro_rules! reconciled_maps {
    ($m:ident) => {
        $m! {
            Vtep vteps: MAP_VTEPS, BTreeMap<[u8; 4], u8> => HashMap<MapData, [u8; 4], u8>;
            Network networks: MAP_NETWORKS, BTreeMap<u32, NetworkValue> => HashMap<MapData, u32, NetworkValue>;
            Subnet subnets: MAP_SUBNETS, BTreeMap<SubnetKey, SubnetValue> => LpmTrie<MapData, [u8; 4], SubnetValue>;
            Endpoint endpoints: MAP_ENDPOINTS, BTreeMap<EndpointKey, EndpointValue>
                => HashMap<MapData, EndpointKey, EndpointValue>;
            Iface ifaces: MAP_IFACES, BTreeMap<u32, IfaceValue> => HashMap<MapData, u32, IfaceValue>;
            Maglev maglev: MAP_MAGLEV, MaglevTables => Array<MapData, [u8; 4]>;
            Backend backends: MAP_BACKENDS, BTreeMap<BackendKey, u8> => HashMap<MapData, BackendKey, u8>;
            Service services: MAP_SERVICES, BTreeMap<ServiceKey, ServiceValue>
                => HashMap<MapData, ServiceKey, ServiceValue>;
            Config config: MAP_CONFIG, BTreeMap<u32, HostConfig> => Array<MapData, HostConfig>;
        }
    };
}
pub(crate) use reconciled_maps;

/// What a reconciled map holds, as the reconciler sees it: entries it can
/// diff, and a size to check against the map's.
pub trait Content: Default + Clone + PartialEq + std::fmt::Debug {
    /// What one write or removal names.
    type Key: Clone + PartialEq + std::fmt::Debug;
    type Value: Clone + PartialEq + std::fmt::Debug;
    /// The changes that turn `current` into `self`.
    fn diff(&self, current: &Self) -> MapDiff<Self::Key, Self::Value>;
    /// The size, in the unit of `capacity`.
    fn used(&self) -> usize;
    /// The most this content may hold in a map declared with `entries`.
    fn capacity(entries: u32) -> u32 {
        entries
    }
    /// The map entries `used` takes (the inverse of `capacity`).
    fn entries(used: usize) -> u32 {
        used.min(u32::MAX as usize) as u32
    }
}

impl<K: Ord + Clone + std::fmt::Debug, V: PartialEq + Clone + std::fmt::Debug> Content for BTreeMap<K, V> {
    type Key = K;
    type Value = V;
    fn diff(&self, current: &Self) -> MapDiff<K, V> {
        diff_map(self, current)
    }
    fn used(&self) -> usize {
        self.len()
    }
}

/// Maglev tables by lb slot, each `MAGLEV_SIZE` backend addresses; in the
/// kernel, one array of every slot's table end to end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaglevTables(pub BTreeMap<u32, Vec<[u8; 4]>>);

impl std::ops::Deref for MaglevTables {
    type Target = BTreeMap<u32, Vec<[u8; 4]>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for MaglevTables {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Content for MaglevTables {
    /// (lb slot, index in its table).
    type Key = (u32, u32);
    type Value = [u8; 4];
    /// The entries of each desired table that differ from the current one.
    /// Slots no longer used keep their content: nothing points at them.
    fn diff(&self, current: &Self) -> MapDiff<(u32, u32), [u8; 4]> {
        let mut d = MapDiff::default();
        for (slot, want) in self.iter() {
            let have = current.get(slot);
            d.upsert.extend(
                want.iter()
                    .enumerate()
                    .filter(|(i, ip)| have.and_then(|h| h.get(*i)) != Some(*ip))
                    .map(|(i, ip)| ((*slot, i as u32), *ip)),
            );
        }
        d
    }
    /// Tables, not entries.
    fn used(&self) -> usize {
        self.len()
    }
    fn capacity(entries: u32) -> u32 {
        entries / MAGLEV_SIZE
    }
    fn entries(used: usize) -> u32 {
        (used as u32).saturating_mul(MAGLEV_SIZE)
    }
}

/// The declared size of map `name` (overlay-common's `MAP_SIZES`): the
/// default a map is created with.
pub fn declared(name: &str) -> u32 {
    MAP_SIZES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s).expect("every reconciled map is declared")
}

macro_rules! contents {
    ($($variant:ident $field:ident: $map:ident, $content:ty => $kernel:ty;)+) => {
        /// The content of every map `up` fills, as typed entries.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct MapContents {
            $(pub $field: $content,)+
        }

        impl MapContents {
            /// (map name, size, capacity) for every map the loader fills, in
            /// maps of `entries(name)` entries each (their declared sizes:
            /// [`declared`]).
            pub fn sizes(&self, entries: &dyn Fn(&'static str) -> u32) -> Vec<(&'static str, usize, u32)> {
                vec![$(($map, self.$field.used(), <$content as Content>::capacity(entries($map))),)+]
            }

            /// The entries each map needs, in its own unit (`Content::entries`).
            pub fn needs(&self) -> Vec<(&'static str, u32)> {
                vec![$(($map, <$content as Content>::entries(self.$field.used())),)+]
            }
        }

        /// The changes that turn one `MapContents` into another.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Diff {
            $(pub $field: MapDiff<<$content as Content>::Key, <$content as Content>::Value>,)+
        }

        /// One write of a diff: an entry added or changed, in the map it names.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub enum Upsert<'a> {
            $($variant(&'a <$content as Content>::Key, &'a <$content as Content>::Value),)+
        }

        /// One removal of a diff.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub enum Delete<'a> {
            $($variant(&'a <$content as Content>::Key),)+
        }

        impl Diff {
            pub fn between(desired: &MapContents, current: &MapContents) -> Diff {
                Diff { $($field: desired.$field.diff(&current.$field),)+ }
            }

            /// Writes the diff make-before-break across all maps: every
            /// addition and change first, in the maps' dependency order
            /// (`reconciled_maps`), then every removal, in the reverse order.
            /// So a removed backend's Maglev slots are re-pointed before its
            /// endpoint goes, and a packet in flight never finds a hole that
            /// neither state had.
            pub fn write_to<S: MapSink>(&self, sink: &mut S) -> Result<(), S::Error> {
                $(for (k, v) in &self.$field.upsert {
                    sink.upsert(Upsert::$variant(k, v))?;
                })+
                type Removals<'d, S> = &'d dyn Fn(&mut S) -> Result<(), <S as MapSink>::Error>;
                let removals: &[Removals<'_, S>] = &[$(&|sink: &mut S| {
                    for k in &self.$field.delete {
                        sink.delete(Delete::$variant(k))?;
                    }
                    Ok(())
                },)+];
                for r in removals.iter().rev() {
                    r(sink)?;
                }
                Ok(())
            }

            /// (entries written, entries deleted) over all maps.
            pub fn counts(&self) -> (usize, usize) {
                (0 $(+ self.$field.upsert.len())+, 0 $(+ self.$field.delete.len())+)
            }
        }
    };
}
reconciled_maps!(contents);

/// A service's stable id: 32 bits of a hash of its name.
pub fn service_id(name: &str) -> u32 {
    crate::state::model::fnv1a(name.as_bytes()) as u32
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

fn ingress_published(s: &crate::state::model::Service) -> bool {
    s.ports.iter().any(|p| p.published.is_some() && p.mode == PublishMode::Ingress)
}

/// The networks whose endpoints host `host` programs (indexes into
/// `cluster.networks`): its own (an endpoint here), the ingress network, and
/// those of services published in ingress mode (the routing mesh answers on
/// every host).
/// Never a macvlan network: its endpoints are on the LAN, not in the maps.
pub fn programmed_networks(cluster: &Cluster, host: usize) -> BTreeSet<usize> {
    cluster
        .local_endpoints(host)
        .map(|e| e.network)
        .chain(cluster.networks.iter().enumerate().filter(|(_, n)| n.ingress()).map(|(i, _)| i))
        .chain(cluster.services.iter().filter(|s| ingress_published(s)).map(|s| s.network))
        .filter(|&n| cluster.networks[n].macvlan().is_none())
        .collect()
}

/// The OB_ENDPOINTS entry of an endpoint on another host, not a backend:
/// where its host's VTEP is. [`desired`] writes these, and so do the changes
/// the agent applies as they arrive ([`crate::plan::delta`]).
pub fn remote_endpoint(mac: crate::state::model::Mac, vtep: std::net::Ipv4Addr) -> EndpointValue {
    EndpointValue { mac: mac.0, _pad: [0; 2], ifindex: 0, vtep: vtep.octets(), flags: 0 }
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
            ct_tcp_timeout: cluster.conntrack_tcp_timeout,
            ct_udp_timeout: cluster.conntrack_udp_timeout,
        },
    );
    for h in &cluster.hosts {
        m.vteps.insert(h.address.octets(), PRESENT);
    }
    for (ni, n) in cluster.networks.iter().enumerate() {
        // A macvlan network's endpoints are on the LAN, not in the maps.
        let Some(o) = n.overlay() else { continue };
        let local = cluster.endpoints.iter().any(|e| e.network == ni && e.host == host);
        let gw = n.subnets[0].gateway;
        let flags = (if n.internal { NETWORK_F_INTERNAL } else { 0 })
            | (if local { NETWORK_F_LOCAL } else { 0 })
            | (if o.encrypted { NETWORK_F_ENCRYPTED } else { 0 });
        m.networks.insert(
            o.vni,
            NetworkValue {
                gateway: gw.octets(),
                gateway_mac: gateway_mac(gw.octets()),
                mtu: o.mtu.min(u16::MAX as u32) as u16,
                flags,
            },
        );
        for s in &n.subnets {
            m.subnets.insert(
                (s.subnet.prefix_len() as u32, s.subnet.network().octets()),
                SubnetValue { vni: o.vni, gateway: s.gateway.octets() },
            );
        }
    }
    // The networks whose endpoints this host programs (`programmed_networks`).
    // Docker does the same: a worker sees an overlay network once a container
    // there joins it. So a host's maps grow with its own networks, not with
    // the cluster. Every network's subnets stay, so traffic towards another
    // network is still recognised and refused (`drop_cross_network`).
    let own: BTreeSet<usize> = cluster.local_endpoints(host).map(|e| e.network).collect();
    let programmed = programmed_networks(cluster, host);
    // Every configured backend, healthy or not: replies of flows it already
    // has are translated until the flows end.
    let backends: BTreeSet<usize> = cluster.services.iter().flat_map(|s| s.backends.iter().copied()).collect();
    for (i, e) in cluster.endpoints.iter().enumerate() {
        // Programmed networks are overlay networks.
        let (true, Some(vni)) = (programmed.contains(&e.network), cluster.networks[e.network].vni()) else {
            continue;
        };
        let local = if e.host == host { facts.veths.get(&e.key).copied() } else { None };
        // A local endpoint without its veth (a Docker container not joined
        // yet, or gone): nothing to deliver to.
        if e.host == host && local.is_none() {
            continue;
        }
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
        // Services live on overlay networks (the resolver refuses others).
        let Some(vni) = cluster.networks[s.network].vni() else { continue };
        let id = service_id(&s.name);
        let healthy: Vec<usize> =
            s.backends.iter().copied().filter(|&b| !facts.unhealthy.contains(&cluster.endpoints[b].key)).collect();
        let local: Vec<usize> = healthy.iter().copied().filter(|&b| cluster.endpoints[b].host == host).collect();
        // A VIP is reached from its network's containers: only where the
        // network has one. An ingress-published port answers everywhere.
        let vip_here = s.endpoint_mode == EndpointMode::Vip && s.vip.is_some() && own.contains(&s.network);
        let needs_all = vip_here || ingress_published(s);
        let all_slot = needs_all.then(|| slot_for(&mut m, healthy.clone()));
        let needs_local = s.ports.iter().any(|p| p.published.is_some() && p.mode == PublishMode::Host)
            && s.backends.iter().any(|&b| cluster.endpoints[b].host == host);
        if !needs_all && !needs_local {
            continue;
        }
        for &b in &healthy {
            m.backends.insert(BackendKey { service_id: id, ip: cluster.endpoints[b].ip.octets() }, PRESENT);
        }
        let local_slot = needs_local.then(|| slot_for(&mut m, local.clone()));
        for p in &s.ports {
            let base = ServiceValue {
                service_id: id,
                vni,
                target_port: p.target,
                _pad: 0,
                flags: 0,
                lb_slot: all_slot.unwrap_or(0),
            };
            if let (true, Some(vip)) = (vip_here, s.vip) {
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
                        ServiceValue { flags: SERVICE_F_PUBLISHED | SERVICE_F_HOST_MODE, lb_slot: slot, ..base },
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

/// Where a diff is written: the kernel maps, or a recorder in the tests.
pub trait MapSink {
    type Error;
    fn upsert(&mut self, u: Upsert<'_>) -> Result<(), Self::Error>;
    fn delete(&mut self, d: Delete<'_>) -> Result<(), Self::Error>;
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.counts() == (0, 0)
    }
}

#[cfg(test)]
mod tests;
