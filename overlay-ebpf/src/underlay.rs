//! Everything a host receives from the wire, in either hook: the underlay
//! program's logic, written once over [`Frame`]. `xdp_underlay_ingress` runs
//! it in XDP, `tc_underlay_ingress` at TC ingress (the TC data path, where
//! the kernel keeps GSO packets and partial checksums whole).
//!
//! VXLAN to this host's port is ours ([`decap`]); TCP/UDP to a published
//! port is the routing mesh ([`mesh`]); WireGuard from a cluster host passes
//! to WireGuard (its data messages counted apart, so that what WireGuard
//! rejects shows), from anyone else it is dropped; everything else passes.
//!
//! The same program runs on the veth where WireGuard's decrypted VXLAN
//! arrives (see `tc_wireguard`): there only VXLAN is accepted, and it may be
//! of an encrypted network.

use overlay_common::*;
use overlay_wire::{eth, ipv4, udp};

use crate::{
    decap,
    maps::{host_config, is_vtep, wg_config},
    mesh,
    packet::{Frame, Outcome},
};

/// A function of its own (a BPF-to-BPF call), as in TC: the drop logger
/// needs the context after it, which inlined would hold a register through
/// the whole handler.
#[inline(never)]
pub fn handle<P: Frame>(ctx: &P) -> Outcome<P::Verdict> {
    let pass = Ok((Reason::PassNotOurs, P::PASS));
    let Some(e) = ctx.bytes::<{ eth::HEADER_LEN }>(0) else { return pass };
    if eth::ethertype(e) != eth::ETHERTYPE_IPV4 {
        return pass;
    }
    let Some(ip) = ctx.bytes::<{ ipv4::HEADER_LEN }>(eth::HEADER_LEN) else { return pass };
    let proto = ipv4::proto(ip);
    if proto != PROTO_UDP && proto != PROTO_TCP {
        return pass;
    }
    let Some(cfg) = host_config() else { return pass };
    let wg = wg_config();
    let decrypted = wg.is_some_and(|w| ctx.ingress_ifindex() == w.xdp_ifindex);
    if ipv4::dst(ip) != cfg.underlay_ip {
        return if decrypted { Err(Reason::DropNotLocal) } else { pass };
    }
    let Ok(ihl) = ipv4::check_header(ip) else { return pass };
    let l4 = eth::HEADER_LEN + ihl;
    let Some(uh) = ctx.bytes::<{ udp::HEADER_LEN }>(l4) else { return pass };
    let (dport, udp_len) = (udp::dst_port(uh), udp::length(uh));
    if proto != PROTO_UDP || dport != cfg.vxlan_port {
        if decrypted {
            return Err(Reason::DropUnsupported);
        }
        if proto == PROTO_UDP && wg.is_some_and(|w| dport == w.port) {
            // Handshakes and data only from the cluster's hosts: nobody
            // else gets WireGuard to work (or to answer) for them.
            if !is_vtep(ipv4::src(ip)) {
                return Err(Reason::DropNotPeer);
            }
            // A data message (type 4, three zero bytes) longer than its
            // header and tag (32 bytes) carries a packet; the rest are
            // handshakes, cookies and keepalives.
            let data = ctx.bytes::<{ udp::HEADER_LEN + 4 }>(l4).is_some_and(|m| m[8..12] == [4, 0, 0, 0]);
            let reason = match data && usize::from(udp_len) > udp::HEADER_LEN + 32 {
                true => Reason::WireguardData,
                false => Reason::WireguardControl,
            };
            return Ok((reason, P::PASS));
        }
        // The mesh reads at constant offsets: not after the check above.
        return mesh::published(&ctx.reread(), cfg).unwrap_or(pass);
    }
    // Ours from here on: what fails a check is dropped and counted.
    decap::receive(ctx, cfg, ip, ihl, l4, decrypted)
}
