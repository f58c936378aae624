//! VXLAN encapsulation in TC of what containers send to other hosts (and
//! mesh replies tunnelled back). The push itself is [`Frame::push`], in
//! either hook; the header is [`overlay_wire::vxlan::Encap`].

use aya_ebpf::programs::TcContext;
use overlay_common::*;
use overlay_wire::{eth, ipv4, vxlan::Encap};

use crate::{
    forward::to_underlay,
    lb::flow_hash,
    maps::{host_config, network, wg_config},
    mesh::flow_key,
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
        hash: inner_hash(ctx, ip),
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

/// The inner flow's hash, which gives the outer source port (ECMP entropy,
/// stable per flow): the one the sending socket set (TCP sets one), else the
/// inner addresses, protocol and, for an unfragmented TCP or UDP packet,
/// ports, hashed here. `bpf_get_hash_recalc` would run the kernel's flow
/// dissector and siphash instead: a quarter of the encap path's time.
#[inline(always)]
fn inner_hash(ctx: &TcContext, ip: &ipv4::Header) -> u32 {
    // SAFETY: a read of a field of the program's own skb.
    let h = unsafe { (*ctx.skb.skb).hash };
    if h != 0 {
        return h;
    }
    let key = flow_key(ctx, eth::HEADER_LEN)
        .unwrap_or_else(|| CtKey::new(&overlay_wire::nat::tuple(ip, &[0; 4]), ipv4::proto(ip)));
    flow_hash(&key)
}
