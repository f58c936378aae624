//! TC ingress on the underlay device (the TC data path): the underlay
//! program ([`crate::underlay`]) on skbs. GSO packets (a veth hands a
//! sender's 64 KB whole to its peer) are decapsulated and redirected whole,
//! and partial checksums stay partial: no offload is turned off anywhere.
//! It counts as the underlay program (`xdp_underlay_ingress`'s counters):
//! one host runs one of the two.

use aya_ebpf::{bindings::TC_ACT_SHOT, helpers::bpf_skb_pull_data, macros::classifier, programs::TcContext};
use overlay_common::*;
use overlay_wire::{eth, ipv4, tcp, udp, vxlan};

use crate::{
    log,
    packet::{Frame, Packet},
    reject,
    stats::count,
    underlay::handle,
};

/// The most the handlers read at fixed offsets: outer headers with options
/// up to 60 bytes, VXLAN, the inner Ethernet, IPv4 and TCP headers.
const HEADERS: usize =
    eth::HEADER_LEN + 60 + udp::HEADER_LEN + vxlan::HEADER_LEN + eth::HEADER_LEN + ipv4::HEADER_LEN + tcp::FIXED_LEN;

#[classifier]
pub fn tc_underlay_ingress(ctx: TcContext) -> i32 {
    let len = Packet::len(&ctx);
    // The handlers read the headers in place: make them linear when a
    // driver left some of them in pages.
    if ctx.data_end() - ctx.data() < HEADERS.min(len) {
        // SAFETY: the helper takes the program's own skb; views are taken after it.
        let _ = unsafe { bpf_skb_pull_data(ctx.skb.skb, HEADERS.min(len) as u32) };
    }
    let ctx = ctx.reread();
    let outcome = match handle(&ctx) {
        Err(Reason::RejectNoBackend) => {
            crate::log_rare!(log::tc_drop, ctx.skb.skb, Reason::RejectNoBackend);
            reject::tc(&ctx.reread())
        }
        o => o,
    };
    let (reason, action) = outcome.unwrap_or_else(|r| {
        crate::log_rare!(log::tc_drop, ctx.skb.skb, r);
        (r, TC_ACT_SHOT)
    });
    count(Prog::XdpUnderlay, reason, len as u64);
    action
}
