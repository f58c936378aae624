//! VXLAN from another cluster host, received by the underlay program (XDP
//! or TC): checked, unwrapped and delivered to the local endpoint.
//!
//! It must come from a cluster host, carry the I flag and a VNI with a local
//! endpoint, and be addressed (inner destination) to a local endpoint of
//! that VNI from an endpoint that really lives behind the sending host (or,
//! marked as the mesh's, from a client outside every overlay network). An
//! ARP request for a local endpoint (a kernel VXLAN peer floods those) is
//! answered right here.

use overlay_common::*;
use overlay_wire::{arp, eth, ipv4, vxlan};

use crate::{
    arp::answer_peer,
    conntrack,
    lb::now_ns,
    maps::{endpoint, is_vtep, network, subnet},
    mesh,
    packet::{Frame, Outcome},
};

/// The VXLAN packet whose outer IPv4 header `ip` (`ihl` bytes long) is
/// followed by UDP at `l4`; `decrypted` when WireGuard authenticated it
/// (the only way in for an encrypted network's).
///
/// The sender must be a cluster host, but that takes no lookup of its own
/// on the way in: an inner source that is an endpoint behind the sender, a
/// mesh reply's flow entry naming it, or a mesh client's flow remembered
/// from it proves it. Only a packet refused anyway, or a mesh client's
/// first packet, asks the VTEP set, and a refusal from anyone else is
/// counted as `drop_unknown_vtep` before any other reason.
#[inline(always)]
pub fn receive<P: Frame>(
    ctx: &P,
    cfg: &HostConfig,
    ip: &ipv4::Header,
    ihl: usize,
    l4: usize,
    decrypted: bool,
) -> Outcome<P::Verdict> {
    // Our senders set DF; a fragment is not something we reassemble.
    if ipv4::is_fragment(ip) {
        return Err(Reason::DropMalformed);
    }
    let outer_src = ipv4::src(ip);
    if ctx.bytes::<{ vxlan::HEADER_LEN }>(l4 + vxlan::UDP_LEN).is_none() {
        return Err(Reason::DropMalformed);
    }
    receive_from(ctx, cfg, outer_src, ihl, l4, decrypted).map_err(|r| {
        if is_vtep(outer_src) {
            r
        } else {
            Reason::DropUnknownVtep
        }
    })
}

#[inline(always)]
fn receive_from<P: Frame>(
    ctx: &P,
    cfg: &HostConfig,
    outer_src: [u8; 4],
    ihl: usize,
    l4: usize,
    decrypted: bool,
) -> Outcome<P::Verdict> {
    let vx = ctx.bytes::<{ vxlan::HEADER_LEN }>(l4 + vxlan::UDP_LEN).ok_or(Reason::DropMalformed)?;
    if !vxlan::has_vni(vx) {
        return Err(Reason::DropBadVxlan);
    }
    let (vni, marker) = (vxlan::vni(vx), vxlan::marker(vx));
    let inner = l4 + vxlan::UDP_LEN + vxlan::HEADER_LEN;
    let flags = network(vni).map_or(0, |n| n.flags);
    if flags & NETWORK_F_ENCRYPTED != 0 && !decrypted {
        return Err(Reason::DropUnencrypted);
    }
    if marker == VXLAN_MESH_REPLY {
        return mesh::reply(ctx, cfg, inner, outer_src);
    }
    if flags & NETWORK_F_LOCAL == 0 {
        return Err(Reason::DropUnknownVni);
    }
    let l3 = inner + eth::HEADER_LEN;
    let ethertype = eth::ethertype(ctx.bytes::<{ eth::HEADER_LEN }>(inner).ok_or(Reason::DropMalformed)?);
    let (src, dst) = match ethertype {
        eth::ETHERTYPE_IPV4 => {
            let i = ctx.bytes::<{ ipv4::HEADER_LEN }>(l3).ok_or(Reason::DropMalformed)?;
            // A header or total length that does not fit the frame is not forwarded.
            ipv4::check(i, ctx.room(l3)).map_err(|_| Reason::DropMalformed)?;
            (ipv4::src(i), ipv4::dst(i))
        }
        eth::ETHERTYPE_ARP => {
            let a = ctx.bytes::<{ arp::LEN }>(l3).ok_or(Reason::DropMalformed)?;
            (arp::spa(a), arp::tpa(a))
        }
        _ => return Err(Reason::DropUnsupported),
    };
    let ep = endpoint(vni, dst).filter(|ep| ep.flags & ENDPOINT_F_LOCAL != 0).ok_or(Reason::DropNotLocal)?;
    if marker == VXLAN_MESH_FWD {
        // A routing-mesh client: from outside every overlay network, only
        // TCP/UDP, and its replies go back through the sending host.
        if ethertype != eth::ETHERTYPE_IPV4 || subnet(src).is_some() {
            return Err(Reason::DropSpoofed);
        }
        let key = mesh::flow_key(ctx, l3).ok_or(Reason::DropUnsupported)?;
        if !mesh::remember_ingress(cfg, &key, outer_src, vni) {
            return Err(Reason::DropUnknownVtep);
        }
    } else {
        // The inner source must be an endpoint of this VNI behind the sending host.
        let from_backend = match endpoint(vni, src) {
            Some(s) if s.vtep == outer_src => s.flags & ENDPOINT_F_BACKEND != 0,
            _ => return Err(Reason::DropSpoofed),
        };
        if ethertype == eth::ETHERTYPE_ARP {
            return answer_peer(ctx, cfg, ctx.ingress_ifindex(), ihl, inner, ep.mac);
        }
        // The reply of a VIP flow whose client lives here: source back to the
        // VIP. Only backends send those. (A TCP segment too short for its
        // checksum stays as it is, as it always did.)
        if from_backend {
            let _ = revnat(ctx, cfg, l3);
        }
    }
    // Taken anew: in TC, the translation's checksum helpers moved the packet.
    let ieth = ctx.bytes::<{ eth::HEADER_LEN }>(inner).ok_or(Reason::DropMalformed)?;
    eth::set_dst(ieth, ep.mac);
    ctx.strip(inner)?.deliver(ep.ifindex, Reason::Decapsulated)
}

/// Applies a `RevNat` entry to the inner TCP/UDP packet at `l3`, if it has one.
#[inline(always)]
fn revnat<P: Frame>(ctx: &P, cfg: &HostConfig, l3: usize) -> Result<(), Reason> {
    let Some(key) = mesh::flow_key(ctx, l3) else { return Ok(()) };
    match conntrack::lookup(&key, cfg, now_ns()) {
        Some((CtAction::RevNat, c)) => conntrack::translate_reply(ctx, l3, ipv4::HEADER_LEN, &key, c),
        _ => Ok(()),
    }
}
