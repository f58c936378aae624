//! XDP on the underlay device (the XDP data path): the underlay program
//! ([`crate::underlay`]) on frames before the kernel makes an skb of them.
//! Best where dropping early pays (floods, injection) and on NICs with
//! native XDP; on a veth it costs the peer its GSO and a copy per frame.

use aya_ebpf::{bindings::xdp_action::XDP_DROP, macros::xdp, programs::XdpContext};
use overlay_common::*;

use crate::{
    log,
    packet::{Packet, Xdp},
    reject,
    stats::count,
    underlay::handle,
};

#[xdp]
pub fn xdp_underlay_ingress(ctx: XdpContext) -> u32 {
    let frame = Xdp::new(&ctx);
    let len = frame.len() as u64;
    let outcome = match handle(&frame) {
        // A published port with no backend: answered here, after the
        // handler's stack frame is gone.
        Err(Reason::RejectNoBackend) => {
            crate::log_rare!(log::xdp_drop, ctx.ctx, Reason::RejectNoBackend);
            reject::xdp(&frame.reread())
        }
        o => o,
    };
    let (reason, action) = outcome.unwrap_or_else(|r| {
        crate::log_rare!(log::xdp_drop, ctx.ctx, r);
        (r, XDP_DROP)
    });
    count(Prog::XdpUnderlay, reason, len);
    action
}
