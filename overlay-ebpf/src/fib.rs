//! Next hops for frames the underlay program sends itself (the mesh, in
//! either hook), from the kernel's FIB and neighbour table, cached per
//! cluster host.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::bpf_fib_lookup,
};
use overlay_common::*;

use crate::{maps::OB_NEXT_HOPS_V1, packet::Frame};

/// Where a frame goes next: the egress device and the Ethernet addresses.
#[derive(Clone, Copy, Default)]
pub struct Hop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

/// The next hop towards `dst` (from `src`) as the FIB and the neighbour
/// table have it.
#[inline(always)]
pub fn next_hop<P: Frame>(ctx: &P, src: [u8; 4], dst: [u8; 4]) -> Result<Hop, Reason> {
    // SAFETY: a plain C struct of integers, valid all zero.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = 2; // AF_INET
    p.ifindex = ctx.ingress_ifindex();
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    // SAFETY: the helper reads and writes `p`, of the size given.
    let ret = unsafe { bpf_fib_lookup(ctx.raw(), &mut p, core::mem::size_of::<FibParams>() as i32, 0) };
    if ret as u32 == BPF_FIB_LKUP_RET_SUCCESS {
        return Ok(Hop { ifindex: p.ifindex, smac: p.smac, dmac: p.dmac });
    }
    ctx.fib_failed(dst, ret);
    Err(if ret as u32 == BPF_FIB_LKUP_RET_NO_NEIGH { Reason::DropNoNeigh } else { Reason::DropFib })
}

/// The next hop towards cluster host `vtep`: from the cache while it is
/// younger than `NEXT_HOP_TTL_NS`, else from the FIB (and cached). A FIB
/// lookup costs about as much as the rest of the mesh path together.
#[inline(always)]
pub fn vtep_hop<P: Frame>(ctx: &P, src: [u8; 4], vtep: [u8; 4], now: u64) -> Result<Hop, Reason> {
    // SAFETY: the value is copied out at once.
    if let Some(h) = unsafe { OB_NEXT_HOPS_V1.get(vtep) } {
        if now.wrapping_sub(h.checked_ns) < NEXT_HOP_TTL_NS {
            return Ok(Hop { ifindex: h.ifindex, smac: h.smac, dmac: h.dmac });
        }
    }
    let h = next_hop(ctx, src, vtep)?;
    let _ =
        OB_NEXT_HOPS_V1.insert(vtep, NextHop { ifindex: h.ifindex, smac: h.smac, dmac: h.dmac, checked_ns: now }, 0);
    Ok(h)
}
