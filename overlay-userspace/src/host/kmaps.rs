//! The pinned maps of one host: read their content, apply a reconciler diff,
//! read the counters.

use std::collections::BTreeMap;

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, MapError, MapInfo, PerCpuArray, PerCpuHashMap};
use overlay_common::*;

use crate::{
    host::pins::Pins,
    plan::delta::EndpointWrite,
    plan::reconcile::{reconciled_maps, Content, Delete, Diff, MaglevTables, MapContents, MapSink, SubnetKey, Upsert},
};

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("cannot open pinned map {path}: {source} (run `overlay-bpf up` first)")]
    Open { path: String, source: MapError },
    #[error(
        "this host runs another release's programs: its {found} is pinned where this release has {map}; \
         `overlay-bpf up` with this release upgrades it in place (links, connection table and traffic kept)"
    )]
    OtherRelease { map: &'static str, found: String },
    #[error("map {map}: {op}: {source}")]
    Op { map: &'static str, op: &'static str, source: MapError },
    #[error(
        "map {map} would hold {need} entries but its limit is {limit}; nothing was applied. A map's size is set \
         when `up` creates it (twice what the state needs then, at least its default) and a live map cannot \
         grow: reduce the state (for OB_MAGLEV_V1: services with the same backend list share one table), or \
         take the host down and up again (`overlay-bpf down`, then `up`: a break in traffic) to create it larger"
    )]
    Full { map: &'static str, need: usize, limit: u32 },
    #[error("--bpf-log: the programs loaded here predate the log switch ({MAP_LOG}); run `overlay-bpf up` with this build first")]
    NoLogSwitch,
    #[error("encrypted networks: the programs loaded here predate them ({MAP_WIREGUARD}); run `overlay-bpf up` with this build's programs")]
    NoWireguard,
}

impl MapsError {
    pub fn exit_code(&self) -> i32 {
        match self {
            MapsError::Full { .. }
            | MapsError::NoLogSwitch
            | MapsError::NoWireguard
            | MapsError::OtherRelease { .. } => crate::exit::USER,
            MapsError::Open { .. } | MapsError::Op { .. } => crate::exit::SYSTEM,
        }
    }
}

