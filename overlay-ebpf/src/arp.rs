//! ARP answered from the maps: a container's requests (TC), and requests a
//! kernel VXLAN peer floods to this host (the underlay program). Nothing floods, no container
//! sees another host's ARP.

use aya_ebpf::programs::TcContext;
use overlay_common::*;
use overlay_wire::{arp, eth, ipv4, udp};

use crate::{
    maps::{endpoint, subnet},
    packet::{Frame, Outcome, Packet},
};

/// The MAC behind `ip` on network `vni`: its gateway or one of its endpoints.
#[inline(always)]
fn resolve(vni: u32, ip: [u8; 4]) -> Option<[u8; 6]> {
    if let Some(s) = subnet(ip) {
        if s.vni == vni && s.gateway == ip {
            return Some(gateway_mac(ip));
        }
    }
    endpoint(vni, ip).map(|e| e.mac)
}

/// A container's ARP request (on the veth `ifindex` of `me`), answered
/// back into it.
#[inline(always)]
pub fn answer_container(ctx: &TcContext, me: &IfaceValue, ifindex: u32) -> Outcome<i32> {
    let e = ctx.bytes::<{ eth::HEADER_LEN }>(0).ok_or(Reason::DropMalformed)?;
    let a = ctx.bytes::<{ arp::LEN }>(eth::HEADER_LEN).ok_or(Reason::DropMalformed)?;
    if !arp::is_eth_ipv4(a) {
        return Err(Reason::DropArp);
    }
    if arp::sha(a) != me.mac || arp::spa(a) != me.ip {
        return Err(Reason::DropSpoofed);
    }
    // Replies, and gratuitous ARP (sender = target), have nothing to answer;
    // nothing floods. (Requests from other hosts are answered by XDP.)
    if arp::oper(a) != arp::REQUEST || arp::tpa(a) == arp::spa(a) {
        return Err(Reason::DropArp);
    }
    let mac = resolve(me.vni, arp::tpa(a)).ok_or(Reason::DropArp)?;
    arp::answer(e, a, mac);
    ctx.send(ifindex, Reason::ArpReplied)
}

/// Turns a VXLAN-borne ARP request for a local endpoint (MAC `mac`) into the
/// reply, in place: outer headers turned around (to the sender's VXLAN
/// port), inner ARP answered; sent back out of `ifindex`. `ihl`: the outer
/// IPv4 header's length; `inner`: where the inner frame starts.
#[inline(always)]
pub fn answer_peer<P: Frame>(
    ctx: &P,
    cfg: &HostConfig,
    ifindex: u32,
    ihl: usize,
    inner: usize,
    mac: [u8; 6],
) -> Outcome<P::Verdict> {
    if ihl != ipv4::HEADER_LEN {
        return Err(Reason::DropMalformed);
    }
    let bad = Reason::DropMalformed;
    let oeth = ctx.bytes::<{ eth::HEADER_LEN }>(0).ok_or(bad)?;
    let oip = ctx.bytes::<{ ipv4::HEADER_LEN }>(eth::HEADER_LEN).ok_or(bad)?;
    let uh = ctx.bytes::<{ udp::HEADER_LEN }>(eth::HEADER_LEN + ipv4::HEADER_LEN).ok_or(bad)?;
    let ieth = ctx.bytes::<{ eth::HEADER_LEN }>(inner).ok_or(bad)?;
    let a = ctx.bytes::<{ arp::LEN }>(inner + eth::HEADER_LEN).ok_or(bad)?;
    if !arp::is_eth_ipv4(a) || arp::oper(a) != arp::REQUEST {
        return Err(Reason::DropArp);
    }
    let (peer, me) = (eth::src(oeth), eth::dst(oeth));
    eth::set_dst(oeth, peer);
    eth::set_src(oeth, me);
    ipv4::turn_around(oip, cfg.underlay_ip);
    udp::set_dst_port(uh, cfg.vxlan_port);
    udp::clear_checksum(uh);
    arp::answer(ieth, a, mac);
    ctx.send(ifindex, Reason::ArpReplied)
}
