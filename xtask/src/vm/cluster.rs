//! `cargo xtask run`: the example cluster on 3 VMs per kernel. Each VM is one
//! cluster host whose NIC (virtio, eth0) is on a shared L2; `overlay-bpf up`
//! runs on it with examples/cluster.yaml, and the containers are namespaces
//! inside the VMs. The host itself is the outside client of the routing mesh,
//! on the same L2.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{
    kernel::Kernel,
    qemu::{Accel, Lab, NetSpec, Vm, VmSpec},
    say,
};
use crate::{
    build,
    util::{catch_signals, check_interrupt, is_root, output, root, step},
};

/// The outside client's address: the lab bridge's, on the host.
const CLIENT: &str = "192.168.100.100";
/// The host programs the guests need besides busybox: nft for the
/// masquerade rule `up` installs.
const GUEST_PROGRAMS: &[&str] = &["/usr/sbin/nft"];
const STATE: &str = "/etc/obvm/cluster.yaml";

/// One check's outcome on one kernel.
#[derive(Clone)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

pub fn run(series: &[String]) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask run` creates taps, namespaces and VMs: run it as root (sudo -E cargo xtask run)");
    }
    let t0 = Instant::now();
    crate::setup::setup()?;
    catch_signals();
    let kernels = super::kernels(series)?;
    let probe = super::probe_accel(&kernels[0])?;
    let bin = build::build_static()?;
    let state = root().join("examples/cluster.yaml");
    let resolved: Value =
        serde_json::from_str(&output(Command::new(&bin).args(["validate", "-o", "json", "--state"]).arg(&state))?)?;

    let mut images = Vec::new();
    for k in &kernels {
        let t = Instant::now();
        let (mut tree, modules) = super::base_tree(k)?;
        tree.copy("/usr/local/bin/overlay-bpf", &bin)?;
        for p in GUEST_PROGRAMS {
            tree.host_program(Path::new(p))?;
        }
        tree.copy(STATE, &state)?;
        let image = super::work_dir().join(format!("run-{}.cpio", k.release));
        let size = tree.write_cpio(&image)?;
        step(&format!(
            "vm: image for {} ({:.1} MB: busybox, init, {} modules, overlay-bpf, nft) in {:.1}s",
            k.release,
            size as f64 / 1e6,
            modules,
            t.elapsed().as_secs_f64()
        ));
        images.push(image);
    }
    let accel = probe.join().map_err(|_| anyhow::anyhow!("the KVM probe panicked"))?;
    step(&format!("vm: accelerator: {}", accel.describe()));
    check_interrupt()?;

    let results: Vec<(Kernel, Result<Vec<Check>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = kernels
            .iter()
            .zip(&images)
            .map(|(k, img)| {
                let (resolved, state) = (&resolved, &state);
                s.spawn(move || cluster_on(k, img, accel, resolved, state))
            })
            .collect();
        kernels
            .iter()
            .cloned()
            .zip(handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))))
            .collect()
    });

    if crate::util::interrupted() {
        bail!("interrupted: the VMs are stopped and their lab namespaces removed");
    }
    // The summary: one line per kernel and check.
    println!();
    println!("{:<52} {}", "check", kernels.iter().map(|k| format!("{:<28}", k.release)).collect::<String>());
    let mut names: Vec<String> = Vec::new();
    for (_, r) in &results {
        for c in r.iter().flatten() {
            if !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
    }
    let mut failed = 0;
    for n in &names {
        let mut row = format!("{n:<52} ");
        for (_, r) in &results {
            let cell = match r.as_ref().ok().and_then(|cs| cs.iter().find(|c| &c.name == n)) {
                Some(c) if c.passed => "PASS",
                Some(_) => "FAIL",
                None => "not run",
            };
            row += &format!("{cell:<28}");
        }
        println!("{row}");
    }
    for (k, r) in &results {
        match r {
            Ok(cs) => {
                for c in cs.iter().filter(|c| !c.passed) {
                    failed += 1;
                    println!("FAIL {} {}: {}", k.release, c.name, c.detail);
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {}: {e:#}", k.release);
            }
        }
    }
    let total: usize = results.iter().map(|(_, r)| r.as_ref().map(|c| c.len()).unwrap_or(0)).sum();
    println!(
        "vm run: {} of {total} checks passed on {} ({}) in {:.1}s, accelerator {}",
        total.saturating_sub(failed),
        if kernels.len() == 1 { "1 kernel".to_string() } else { format!("{} kernels", kernels.len()) },
        kernels.iter().map(|k| k.release.as_str()).collect::<Vec<_>>().join(", "),
        t0.elapsed().as_secs_f64(),
        accel.qemu_name()
    );
    println!("consoles: {}", super::logs_dir()?.display());
    if failed > 0 {
        bail!("{failed} checks failed");
    }
    Ok(())
}

/// A cluster host as the example state names it.
struct Host {
    name: String,
    addr: String,
}

/// An endpoint of the resolved state.
struct Ep {
    name: String,
    host: String,
    network: String,
    netns: String,
    ip: String,
}

fn endpoints(resolved: &Value) -> Result<Vec<Ep>> {
    resolved["endpoints"]
        .as_array()
        .context("validate -o json: endpoints")?
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().map(str::to_string).with_context(|| format!("endpoint field {k}"));
            Ok(Ep {
                name: s("name")?,
                host: s("host")?,
                network: s("network")?,
                netns: s("netns")?.trim_start_matches("/run/netns/").to_string(),
                ip: s("ip")?,
            })
        })
        .collect()
}

/// The state file's hosts (`validate` resolves endpoints, not hosts).
fn hosts(state: &Path) -> Result<Vec<Host>> {
    let v: Value = serde_yaml::from_str(&std::fs::read_to_string(state)?)
        .with_context(|| format!("{} is not YAML", state.display()))?;
    v["hosts"]
        .as_array()
        .with_context(|| format!("{}: no hosts", state.display()))?
        .iter()
        .map(|h| {
            Ok(Host {
                name: h["name"].as_str().context("host name")?.to_string(),
                addr: h["address"].as_str().context("host address")?.to_string(),
            })
        })
        .collect()
}

/// Runs `f` on every VM at once.
fn on_all<T: Send>(vms: &mut [Vm], f: impl Fn(&mut Vm) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = vms.iter_mut().map(|vm| s.spawn(move || f(vm))).collect();
        hs.into_iter().map(|h| h.join().expect("VM thread")).collect()
    })
}

const STEP: Duration = Duration::from_secs(180);

fn cluster_on(k: &Kernel, image: &Path, accel: Accel, resolved: &Value, state: &Path) -> Result<Vec<Check>> {
    let series = k.series.as_str();
    let hosts = hosts(state)?;
    let eps = endpoints(resolved)?;
    let mut checks = Vec::new();
    let mut check = |name: String, passed: bool, detail: String| {
        say(series, &format!("result: {} {name}: {}", k.release, if passed { "PASS" } else { "FAIL" }));
        if !passed {
            say(series, &format!("  {detail}"));
        }
        checks.push(Check { name, passed, detail });
    };

    let lab_name = format!("obvm-run-{series}");
    let lab = Lab::new(&lab_name, hosts.len(), &format!("{CLIENT}/24"));
    let logs = super::logs_dir()?;
    say(series, &format!("booting {} VMs on {} ({})", hosts.len(), k.release, accel.qemu_name()));
    let specs: Vec<VmSpec> = hosts
        .iter()
        .zip(&lab.taps)
        .enumerate()
        .map(|(i, (h, tap))| VmSpec {
            name: h.name.clone(),
            kernel: k.clone(),
            image: image.to_path_buf(),
            accel,
            memory_mb: 512,
            cpus: 1,
            net: Some(NetSpec {
                lab: lab_name.clone(),
                tap: tap.clone(),
                mac: format!("52:54:00:0b:{:02x}:{:02x}", k.series.len(), i + 1),
                ip_cidr: format!("{}/24", h.addr),
            }),
            extra_cmdline: String::new(),
            log: logs.join(format!("run-{}-{}.log", k.release, h.name)),
        })
        .collect();
    // Started from this thread, which outlives them (see Vm::spawn).
    let mut vms = specs.iter().map(Vm::spawn).collect::<Result<Vec<Vm>>>()?;
    let booted = on_all(&mut vms, |vm| vm.wait_ready(STEP));
    let mut boot_errors = Vec::new();
    for (vm, b) in vms.iter().zip(booted) {
        match b {
            Ok(()) => say(series, &format!("{}: booted, uname -r {} ({:.1}s)", vm.name, vm.release, vm.boot_secs)),
            Err(e) => boot_errors.push(format!("{e:#}")),
        }
    }
    let releases: BTreeSet<&str> = vms.iter().map(|v| v.release.as_str()).collect();
    check(
        format!("boot: {} VMs, uname -r", hosts.len()),
        boot_errors.is_empty() && releases.len() == 1 && releases.contains(k.release.as_str()),
        format!("{boot_errors:?}, releases {releases:?}"),
    );
    if !boot_errors.is_empty() {
        return Ok(checks);
    }
    check_interrupt()?;

    // overlay-bpf up on every VM, with the namespaces of its endpoints.
    let ups = on_all(&mut vms, |vm| -> Result<Vec<String>> {
        let ns: BTreeSet<&str> = eps.iter().filter(|e| e.host == vm.name).map(|e| e.netns.as_str()).collect();
        if !ns.is_empty() {
            vm.must(&format!("mkns {}", ns.into_iter().collect::<Vec<_>>().join(" ")), STEP)?;
        }
        let t = Instant::now();
        let out = vm.must(&format!("overlay-bpf up --state {STATE} --host {}", vm.name), STEP)?;
        say(series, &format!("{}: overlay-bpf up done ({:.1}s)", vm.name, t.elapsed().as_secs_f64()));
        Ok(out)
    });
    let up_errors: Vec<String> = ups.iter().filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}"))).collect();
    if let Some(Ok(out)) = ups.iter().find(|r| r.is_ok()) {
        for l in out.iter().filter(|l| l.contains("TCX")) {
            say(series, &format!("  {l}"));
        }
    }
    check("up: overlay-bpf up on every VM".into(), up_errors.is_empty(), up_errors.join("; "));
    if !up_errors.is_empty() {
        return Ok(checks);
    }
    check_interrupt()?;

    // The overlay: every endpoint pings every endpoint in another namespace.
    let mut want = BTreeMap::new();
    for a in &eps {
        for b in &eps {
            if a.netns == b.netns {
                continue;
            }
            let may = eps.iter().any(|x| x.netns == a.netns && x.network == b.network);
            want.insert((a.netns.clone(), b.ip.clone()), (may, a.host != b.host));
        }
    }
    let got: Vec<Result<Vec<String>>> = on_all(&mut vms, |vm| {
        let triples: Vec<String> = want
            .iter()
            .filter(|((ns, _), _)| eps.iter().any(|e| &e.netns == ns && e.host == vm.name))
            .map(|((ns, ip), (may, _))| format!("{ns} {ip} {}", if *may { "ok" } else { "blocked" }))
            .collect();
        if triples.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vm.step(&format!("pings {}", triples.join(" ")), STEP, |_| {})?.output)
    });
    let mut seen = BTreeMap::new();
    for r in &got {
        for l in r.iter().flatten() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if let ["PING", ns, ip, got, _] = f[..] {
                seen.insert((ns.to_string(), ip.to_string()), got == "got=ok");
            }
        }
    }
    let (mut conn, mut across, mut conn_bad, mut iso, mut iso_bad) = (0, 0, Vec::new(), 0, Vec::new());
    for ((ns, ip), (may, cross)) in &want {
        let reached = seen.get(&(ns.clone(), ip.clone())).copied();
        if *may {
            conn += 1;
            across += *cross as usize;
            if reached != Some(true) {
                conn_bad.push(format!("{ns} -> {ip}: {}", if reached.is_none() { "not tried" } else { "no reply" }));
            }
        } else {
            iso += 1;
            if reached != Some(false) {
                iso_bad.push(format!("{ns} -> {ip}: {}", if reached.is_none() { "not tried" } else { "REACHED" }));
            }
        }
    }
    print_matrix(series, &eps, &seen);
    check(
        format!("overlay: connectivity ({conn} pairs, {across} across hosts)"),
        conn_bad.is_empty(),
        conn_bad.join(", "),
    );
    check(format!("overlay: isolation ({iso} pairs blocked)"), iso_bad.is_empty(), iso_bad.join(", "));
    check_interrupt()?;

    // The routing mesh, from outside the cluster: the host on the lab bridge.
    let webs: Vec<&Ep> = eps.iter().filter(|e| e.name.starts_with("web.") && e.network == "uber-svc").collect();
    let served = on_all(&mut vms, |vm| -> Result<()> {
        let mine: Vec<&&Ep> = webs.iter().filter(|w| w.host == vm.name).collect();
        for w in mine {
            vm.must(&format!("serve {} {}", w.netns, w.name), STEP)?;
        }
        Ok(())
    });
    if let Some(Err(e)) = served.into_iter().find(|r| r.is_err()) {
        check("mesh: HTTP servers in web.1..3".into(), false, format!("{e:#}"));
        return Ok(checks);
    }
    let (mut answered, mut asked, mut kept, mut backends) = (0, 0, true, BTreeSet::new());
    let mut wrong = Vec::new();
    for h in &hosts {
        let mut line = Vec::new();
        for _ in 0..6 {
            check_interrupt()?;
            asked += 1;
            let out = Command::new("ip")
                .args(["netns", "exec", &lab_name, "curl", "-s", "--max-time", "5"])
                .arg(format!("http://{}:8080/", h.addr))
                .output()?;
            let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match body.split_once(" saw ") {
                Some((backend, saw)) if out.status.success() => {
                    answered += 1;
                    backends.insert(backend.to_string());
                    if saw != CLIENT {
                        kept = false;
                        wrong.push(format!("{} saw {saw}", h.name));
                    }
                    line.push(format!("{backend}<-{saw}"));
                }
                _ => {
                    wrong.push(format!("{}: no answer", h.name));
                    line.push("NO ANSWER".into());
                }
            }
        }
        say(series, &format!("  curl http://{}:8080/ ({}) x6 from {CLIENT}: {}", h.addr, h.name, line.join(", ")));
    }
    check(format!("mesh: every host answers on :8080 ({asked} requests)"), answered == asked, wrong.join(", "));
    check("mesh: the client address kept".into(), kept && answered > 0, wrong.join(", "));
    check(
        format!("mesh: spread over backends ({} of {})", backends.len(), webs.len()),
        backends.len() > 1,
        format!("only {backends:?} answered"),
    );

    // The internal VIP, from a container.
    let vip = resolved["services"][0]["vip"].as_str().context("the example's service VIP")?.to_string();
    let client = eps.iter().find(|e| e.name == "client").context("the example's client endpoint")?;
    let vm = vms.iter_mut().find(|v| v.name == client.host).context("client's VM")?;
    let out =
        vm.step(&format!("for i in 1 2 3 4; do get {} http://{vip}/ || exit 1; done", client.netns), STEP, |_| {})?;
    let saw_client = out.output.iter().filter(|l| l.ends_with(&format!(" saw {}", client.ip))).count();
    say(series, &format!("  wget http://{vip}/ x4 from client ({}): {}", client.ip, out.output.join(", ")));
    check(
        "vip: the service VIP from a container (4 requests)".into(),
        out.passed && saw_client == 4,
        format!("{} ({})", out.status, out.output.join(" | ")),
    );
    drop(vms);
    drop(lab);
    Ok(checks)
}

fn print_matrix(series: &str, eps: &[Ep], seen: &BTreeMap<(String, String), bool>) {
    let w = eps.iter().map(|e| e.name.len()).max().unwrap_or(4).max(4);
    let mut head = format!("{:w$}  ", "");
    for b in eps {
        head += &format!("{:>w$} ", b.name);
    }
    say(series, &head);
    for a in eps {
        let mut row = format!("{:>w$}  ", a.name);
        for b in eps {
            let cell = match seen.get(&(a.netns.clone(), b.ip.clone())) {
                _ if a.netns == b.netns => "-",
                Some(true) => "ok",
                Some(false) => "x",
                None => "?",
            };
            row += &format!("{cell:>w$} ");
        }
        say(series, &row);
    }
}
