//! TC ingress on an endpoint's host-side veth: everything a container sends.
//!
//! ARP requests are answered from the maps ([`arp`]); IPv4 must come from
//! the endpoint's own IP and MAC; translated flows and VIPs go through
//! [`vip`]; then it goes to a local endpoint directly, to a remote one in
//! VXLAN ([`forward`]), to the host stack when it leaves the overlay (unless
//! the network is internal), and nowhere else.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use overlay_common::*;
use overlay_wire::{eth, ipv4};

use crate::{
    arp, forward,
    icmp::{too_big, translate_error},
    log,
    maps::{endpoint, iface, network, subnet},
    packet::{Outcome, Packet},
    reject,
    stats::count,
    vip,
};

/// skb->pkt_type for frames addressed to this host.
const PACKET_HOST: u32 = 0;

#[classifier]
pub fn tc_endpoint_egress(ctx: TcContext) -> i32 {
    let len = Packet::len(&ctx) as u64;
    let outcome = match handle(&ctx) {
        // A service with no backend: answered here, after the handler's
        // stack frame is gone.
        Err(Reason::RejectNoBackend) => {
            crate::log_rare!(log::tc_drop, ctx.skb.skb, Reason::RejectNoBackend);
            reject::tc(&ctx)
        }
        o => o,
    };
    let (reason, action) = outcome.unwrap_or_else(|r| {
        crate::log_rare!(log::tc_drop, ctx.skb.skb, r);
        (r, TC_ACT_SHOT)
    });
    count(Prog::TcEndpoint, reason, len);
    action
}

/// A function of its own (a BPF-to-BPF call), beside the drop logger: the
/// verifier adds the stack frames along a chain of calls, and this one and
/// the logger's together would pass the 512-byte limit.
#[inline(never)]
fn handle(ctx: &TcContext) -> Outcome<i32> {
    // SAFETY: reads a field of the program's own skb.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let me = iface(ifindex).ok_or(Reason::DropUnknownIface)?;
    let e = ctx.bytes::<{ eth::HEADER_LEN }>(0).ok_or(Reason::DropMalformed)?;
    if eth::src(e) != me.mac {
        return Err(Reason::DropSpoofed);
    }
    match eth::ethertype(e) {
        eth::ETHERTYPE_ARP => arp::answer_container(ctx, me, ifindex),
        eth::ETHERTYPE_IPV4 => ipv4(ctx, me, ifindex),
        _ => Err(Reason::DropUnsupported),
    }
}

#[inline(always)]
fn ipv4(ctx: &TcContext, me: &IfaceValue, ifindex: u32) -> Outcome<i32> {
    let ip = ctx.bytes::<{ ipv4::HEADER_LEN }>(eth::HEADER_LEN).ok_or(Reason::DropMalformed)?;
    // A total length beyond the packet (or shorter than the header) is a lie
    // no receiver would accept. (The skb's length: the linear data may be
    // shorter.) GSO super-packets carry a total length per segment.
    // SAFETY: reads a field of the program's own skb.
    let gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    let room = if gso { usize::MAX } else { Packet::len(ctx) - eth::HEADER_LEN };
    ipv4::check(ip, room).map_err(|_| Reason::DropMalformed)?;
    if ipv4::src(ip) != me.ip {
        return Err(Reason::DropSpoofed);
    }
    let (dst, proto, ihl) = (ipv4::dst(ip), ipv4::proto(ip), ipv4::header_len(ip));
    if proto == PROTO_ICMP && ihl == ipv4::HEADER_LEN {
        if let Some(v) = translate_error(ctx, me) {
            return v;
        }
    }
    if proto == PROTO_TCP || proto == PROTO_UDP {
        if let Some(v) = vip::translate(ctx, me, ifindex, ihl, proto) {
            return v;
        }
    }
    if let Some(ep) = endpoint(me.vni, dst) {
        if ep.flags & ENDPOINT_F_VIP != 0 {
            // A VIP leads nowhere but through its service ports (vip::translate).
            return Err(Reason::DropNoBackend);
        }
        // Also for frames sent to the gateway's MAC (another subnet of the network).
        let e = ctx.bytes::<{ eth::HEADER_LEN }>(0).ok_or(Reason::DropMalformed)?;
        eth::set_dst(e, ep.mac);
        if let Some(v) = too_big(ctx, me, ifindex, ep) {
            return v;
        }
        return forward::forward(ctx, me, ep);
    }
    if let Some(s) = subnet(dst) {
        // The network's own gateway is this host's address: its resolver
        // (DNS, UDP and TCP 53) and ping answer there, on internal networks
        // too. Nothing else of the host is reachable through it.
        if s.vni == me.vni && dst == s.gateway && to_gateway(ctx, proto, ihl) {
            return to_host(ctx, me);
        }
        // Inside an overlay network but no endpoint of ours: isolation.
        return Err(if s.vni == me.vni { Reason::DropNoEndpoint } else { Reason::DropCrossNetwork });
    }
    // Outside every overlay network: the host routes and masquerades it.
    match network(me.vni) {
        Some(n) if n.flags & NETWORK_F_INTERNAL == 0 => to_host(ctx, me),
        _ => Err(Reason::DropInternal),
    }
}

/// Hands the frame to the host stack. Addressed to the gateway's MAC, it
/// entered the veth as "for another host", which the IP stack would discard.
#[inline(always)]
fn to_host(ctx: &TcContext, me: &IfaceValue) -> Outcome<i32> {
    let e = ctx.bytes::<{ eth::HEADER_LEN }>(0).ok_or(Reason::DropMalformed)?;
    eth::set_dst(e, me.host_mac);
    ctx.change_type(PACKET_HOST).map_err(|_| Reason::DropChangeType)?;
    Ok((Reason::PassToHost, TC_ACT_OK))
}

/// What a container may send to its gateway: ICMP (ping), and DNS.
#[inline(always)]
fn to_gateway(ctx: &TcContext, proto: u8, ihl: usize) -> bool {
    const DNS: [u8; 2] = 53u16.to_be_bytes();
    match proto {
        PROTO_ICMP => true,
        PROTO_TCP | PROTO_UDP => ctx.bytes::<4>(eth::HEADER_LEN + ihl).is_some_and(|p| p[2..4] == DNS),
        _ => false,
    }
}
