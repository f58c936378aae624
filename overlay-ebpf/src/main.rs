//! overlay-bpf's data path. One program per attach point:
//!
//! - `xdp_underlay_ingress`: XDP on the host's underlay device: VXLAN decap,
//!   the routing mesh (published ports) and its tunnelled replies.
//! - `tc_endpoint_egress`: TC ingress on each endpoint's host-side veth, i.e.
//!   the packets a container sends: ARP, anti-spoofing, local delivery, VXLAN
//!   encap, PMTU, traffic leaving the overlay.
//!
//! Handlers return a [`overlay_common::Reason`]; the entry point counts it
//! once and turns it into a verdict.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod csum;
#[cfg(target_arch = "bpf")]
mod lb;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod nat;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod programs;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod vxlan;
#[cfg(target_arch = "bpf")]
mod xnat;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Host builds (`cargo build --workspace`, clippy) see an empty binary; the
/// real object is built for `bpfel-unknown-none` by `cargo xtask build`.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
