//! Embeds the eBPF object built by `cargo xtask build` into the binary, so the
//! binary is all a host needs. Without it (plain `cargo build`) the binary
//! still builds, and `up` explains how to get the object.
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ebpf_embedded)");
    println!("cargo:rerun-if-env-changed=OVERLAY_EBPF_OBJECT");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let src = std::env::var_os("OVERLAY_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/bpfel-unknown-none/release/overlay-ebpf"));
    println!("cargo:rerun-if-changed={}", src.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("overlay-ebpf.o");
    if src.is_file() {
        std::fs::copy(&src, &out).expect("copy the eBPF object");
        println!("cargo:rustc-cfg=ebpf_embedded");
    } else {
        std::fs::write(&out, b"").expect("write an empty placeholder");
    }
}
