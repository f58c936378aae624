//! TC ingress on an endpoint's host-side veth: what the container sends.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use network_types::eth::EthHdr;
use overlay_common::{Prog, Reason};

use crate::{parse::ptr_at, stats::count};

#[classifier]
pub fn tc_endpoint_egress(ctx: TcContext) -> i32 {
    let reason = classify(&ctx);
    count(Prog::TcEndpoint, reason, ctx.len() as u64);
    if reason.is_drop() {
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
}

#[inline(always)]
fn classify(ctx: &TcContext) -> Reason {
    if ptr_at::<EthHdr>(ctx.data(), ctx.data_end(), 0).is_none() {
        return Reason::DropMalformed;
    }
    Reason::PassFromEndpoint
}
