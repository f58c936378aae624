//! Where TC sends a container's packet once it is decided: into a local
//! container, in VXLAN to a remote one's host, or out of the underlay.

use aya_ebpf::{helpers::bpf_redirect_neigh, programs::TcContext};
use overlay_common::*;
use overlay_wire::eth;

use crate::{
    encap::tc_tunnel,
    maps::endpoint,
    packet::{tc_redirected, Frame, Outcome, Packet},
};

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
        return ctx.deliver(ep.ifindex, Reason::DeliveredLocal);
    }
    tc_tunnel(ctx, ep.vtep, me.vni, 0, ep.mac, me.mac, Reason::Encapsulated)
}

/// Sends the frame out of the underlay device, the kernel resolving the next
/// hop for its destination address and filling in the MACs.
#[inline(always)]
pub fn to_underlay(ctx: &TcContext, cfg: &HostConfig, ok: Reason) -> Outcome<i32> {
    let ifindex = cfg.underlay_ifindex;
    // SAFETY: no neighbour parameters (null, 0): the kernel looks the next hop up.
    tc_redirected(ctx, ifindex, unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) }, ok)
}