/// The size of a pinned map, as the kernel has it.
pub fn max_entries(pins: &Pins, name: &str) -> Result<u32, MapsError> {
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

/// A pinned map the reconciler fills, in the reconciler's terms (`C`).
trait Reconciled<C: Content> {
    /// The content; `referrers` holds what the maps that point into this one
    /// hold (they are read first).
    fn read(&self, referrers: &MapContents) -> Result<C, MapError>;
    fn put(&mut self, k: &C::Key, v: &C::Value) -> Result<(), MapError>;
    fn remove(&mut self, k: &C::Key) -> Result<(), MapError>;
}

impl<K, V> Reconciled<BTreeMap<K, V>> for HashMap<MapData, K, V>
where
    K: aya::Pod + Ord + std::fmt::Debug,
    V: aya::Pod + PartialEq + std::fmt::Debug,
{
    fn read(&self, _: &MapContents) -> Result<BTreeMap<K, V>, MapError> {
        self.iter().collect()
    }
    fn put(&mut self, k: &K, v: &V) -> Result<(), MapError> {
        self.insert(k, v, 0)
    }
    fn remove(&mut self, k: &K) -> Result<(), MapError> {
        HashMap::remove(self, k)
    }
}

impl<V: aya::Pod + PartialEq + std::fmt::Debug> Reconciled<BTreeMap<SubnetKey, V>> for LpmTrie<MapData, [u8; 4], V> {
    fn read(&self, _: &MapContents) -> Result<BTreeMap<SubnetKey, V>, MapError> {
        self.iter().map(|r| r.map(|(k, v)| ((k.prefix_len(), k.data()), v))).collect()
    }
    fn put(&mut self, (plen, addr): &SubnetKey, v: &V) -> Result<(), MapError> {
        self.insert(&Key::new(*plen, *addr), v, 0)
    }
    fn remove(&mut self, (plen, addr): &SubnetKey) -> Result<(), MapError> {
        LpmTrie::remove(self, &Key::new(*plen, *addr))
    }
}

/// The single-slot config array: an array always has its slot, so all
/// zeroes means never written, and removing clears it.
impl Reconciled<BTreeMap<u32, HostConfig>> for Array<MapData, HostConfig> {
    fn read(&self, _: &MapContents) -> Result<BTreeMap<u32, HostConfig>, MapError> {
        let cfg = self.get(&0, 0)?;
        Ok(if cfg == HostConfig::default() { BTreeMap::new() } else { BTreeMap::from([(0, cfg)]) })
    }
    fn put(&mut self, k: &u32, v: &HostConfig) -> Result<(), MapError> {
        self.set(*k, v, 0)
    }
    fn remove(&mut self, k: &u32) -> Result<(), MapError> {
        self.set(*k, HostConfig::default(), 0)
    }
}

/// Maglev tables end to end in one array. Only the tables services point at
/// are read: the array is large.
impl Reconciled<MaglevTables> for Array<MapData, [u8; 4]> {
    fn read(&self, referrers: &MapContents) -> Result<MaglevTables, MapError> {
        let slots: std::collections::BTreeSet<u32> = referrers.services.values().map(|v| v.lb_slot).collect();
        let mut t = MaglevTables::default();
        for slot in slots {
            let base = slot * MAGLEV_SIZE;
            t.insert(slot, (0..MAGLEV_SIZE).map(|i| self.get(&(base + i), 0)).collect::<Result<_, _>>()?);
        }
        Ok(t)
    }
    fn put(&mut self, (slot, i): &(u32, u32), ip: &[u8; 4]) -> Result<(), MapError> {
        self.set(slot * MAGLEV_SIZE + i, ip, 0)
    }
    /// Tables are overwritten, never removed.
    fn remove(&mut self, _: &(u32, u32)) -> Result<(), MapError> {
        Ok(())
    }
}

macro_rules! kernel_maps {
    ($($variant:ident $field:ident: $map:ident, $content:ty => $kernel:ty;)+) => {
        /// Typed handles on the maps the reconciler fills.
        struct Reconciler {
            $($field: $kernel,)+
        }

        impl Reconciler {
            fn open(pins: &Pins) -> Result<Reconciler, MapsError> {
                Ok(Reconciler { $($field: open(pins, $map)?,)+ })
            }

            /// What the maps hold, read in the reverse dependency order, so
            /// each map is read after the maps that point into it.
            fn read(&self) -> Result<MapContents, MapsError> {
                type Read<'r> = &'r dyn Fn(&Reconciler, &mut MapContents) -> Result<(), MapsError>;
                let reads: &[Read<'_>] = &[$(&|r: &Reconciler, c: &mut MapContents| {
                    let v = Reconciled::<$content>::read(&r.$field, c)
                        .map_err(|source| MapsError::Op { map: $map, op: "read", source })?;
                    c.$field = v;
                    Ok(())
                },)+];
                let mut c = MapContents::default();
                for read in reads.iter().rev() {
                    read(self, &mut c)?;
                }
                Ok(c)
            }
        }

        impl MapSink for KernelMaps {
            type Error = MapsError;

            fn upsert(&mut self, u: Upsert<'_>) -> Result<(), MapsError> {
                match u {
                    $(Upsert::$variant(k, v) => Reconciled::<$content>::put(&mut self.reconciled.$field, k, v)
                        .map_err(|source| MapsError::Op { map: $map, op: "write", source }),)+
                }
            }

            /// A removal of a key that is already gone is done.
            fn delete(&mut self, d: Delete<'_>) -> Result<(), MapsError> {
                match d {
                    $(Delete::$variant(k) => match Reconciled::<$content>::remove(&mut self.reconciled.$field, k) {
                        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                        Err(source) => Err(MapsError::Op { map: $map, op: "delete", source }),
                    },)+
                }
            }
        }
    };
}
reconciled_maps!(kernel_maps);

