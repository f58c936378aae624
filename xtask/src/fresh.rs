//! `cargo xtask fresh-check`: proves that `cargo xtask setup` installs
//! everything the build needs, on a Debian 12 that has nothing else.
//!
//! A machine where someone once installed a package by hand hides a missing
//! entry in setup's list (issue 29: `libprotobuf-dev`, which only the
//! developers' machines had). So this builds a bare Debian 12 root file
//! system from Debian's archive (mmdebstrap, `minbase`), clones the
//! repository into it, and runs `cargo xtask setup` and `cargo xtask build`
//! there, as a new user would on a fresh machine.
//!
//! What the root file system shares with this machine, and nothing more:
//!
//! - the Rust toolchains (rustup's home, through an overlay whose upper layer
//!   is thrown away; `redirect_dir=on` lets rustup move directories of the
//!   lower layer), with the components setup adds (the nightly's
//!   `rust-src`, the musl target) removed again inside, so setup's steps run;
//! - a `CARGO_HOME` of its own whose `bin/` holds only rustup's proxies (no
//!   bpf-linker: setup builds it) and no registry cache;
//! - what cargo needs before any of the project's code can run, which no
//!   setup written in Rust can install: a C compiler and linker (`gcc`,
//!   `libc6-dev`) and CA certificates for crates.io. rustup asks the same
//!   of a machine.
//!
//! It also takes this machine's network settings: its resolver, and the CA
//! certificates it trusts beyond Debian's (a TLS-inspecting egress proxy's,
//! without which no registry answers).
//!
//! Packages installed there start no services (`policy-rc.d` says no).
//! Everything runs in a private mount namespace, so the mounts go with it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context, Result};

use crate::util::{is_root, output, root, run, step};

/// The Debian release, variant and archive of the bare system.
const SUITE: &str = "bookworm";
const MIRRORS: &[&str] = &[
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];
/// What cargo needs to compile the xtask itself (see the module's note).
const CARGO_PREREQUISITES: &str = "gcc,libc6-dev,ca-certificates";
/// A bare system older than this is built again from the archive.
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The components setup installs into the shared toolchains: removed in
/// the bare system, so that setup must install them again.
/// (kind, toolchain, name): `rustup <kind> list --toolchain <toolchain> --installed` lists it.
const SETUP_COMPONENTS: &[(&str, &str, &str)] =
    &[("component", "nightly", "rust-src"), ("target", "stable", crate::build::MUSL_TARGET)];

fn dir() -> PathBuf {
    root().join("target/fresh-check")
}

/// Runs the check; `rebuild` makes the bare system anew even when a recent
/// one is cached; `keep` leaves the root file system for a look inside.
pub fn fresh_check(rebuild: bool, keep: bool) -> Result<()> {
    if !is_root() {
        bail!("the fresh check builds a Debian root file system and mounts into it: run it as root");
    }
    let t0 = Instant::now();
    crate::setup::setup()?;
    std::fs::create_dir_all(dir())?;
    let tarball = dir().join(format!("{SUITE}-minbase.tar"));
    let t = Instant::now();
    let fresh_enough = std::fs::metadata(&tarball)
        .and_then(|m| m.modified())
        .is_ok_and(|m| SystemTime::now().duration_since(m).unwrap_or_default() < MAX_AGE);
    if rebuild || !fresh_enough {
        step(&format!("fresh-check: a bare Debian 12 ({SUITE}, minbase) from Debian's archive, with mmdebstrap"));
        let partial = tarball.with_extension("partial");
        run(Command::new("mmdebstrap")
            .args(["--variant=minbase", "--mode=root", "--format=tar", "--quiet"])
            .arg(format!("--include={CARGO_PREREQUISITES}"))
            .arg(SUITE)
            .arg(&partial)
            .args(MIRRORS))?;
        std::fs::rename(&partial, &tarball)?;
    }
    let bootstrap = t.elapsed();
    let rootfs = dir().join("root");
    let guard = Rootfs(rootfs.clone(), keep);
    let _ = std::fs::remove_dir_all(&rootfs);
    std::fs::create_dir_all(&rootfs)?;
    run(Command::new("tar").arg("-C").arg(&rootfs).arg("-xf").arg(&tarball))?;
    prepare(&rootfs)?;
    step("fresh-check: a clone of this repository's HEAD in it (uncommitted changes are not part of the check)");
    run(Command::new("git").args(["clone", "--quiet", "--no-hardlinks"]).arg(root()).arg(rootfs.join("src")))?;

    let reset: Vec<String> = SETUP_COMPONENTS
        .iter()
        .map(|(kind, tc, name)| {
            format!(
                "if rustup {kind} list --toolchain {tc} --installed | grep -qx '{name}'; then \
                 rustup --quiet {kind} remove --toolchain {tc} {name}; fi"
            )
        })
        .collect();
    in_root(&rootfs, &reset.join("\n"))?;
    let mut times = Vec::new();
    for (what, cmd) in [("cargo xtask setup", "cargo xtask setup"), ("cargo xtask build", "cargo xtask build")] {
        step(&format!("fresh-check: `{what}` in the bare Debian 12"));
        let t = Instant::now();
        in_root(&rootfs, &format!("cd /src && {cmd}"))
            .with_context(|| format!("`{what}` failed on a bare Debian 12"))?;
        times.push((what, t.elapsed()));
    }
    step("fresh-check: `cargo xtask setup` again, which must find nothing to do");
    let t = Instant::now();
    let again = in_root_output(&rootfs, "cd /src && cargo xtask setup 2>&1")?;
    let installs: Vec<&str> = again.lines().filter(|l| l.contains("setup: ") && !l.contains("setup: ready")).collect();
    if !installs.is_empty() {
        bail!("a second `cargo xtask setup` installed again, so a step's check is wrong:\n{}", installs.join("\n"));
    }
    times.push(("cargo xtask setup, again", t.elapsed()));
    drop(guard);
    println!("fresh-check: passed in {:.0}s", t0.elapsed().as_secs_f64());
    println!(
        "  bare Debian 12 root file system: {:.0}s{}",
        bootstrap.as_secs_f64(),
        if rebuild || !fresh_enough { "" } else { " (cached)" }
    );
    for (what, d) in times {
        println!("  {what}: {:.0}s", d.as_secs_f64());
    }
    Ok(())
}

