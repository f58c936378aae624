//! The packet formats overlay-bpf reads and writes, once, for the eBPF
//! programs and the host alike (smoltcp's `wire` is the model): one module per
//! protocol, each a set of named field offsets, readers and checks over
//! fixed-size byte arrays, and builders for what the data path emits, with
//! unit tests on literal packet bytes.
//!
//! Everything works on `[u8; N]` of a known `N`: the eBPF programs get such
//! an array from one bounds check against the packet, the verifier follows
//! every index into it, and nothing here can panic on a short buffer.
#![no_std]

pub mod arp;
pub mod checksum;
pub mod eth;
pub mod icmp;
pub mod ipv4;
pub mod nat;
pub mod tcp;
pub mod udp;
pub mod vxlan;

/// Reads the 4 bytes at `at` of `b` (an address).
#[inline(always)]
pub(crate) fn addr<const N: usize>(b: &[u8; N], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

/// Reads the big-endian 16-bit word at `at` of `b`.
#[inline(always)]
pub(crate) fn word<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
