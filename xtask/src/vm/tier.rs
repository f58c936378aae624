//! The VM tier of `cargo xtask test`: the same kernel test binaries the host
//! tier ran, run again inside one VM per Debian kernel. The guest gets the
//! host's own tools (ip, tc, ping, curl, nft, bpftool, python3, ...) copied
//! with their libraries, so a test behaves as on the host but for the kernel.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{
    image::stripped,
    kernel::Kernel,
    qemu::{Accel, Vm, VmSpec},
    say,
};
use crate::util::{check_interrupt, root, step};

/// What the kernel tests run, as Debian installs it (not PATH: a pyenv shim
/// or a /usr/local build would not run in the guest).
const HOST_PROGRAMS: &[&str] = &[
    "/usr/sbin/ip",
    "/usr/sbin/tc",
    "/usr/sbin/bridge",
    "/usr/bin/ss",
    "/usr/bin/bash",
    "/usr/bin/ping",
    "/usr/bin/curl",
    "/usr/sbin/nft",
    "/usr/sbin/ipvsadm",
    "/usr/sbin/bpftool",
    "/usr/sbin/ethtool",
    "/usr/bin/iperf3",
    "/usr/bin/tcpdump",
    "/usr/bin/python3.11",
];
/// Python's standard library, less what no test imports.
const PYTHON_LIB: &str = "/usr/lib/python3.11";
const PYTHON_SKIP: &[&str] = &[
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "dist-packages",
];

/// Test binaries that run on the host tier only: those that need real
/// servers the VMs do not carry (etcd, dockerd, podman, dnsmasq), and
/// `scale`, whose 100,001 endpoints are userspace work (parsing, checking,
/// sizing) that emulation makes two minutes per kernel, where the kernel's
/// part (one large hash map, batch-written) is the same on every kernel;
/// and `readme`, the README's tour, which runs the host's own tools.
const HOST_ONLY: &[&str] = &["store", "rolling", "docker", "cni", "dns", "scale", "readme"];

/// Test cases the VMs skip (`--skip`, per binary): checks that end in
/// userspace before any kernel call (a refused state file, an unknown host,
/// a state over a map's limit), the same on every kernel.
const HOST_ONLY_CASES: &[(&str, &str)] = &[
    ("cluster", "bad_state_files_exit_1_with_the_named_error_from_every_command"),
    ("cluster", "user_errors_exit_1_and_name_the_fix"),
    ("cluster", "a_state_beyond_a_map_limit_is_refused_whole"),
];

/// The kernel test binaries `cargo test -p tests --no-run` built, less the
/// host-only ones.
fn test_binaries(obj: &Path, bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("cargo")
        .current_dir(root())
        .args(["test", "-p", "tests", "--tests", "--no-run", "--message-format=json"])
        .env("OVERLAY_EBPF_OBJECT", obj)
        .env("OVERLAY_BPF_BIN", bin)
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test -p tests --no-run failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] == "compiler-artifact" && v["profile"]["test"] == true {
            if let Some(exe) = v["executable"].as_str() {
                let exe = PathBuf::from(exe);
                if !HOST_ONLY.contains(&test_name(&exe).as_str()) {
                    bins.push(exe);
                }
            }
        }
    }
    if bins.is_empty() {
        bail!("cargo test -p tests --no-run named no test binaries");
    }
    Ok(bins)
}

/// "fixtures-b2062ba81716e004" -> "fixtures"
fn test_name(exe: &Path) -> String {
    let f = exe.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    match f.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => name.to_string(),
        _ => f,
    }
}

/// A guest image `<what>-<release>.cpio` of `kernel`: busybox, the modules,
/// the host's tools (HOST_PROGRAMS, Python) and `programs` (guest path, host
/// file; dynamically linked ones with their libraries).
pub fn tools_image(k: &Kernel, what: &str, programs: &[(String, PathBuf)]) -> Result<PathBuf> {
    let (mut tree, _) = super::base_tree(k)?;
    for p in HOST_PROGRAMS {
        tree.host_program(Path::new(p))?;
    }
    tree.symlink("/usr/bin/python3", "python3.11");
    tree.host_tree(Path::new(PYTHON_LIB), PYTHON_SKIP)?;
    for (at, from) in programs {
        tree.program(at, from)?;
    }
    let image = super::work_dir().join(format!("{what}-{}.cpio", k.release));
    let size = tree.write_cpio(&image)?;
    step(&format!("vm: {what} image for {} ({:.0} MB)", k.release, size as f64 / 1e6));
    Ok(image)
}

/// Per kernel: (release, passed, failed), or why it could not run.
pub type TierResult = (String, Result<(u64, u64)>);

/// The previous release's `overlay-bpf` in the guests (the upgrade test's
/// starting point).
const PREVIOUS_IN_GUEST: &str = "/usr/local/bin/overlay-bpf-previous";

