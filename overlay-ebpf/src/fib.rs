//! Next hops for frames XDP sends itself (the mesh), from the kernel's FIB
//! and neighbour table, cached per cluster host; and the XDP transmit.

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, xdp_action::XDP_REDIRECT, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::{bpf_fib_lookup, bpf_redirect},
};
use overlay_common::*;

use crate::{
    log,
    maps::OB_NEXT_HOPS_V1,
    packet::{Outcome, Xdp},
};

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
pub fn next_hop(ctx: &Xdp, src: [u8; 4], dst: [u8; 4]) -> Result<Hop, Reason> {
    // SAFETY: a plain C struct of integers, valid all zero.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = 2; // AF_INET
                  // SAFETY: reads the program's own context.
    p.ifindex = unsafe { (*ctx.ctx.ctx).ingress_ifindex };
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    // SAFETY: the helper reads and writes `p`, of the size given.
    let ret = unsafe { bpf_fib_lookup(ctx.ctx.ctx as *mut _, &mut p, core::mem::size_of::<FibParams>() as i32, 0) };
    if ret as u32 == BPF_FIB_LKUP_RET_SUCCESS {
        return Ok(Hop { ifindex: p.ifindex, smac: p.smac, dmac: p.dmac });
    }
    crate::log_rare!(log::fib_failed, ctx.ctx.ctx, dst, ret);
    Err(if ret as u32 == BPF_FIB_LKUP_RET_NO_NEIGH { Reason::DropNoNeigh } else { Reason::DropFib })
}

/// The next hop towards cluster host `vtep`: from the cache while it is
/// younger than `NEXT_HOP_TTL_NS`, else from the FIB (and cached). A FIB
/// lookup costs about as much as the rest of the mesh path together.
#[inline(always)]
pub fn vtep_hop(ctx: &Xdp, src: [u8; 4], vtep: [u8; 4], now: u64) -> Result<Hop, Reason> {
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

/// Transmits the frame (its addresses set) out of `ifindex`.
///
/// A redirect, also back out of the device the frame came in on, rather
/// than XDP_TX: a veth underlay (hosts as containers on a bridge) flushes
/// XDP_TX frames to its peer only when the peer runs an XDP program itself,
/// and holds them until the next packet otherwise; redirected frames are
/// flushed at the end of every poll. NIC drivers with XDP implement both.
#[inline(always)]
pub fn transmit(ctx: &Xdp, ifindex: u32, ok: Reason) -> Outcome<u32> {
    // SAFETY: a helper taking plain integers.
    let ret = unsafe { bpf_redirect(ifindex, 0) };
    if ret as u32 == XDP_REDIRECT {
        Ok((ok, XDP_REDIRECT))
    } else {
        crate::log_rare!(log::xdp_redirect_failed, ctx.ctx.ctx, ifindex, ret);
        Err(Reason::DropRedirect)
    }
}
