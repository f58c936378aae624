//! Builds the eBPF object (nightly, bpfel-unknown-none, build-std) and the
//! `overlay-bpf` binary that embeds it.

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::Result;

use crate::util::{path_with_cargo_bin, root, run, step};

/// Builds everything; returns the path of the `overlay-bpf` binary.
pub fn build(release: bool) -> Result<PathBuf> {
    let obj = build_ebpf()?;
    let t = Instant::now();
    step(&format!("build: overlay-bpf ({})", if release { "release" } else { "debug" }));
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root()).args(["build", "-p", "overlay-userspace", "--bins"]).env("OVERLAY_EBPF_OBJECT", &obj);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let bin = root().join("target").join(if release { "release" } else { "debug" }).join("overlay-bpf");
    step(&format!("build: {} ready ({:.1}s)", bin.display(), t.elapsed().as_secs_f64()));
    Ok(bin)
}

/// The target of the guests' `overlay-bpf`: a static binary runs on any guest
/// userspace, busybox's included.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds a static (musl) release `overlay-bpf` with the eBPF object
/// embedded, for the VMs; returns its path.
pub fn build_static() -> Result<PathBuf> {
    let obj = build_ebpf()?;
    let t = Instant::now();
    step(&format!("build: static overlay-bpf for the VMs (release, {MUSL_TARGET})"));
    run(Command::new("cargo")
        .current_dir(root())
        // Without the Docker plugin (bollard): the VMs carry no Docker, and
        // CI builds that dependency once, for the host.
        .args(["build", "-p", "overlay-userspace", "--bins", "--release", "--target", MUSL_TARGET])
        .arg("--no-default-features")
        // ring (etcd's TLS) has C to compile for musl: Debian's musl-gcc
        // (musl-tools), where cc-rs would look for a cross gcc.
        .env(
            "CC_x86_64_unknown_linux_musl",
            std::env::var_os("CC_x86_64_unknown_linux_musl").unwrap_or("musl-gcc".into()),
        )
        .env("OVERLAY_EBPF_OBJECT", &obj))?;
    let bin = root().join("target").join(MUSL_TARGET).join("release/overlay-bpf");
    step(&format!("build: {} ready ({:.1}s)", bin.display(), t.elapsed().as_secs_f64()));
    Ok(bin)
}

/// `cargo <sub>` on the eBPF crate as it is built: nightly,
/// bpfel-unknown-none, core built from source, release, with BTF.
pub fn ebpf_cargo(sub: &str) -> Command {
    let mut c = Command::new("rustup");
    c.current_dir(root())
        .args(["run", "nightly", "cargo", sub, "-p", "overlay-ebpf", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--release"])
        // BTF for the maps and programs, so bpftool prints field names.
        .env("CARGO_ENCODED_RUSTFLAGS", ["-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"))
        .env("PATH", path_with_cargo_bin());
    c
}

/// Builds the eBPF object with BTF; returns its path.
pub fn build_ebpf() -> Result<PathBuf> {
    let t = Instant::now();
    step("build: eBPF programs (nightly, bpfel-unknown-none)");
    run(&mut ebpf_cargo("build"))?;
    let obj = root().join("target/bpfel-unknown-none/release/overlay-ebpf");
    step(&format!("build: eBPF object {} ({:.1}s)", obj.display(), t.elapsed().as_secs_f64()));
    Ok(obj)
}
