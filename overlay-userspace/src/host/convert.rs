//! Carrying the entries of a map the programs fill to a new layout version.
//!
//! `up` fills the maps it owns from the state, whatever their version: a new
//! layout of one of those is simply filled anew. The connection table is
//! different: it holds what only the traffic knows (which backend each
//! established flow went to), so a new layout of it must have its old
//! entries converted, or every mesh and VIP connection is picked again on
//! its next packet. A release that changes such a layout adds one
//! [`Conversion`] to [`CONVERSIONS`]; a unit test fails until it does.
//!
//! `up` carries the entries twice: once before any program of the new build
//! runs (the bulk), and once after every link runs it, for the flows the old
//! programs started in between. An entry the new map holds already stays:
//! the new programs wrote it, and it is newer.

use aya::maps::{HashMap, MapData, MapError};

use crate::host::{
    kmaps::{open, MapsError},
    pins::Pins,
};

/// How the entries of an older layout version of a program-filled map reach
/// this build's map.
pub struct Conversion {
    /// The older map's name (with its version), as pinned.
    pub from: &'static str,
    /// This build's map.
    pub to: &'static str,
    /// Copies `from`'s entries into `to` (with [`carry`] and the two
    /// layouts' types); returns how many were written.
    pub carry: fn(&Pins, &'static str, &'static str) -> Result<usize, MapsError>,
}

/// The conversions this build makes: the connection table of the previous
/// release (4faeb4b), `OB_CT_V1`, into `OB_CT_V2`, whose forward entries
/// also carry the mesh's destination.
pub static CONVERSIONS: &[Conversion] =
    &[Conversion { from: "OB_CT_V1", to: overlay_common::MAP_CT, carry: ct_v1_to_v2 }];

/// A connection-table value as `OB_CT_V1` holds it: `OB_CT_V2`'s first 40
/// bytes, whose flags byte was padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValueV1 {
    pub action: u8,
    pub _pad: [u8; 3],
    pub new_src: [u8; 4],
    pub new_dst: [u8; 4],
    pub new_sport: u16,
    pub new_dport: u16,
    pub vtep: [u8; 4],
    pub vni: u32,
    pub service_id: u32,
    pub _pad2: u32,
    pub last_seen_ns: u64,
}

// SAFETY: repr(C), integers and byte arrays with explicit padding.
unsafe impl aya::Pod for CtValueV1 {}

/// `OB_CT_V1` -> `OB_CT_V2`: every field kept, the last-seen time too (the
/// same boot's clock), nothing carried yet: the mesh reads its destination
/// from the maps on the flow's next packet and keeps it from then on. An
/// entry of no known action is left behind.
fn ct_v1_to_v2(pins: &Pins, from: &'static str, to: &'static str) -> Result<usize, MapsError> {
    carry(pins, from, to, |k: overlay_common::CtKey, v: CtValueV1| {
        let value = overlay_common::CtValue {
            action: v.action,
            new_src: v.new_src,
            new_dst: v.new_dst,
            new_sport: v.new_sport,
            new_dport: v.new_dport,
            vtep: v.vtep,
            vni: v.vni,
            service_id: v.service_id,
            last_seen_ns: v.last_seen_ns,
            ..Default::default()
        };
        value.action().map(|_| (k, value))
    })
}

/// The maps the programs fill whose entries must never be thrown away, and
/// their names in the previous release. The next-hop cache and the counters
/// are not here: the cache fills itself from the FIB again, and a counter
/// that starts again from zero is a reset Prometheus understands.
pub const MUST_CARRY: &[(&str, &str)] = &[(overlay_common::MAP_CT, "OB_CT_V1")];

/// For every pinned map of another layout version that a conversion of
/// `table` reads: its entries carried into this build's map. Returns
/// (map carried from, entries written).
pub fn carry_other_versions(pins: &Pins, table: &[Conversion]) -> Result<Vec<(&'static str, usize)>, MapsError> {
    let mut out = Vec::new();
    for name in pins.other_versions() {
        if let Some(c) = table.iter().find(|c| c.from == name) {
            out.push((c.from, (c.carry)(pins, c.from, c.to)?));
        }
    }
    Ok(out)
}

/// Copies every entry of the pinned hash or LRU map `from` (keys `K1`,
/// values `V1`) into this build's `to` (`K2`, `V2`), converted by `f`
/// (`None` leaves an entry behind). An entry `to` already holds stays.
/// Returns how many entries were written.
pub fn carry<K1, V1, K2, V2>(
    pins: &Pins,
    from: &'static str,
    to: &'static str,
    f: impl Fn(K1, V1) -> Option<(K2, V2)>,
) -> Result<usize, MapsError>
where
    K1: aya::Pod,
    V1: aya::Pod,
    K2: aya::Pod,
    V2: aya::Pod,
{
    let old: HashMap<MapData, K1, V1> = open(pins, from)?;
    let mut new: HashMap<MapData, K2, V2> = open(pins, to)?;
    let mut written = 0;
    for entry in old.iter() {
        // An entry the LRU evicted during the walk is simply not there.
        let Ok((k, v)) = entry else { continue };
        let Some((k, v)) = f(k, v) else { continue };
        match new.insert(k, v, BPF_NOEXIST) {
            Ok(()) => written += 1,
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => return Err(MapsError::Op { map: to, op: "carry an entry into", source }),
        }
    }
    Ok(written)
}

/// `bpf_map_update_elem`'s flag: only if the key is not there yet.
const BPF_NOEXIST: u64 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout change of a map whose entries must be carried comes with its
    /// conversion (the connection table is never thrown away).
    #[test]
    fn every_carried_map_of_a_new_layout_has_a_conversion() {
        for (now, before) in MUST_CARRY {
            assert!(overlay_common::ALL_MAPS.contains(now), "{now} is not one of this build's maps");
            if now != before {
                let conv = CONVERSIONS.iter().find(|c| c.from == *before && c.to == *now);
                assert!(conv.is_some(), "{before} became {now} without a Conversion in CONVERSIONS");
            }
        }
    }
}
