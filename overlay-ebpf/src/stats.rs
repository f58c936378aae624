//! The per-program, per-reason counters (OB_STATS_V3).

use overlay_common::{counter_index, Prog, Reason};

use crate::maps::OB_STATS_V3;

/// Counts one packet of `len` bytes under (`prog`, `reason`).
#[inline(always)]
pub fn count(prog: Prog, reason: Reason, len: u64) {
    if let Some(c) = OB_STATS_V3.get_ptr_mut(counter_index(prog, reason)) {
        // SAFETY: this CPU's slot of a per-CPU array: no other writer.
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += len;
    }
}
