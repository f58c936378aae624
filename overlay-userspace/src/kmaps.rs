//! The pinned maps of one host: read their content, apply a reconciler diff,
//! read the counters.

use std::collections::BTreeMap;

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, MapError, MapInfo, PerCpuArray, PerCpuHashMap};
use overlay_common::*;

use crate::{
    pins::Pins,
    reconcile::{Delete, Diff, MapContents, MapSink, Upsert},
};

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("cannot open pinned map {path}: {source} (run `overlay-bpf up` first)")]
    Open { path: String, source: MapError },
    #[error("map {map}: {op}: {source}")]
    Op { map: &'static str, op: &'static str, source: MapError },
    #[error(
        "map {map} would hold {need} entries but its limit is {limit}; nothing was applied. Reduce the state (for \
         OB_MAGLEV_V1: services with the same backend list share one table), or raise the limit in \
         overlay-common/src/maps.rs and rebuild"
    )]
    Full { map: &'static str, need: usize, limit: u32 },
    #[error("--bpf-log: the programs loaded here predate the log switch ({MAP_LOG}); run `overlay-bpf up` with this build first")]
    NoLogSwitch,
}

impl MapsError {
    pub fn exit_code(&self) -> i32 {
        match self {
            MapsError::Full { .. } | MapsError::NoLogSwitch => crate::error::EXIT_USER,
            MapsError::Open { .. } | MapsError::Op { .. } => crate::error::EXIT_SYSTEM,
        }
    }
}

/// The size of a pinned map, as the kernel has it.
pub fn max_entries(pins: &Pins, name: &'static str) -> Result<u32, MapsError> {
    let path = pins.map(name);
    MapInfo::from_pin(&path)
        .map(|i| i.max_entries())
        .map_err(|source| MapsError::Open { path: path.display().to_string(), source })
}

