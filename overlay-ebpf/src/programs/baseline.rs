//! Empty programs, the baseline of `cargo xtask bench`: the per-packet cost of
//! BPF_PROG_TEST_RUN itself, so our programs' cost is reported as a ratio
//! over it. Never attached.

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

#[xdp]
pub fn bench_empty_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[classifier]
pub fn bench_empty_tc(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}
