//! XDP on the underlay device: everything a host receives from the wire.
//!
//! VXLAN to this host's address and port is ours: it must come from a cluster
//! host, carry the I flag and a VNI with a local endpoint, and be addressed
//! (inner destination) to a local endpoint of that VNI from an endpoint that
//! really lives behind the sending host. Then the outer headers go and the
//! frame is redirected to the endpoint's veth. An ARP request for a local
//! endpoint (a kernel VXLAN peer floods those) is answered right here, sent
//! back in VXLAN out of the same device: no container sees another host's ARP.
//! Everything else passes.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_xdp_adjust_head,
    macros::xdp,
    programs::XdpContext,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr},
    udp::UdpHdr,
};
use overlay_common::*;

use super::mesh;
use crate::{
    csum::{fold, sum_words},
    lb::{ct_get, now_ns},
    maps::{endpoint, host_config, is_vtep, network, subnet},
    parse::{ipv4_len, ptr_at, ArpHdr, ARP_REQUEST, ETH_P_ARP, ETH_P_IP},
    stats::count,
    xnat::{key_at, rewrite, Tuple},
};

/// VXLAN header length.
const VXLAN_LEN: usize = 8;

#[xdp]
pub fn xdp_underlay_ingress(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let (reason, action) = handle(&ctx);
    count(Prog::XdpUnderlay, reason, len);
    action
}

#[inline(always)]
fn drop(r: Reason) -> (Reason, u32) {
    (r, XDP_DROP)
}

#[inline(always)]
fn handle(ctx: &XdpContext) -> (Reason, u32) {
    let pass = (Reason::PassNotOurs, XDP_PASS);
    let (start, end) = (ctx.data(), ctx.data_end());
    let Some(eth) = ptr_at::<EthHdr>(start, end, 0) else { return pass };
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return pass;
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(start, end, EthHdr::LEN) else { return pass };
    let ip = unsafe { &mut *ip };
    if ip.proto != IpProto::Udp as u8 && ip.proto != IpProto::Tcp as u8 {
        return pass;
    }
    let Some(cfg) = host_config() else { return pass };
    if ip.dst_addr != cfg.underlay_ip {
        return pass;
    }
    let ihl = ((ip.vihl & 0xf) as usize) * 4;
    if ip.vihl >> 4 != 4 || ihl < 20 {
        return pass;
    }
    let l4 = EthHdr::LEN + ihl;
    let Some(udp) = ptr_at::<UdpHdr>(start, end, l4) else { return pass };
    if ip.proto != IpProto::Udp as u8 || u16::from_be_bytes(unsafe { (*udp).dst }) != cfg.vxlan_port {
        return mesh::published(ctx, cfg).unwrap_or(pass);
    }
    // Ours from here on: what fails a check is dropped and counted.
    // Our senders set DF; a fragment is not something we reassemble.
    if ip.frags[0] & 0x3f != 0 || ip.frags[1] != 0 {
        return drop(Reason::DropMalformed);
    }
    let Some(vx) = ptr_at::<[u8; VXLAN_LEN]>(start, end, l4 + UdpHdr::LEN) else {
        return drop(Reason::DropMalformed);
    };
    let vx = unsafe { &*vx };
    let outer_src = ip.src_addr;
    if !is_vtep(outer_src) {
        return drop(Reason::DropUnknownVtep);
    }
    if vx[0] & VXLAN_FLAG_I == 0 {
        return drop(Reason::DropBadVxlan);
    }
    let vni = (vx[4] as u32) << 16 | (vx[5] as u32) << 8 | vx[6] as u32;
    let marker = vx[7];
    let inner = l4 + UdpHdr::LEN + VXLAN_LEN;
    if marker == VXLAN_MESH_REPLY {
        return mesh::reply(ctx, cfg, inner, outer_src);
    }
    match network(vni) {
        Some(n) if n.flags & NETWORK_F_LOCAL != 0 => {}
        _ => return drop(Reason::DropUnknownVni),
    }
    let Some(ieth) = ptr_at::<EthHdr>(start, end, inner) else { return drop(Reason::DropMalformed) };
    let ieth = unsafe { &mut *ieth };
    let ethertype = u16::from_be(ieth.ether_type);
    let (src, dst) = match ethertype {
        ETH_P_IP => match ptr_at::<Ipv4Hdr>(start, end, inner + EthHdr::LEN) {
            Some(i) => {
                let i = unsafe { &*i };
                // A header or total length that does not fit the frame is
                // not forwarded.
                let ihl = ((i.vihl & 0xf) as usize) * 4;
                match ipv4_len(start, end, inner + EthHdr::LEN, i.tot_len) {
                    Some(total) if i.vihl >> 4 == 4 && ihl >= 20 && total >= ihl => {}
                    _ => return drop(Reason::DropMalformed),
                }
                (i.src_addr, i.dst_addr)
            }
            None => return drop(Reason::DropMalformed),
        },
        ETH_P_ARP => match ptr_at::<ArpHdr>(start, end, inner + EthHdr::LEN) {
            Some(a) => unsafe { ((*a).spa, (*a).tpa) },
            None => return drop(Reason::DropMalformed),
        },
        _ => return drop(Reason::DropUnsupported),
    };
    let Some(ep) = endpoint(vni, dst).filter(|ep| ep.flags & ENDPOINT_F_LOCAL != 0) else {
        return drop(Reason::DropNotLocal);
    };
    if marker == VXLAN_MESH_FWD {
        // A routing-mesh client: from outside every overlay network, only
        // TCP/UDP, and its replies go back through the sending host.
        if ethertype != ETH_P_IP || subnet(src).is_some() {
            return drop(Reason::DropSpoofed);
        }
        let Some(key) = key_at(start, end, inner + EthHdr::LEN) else { return drop(Reason::DropUnsupported) };
        mesh::remember_ingress(cfg, &key, outer_src, vni);
    } else {
        // The inner source must be an endpoint of this VNI behind the sending host.
        let from_backend = match endpoint(vni, src) {
            Some(s) if s.vtep == outer_src => s.flags & ENDPOINT_F_BACKEND != 0,
            _ => return drop(Reason::DropSpoofed),
        };
        if ethertype == ETH_P_ARP {
            return arp_reply(start, end, unsafe { (*ctx.ctx).ingress_ifindex }, cfg, ihl, inner, ep.mac);
        }
        // The reply of a VIP flow whose client lives here: source back to the
        // VIP. Only backends send those.
        if from_backend {
            revnat(start, end, inner + EthHdr::LEN, cfg);
        }
    }
    ieth.dst_addr = ep.mac;
    let ifindex = ep.ifindex;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, inner as i32) } != 0 {
        return drop(Reason::DropMalformed);
    }
    mesh::transmit(ifindex, Reason::Decapsulated)
}

