//! Installs what is missing, quickly when nothing is. Every step checks first.

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{bail, Context, Result};

use crate::util::{cargo_bin_dir, is_root, output, path_with_cargo_bin, run, step, succeeds};

/// Debian packages the build, the tests and the demo use.
/// qemu, busybox, binutils (objcopy) and xz build and boot the VMs; etcd
/// (server, and etcdctl to look inside) is the cluster store the tests start,
/// and protoc builds its client's gRPC code; docker.io (dockerd 20.10,
/// containerd, runc) runs the Docker plugin's tests, which start their own
/// engines (the package's service is not started here); podman (4.3, with
/// its CNI backend) runs the CNI plugin's tests; dig, dnsmasq (the
/// upstream the resolver's tests start) and dnsperf test and measure DNS.
pub const APT_PACKAGES: &[&str] = &[
    // What a bare Debian 12 lacks that the build needs (cargo itself needs gcc,
    // libc6-dev and CA certificates before any of this runs: see fresh.rs).
    "gcc",
    "libc6-dev",
    "ca-certificates",
    "git",
    // modprobe: up loads vxlan, wireguard and the nftables modules it uses.
    "kmod",
    // `cargo xtask fresh-check` builds a bare Debian 12 with it.
    "mmdebstrap",
    "docker.io",
    "podman",
    "bind9-dnsutils",
    "dnsmasq-base",
    "dnsperf",
    "etcd-server",
    "etcd-client",
    "protobuf-compiler",
    // the well-known .proto files (google/protobuf/*.proto) etcd-client's build script compiles against
    "libprotobuf-dev",
    "openssl",
    "bpftool",
    "iproute2",
    "iputils-ping",
    "procps",
    "nftables",
    "iperf3",
    "ipvsadm",
    "tcpdump",
    "ethtool",
    "curl",
    "python3",
    "qemu-system-x86",
    "busybox-static",
    // musl-gcc: the VMs' static overlay-bpf compiles ring's C (etcd's TLS) for musl.
    "musl-tools",
    "binutils",
    "xz-utils",
    // perf: `cargo xtask bench --vm --profile` and the profiles behind docs/benchmarks.md's numbers.
    "linux-perf",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn setup() -> Result<()> {
    let t = Instant::now();
    apt_packages()?;
    nightly_rust_src()?;
    musl_target()?;
    lint_tools()?;
    bpf_linker()?;
    bpffs()?;
    step(&format!("setup: ready ({:.1}s)", t.elapsed().as_secs_f64()));
    Ok(())
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .map(|s| !s.contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "apt packages {} are missing; install them with `sudo apt-get install {}` or run as root",
            missing.join(" "),
            missing.join(" ")
        );
    }
    step(&format!("setup: installing apt packages: {}", missing.join(" ")));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

/// The nightly's sysroot, installing the nightly toolchain if it is missing.
pub fn nightly_sysroot() -> Result<PathBuf> {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        step("setup: installing the nightly toolchain (minimal profile)");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let s = output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    Ok(PathBuf::from(s.trim()))
}

fn nightly_rust_src() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    step("setup: adding rust-src to the nightly toolchain (for -Z build-std)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// `cargo xtask test` checks formatting and runs clippy with the stable
/// toolchain on the host crates, and with the nightly on the eBPF crate (its
/// real build, for bpfel-unknown-none).
fn lint_tools() -> Result<()> {
    if !(succeeds(Command::new("cargo").args(["fmt", "--version"]))
        && succeeds(Command::new("cargo").args(["clippy", "--version"])))
    {
        step("setup: adding rustfmt and clippy to the stable toolchain");
        run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;
    }
    if !succeeds(Command::new("rustup").args(["run", "nightly", "cargo", "clippy", "--version"])) {
        step("setup: adding clippy to the nightly toolchain (for the eBPF crate)");
        run(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

/// The guests' static overlay-bpf is built for musl.
fn musl_target() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == crate::build::MUSL_TARGET) {
        return Ok(());
    }
    step(&format!("setup: adding the {} target (static binaries for the VMs)", crate::build::MUSL_TARGET));
    run(Command::new("rustup").args(["target", "add", crate::build::MUSL_TARGET]))
}

/// bpf-linker must link against the same LLVM major as the nightly's rustc.
fn bpf_linker() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("read {}", lib.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .with_context(|| {
            format!("no libLLVM.so.*-rust-* in {}; the nightly toolchain looks incomplete", lib.display())
        })?;
    // libLLVM.so.22.1-rust-1.97.0-nightly -> 22
    let major: String = llvm["libLLVM.so.".len()..].chars().take_while(|c| c.is_ascii_digit()).collect();
    // bpf-linker keeps this folder as its RUNPATH, so it must outlive the work
    // tree (`cargo clean`, a fresh clone): keep it beside the installed tool.
    let prefix = cargo_bin_dir().parent().expect("CARGO_HOME").join(format!("overlay-bpf/llvm-nightly-{major}"));
    let prefix_lib = prefix.join("lib");
    let linker = cargo_bin_dir().join("bpf-linker");
    if linker.exists() {
        let v = output(Command::new(&linker).arg("--version")).unwrap_or_default();
        let llvm_ok = linked_llvm(&linker).is_some_and(|p| p.starts_with(&prefix_lib) && p.exists());
        if v.contains(BPF_LINKER_VERSION) && llvm_ok {
            return Ok(());
        }
    }
    step(&format!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} (about a minute)"
    ));
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so".to_string(), llvm.clone()] {
        let link = prefix_lib.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&llvm), &link)?;
    }
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix)
        .env("PATH", path_with_cargo_bin()))?;
    Ok(())
}

/// Where the dynamic loader finds bpf-linker's libLLVM (from `ldd`).
fn linked_llvm(linker: &std::path::Path) -> Option<PathBuf> {
    let out = output(Command::new("ldd").arg(linker)).ok()?;
    let line = out.lines().find(|l| l.contains("libLLVM"))?;
    let path = line.split("=>").nth(1)?.split_whitespace().next()?;
    path.starts_with('/').then(|| PathBuf::from(path))
}

fn bpffs() -> Result<()> {
    let st = nix::sys::statfs::statfs("/sys/fs/bpf").context("statfs /sys/fs/bpf")?;
    if st.filesystem_type().0 as i64 == 0xcafe_4a11 {
        return Ok(());
    }
    if !is_root() {
        bail!("bpffs is not mounted on /sys/fs/bpf; mount it with `sudo mount -t bpf bpf /sys/fs/bpf`");
    }
    step("setup: mounting bpffs on /sys/fs/bpf");
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}
