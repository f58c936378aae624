//! overlay-bpf's data path. One program per attach point, each a dispatcher
//! (`programs/`):
//!
//! - `xdp_underlay_ingress` or `tc_underlay_ingress`: the host's underlay
//!   device, in XDP or at TC ingress (the data-path mode), one logic
//!   (`underlay`): VXLAN decap (`decap`), the routing mesh and its tunnelled
//!   replies (`mesh`).
//! - `tc_endpoint_egress`: TC ingress on each endpoint's host-side veth, i.e.
//!   the packets a container sends: ARP (`arp`), anti-spoofing, VIPs and
//!   reply translation (`vip`), local delivery and VXLAN encap (`forward`,
//!   `encap`), PMTU and ICMP errors (`icmp`), traffic leaving the overlay.
//!
//! Underneath: `packet` (one view of XDP and skb packets, the one
//! bounds-checked accessor), `conntrack` (the connection table and the one
//! reply translation), `lb` (Maglev picks), `reject` (the answer of a service
//! with no backend), `fib`, `maps`, `stats`. Packet
//! formats and checksums are `overlay_wire`'s, unit-tested on the host.
//!
//! Handlers return an [`packet::Outcome`]: a reason and a verdict, or the
//! reason of a drop; the entry point counts it once.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod arp;
#[cfg(target_arch = "bpf")]
mod conntrack;
#[cfg(target_arch = "bpf")]
mod decap;
#[cfg(target_arch = "bpf")]
mod encap;
#[cfg(target_arch = "bpf")]
mod fib;
#[cfg(target_arch = "bpf")]
mod forward;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod lb;
#[cfg(target_arch = "bpf")]
mod log;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod mesh;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod programs;
#[cfg(target_arch = "bpf")]
mod reject;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod underlay;
#[cfg(target_arch = "bpf")]
mod vip;

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
