//! Types shared by the kernel programs (`overlay-ebpf`) and the loader
//! (`overlay-userspace`). Everything here is `#[repr(C)]` without implicit
//! padding, so the layout is the same on both sides and bpftool can print
//! every field by name from BTF.
#![no_std]

pub mod flow;
pub mod maps;
pub mod stats;

pub use maps::*;
pub use stats::*;
