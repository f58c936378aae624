//! A service with no backend (scaled to zero, or every backend failing its
//! health checks) answers as a host with no listener on the port would: a
//! TCP reset, or ICMP port unreachable for UDP, from the address the client
//! asked (the VIP or the published address). Clients fail at once instead
//! of retransmitting into silence until they time out. A reset is never
//! answered, and neither is anything the answer cannot be built for: those
//! are dropped as `drop_no_backend`.
//!
//! A handler that finds no backend returns `Err(RejectNoBackend)`; the
//! program's entry point then writes the answer here, after the handler
//! has returned: the verifier adds up the stack frames of nested calls, and
//! the handlers' and these copies of the headers would not fit together.

use aya_ebpf::{
    helpers::{bpf_skb_change_tail, bpf_skb_pull_data, bpf_xdp_adjust_tail},
    programs::TcContext,
};
use overlay_common::*;
use overlay_wire::{eth, icmp, ipv4, tcp};

use crate::packet::{Frame, Outcome, Packet, Xdp};

/// The routing mesh (XDP, on the underlay): the answer is written over the
/// frame, which goes back out of the device the client's packet came in on.
/// Flows here have 20-byte IPv4 headers.
#[inline(never)]
pub fn xdp(ctx: &Xdp) -> Outcome<u32> {
    let e = *ctx.bytes::<{ eth::HEADER_LEN }>(0).ok_or(Reason::DropMalformed)?;
    let ip = *ctx.bytes::<{ ipv4::HEADER_LEN }>(eth::HEADER_LEN).ok_or(Reason::DropMalformed)?;
    if ipv4::header_len(&ip) != ipv4::HEADER_LEN {
        return Err(Reason::DropNoBackend);
    }
    let (to_mac, from_mac) = (eth::src(&e), eth::dst(&e));
    if ipv4::proto(&ip) == PROTO_TCP {
        let seg = *ctx.bytes::<{ tcp::FIXED_LEN }>(eth::HEADER_LEN + ipv4::HEADER_LEN).ok_or(Reason::DropMalformed)?;
        let a = tcp::answer(&ip, &seg).ok_or(Reason::DropNoBackend)?;
        let out = xdp_resize::<{ tcp::RESET_FRAME_LEN }>(ctx)?;
        let buf = out.bytes::<{ tcp::RESET_FRAME_LEN }>(0).ok_or(Reason::DropResize)?;
        tcp::emit_reset(buf, to_mac, from_mac, &ip, &seg, &a);
    } else {
        let q = *ctx.bytes::<{ icmp::QUOTE_LEN }>(eth::HEADER_LEN).ok_or(Reason::DropMalformed)?;
        let out = xdp_resize::<{ icmp::UNREACHABLE_FRAME_LEN }>(ctx)?;
        let buf = out.bytes::<{ icmp::UNREACHABLE_FRAME_LEN }>(0).ok_or(Reason::DropResize)?;
        icmp::emit_port_unreachable(buf, to_mac, from_mac, ipv4::dst(&ip), ipv4::src(&ip), &q);
    }
    ctx.send(ctx.ingress_ifindex(), Reason::RejectNoBackend)
}

/// The frame made `N` bytes long; every earlier view is stale. A frame
/// shorter than `N` (a small UDP datagram) grows at its front, into the
/// headroom every XDP frame has: room at its end is not guaranteed (a
/// veth's frames have none).
#[inline(always)]
fn xdp_resize<'a, const N: usize>(ctx: &Xdp<'a>) -> Result<Xdp<'a>, Reason> {
    let len = ctx.len() as i32;
    if len < N as i32 {
        return ctx.adjust_head(len - N as i32);
    }
    // SAFETY: the helper checks the frame; the caller takes its views of the
    // resized frame anew.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx.ctx, N as i32 - len) } != 0 {
        return Err(Reason::DropResize);
    }
    Ok(ctx.reread())
}

/// A VIP (TC, on the container's veth): the answer goes back into the
/// container that asked. The same for the routing mesh in the underlay
/// program's TC mode: back out of the device the client's packet came in on.
#[inline(never)]
pub fn tc(ctx: &TcContext) -> Outcome<i32> {
    // SAFETY: reads a field of the program's own skb.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let e = ctx.load::<[u8; eth::HEADER_LEN]>(0).map_err(|_| Reason::DropMalformed)?;
    let ip = ctx.load::<ipv4::Header>(eth::HEADER_LEN).map_err(|_| Reason::DropMalformed)?;
    let ihl = ipv4::check_header(&ip).map_err(|_| Reason::DropMalformed)?;
    let (to_mac, from_mac) = (eth::src(&e), eth::dst(&e));
    if ipv4::proto(&ip) == PROTO_TCP {
        let seg = ctx.load::<tcp::Fixed>(eth::HEADER_LEN + ihl).map_err(|_| Reason::DropMalformed)?;
        let a = tcp::answer(&ip, &seg).ok_or(Reason::DropNoBackend)?;
        let buf = tc_resize::<{ tcp::RESET_FRAME_LEN }>(ctx)?;
        tcp::emit_reset(buf, to_mac, from_mac, &ip, &seg, &a);
    } else {
        // Quoted as sent: the header without options and 8 bytes.
        if ihl != ipv4::HEADER_LEN {
            return Err(Reason::DropNoBackend);
        }
        let q = ctx.load::<[u8; icmp::QUOTE_LEN]>(eth::HEADER_LEN).map_err(|_| Reason::DropMalformed)?;
        let buf = tc_resize::<{ icmp::UNREACHABLE_FRAME_LEN }>(ctx)?;
        icmp::emit_port_unreachable(buf, to_mac, from_mac, ipv4::dst(&ip), ipv4::src(&ip), &q);
    }
    ctx.send(ifindex, Reason::RejectNoBackend)
}

/// The skb made `N` bytes long and linear, and a view of those bytes (the
/// packet's memory, as [`Packet::bytes`] gives it).
#[inline(always)]
#[allow(clippy::mut_from_ref)]
fn tc_resize<const N: usize>(ctx: &TcContext) -> Result<&mut [u8; N], Reason> {
    // SAFETY: the helpers take the program's own skb; packet pointers are
    // taken again afterwards.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, N as u32, 0) } != 0
        || unsafe { bpf_skb_pull_data(ctx.skb.skb, N as u32) } != 0
    {
        return Err(Reason::DropResize);
    }
    ctx.bytes::<N>(0).ok_or(Reason::DropResize)
}
