//! Load balancing shared by TC (VIPs) and XDP (routing mesh): flow hashing,
//! Maglev picks and per-backend counters. The flows it picks for are
//! recorded by [`crate::conntrack::track`].

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_coarse_ns};
use overlay_common::*;

use crate::maps::{OB_BACKENDS_V2, OB_BACKEND_STATS_V1, OB_MAGLEV_V1};

pub use overlay_common::flow::flow_hash;

/// The data path's clock: CLOCK_MONOTONIC_COARSE, as of the last tick
/// (1-4 ms old). Everything timed by it (idle timeouts, last-seen writes,
/// next hops and carried fields re-read) counts in seconds, and the precise
/// clock costs a TSC read: 15 % of the underlay program's time in the
/// per-packet bench.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The backend Maglev table `slot` gives flow hash `h`, if any.
#[inline(always)]
fn maglev_pick(slot: u32, h: u32) -> Option<[u8; 4]> {
    let ip = *OB_MAGLEV_V1.get(overlay_common::flow::maglev_index(slot, h)?)?;
    if ip == [0; 4] {
        None
    } else {
        Some(ip)
    }
}

/// The backend for a flow of service `svc` with connection-table entry `ct`:
/// the one the entry pins while it is still a healthy backend, else a Maglev
/// pick by the flow's hash. `(backend, new flow)`; `None`: no backend.
#[inline(always)]
pub fn pick(svc: &ServiceValue, ct: Option<&CtValue>, key: &CtKey) -> Option<([u8; 4], bool)> {
    match ct {
        Some(c) if c.action() == Some(CtAction::Dnat) && is_backend(svc.service_id, c.new_dst) => {
            Some((c.new_dst, false))
        }
        _ => maglev_pick(svc.lb_slot, flow_hash(key)).map(|b| (b, true)),
    }
}

/// Whether `ip` is (still) a healthy backend of the service.
#[inline(always)]
fn is_backend(service_id: u32, ip: [u8; 4]) -> bool {
    // SAFETY: only whether the entry exists is read.
    unsafe { OB_BACKENDS_V2.get(BackendKey { service_id, ip }).is_some() }
}

/// Counts a packet (and a new flow) for (service, backend).
#[inline(always)]
pub fn count_backend(service_id: u32, ip: [u8; 4], bytes: u64, new_flow: bool) {
    let k = BackendKey { service_id, ip };
    let p = match OB_BACKEND_STATS_V1.get_ptr_mut(k) {
        Some(p) => p,
        None => {
            let _ = OB_BACKEND_STATS_V1.insert(k, BackendStats::default(), BPF_NOEXIST as u64);
            match OB_BACKEND_STATS_V1.get_ptr_mut(k) {
                Some(p) => p,
                None => return,
            }
        }
    };
    // SAFETY: this CPU's slot of a per-CPU map value: no other writer, kept
    // alive while the program runs.
    let s = unsafe { &mut *p };
    s.packets += 1;
    s.bytes += bytes;
    if new_flow {
        s.flows += 1;
    }
}