/// Runs the kernel tests in one VM per kernel, all kernels at once.
pub fn run(
    kernels: &[Kernel],
    accel: Accel,
    obj: &Path,
    (bin, previous): (&Path, &Path),
    args: &[String],
) -> Result<Vec<TierResult>> {
    let t = Instant::now();
    let bins = test_binaries(obj, bin)?;
    let strip_dir = super::work_dir().join("stripped");
    let mut common: Vec<(String, PathBuf)> = Vec::new();
    for b in &bins {
        common.push((format!("/opt/tests/{}", test_name(b)), stripped(b, &strip_dir)?));
    }
    common.push(("/usr/local/bin/overlay-bpf".into(), stripped(bin, &strip_dir)?));
    common.push((PREVIOUS_IN_GUEST.into(), stripped(previous, &strip_dir.join("previous"))?));
    let mut images = Vec::new();
    for k in kernels {
        images.push(tools_image(k, "test", &common)?);
    }
    step(&format!("vm: {} test binaries, images ready ({:.1}s)", bins.len(), t.elapsed().as_secs_f64()));
    check_interrupt()?;
    let names: Vec<String> = bins.iter().map(|b| test_name(b)).collect();
    Ok(std::thread::scope(|s| {
        let hs: Vec<_> = kernels
            .iter()
            .zip(&images)
            .map(|(k, img)| {
                let names = &names;
                s.spawn(move || (k.release.clone(), tests_on(k, img, accel, names, args)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| (String::new(), Err(anyhow::anyhow!("panicked"))))).collect()
    }))
}

fn tests_on(k: &Kernel, image: &Path, accel: Accel, names: &[String], args: &[String]) -> Result<(u64, u64)> {
    let series = &k.series;
    let tag = format!("vm {series}");
    let spec = VmSpec {
        name: format!("test-{series}"),
        kernel: k.clone(),
        image: image.to_path_buf(),
        accel,
        memory_mb: 3072,
        cpus: 2,
        net: None,
        extra_cmdline: String::new(),
        log: super::logs_dir()?.join(format!("test-{}.log", k.release)),
    };
    let boot = || -> Result<Vm> {
        let vm = Vm::boot(&spec, Duration::from_secs(300))?;
        say(&tag, &format!("booted {} ({:.1}s, {})", vm.release, vm.boot_secs, accel.qemu_name()));
        if vm.release != k.release {
            bail!("the guest runs {} instead of {}", vm.release, k.release);
        }
        Ok(vm)
    };
    let mut vm = boot()?;
    let extra: String = args.iter().map(|a| format!(" '{}'", a.replace('\'', "'\\''"))).collect();
    let (mut passed, mut failed) = (0, 0);
    let mut broken = Vec::new();
    let mut emulator_crashes = 0;
    for n in names {
        check_interrupt()?;
        let t = Instant::now();
        let skip: String =
            HOST_ONLY_CASES.iter().filter(|(b, _)| b == n).map(|(_, case)| format!(" --skip {case}")).collect();
        let cmd = format!(
            "cd /tmp && OVERLAY_BPF_BIN=/usr/local/bin/overlay-bpf OVERLAY_BPF_PREVIOUS_BIN={PREVIOUS_IN_GUEST} \
             /opt/tests/{n}{skip}{extra}"
        );
        let out = match vm.step(&cmd, Duration::from_secs(1800), |l| say(&tag, l)) {
            Ok(out) => out,
            // Software emulation (TCG) can run a stale copy of kernel code the
            // other vCPU is live-patching (a static key), and the guest dies
            // of an int3 Oops that no program caused. Once per run, that test
            // binary runs again in a fresh VM; any other death fails the run.
            Err(e) if emulator_crashes == 0 && emulator_int3(&spec.log) => {
                emulator_crashes += 1;
                say(&tag, &format!("{n}: the guest died of the emulator's int3 Oops ({e:#}); once more in a fresh VM"));
                let saved = spec.log.with_extension("crash.log");
                let _ = std::fs::copy(&spec.log, &saved);
                say(&tag, &format!("the crashed guest's console: {}", saved.display()));
                vm = boot()?;
                vm.step(&cmd, Duration::from_secs(1800), |l| say(&tag, l))?
            }
            Err(e) => return Err(e),
        };
        for l in &out.output {
            if let Some((p, f)) = crate::util::test_counts(l) {
                passed += p;
                failed += f;
            }
        }
        say(&tag, &format!("{n}: {} ({:.1}s)", out.status, t.elapsed().as_secs_f64()));
        if !out.passed {
            broken.push(n.clone());
        }
    }
    if !broken.is_empty() {
        bail!("{passed} passed, {failed} failed on {}: {} failed", k.release, broken.join(", "));
    }
    Ok((passed, failed))
}

/// Whether the guest's console shows the int3 Oops of a kernel text patch
/// that software emulation let the other vCPU run into (netif_rx_internal,
/// seen on 6.12 under TCG with no BPF frame on the stack).
fn emulator_int3(console: &Path) -> bool {
    std::fs::read_to_string(console).is_ok_and(|c| c.contains("Oops: int3") && c.contains("Kernel panic"))
}
