//! Where TC sends a container's packet once it is decided: into a local
//! container, in VXLAN to a remote one's host, or out of the underlay.

use aya_ebpf::{
    bindings::TC_ACT_REDIRECT,
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use overlay_common::*;
use overlay_wire::eth;

use crate::{
    encap::tc_tunnel,
    log,
    maps::endpoint,
    packet::{Outcome, Packet},
};

/// A redirect helper's result (a redirect to `ifindex`): TC_ACT_REDIRECT on
/// success.
#[inline(always)]
fn redirected(ctx: &TcContext, ifindex: u32, ret: i64, ok: Reason) -> Outcome<i32> {
    if ret == TC_ACT_REDIRECT as i64 {
        Ok((ok, TC_ACT_REDIRECT))
    } else {
        crate::log_rare!(log::tc_redirect_failed, ctx.skb.skb, ifindex, ret);
        Err(Reason::DropRedirect)
    }
}

/// Sends the frame out of device `ifindex`: back out of the veth it came
/// in on (to its container), into the WireGuard device, or on to the veth
/// beside it.
#[inline(always)]
pub fn redirect(ctx: &TcContext, ifindex: u32, ok: Reason) -> Outcome<i32> {
    // SAFETY: a helper taking plain integers.
    redirected(ctx, ifindex, unsafe { bpf_redirect(ifindex, 0) }, ok)
}

/// Sends the (rewritten) packet to endpoint `ip` of the sender's network.
#[inline(always)]
pub fn route_to(ctx: &TcContext, me: &IfaceValue, ip: [u8; 4]) -> Outcome<i32> {
    let ep = endpoint(me.vni, ip).ok_or(Reason::DropNoBackend)?;
    to_endpoint(ctx, me, ep)
}

/// Addresses the frame to endpoint `ep` of the sender's network and sends it.
#[inline(always)]
pub fn to_endpoint(ctx: &TcContext, me: &IfaceValue, ep: &EndpointValue) -> Outcome<i32> {
    let e = ctx.bytes::<{ eth::HEADER_LEN }>(0).ok_or(Reason::DropMalformed)?;
    eth::set_dst(e, ep.mac);
    forward(ctx, me, ep)
}

/// IPv4 to endpoint `ep` of the sender's network: straight into a local
/// container, or encapsulated to the remote one's host. The frame's
/// destination MAC is already `ep.mac`.
#[inline(always)]
pub fn forward(ctx: &TcContext, me: &IfaceValue, ep: &EndpointValue) -> Outcome<i32> {
    if ep.flags & ENDPOINT_F_LOCAL != 0 {
        // SAFETY: a helper taking plain integers.
        return redirected(ctx, ep.ifindex, unsafe { bpf_redirect_peer(ep.ifindex, 0) }, Reason::DeliveredLocal);
    }
    tc_tunnel(ctx, ep.vtep, me.vni, 0, ep.mac, me.mac, Reason::Encapsulated)
}

/// Sends the frame out of the underlay device, the kernel resolving the next
/// hop for its destination address and filling in the MACs.
#[inline(always)]
pub fn to_underlay(ctx: &TcContext, cfg: &HostConfig, ok: Reason) -> Outcome<i32> {
    let ifindex = cfg.underlay_ifindex;
    // SAFETY: no neighbour parameters (null, 0): the kernel looks the next hop up.
    redirected(ctx, ifindex, unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) }, ok)
}
