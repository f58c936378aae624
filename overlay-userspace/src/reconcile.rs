//! The reconciler: a pure function from (cluster, host) to the desired content
//! of every map, and a diff against what the maps hold. Applying the diff
//! touches only changed entries, which is what makes re-applying a changed
//! state file hitless.

use std::collections::BTreeMap;

use overlay_common::*;

use crate::model::{Cluster, EndpointMode, PublishMode};

/// What the reconciler needs to know about the machine: the ifindexes it
/// cannot compute from the state file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostFacts {
    pub underlay_ifindex: u32,
    /// Endpoint name -> its host-side veth, for local endpoints.
    pub veths: BTreeMap<String, Veth>,
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
}

impl MapContents {
    /// (map name, entries, capacity) for every map the loader fills.
    pub fn sizes(&self) -> [(&'static str, usize, u32); 7] {
        [
            (MAP_CONFIG, self.config.len(), 1),
            (MAP_ENDPOINTS, self.endpoints.len(), MAX_ENDPOINTS),
            (MAP_NETWORKS, self.networks.len(), MAX_NETWORKS),
            (MAP_SUBNETS, self.subnets.len(), MAX_SUBNETS),
            (MAP_IFACES, self.ifaces.len(), MAX_IFACES),
            (MAP_VTEPS, self.vteps.len(), MAX_VTEPS),
            (MAP_SERVICES, self.services.len(), MAX_SERVICES),
        ]
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
    for e in &cluster.endpoints {
        let vni = cluster.networks[e.network].vni;
        let local = if e.host == host { facts.veths.get(&e.name).copied() } else { None };
        let local_ifindex = local.map(|v| v.ifindex);
        m.endpoints.insert(
            EndpointKey { vni, ip: e.ip.octets() },
            EndpointValue {
                mac: e.mac.0,
                _pad: [0; 2],
                ifindex: local_ifindex.unwrap_or(0),
                vtep: cluster.hosts[e.host].address.octets(),
                flags: if local_ifindex.is_some() { ENDPOINT_F_LOCAL } else { 0 },
            },
        );
        if let Some(v) = local {
            m.ifaces.insert(v.ifindex, IfaceValue { vni, ip: e.ip.octets(), mac: e.mac.0, host_mac: v.mac });
        }
    }
    for (si, s) in cluster.services.iter().enumerate() {
        let vni = cluster.networks[s.network].vni;
        let local_backends = s.backends.iter().filter(|&&b| cluster.endpoints[b].host == host).count() as u32;
        for p in &s.ports {
            let base = ServiceValue {
                service_id: si as u32,
                vni,
                target_port: p.target,
                _pad: 0,
                backend_count: s.backends.len() as u32,
                flags: 0,
            };
            if let (EndpointMode::Vip, Some(vip)) = (s.endpoint_mode, s.vip) {
                m.services.insert(
                    ServiceKey { addr: vip.octets(), port: p.target, proto: p.protocol.number(), _pad: 0 },
                    base,
                );
            }
            let Some(published) = p.published else { continue };
            let key = ServiceKey { addr: [0; 4], port: published, proto: p.protocol.number(), _pad: 0 };
            match p.mode {
                PublishMode::Ingress => {
                    m.services.insert(key, ServiceValue { flags: SERVICE_F_PUBLISHED, ..base });
                }
                // Only hosts running a backend open a host-mode port.
                PublishMode::Host if local_backends > 0 => {
                    m.services.insert(
                        key,
                        ServiceValue {
                            flags: SERVICE_F_PUBLISHED | SERVICE_F_HOST_MODE,
                            backend_count: local_backends,
                            ..base
                        },
                    );
                }
                PublishMode::Host => {}
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
        }
    }

    /// (entries written, entries deleted) over all maps.
    pub fn counts(&self) -> (usize, usize) {
        let u = self.config.upsert.len()
            + self.endpoints.upsert.len()
            + self.networks.upsert.len()
            + self.subnets.upsert.len()
            + self.ifaces.upsert.len()
            + self.vteps.upsert.len()
            + self.services.upsert.len();
        let d = self.config.delete.len()
            + self.endpoints.delete.len()
            + self.networks.delete.len()
            + self.subnets.delete.len()
            + self.ifaces.delete.len()
            + self.vteps.delete.len()
            + self.services.delete.len();
        (u, d)
    }

    pub fn is_empty(&self) -> bool {
        self.counts() == (0, 0)
    }
}

#[cfg(test)]
mod tests;