/// Turns a VXLAN-borne ARP request for a local endpoint into the reply, in
/// place: outer headers reversed (to the sender's VXLAN port), inner ARP
/// answered with the endpoint's MAC.
#[inline(always)]
fn arp_reply(
    start: usize,
    end: usize,
    ifindex: u32,
    cfg: &HostConfig,
    ihl: usize,
    inner: usize,
    mac: [u8; 6],
) -> (Reason, u32) {
    if ihl != 20 {
        return drop(Reason::DropMalformed);
    }
    let (Some(oeth), Some(oip), Some(udp), Some(ieth), Some(a)) = (
        ptr_at::<EthHdr>(start, end, 0),
        ptr_at::<[u8; 20]>(start, end, EthHdr::LEN),
        ptr_at::<UdpHdr>(start, end, EthHdr::LEN + 20),
        ptr_at::<EthHdr>(start, end, inner),
        ptr_at::<ArpHdr>(start, end, inner + EthHdr::LEN),
    ) else {
        return drop(Reason::DropMalformed);
    };
    let (oeth, oip, udp, ieth, a) = unsafe { (&mut *oeth, &mut *oip, &mut *udp, &mut *ieth, &mut *a) };
    if !a.is_eth_ipv4() || a.oper != ARP_REQUEST {
        return drop(Reason::DropArp);
    }
    let peer_mac = oeth.src_addr;
    oeth.src_addr = oeth.dst_addr;
    oeth.dst_addr = peer_mac;
    let mut h = *oip;
    // From us, back to the requesting host.
    h[16..20].copy_from_slice(&oip[12..16]);
    h[12..16].copy_from_slice(&cfg.underlay_ip);
    h[8] = 64;
    h[10] = 0;
    h[11] = 0;
    let c = fold(sum_words(&h, 0, 20));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    *oip = h;
    udp.dst = cfg.vxlan_port.to_be_bytes();
    udp.check = [0, 0];
    a.answer(ieth, mac);
    mesh::transmit(ifindex, Reason::ArpReplied)
}

/// Applies a `CT_REVNAT` connection-table entry to the inner IPv4 TCP/UDP
/// packet at `off`.
#[inline(always)]
fn revnat(start: usize, end: usize, off: usize, cfg: &HostConfig) {
    let Some(key) = key_at(start, end, off) else { return };
    let Some(c) = ct_get(&key, cfg, now_ns()) else { return };
    if c.action != CT_REVNAT {
        return;
    }
    let to = Tuple { src: c.new_src, dst: c.new_dst, sport: c.new_sport, dport: c.new_dport };
    rewrite(start, end, off, &to);
}
