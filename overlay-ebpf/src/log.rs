//! Debug logs through aya-log, for the rare paths where a counter says too
//! little: a drop's packet summary, a FIB lookup or a redirect that failed.
//! Off unless `up --bpf-log` (or the agent's) wrote 1 into OB_LOG_V1; only
//! a path that would log reads that switch, so forwarding pays nothing, and
//! a drop one map read and a branch. The loggers are functions of their own
//! (BPF-to-BPF calls), called only when the switch is on: their buffers do
//! not count against the programs' 512-byte stack. They take the raw context
//! pointer, so the callers need not keep their context in memory for them.

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::info;
use overlay_common::Reason;
use overlay_wire::{eth, ipv4};

use crate::{
    maps::OB_LOG_V1,
    packet::{Packet, Xdp},
};

/// Logs with `$f(args)` when logging is on; the call is made only then.
#[macro_export]
macro_rules! log_rare {
    ($f:path, $($arg:expr),*) => {
        if $crate::log::on() {
            $f($($arg),*)
        }
    };
}

#[inline(always)]
pub fn on() -> bool {
    matches!(OB_LOG_V1.get(0), Some(v) if *v != 0)
}

/// A dropped frame on the underlay: reason, length and its IPv4 addresses.
#[inline(never)]
pub fn xdp_drop(md: *mut xdp_md, reason: Reason) {
    let ctx = &XdpContext::new(md);
    // Bounds read anew: the frame may have moved since the handler began.
    let f = Xdp::new(ctx);
    // SAFETY: reads a field of the program's own context.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    match f.bytes::<{ eth::HEADER_LEN + ipv4::HEADER_LEN }>(0) {
        Some(h) if eth::ethertype(&head(h)) == eth::ETHERTYPE_IPV4 => {
            let (src, dst, proto) = (addr(h, 26), addr(h, 30), h[23]);
            info!(
                ctx,
                "xdp drop {} on ifindex {}: {} bytes, {:i} -> {:i} proto {}",
                reason.name(),
                ifindex,
                f.len(),
                src,
                dst,
                proto
            );
        }
        _ => info!(ctx, "xdp drop {} on ifindex {}: {} bytes, not IPv4", reason.name(), ifindex, f.len()),
    }
}

/// A dropped packet from a container: reason, veth, length, IPv4 addresses.
#[inline(never)]
pub fn tc_drop(skb: *mut __sk_buff, reason: Reason) {
    let ctx = &TcContext::new(skb);
    // SAFETY: reads a field of the program's own skb.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let len = Packet::len(ctx);
    let ipv4 = matches!(ctx.load::<[u8; 2]>(eth::field::ETHERTYPE), Ok(t) if t == eth::ETHERTYPE_IPV4.to_be_bytes());
    match ctx.load::<[u8; 12]>(eth::HEADER_LEN + 8) {
        Ok(h) if ipv4 => {
            let (src, dst, proto) = ([h[4], h[5], h[6], h[7]], [h[8], h[9], h[10], h[11]], h[1]);
            info!(
                ctx,
                "tc drop {} on ifindex {}: {} bytes, {:i} -> {:i} proto {}",
                reason.name(),
                ifindex,
                len,
                src,
                dst,
                proto
            );
        }
        _ => info!(ctx, "tc drop {} on ifindex {}: {} bytes, not IPv4", reason.name(), ifindex, len),
    }
}

/// A FIB lookup towards `dst` that gave `ret` (BPF_FIB_LKUP_RET_*).
#[inline(never)]
pub fn fib_failed(md: *mut xdp_md, dst: [u8; 4], ret: i64) {
    info!(&XdpContext::new(md), "xdp fib lookup to {:i} failed: BPF_FIB_LKUP_RET {}", dst, ret);
}

/// The same in TC (the underlay program's TC mode).
#[inline(never)]
pub fn tc_fib_failed(skb: *mut __sk_buff, dst: [u8; 4], ret: i64) {
    info!(&TcContext::new(skb), "tc fib lookup to {:i} failed: BPF_FIB_LKUP_RET {}", dst, ret);
}

/// A redirect to `ifindex` the kernel refused.
#[inline(never)]
pub fn xdp_redirect_failed(md: *mut xdp_md, ifindex: u32, ret: i64) {
    info!(&XdpContext::new(md), "xdp redirect to ifindex {} refused: {}", ifindex, ret);
}

/// A redirect to `ifindex` the kernel refused.
#[inline(never)]
pub fn tc_redirect_failed(skb: *mut __sk_buff, ifindex: u32, ret: i64) {
    info!(&TcContext::new(skb), "tc redirect to ifindex {} refused: {}", ifindex, ret);
}

#[inline(always)]
fn head(h: &[u8; eth::HEADER_LEN + ipv4::HEADER_LEN]) -> eth::Header {
    let mut e = [0u8; eth::HEADER_LEN];
    e.copy_from_slice(&h[..eth::HEADER_LEN]);
    e
}

#[inline(always)]
fn addr(h: &[u8; eth::HEADER_LEN + ipv4::HEADER_LEN], at: usize) -> [u8; 4] {
    [h[at], h[at + 1], h[at + 2], h[at + 3]]
}
