//! VMs on Debian's own kernels: `cargo xtask run` boots a 3-host cluster per
//! kernel, and `cargo xtask test` runs the kernel tests in one VM per kernel.
//!
//! Everything lives under `target/vm`: the kernels (downloaded once), the
//! initramfs images (rebuilt every run, a second or two) and the consoles'
//! logs (`target/vm/logs`).

pub mod cluster;
pub mod image;
pub mod kernel;
pub mod qemu;
pub mod tier;

use std::{path::PathBuf, thread::JoinHandle};

use anyhow::{bail, Result};

use self::{
    image::Tree,
    kernel::Kernel,
    qemu::{detect_accel, Accel},
};
use crate::util::{root, step};

const INIT: &str = include_str!("init.sh");
/// busybox-static's binary.
const BUSYBOX_HOST: &str = "/bin/busybox";

pub fn work_dir() -> PathBuf {
    root().join("target/vm")
}

pub fn logs_dir() -> Result<PathBuf> {
    let d = work_dir().join("logs");
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// The kernels `--kernel` names ("6.1", "6.12"), fetched once.
pub fn kernels(series: &[String]) -> Result<Vec<Kernel>> {
    let registry = kernel::packages_in_registry().unwrap_or_default();
    let mut out = Vec::new();
    for s in series {
        let ok =
            s.split('.').count() == 2 && s.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            bail!("--kernel {s}: give a Debian kernel series such as 6.1 or 6.12 (comma-separated for several)");
        }
        let k = kernel::fetch(s, &registry)?;
        step(&format!("vm: kernel {} -> {}", s, k.release));
        out.push(k);
    }
    if out.is_empty() {
        bail!("--kernel names no kernel; give a series such as 6.1 or 6.12");
    }
    Ok(out)
}

/// One line of a kernel's (or VM's) progress, prefixed with `tag` so runs on
/// several kernels at once stay readable (println! writes the line whole).
pub fn say(tag: &str, msg: &str) {
    println!("[{tag}] {msg}");
}

/// busybox, the init and `kernel`'s modules: what every guest has; with the
/// number of modules.
pub fn base_tree(kernel: &Kernel) -> Result<(Tree, usize)> {
    let mut t = Tree::new(std::path::Path::new(BUSYBOX_HOST))?;
    t.file("/init", 0o755, INIT.as_bytes().to_vec());
    let mut order = String::new();
    for (name, ko) in kernel.modules_to_load()? {
        t.file(&format!("/lib/modules/obvm/{name}.ko"), 0o644, ko);
        order += &name;
        order.push('\n');
    }
    let count = order.lines().count();
    t.file("/etc/obvm/modules", 0o644, order.into_bytes());
    Ok((t, count))
}

/// Starts the KVM probe in the background (it may take a few seconds to
/// fail); join it when the accelerator is needed.
pub fn probe_accel(kernel: &Kernel) -> Result<JoinHandle<Accel>> {
    let mut t = Tree::new(std::path::Path::new(BUSYBOX_HOST))?;
    t.file("/init", 0o755, INIT.as_bytes().to_vec());
    t.file("/etc/obvm/modules", 0o644, Vec::new());
    let image = work_dir().join("probe.cpio");
    t.write_cpio(&image)?;
    let (kernel, logs) = (kernel.clone(), logs_dir()?);
    Ok(std::thread::spawn(move || detect_accel(&kernel, &image, &logs)))
}
