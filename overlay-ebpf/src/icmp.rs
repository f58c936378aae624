//! ICMP in TC: "fragmentation needed" for a container's too-big packet (so
//! PMTU discovery works through the overlay instead of a black hole), and
//! errors a backend sends about a translated flow, translated too.

use aya_ebpf::{helpers::bpf_skb_change_tail, programs::TcContext};
use overlay_common::*;
use overlay_wire::{eth, icmp, ipv4};

use crate::{
    conntrack,
    forward::{to_endpoint, to_underlay},
    lb::now_ns,
    maps::{endpoint, host_config, network},
    packet::{Frame, Outcome, Packet},
};

/// A packet for remote endpoint `ep` that would not fit the underlay once
/// encapsulated: answered with ICMP "fragmentation needed" when DF is set
/// (quoting the packet as the sender sent it), dropped otherwise. `None`:
/// it fits.
#[inline(always)]
pub fn too_big(ctx: &TcContext, me: &IfaceValue, ifindex: u32, ep: &EndpointValue) -> Option<Outcome<i32>> {
    // GSO super-packets are cut to the route MTU the kernel gave the sender.
    // SAFETY: reads a field of the program's own skb.
    if ep.flags & ENDPOINT_F_LOCAL != 0 || unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return None;
    }
    let Some(cfg) = host_config() else { return Some(Err(Reason::DropNoConfig)) };
    let inner = Packet::len(ctx) - eth::HEADER_LEN;
    if inner + VXLAN_ENCAP_LEN <= cfg.underlay_mtu as usize {
        return None;
    }
    let Some(ip) = ctx.bytes::<{ ipv4::HEADER_LEN }>(eth::HEADER_LEN) else { return Some(Err(Reason::DropMalformed)) };
    if ipv4::dont_fragment(ip) && ipv4::header_len(ip) == ipv4::HEADER_LEN {
        return Some(frag_needed(ctx, me, ifindex, cfg));
    }
    Some(Err(Reason::DropTooBig))
}

/// Answers a too-big packet with "fragmentation needed" carrying the MTU
/// usable through the overlay, from the network's gateway.
#[inline(always)]
fn frag_needed(ctx: &TcContext, me: &IfaceValue, ifindex: u32, cfg: &HostConfig) -> Outcome<i32> {
    let quote = ctx.load::<[u8; icmp::QUOTE_LEN]>(eth::HEADER_LEN).map_err(|_| Reason::DropMalformed)?;
    let n = network(me.vni).ok_or(Reason::DropTooBig)?;
    let mtu = cfg.underlay_mtu.saturating_sub(VXLAN_ENCAP_LEN as u16);
    let r = icmp::frag_needed(me.mac, n.gateway_mac, n.gateway, me.ip, mtu, &quote);
    // SAFETY: the helper takes the program's own skb; packet pointers are
    // taken again afterwards.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, icmp::FRAG_NEEDED_FRAME_LEN as u32, 0) } != 0 {
        return Err(Reason::DropResize);
    }
    ctx.store(0, &r, 0).map_err(|_| Reason::DropRewrite)?;
    ctx.send(ifindex, Reason::IcmpFragNeeded)
}

/// An ICMP error (unreachable, time exceeded) a backend sends about a
/// translated flow: it quotes the packet as the backend got it, addressed to
/// the backend. The caller knows the flow by the VIP or the published
/// address, so the error's source and the quoted destination become that,
/// or the caller's stack would match it to no socket. `None`: not such an
/// error. The IPv4 header is 20 bytes long (the caller checked).
#[inline(always)]
pub fn translate_error(ctx: &TcContext, me: &IfaceValue) -> Option<Outcome<i32>> {
    const AT: usize = eth::HEADER_LEN + ipv4::HEADER_LEN;
    let mut m = ctx.load::<icmp::Error>(AT).ok()?;
    let (quoted, proto) = icmp::quoted_flow(&m)?;
    if quoted.dst != me.ip {
        return None;
    }
    // The flow's reply direction, as the backend sends it.
    let key = CtKey::new(&quoted.reversed(), proto);
    let cfg = host_config()?;
    let (action, c) = conntrack::lookup(&key, cfg, now_ns())?;
    if !matches!(action, CtAction::RevNat | CtAction::SnatOut) {
        return None;
    }
    icmp::rewrite_quoted_dst(&mut m, c.new_src, c.new_sport);
    let Ok(mut ip) = ctx.load::<ipv4::Header>(eth::HEADER_LEN) else { return Some(Err(Reason::DropMalformed)) };
    ipv4::set_src(&mut ip, c.new_src);
    if ctx.store(AT, &m, 0).is_err() || ctx.store(eth::HEADER_LEN, &ip, 0).is_err() {
        return Some(Err(Reason::DropRewrite));
    }
    if action == CtAction::SnatOut {
        return Some(to_underlay(ctx, cfg, Reason::IcmpTranslated));
    }
    let Some(ep) = endpoint(me.vni, c.new_dst) else { return Some(Err(Reason::DropNoBackend)) };
    Some(to_endpoint(ctx, me, ep).map(|(_, action)| (Reason::IcmpTranslated, action)))
}
