//! `cargo xtask run`: a 3-host cluster on this machine, each host a network
//! namespace on a shared underlay bridge, brought up from examples/cluster.yaml.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{
    build, setup,
    util::{is_root, output, root, step},
};

#[path = "../../tests/src/testbed.rs"]
mod testbed;
use testbed::{Deployment, Netns, Underlay};

const PREFIX: &str = "obdemo";
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM set a flag; the demo stops at its next step and its
/// guards tear everything down.
fn catch_signals() {
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; tearing down");
    }
    Ok(())
}

/// Namespaces a cluster made by `cargo xtask run --keep` left behind.
fn leftover_namespaces() -> Vec<String> {
    output(Command::new("ip").args(["netns", "list"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{PREFIX}-")))
        .map(str::to_string)
        .collect()
}

pub fn run(keep: bool, clean: bool) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask run` creates namespaces and loads eBPF programs: run it as root (sudo -E cargo xtask run)");
    }
    if clean {
        return teardown_leftovers();
    }
    let t0 = Instant::now();
    setup::setup()?;
    let bin = build::build(false)?;
    catch_signals();
    teardown_leftovers()?;
    let state = root().join("examples/cluster.yaml");

    // What the example asks for, as overlay-bpf itself resolves it.
    let resolved: serde_json::Value =
        serde_json::from_str(&output(Command::new(&bin).args(["validate", "-o", "json", "--state"]).arg(&state))?)?;
    let hosts = [
        ("node1", Ipv4Addr::new(192, 168, 100, 11)),
        ("node2", Ipv4Addr::new(192, 168, 100, 12)),
        ("node3", Ipv4Addr::new(192, 168, 100, 13)),
    ];

    step("run: creating 3 hosts (namespaces obdemo-node1..3) on an underlay bridge");
    let underlay = Underlay::new(PREFIX, &hosts);
    let mut containers: Vec<Netns> = Vec::new();
    for e in resolved["endpoints"].as_array().context("endpoints")? {
        let ns = e["netns"].as_str().context("netns")?.trim_start_matches("/run/netns/").to_string();
        if !containers.iter().any(|c| c.name == ns) {
            containers.push(Netns::new(&ns));
        }
    }
    let mut dep = Deployment::new(&bin);
    for (h, _) in &hosts {
        check_interrupt()?;
        step(&format!("run: overlay-bpf up --state examples/cluster.yaml --host {h} --netns {PREFIX}-{h}"));
        let out = dep.up(&state, h, &format!("{PREFIX}-{h}"));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!("overlay-bpf up failed for {h}");
        }
    }

    check_interrupt()?;
    step("run: traffic for the counters: web.1 pings its gateway; node2 sends VXLAN-port UDP to node1");
    let web1 = containers.iter().find(|c| c.name == "obdemo-web1").context("web1 netns")?;
    let _ = web1.run("ping", &["-c", "2", "-W", "1", "-i", "0.2", "10.0.0.1"]);
    // A bare UDP datagram to node1's VXLAN port, from node2.
    let node2 = underlay.host("node2");
    let _ = node2.run("bash", &["-c", "echo hello-vxlan > /dev/udp/192.168.100.11/4789"]);
    let _ = node2.run("ping", &["-c", "1", "-W", "1", "192.168.100.11"]);

    step("run: overlay-bpf status --host node1");
    let out = dep.cmd("node1", &format!("{PREFIX}-node1")).arg("status").output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));

    step("run: bpftool map dump pinned /sys/fs/bpf/overlay-bpf/node1/maps/OB_ENDPOINTS_V1 (first entries)");
    let dump = output(Command::new("bpftool").args([
        "map",
        "dump",
        "pinned",
        "/sys/fs/bpf/overlay-bpf/node1/maps/OB_ENDPOINTS_V1",
    ]))?;
    for l in dump.lines().take(24) {
        println!("{l}");
    }
    step("run: the container side of web.1 (ip -n obdemo-web1 addr show eth0)");
    print!("{}", web1.ip(&["-br", "addr", "show", "dev", "eth0"]));

    if keep {
        std::mem::forget(dep);
        std::mem::forget(containers);
        std::mem::forget(underlay);
        step("run: left running (--keep); remove it with `cargo xtask run --clean`");
    } else {
        step("run: tearing down (overlay-bpf down on each host, namespaces removed)");
        drop(dep);
        drop(containers);
        drop(underlay);
        let left = leftover_namespaces();
        if !left.is_empty() {
            bail!("namespaces left after teardown: {}", left.join(" "));
        }
    }
    step(&format!("run: done in {:.1}s", t0.elapsed().as_secs_f64()));
    Ok(())
}

/// Removes what an earlier `--keep` (or a killed run) left: hosts taken down
/// with overlay-bpf, then the namespaces, by name.
fn teardown_leftovers() -> Result<()> {
    let bin = root().join("target/debug/overlay-bpf");
    for h in ["node1", "node2", "node3"] {
        let ns = format!("{PREFIX}-{h}");
        // Only a demo host (its namespace exists) is touched: a real node1 on
        // this machine keeps its pins.
        if !Path::new("/run/netns").join(&ns).exists() {
            continue;
        }
        if bin.exists() {
            let _ = Command::new(&bin).args(["--host", h, "--netns", &ns, "down"]).output();
        }
        let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf/overlay-bpf").join(h));
    }
    for ns in leftover_namespaces() {
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    }
    Ok(())
}