/// Typed handles on every pinned map.
pub struct KernelMaps {
    reconciled: Reconciler,
    backend_stats: PerCpuHashMap<MapData, BackendKey, BackendStats>,
    stats: PerCpuArray<MapData, Counter>,
    /// Absent under programs older than the switch (the upgrade test's
    /// previous release).
    log: Option<Array<MapData, u32>>,
    /// Absent under programs older than encrypted networks.
    wireguard: Option<Array<MapData, WgConfig>>,
    wg_stats: Option<PerCpuArray<MapData, Counter>>,
}

/// Pinned map `name` of this host, as aya's map type `T`.
pub(crate) fn open<T: TryFrom<Map, Error = MapError>>(pins: &Pins, name: &'static str) -> Result<T, MapsError> {
    let path = pins.map(name);
    let open_err = |source| match pins.other_version_of(name) {
        Some(found) => MapsError::OtherRelease { map: name, found },
        None => MapsError::Open { path: path.display().to_string(), source },
    };
    let data = MapData::from_pin(&path).map_err(open_err)?;
    let map = Map::from_map_data(data).map_err(open_err)?;
    T::try_from(map).map_err(|source| MapsError::Op { map: name, op: "type check", source })
}

fn write_err(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Op { map, op, source }
}

impl KernelMaps {
    pub fn open(pins: &Pins) -> Result<KernelMaps, MapsError> {
        Ok(KernelMaps {
            reconciled: Reconciler::open(pins)?,
            backend_stats: open(pins, MAP_BACKEND_STATS)?,
            stats: open(pins, MAP_STATS)?,
            log: open(pins, MAP_LOG).ok(),
            wireguard: open(pins, MAP_WIREGUARD).ok(),
            wg_stats: open(pins, MAP_WG_STATS).ok(),
        })
    }

    /// What the maps hold now, in the reconciler's terms.
    pub fn read(&self) -> Result<MapContents, MapsError> {
        self.reconciled.read()
    }

    /// Refuses content that does not fit maps of `sizes` entries, before
    /// anything is written.
    pub fn check_capacity(desired: &MapContents, sizes: &BTreeMap<&'static str, u32>) -> Result<(), MapsError> {
        let entries =
            |name: &'static str| sizes.get(name).copied().unwrap_or_else(|| crate::plan::reconcile::declared(name));
        for (map, need, limit) in desired.sizes(&entries) {
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

    /// Writes endpoint entries as a change arrives ([`crate::plan::delta`]): an
    /// entry with the backend flag keeps it, as the full reconcile keeps it
    /// ([`crate::plan::reconcile::keep_backend_flags`]); a removal of a key that is
    /// already gone is done.
    pub fn write_endpoints(&mut self, writes: &[EndpointWrite]) -> Result<(), MapsError> {
        let m = &mut self.reconciled.endpoints;
        for w in writes {
            match w {
                EndpointWrite::Put(k, v) => {
                    let mut v = *v;
                    if m.get(k, 0).is_ok_and(|c| c.flags & ENDPOINT_F_BACKEND != 0) {
                        v.flags |= ENDPOINT_F_BACKEND;
                    }
                    m.insert(k, v, 0).map_err(write_err(MAP_ENDPOINTS, "write"))?;
                }
                EndpointWrite::Delete(k) => match m.remove(k) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(source) => return Err(MapsError::Op { map: MAP_ENDPOINTS, op: "delete", source }),
                },
            }
        }
        Ok(())
    }

    /// This host's WireGuard devices (`WgConfig::default()`: none).
    pub fn set_wireguard(&mut self, cfg: WgConfig) -> Result<(), MapsError> {
        match &mut self.wireguard {
            Some(m) if m.get(&0, 0).ok() != Some(cfg) => m.set(0, cfg, 0).map_err(write_err(MAP_WIREGUARD, "write")),
            Some(_) => Ok(()),
            None if cfg.ifindex != 0 => Err(MapsError::NoWireguard),
            None => Ok(()),
        }
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
                let (map, got) = match p {
                    Prog::TcWireguard => match &self.wg_stats {
                        Some(m) => (MAP_WG_STATS, m.get(&(r as u32), 0)),
                        None => continue,
                    },
                    _ => (MAP_STATS, self.stats.get(&counter_index(p, r), 0)),
                };
                let per_cpu = got.map_err(|source| MapsError::Op { map, op: "read", source })?;
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