/// (map, entries, limit) of the maps the programs fill, which `up` never
/// reads: the connection table (sized by `up --ct-size`) and the next-hop
/// cache. Counting walks the keys (a quarter of a second for a full default
/// table); a walk that an eviction restarts is cut at the limit.
pub fn program_filled(pins: &Pins) -> Result<[(&'static str, usize, u32); 2], MapsError> {
    let ct: HashMap<MapData, CtKey, CtValue> = open(pins, MAP_CT)?;
    let hops: HashMap<MapData, [u8; 4], NextHop> = open(pins, MAP_NEXT_HOPS)?;
    let (ct_max, hops_max) = (max_entries(pins, MAP_CT)?, max_entries(pins, MAP_NEXT_HOPS)?);
    let ct_n = ct.keys().take(ct_max as usize).filter(Result::is_ok).count();
    let hops_n = hops.keys().take(hops_max as usize).filter(Result::is_ok).count();
    Ok([(MAP_CT, ct_n, ct_max), (MAP_NEXT_HOPS, hops_n, hops_max)])
}

/// Typed handles on every pinned map.
pub struct KernelMaps {
    config: Array<MapData, HostConfig>,
    endpoints: HashMap<MapData, EndpointKey, EndpointValue>,
    networks: HashMap<MapData, u32, NetworkValue>,
    subnets: LpmTrie<MapData, [u8; 4], SubnetValue>,
    ifaces: HashMap<MapData, u32, IfaceValue>,
    vteps: HashMap<MapData, [u8; 4], VtepValue>,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    maglev: Array<MapData, [u8; 4]>,
    backends: HashMap<MapData, BackendKey, BackendValue>,
    backend_stats: PerCpuHashMap<MapData, BackendKey, BackendStats>,
    stats: PerCpuArray<MapData, Counter>,
    /// Absent under programs older than the switch (the upgrade test's
    /// previous release).
    log: Option<Array<MapData, u32>>,
}

fn open<T: TryFrom<Map, Error = MapError>>(pins: &Pins, name: &'static str) -> Result<T, MapsError> {
    let path = pins.map(name);
    let open_err = |source| MapsError::Open { path: path.display().to_string(), source };
    let data = MapData::from_pin(&path).map_err(open_err)?;
    let map = Map::from_map_data(data).map_err(open_err)?;
    T::try_from(map).map_err(|source| MapsError::Op { map: name, op: "type check", source })
}

fn read_hash<K: aya::Pod + Ord, V: aya::Pod>(
    m: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<BTreeMap<K, V>, MapsError> {
    m.iter().map(|r| r.map_err(|source| MapsError::Op { map: name, op: "read", source })).collect()
}

fn write_err(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Op { map, op, source }
}

/// A removal of a key that is already gone is done.
fn removed(r: Result<(), MapError>, map: &'static str) -> Result<(), MapsError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(source) => Err(MapsError::Op { map, op: "delete", source }),
    }
}

impl MapSink for KernelMaps {
    type Error = MapsError;

    fn upsert(&mut self, u: Upsert<'_>) -> Result<(), MapsError> {
        match u {
            Upsert::Vtep(k, v) => self.vteps.insert(k, v, 0).map_err(write_err(MAP_VTEPS, "insert")),
            Upsert::Network(k, v) => self.networks.insert(k, v, 0).map_err(write_err(MAP_NETWORKS, "insert")),
            Upsert::Subnet((plen, addr), v) => {
                self.subnets.insert(&Key::new(*plen, *addr), v, 0).map_err(write_err(MAP_SUBNETS, "insert"))
            }
            Upsert::Endpoint(k, v) => self.endpoints.insert(k, v, 0).map_err(write_err(MAP_ENDPOINTS, "insert")),
            Upsert::Iface(k, v) => self.ifaces.insert(k, v, 0).map_err(write_err(MAP_IFACES, "insert")),
            Upsert::Maglev(slot, i, ip) => {
                self.maglev.set(slot * MAGLEV_SIZE + i, ip, 0).map_err(write_err(MAP_MAGLEV, "write"))
            }
            Upsert::Backend(k, v) => self.backends.insert(k, v, 0).map_err(write_err(MAP_BACKENDS, "insert")),
            Upsert::Service(k, v) => self.services.insert(k, v, 0).map_err(write_err(MAP_SERVICES, "insert")),
            Upsert::Config(v) => self.config.set(0, v, 0).map_err(write_err(MAP_CONFIG, "write")),
        }
    }

    fn delete(&mut self, d: Delete<'_>) -> Result<(), MapsError> {
        match d {
            Delete::Vtep(k) => removed(self.vteps.remove(k), MAP_VTEPS),
            Delete::Network(k) => removed(self.networks.remove(k), MAP_NETWORKS),
            Delete::Subnet((plen, addr)) => removed(self.subnets.remove(&Key::new(*plen, *addr)), MAP_SUBNETS),
            Delete::Endpoint(k) => removed(self.endpoints.remove(k), MAP_ENDPOINTS),
            Delete::Iface(k) => removed(self.ifaces.remove(k), MAP_IFACES),
            Delete::Backend(k) => removed(self.backends.remove(k), MAP_BACKENDS),
            Delete::Service(k) => removed(self.services.remove(k), MAP_SERVICES),
            Delete::Config => self.config.set(0, HostConfig::default(), 0).map_err(write_err(MAP_CONFIG, "write")),
        }
    }
}

impl KernelMaps {
    pub fn open(pins: &Pins) -> Result<KernelMaps, MapsError> {
        Ok(KernelMaps {
            config: open(pins, MAP_CONFIG)?,
            endpoints: open(pins, MAP_ENDPOINTS)?,
            networks: open(pins, MAP_NETWORKS)?,
            subnets: open(pins, MAP_SUBNETS)?,
            ifaces: open(pins, MAP_IFACES)?,
            vteps: open(pins, MAP_VTEPS)?,
            services: open(pins, MAP_SERVICES)?,
            maglev: open(pins, MAP_MAGLEV)?,
            backends: open(pins, MAP_BACKENDS)?,
            backend_stats: open(pins, MAP_BACKEND_STATS)?,
            stats: open(pins, MAP_STATS)?,
            log: open(pins, MAP_LOG).ok(),
        })
    }

    /// What the maps hold now, in the reconciler's terms.
    pub fn read(&self) -> Result<MapContents, MapsError> {
        let mut c = MapContents::default();
        let cfg = self.config.get(&0, 0).map_err(|source| MapsError::Op { map: MAP_CONFIG, op: "read", source })?;
        // An array always has its slot; all zeroes means never written.
        if cfg != HostConfig::default() {
            c.config.insert(0, cfg);
        }
        c.endpoints = read_hash(&self.endpoints, MAP_ENDPOINTS)?;
        c.networks = read_hash(&self.networks, MAP_NETWORKS)?;
        c.ifaces = read_hash(&self.ifaces, MAP_IFACES)?;
        c.vteps = read_hash(&self.vteps, MAP_VTEPS)?;
        c.services = read_hash(&self.services, MAP_SERVICES)?;
        c.backends = read_hash(&self.backends, MAP_BACKENDS)?;
        // Only the tables services point at are read: the array is large.
        let slots: std::collections::BTreeSet<u32> = c.services.values().map(|v| v.lb_slot).collect();
        for slot in slots {
            let base = slot * MAGLEV_SIZE;
            let table = (0..MAGLEV_SIZE)
                .map(|i| self.maglev.get(&(base + i), 0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| MapsError::Op { map: MAP_MAGLEV, op: "read", source })?;
            c.maglev.insert(slot, table);
        }
        for r in self.subnets.iter() {
            let (k, v) = r.map_err(|source| MapsError::Op { map: MAP_SUBNETS, op: "read", source })?;
            c.subnets.insert((k.prefix_len(), k.data()), v);
        }
        Ok(c)
    }

    /// Refuses content that does not fit, before anything is written.
    pub fn check_capacity(desired: &MapContents) -> Result<(), MapsError> {
        for (map, need, limit) in desired.sizes() {
            if need > limit as usize {
                return Err(MapsError::Full { map, need, limit });
            }
        }
        Ok(())
    }

    /// Writes the diff, make-before-break across all maps
    /// ([`Diff::write_to`]).
    pub fn apply(&mut self, d: &Diff) -> Result<(), MapsError> {
        d.write_to(self)
    }

    /// Switches the programs' debug logs on or off.
    pub fn set_bpf_log(&mut self, on: bool) -> Result<(), MapsError> {
        match &mut self.log {
            Some(log) => log.set(0, on as u32, 0).map_err(write_err(MAP_LOG, "write")),
            None if on => Err(MapsError::NoLogSwitch),
            None => Ok(()),
        }
    }

    /// Packets, bytes and new flows per (service, backend), summed over CPUs.
    pub fn backend_stats(&self) -> Result<BTreeMap<BackendKey, BackendStats>, MapsError> {
        let mut out = BTreeMap::new();
        for r in self.backend_stats.iter() {
            let (k, per_cpu) = r.map_err(|source| MapsError::Op { map: MAP_BACKEND_STATS, op: "read", source })?;
            let mut sum = BackendStats::default();
            for c in per_cpu.iter() {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
                sum.flows += c.flows;
            }
            out.insert(k, sum);
        }
        Ok(out)
    }

    /// Counters summed over CPUs, for every (program, reason).
    pub fn counters(&self) -> Result<Vec<(Prog, Reason, Counter)>, MapsError> {
        let mut out = Vec::new();
        for p in PROGS {
            for r in p.reasons() {
                let per_cpu = self.stats.get(&counter_index(p, r), 0).map_err(|source| MapsError::Op {
                    map: MAP_STATS,
                    op: "read",
                    source,
                })?;
                let mut sum = Counter::default();
                for c in per_cpu.iter() {
                    sum.packets += c.packets;
                    sum.bytes += c.bytes;
                }
                out.push((p, r, sum));
            }
        }
        Ok(out)
    }
}
