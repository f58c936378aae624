//! XDP on the underlay device: everything a host receives from the wire.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr},
    udp::UdpHdr,
};
use overlay_common::{Prog, Reason};

use crate::{maps::host_config, parse::ptr_at, stats::count};

/// Length of the VXLAN header after the outer UDP header.
const VXLAN_LEN: usize = 8;

#[xdp]
pub fn xdp_underlay_ingress(ctx: XdpContext) -> u32 {
    let reason = classify(&ctx);
    count(Prog::XdpUnderlay, reason, (ctx.data_end() - ctx.data()) as u64);
    if reason.is_drop() {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Reason {
    let (start, end) = (ctx.data(), ctx.data_end());
    let Some(eth) = ptr_at::<EthHdr>(start, end, 0) else {
        return Reason::PassNotOurs;
    };
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return Reason::PassNotOurs;
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(start, end, EthHdr::LEN) else {
        return Reason::PassNotOurs;
    };
    let ip = unsafe { &*ip };
    if ip.proto != IpProto::Udp as u8 {
        return Reason::PassNotOurs;
    }
    let Some(cfg) = host_config() else {
        return Reason::PassNotOurs;
    };
    if ip.dst_addr != cfg.underlay_ip {
        return Reason::PassNotOurs;
    }
    let l4 = EthHdr::LEN + ((ip.ihl() as usize) & 0x3c);
    let Some(udp) = ptr_at::<UdpHdr>(start, end, l4) else {
        return Reason::PassNotOurs;
    };
    if u16::from_be_bytes(unsafe { (*udp).dst }) != cfg.vxlan_port {
        return Reason::PassNotOurs;
    }
    // Ours from here on: a VXLAN packet too short for its header is dropped.
    if ptr_at::<[u8; VXLAN_LEN]>(start, end, l4 + UdpHdr::LEN).is_none() {
        return Reason::DropMalformed;
    }
    Reason::PassVxlan
}
