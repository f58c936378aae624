//! `cargo xtask test`: unit tests on the host, then the kernel tests (root):
//! real programs through BPF_PROG_TEST_RUN and namespace clusters.

use std::{process::Command, time::Instant};

use anyhow::{bail, Result};

use crate::{
    build, setup,
    util::{is_root, root, run_tests, step},
};

pub fn test(unit_only: bool, args: &[String]) -> Result<()> {
    let t0 = Instant::now();
    setup::setup()?;
    let bin = build::build(false)?;
    let obj = root().join("target/bpfel-unknown-none/release/overlay-ebpf");

    let t = Instant::now();
    step("test: unit tests (model, validation, allocation, reconciler, wire layouts)");
    let (mut passed, mut failed) = run_tests(
        Command::new("cargo")
            .current_dir(root())
            .args([
                "test",
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
            .arg("--")
            .args(args),
    )?;
    (passed, failed) = (passed + p, failed + f);
    step(&format!("test: kernel tests passed ({:.1}s)", t.elapsed().as_secs_f64()));
    step(&format!("test: all passed in {:.1}s", t0.elapsed().as_secs_f64()));
    println!("total: {passed} passed, {failed} failed");
    Ok(())
}
