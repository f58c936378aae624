//! The per-program, per-reason counters (OB_STATS_V3; `tc_wireguard`'s in
//! OB_WG_STATS_V1).

use overlay_common::{counter_index, Prog, Reason};

use crate::maps::{OB_STATS_V3, OB_WG_STATS_V1};

/// Counts one packet of `len` bytes under (`prog`, `reason`).
#[inline(always)]
pub fn count(prog: Prog, reason: Reason, len: u64) {
    let slot = match prog {
        Prog::TcWireguard => OB_WG_STATS_V1.get_ptr_mut(reason as u32),
        _ => OB_STATS_V3.get_ptr_mut(counter_index(prog, reason)),
    };
    if let Some(c) = slot {
        // SAFETY: this CPU's slot of a per-CPU array: no other writer.
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += len;
    }
}
