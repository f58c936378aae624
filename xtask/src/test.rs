//! `cargo xtask test`: unit tests on the host, then the kernel tests (root):
//! real programs through BPF_PROG_TEST_RUN and namespace clusters.

use std::{process::Command, time::Instant};

use anyhow::{bail, Result};

use crate::{
    build, setup,
    util::{is_root, root, run_tests, step},
};

/// `vm_kernels`: the Debian kernel series of the VM tier, None to skip it.
pub fn test(unit_only: bool, vm_kernels: Option<&[String]>, args: &[String]) -> Result<()> {
    let t0 = Instant::now();
    setup::setup()?;
    // Before this build: the two releases' crates share artifact names.
    let previous = (!unit_only).then(build::build_previous).transpose()?;
    let bin = build::build(false)?;
    let obj = root().join("target/bpfel-unknown-none/release/overlay-ebpf");

    lint()?;
    let t = Instant::now();
    step("test: unit tests (wire formats, model, validation, allocation, reconciler, map layouts)");
    let (mut passed, mut failed) = run_tests(
        Command::new("cargo")
            .current_dir(root())
            .args([
                "test",
                "-p",
                "overlay-wire",
                "-p",
                "overlay-common",
                "-p",
                "overlay-userspace",
                "-p",
                "xtask",
                "--lib",
                "--bins",
                "--tests",
            ])
            .env("OVERLAY_EBPF_OBJECT", &obj)
            .arg("--")
            .args(args),
    )?;
    step(&format!("test: unit tests passed ({:.1}s)", t.elapsed().as_secs_f64()));
    if unit_only {
        println!("unit: {passed} passed, {failed} failed");
        return Ok(());
    }
    if !is_root() {
        bail!("the kernel tests load eBPF programs and create namespaces: run `sudo -E cargo xtask test` (or --unit-only)");
    }
    let t = Instant::now();
    step("test: kernel tests (BPF_PROG_TEST_RUN fixtures, namespace clusters)");
    let (p, f) = run_tests(
        Command::new("cargo")
            .current_dir(root())
            .args(["test", "-p", "tests", "--tests"])
            .env("OVERLAY_EBPF_OBJECT", &obj)
            .env("OVERLAY_BPF_BIN", &bin)
            .env("OVERLAY_BPF_PREVIOUS_BIN", previous.as_ref().expect("built above"))
            .arg("--")
            .args(args),
    )?;
    (passed, failed) = (passed + p, failed + f);
    step(&format!("test: kernel tests passed on this kernel ({:.1}s)", t.elapsed().as_secs_f64()));
    if let Some(series) = vm_kernels {
        let t = Instant::now();
        step("test: the kernel tests again, in one VM per Debian kernel (--no-vm skips this)");
        crate::util::catch_signals();
        let kernels = crate::vm::kernels(series)?;
        let accel = crate::vm::probe_accel(&kernels[0])?.join().map_err(|_| anyhow::anyhow!("KVM probe panicked"))?;
        step(&format!("vm: accelerator: {}", accel.describe()));
        let mut bad = Vec::new();
        let previous = previous.as_deref().expect("built above");
        let results = crate::vm::tier::run(&kernels, accel, &obj, (&bin, previous), args)?;
        crate::util::check_interrupt()?;
        for (release, r) in results {
            match r {
                Ok((p, f)) => {
                    println!("vm {release}: {p} passed, {f} failed");
                    (passed, failed) = (passed + p, failed + f);
                }
                Err(e) => {
                    println!("vm {release}: {e:#}");
                    bad.push(release);
                }
            }
        }
        if !bad.is_empty() {
            bail!("the VM tier failed on {} (consoles in {})", bad.join(", "), crate::vm::logs_dir()?.display());
        }
        step(&format!("test: VM tier passed ({:.1}s)", t.elapsed().as_secs_f64()));
    }
    step(&format!("test: all passed in {:.1}s", t0.elapsed().as_secs_f64()));
    println!("total: {passed} passed, {failed} failed");
    Ok(())
}

/// Formatting and clippy, warnings denied: on the host crates, and on the
/// eBPF crate's real build (nightly, bpfel-unknown-none; its host build is an
/// empty `main`, which lints nothing). First, so a style slip fails in
/// seconds rather than after the kernel tests.
fn lint() -> Result<()> {
    let t = Instant::now();
    step("test: cargo fmt --check, cargo clippy -D warnings");
    crate::util::run(Command::new("cargo").current_dir(root()).args(["fmt", "--all", "--check"]))
        .map_err(|e| anyhow::anyhow!("{e:#}: run `cargo fmt --all` and commit the result"))?;
    crate::util::run(Command::new("cargo").current_dir(root()).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    crate::util::run(crate::build::ebpf_cargo("clippy").args(["--", "-D", "warnings"]))?;
    step(&format!("test: fmt and clippy clean ({:.1}s)", t.elapsed().as_secs_f64()));
    Ok(())
}

/// `cargo xtask fuzz`: the fuzz tests (tests/tests/fuzz.rs) with `packets`
/// per program and a seed (a new one unless given), printed so a failure can
/// be replayed with `--seed`.
pub fn fuzz(packets: u64, seed: Option<u64>) -> Result<()> {
    if !is_root() {
        bail!("fuzzing runs the eBPF programs through BPF_PROG_TEST_RUN: run it as root");
    }
    let t = Instant::now();
    setup::setup()?;
    build::build(false)?;
    let obj = root().join("target/bpfel-unknown-none/release/overlay-ebpf");
    let seed = seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        now.as_nanos() as u64 ^ std::process::id() as u64
    });
    step(&format!("fuzz: {packets} packets per program, seed {seed} (replay: cargo xtask fuzz --seed {seed})"));
    let status = Command::new("cargo")
        .current_dir(root())
        .args(["test", "--release", "-p", "tests", "--test", "fuzz", "--", "--nocapture", "--test-threads", "2"])
        .env("OVERLAY_EBPF_OBJECT", &obj)
        .env("OB_FUZZ_PACKETS", packets.to_string())
        .env("OB_FUZZ_SEED", seed.to_string())
        .status()?;
    if !status.success() {
        bail!("fuzzing found a failure (seed {seed}); the packet is printed above");
    }
    step(&format!("fuzz: done in {:.1}s", t.elapsed().as_secs_f64()));
    Ok(())
}
