//! TC ingress on the WireGuard device and on the veth beside it: the hop
//! between hosts of an encrypted network.
//!
//! The overlay's work stays with the other programs: VXLAN of an encrypted
//! network is built as for any network, then encrypted by WireGuard instead
//! of sent in clear. WireGuard is a layer-3 device, and the unwrapping of
//! VXLAN is XDP's, so the two meet over a veth pair:
//!
//! - ingress of the WireGuard device: VXLAN WireGuard decrypted and
//!   authenticated. It gets an Ethernet header and leaves through the veth,
//!   whose peer runs the XDP program, which reads it as from the underlay
//!   and knows it came through WireGuard by the device it arrived on;
//! - ingress of the veth: VXLAN the XDP program built for an encrypted
//!   network (a routing-mesh request) and sent out of the peer; it goes on to
//!   WireGuard. (TC hands its own VXLAN to WireGuard directly.)

use aya_ebpf::{bindings::TC_ACT_SHOT, helpers::bpf_skb_change_head, macros::classifier, programs::TcContext};
use overlay_common::*;
use overlay_wire::eth;

use crate::{
    maps::wg_config,
    packet::{Frame, Outcome, Packet},
    stats::count,
};

#[classifier]
pub fn tc_wireguard(ctx: TcContext) -> i32 {
    let len = Packet::len(&ctx) as u64;
    let (reason, action) = handle(&ctx).unwrap_or_else(|r| (r, TC_ACT_SHOT));
    count(Prog::TcWireguard, reason, len);
    action
}

#[inline(always)]
fn handle(ctx: &TcContext) -> Outcome<i32> {
    let wg = wg_config().ok_or(Reason::DropNoWireguard)?;
    // SAFETY: reads a field of the program's own skb.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if ifindex != wg.ifindex {
        return ctx.send(wg.ifindex, Reason::ToWireguard);
    }
    // SAFETY: the helper takes the program's own skb; every view of the
    // packet is taken after it.
    if unsafe { bpf_skb_change_head(ctx.skb.skb, eth::HEADER_LEN as u32, 0) } != 0 {
        return Err(Reason::DropResize);
    }
    let e = ctx.bytes::<{ eth::HEADER_LEN }>(0).ok_or(Reason::DropMalformed)?;
    // Addresses are not read on the way (XDP sets the inner frame's own).
    *e = [0; eth::HEADER_LEN];
    e[12..].copy_from_slice(&eth::ETHERTYPE_IPV4.to_be_bytes());
    ctx.send(wg.tc_ifindex, Reason::FromWireguard)
}
