//! Builds the eBPF object (nightly, bpfel-unknown-none, build-std) and the
//! `overlay-bpf` binary that embeds it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

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
    ebpf_cargo_in(&root(), sub)
}

/// [`ebpf_cargo`] in the workspace at `dir`.
fn ebpf_cargo_in(dir: &Path, sub: &str) -> Command {
    let mut c = Command::new("rustup");
    c.current_dir(dir)
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

/// The release before this one: rolling upgrades start from it
/// (`tests/tests/upgrade.rs`, the mixed-version store test).
pub const PREVIOUS_RELEASE: &str = "4faeb4bf796c95b37944dd1825ee7aaff82e53db";

/// Where [`build_previous`] leaves the previous release's `overlay-bpf`.
pub fn previous_bin() -> PathBuf {
    root().join("target/previous").join(&PREVIOUS_RELEASE[..7]).join("overlay-bpf")
}

/// Builds the previous release's `overlay-bpf` (debug, its eBPF object
/// embedded) from this repository's history into [`previous_bin`], once.
///
/// Its tree is extracted with `git archive` and built into this workspace's
/// own target directory, so the dependencies both releases share are
/// compiled once; only its own crates are. Run it before [`build`]: the two
/// trees' crates share artifact names, and the later build is the one left
/// in `target/debug`.
pub fn build_previous() -> Result<PathBuf> {
    let bin = previous_bin();
    if bin.is_file() {
        step(&format!("build: previous release {} already built ({})", &PREVIOUS_RELEASE[..7], bin.display()));
        return Ok(bin);
    }
    let t = Instant::now();
    let dir = bin.parent().expect("a directory").to_path_buf();
    let src = dir.join("src");
    step(&format!("build: the previous release, {}, for the upgrade tests (once)", &PREVIOUS_RELEASE[..7]));
    let has = Command::new("git")
        .current_dir(root())
        .args(["cat-file", "-e", &format!("{PREVIOUS_RELEASE}^{{commit}}")])
        .stderr(Stdio::null())
        .status()
        .context("cannot run git")?;
    if !has.success() {
        bail!(
            "commit {PREVIOUS_RELEASE} (the previous release) is not in this clone, and the upgrade tests build \
             it: fetch the history (`git fetch --unshallow`)"
        );
    }
    if src.exists() {
        std::fs::remove_dir_all(&src).with_context(|| format!("remove {}", src.display()))?;
    }
    std::fs::create_dir_all(&src).with_context(|| format!("create {}", src.display()))?;
    let mut archive = Command::new("git")
        .current_dir(root())
        .args(["archive", "--format=tar", PREVIOUS_RELEASE])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run git archive")?;
    run(Command::new("tar").arg("-x").arg("-C").arg(&src).stdin(archive.stdout.take().expect("piped")))?;
    if !archive.wait()?.success() {
        bail!("git archive {PREVIOUS_RELEASE} failed");
    }
    let target = root().join("target");
    run(ebpf_cargo_in(&src, "build").env("CARGO_TARGET_DIR", &target))?;
    let obj = dir.join("overlay-ebpf.o");
    std::fs::copy(target.join("bpfel-unknown-none/release/overlay-ebpf"), &obj).context("copy its eBPF object")?;
    run(Command::new("cargo")
        .current_dir(&src)
        .args(["build", "-p", "overlay-userspace", "--bins"])
        .env("CARGO_TARGET_DIR", &target)
        .env("OVERLAY_EBPF_OBJECT", &obj))?;
    // Written last: a build cut short leaves no binary to be taken as done.
    let tmp = dir.join("overlay-bpf.tmp");
    std::fs::copy(target.join("debug/overlay-bpf"), &tmp).context("copy its overlay-bpf")?;
    std::fs::rename(&tmp, &bin)?;
    std::fs::remove_dir_all(&src).with_context(|| format!("remove {}", src.display()))?;
    step(&format!("build: previous release {} ready ({:.1}s)", bin.display(), t.elapsed().as_secs_f64()));
    Ok(bin)
}