/// The root file system goes when the check ends, failed or not, unless kept.
struct Rootfs(PathBuf, bool);

impl Drop for Rootfs {
    fn drop(&mut self) {
        if self.1 {
            eprintln!("fresh-check: kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
            let _ = std::fs::remove_dir_all(dir().join("rustup-upper"));
            let _ = std::fs::remove_dir_all(dir().join("rustup-work"));
        }
    }
}

/// No service starts in the bare system; names resolve as here; the
/// toolchain's proxies (and nothing else) in its own CARGO_HOME.
fn prepare(rootfs: &Path) -> Result<()> {
    std::fs::create_dir_all(rootfs.join("root/.rustup"))?;
    for d in ["rustup-upper", "rustup-work"] {
        let _ = std::fs::remove_dir_all(dir().join(d));
        std::fs::create_dir_all(dir().join(d))?;
    }
    let policy = rootfs.join("usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\n# fresh-check: packages installed here start no services\nexit 101\n")?;
    std::fs::set_permissions(&policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    std::fs::copy("/etc/resolv.conf", rootfs.join("etc/resolv.conf")).context("copy /etc/resolv.conf")?;
    // CAs this machine trusts beyond Debian's: the files of their own in
    // /etc/ssl/certs (Debian's are links into /usr/share/ca-certificates).
    let local = rootfs.join("usr/local/share/ca-certificates");
    std::fs::create_dir_all(&local)?;
    let mut extra = 0;
    for e in std::fs::read_dir("/etc/ssl/certs")?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let own_file = e.file_type().is_ok_and(|t| t.is_file());
        if own_file && name != "ca-certificates.crt" && (name.ends_with(".pem") || name.ends_with(".crt")) {
            let stem = name.trim_end_matches(".pem").trim_end_matches(".crt");
            std::fs::copy(e.path(), local.join(format!("{stem}.crt")))?;
            extra += 1;
        }
    }
    if extra > 0 {
        in_root(rootfs, "update-ca-certificates >/dev/null")?;
    }
    let bin = rootfs.join("root/.cargo/bin");
    std::fs::create_dir_all(&bin)?;
    let rustup = crate::util::cargo_bin_dir().join("rustup");
    let rustup = std::fs::canonicalize(&rustup).with_context(|| format!("rustup at {}", rustup.display()))?;
    std::fs::copy(&rustup, bin.join("rustup"))?;
    for proxy in ["cargo", "rustc", "rustdoc", "rustfmt", "cargo-fmt", "cargo-clippy", "clippy-driver"] {
        std::os::unix::fs::symlink("rustup", bin.join(proxy))?;
    }
    Ok(())
}

/// The shell script that mounts what the bare system shares and runs `cmd`
/// in it, as root, with an environment of its own.
fn script(rootfs: &Path, cmd: &str) -> String {
    let home = std::env::var("RUSTUP_HOME")
        .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap_or_else(|_| "/root".into())));
    let r = rootfs.display();
    let d = dir();
    let d = d.display();
    format!(
        "set -e\n\
         mount -t proc proc {r}/proc\n\
         mount --rbind /sys {r}/sys\n\
         mount --rbind /dev {r}/dev\n\
         mount -t tmpfs tmpfs {r}/tmp\n\
         mount -t overlay overlay -o lowerdir={home},upperdir={d}/rustup-upper,workdir={d}/rustup-work,redirect_dir=on {r}/root/.rustup\n\
         exec chroot {r} /usr/bin/env -i HOME=/root USER=root TERM=dumb CARGO_TERM_COLOR=never \
         RUSTUP_HOME=/root/.rustup CARGO_HOME=/root/.cargo \
         PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
         /bin/bash -c '{}'\n",
        cmd.replace('\'', r"'\''")
    )
}

fn in_root(rootfs: &Path, cmd: &str) -> Result<()> {
    run(Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c"]).arg(script(rootfs, cmd)))
}

fn in_root_output(rootfs: &Path, cmd: &str) -> Result<String> {
    output(Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c"]).arg(script(rootfs, cmd)))
}
