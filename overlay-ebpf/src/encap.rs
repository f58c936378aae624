//! VXLAN encapsulation in TC of what containers send to other hosts (and
//! mesh replies tunnelled back). The push itself is [`Frame::push`], in
//! either hook; the header is [`overlay_wire::vxlan::Encap`].

use aya_ebpf::{helpers::bpf_get_hash_recalc, programs::TcContext};
use overlay_common::*;
use overlay_wire::{eth, ipv4, vxlan::Encap};

use crate::{
    forward::to_underlay,
    maps::{host_config, network, wg_config},
    packet::{Frame, Outcome, Packet},
};

/// Wraps the frame in VXLAN (VNI `vni`, mesh `marker`) to host `vtep` and
/// sends it out of the underlay, the kernel resolving the next hop; for an
/// encrypted network, into WireGuard, which encrypts it to `vtep`.
#[inline(always)]
pub fn tc_tunnel(
    ctx: &TcContext,
    vtep: [u8; 4],
    vni: u32,
    marker: u8,
    inner_dst_mac: [u8; 6],
    inner_src_mac: [u8; 6],
    ok: Reason,
) -> Outcome<i32> {
    let cfg = host_config().ok_or(Reason::DropNoConfig)?;
    let wg = match network(vni).is_some_and(|n| n.flags & NETWORK_F_ENCRYPTED != 0) {
        true => Some(wg_config().ok_or(Reason::DropNoWireguard)?.ifindex),
        false => None,
    };
    let ip = ctx.bytes::<{ ipv4::HEADER_LEN }>(eth::HEADER_LEN).ok_or(Reason::DropMalformed)?;
    let e = Encap {
        // Outer Ethernet addresses: filled in by bpf_redirect_neigh.
        outer_dst_mac: [0; 6],
        outer_src_mac: [0; 6],
        src: cfg.underlay_ip,
        vtep,
        tos: ipv4::tos(ip),
        // The inner flow's hash gives the source port: ECMP entropy, stable per flow.
        // SAFETY: the helper takes the program's own skb.
        hash: unsafe { bpf_get_hash_recalc(ctx.skb.skb) },
        port: cfg.vxlan_port,
        inner_len: Packet::len(ctx) - eth::HEADER_LEN,
        vni,
        marker,
        inner_dst_mac,
        inner_src_mac,
    };
    let ctx = &ctx.push(&e)?;
    if let Some(ifindex) = wg {
        // WireGuard encrypts it to the peer its outer destination belongs
        // to. (The device has no link layer: the kernel strips the Ethernet
        // header.)
        return ctx.send(ifindex, ok);
    }
    to_underlay(ctx, cfg, ok)
}
