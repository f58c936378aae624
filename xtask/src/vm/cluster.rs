//! `cargo xtask run`: the example cluster on 3 VMs per kernel. Each VM is one
//! cluster host whose NIC (virtio, eth0) is on a shared L2; `overlay-bpf up`
//! runs on it with examples/cluster.yaml, and the containers are namespaces
//! inside the VMs. The host itself is the outside client of the routing mesh,
//! on the same L2. Then the same VMs run examples/encrypted.yaml, whose
//! service network is encrypted (WireGuard, which this machine's kernel
//! lacks): the same checks over it, and a capture of the L2 that must not
//! show what crossed it.

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
    demo::checks::{self, Check},
    util::{catch_signals, check_interrupt, is_root, output, root, step},
};

use checks::CLIENT;
/// The host programs the guests need besides busybox: nft for the
/// masquerade rule `up` installs.
const GUEST_PROGRAMS: &[&str] = &["/usr/sbin/nft"];
const STATE: &str = "/etc/obvm/cluster.yaml";
const ENCRYPTED: &str = "/etc/obvm/encrypted.yaml";

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
        tree.copy(ENCRYPTED, &root().join("examples/encrypted.yaml"))?;
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
    let mut names: Vec<String> = Vec::new();
    for (_, r) in &results {
        for c in r.iter().flatten() {
            if !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
    }
    let w = names.iter().map(String::len).max().unwrap_or(0).max(5);
    println!();
    println!("{:<w$} {}", "check", kernels.iter().map(|k| format!("{:<28}", k.release)).collect::<String>());
    let mut failed = 0;
    for n in &names {
        let mut row = format!("{n:<w$} ");
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
    let hosts = checks::hosts(state)?;
    let eps = checks::endpoints(resolved)?;
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

    let mut vm_cluster = Vms { series, lab: &lab_name, vms: &mut vms };
    checks::run(&mut vm_cluster, resolved, &hosts, &mut |c| check(c.name, c.passed, c.detail))?;
    check_interrupt()?;
    let made: BTreeSet<String> = eps.iter().map(|e| e.netns.clone()).collect();
    encrypted(series, &lab_name, &mut vms, &hosts, &made, &mut |c| check(c.name, c.passed, c.detail))?;
    drop(vms);
    drop(lab);
    Ok(checks)
}

/// The encrypted example on the same VMs: each host's key pair made and
/// every public key put in every host's copy of the file (`host key`, then
/// `host key NAME --set KEY`), `up`, the demo's checks again (the service
/// network now encrypted), and a capture of the L2 while a marker crosses
/// hosts over the encrypted network and another over the plain one.
fn encrypted(
    series: &str,
    lab: &str,
    vms: &mut [Vm],
    hosts: &[checks::Host],
    made: &BTreeSet<String>,
    record: &mut dyn FnMut(Check),
) -> Result<()> {
    let mut check =
        |name: &str, passed: bool, detail: String| record(Check { name: format!("encrypted: {name}"), passed, detail });
    say(series, "examples/encrypted.yaml: the service network encrypted (WireGuard between the hosts)");
    let keys = on_all(vms, |vm| -> Result<String> {
        vm.must(&format!("overlay-bpf down --host {}", vm.name), STEP)?;
        let out = vm.must(&format!("overlay-bpf host key --state {ENCRYPTED} --host {}", vm.name), STEP)?;
        out.iter()
            .map(|l| l.trim())
            .find(|l| l.len() == 44 && l.ends_with('='))
            .map(str::to_string)
            .with_context(|| format!("{}: host key printed no key: {out:?}", vm.name))
    });
    let keys: Vec<String> = match keys.into_iter().collect::<Result<Vec<_>>>() {
        Ok(k) => k,
        Err(e) => {
            check("keys: host key on every VM", false, format!("{e:#}"));
            return Ok(());
        }
    };
    let names: Vec<String> = vms.iter().map(|v| v.name.clone()).collect();
    for (n, k) in names.iter().zip(&keys) {
        say(series, &format!("{n}: WireGuard public key {k}"));
    }
    let resolved = on_all(vms, |vm| -> Result<Option<Value>> {
        let me = vm.name.clone();
        for (n, k) in names.iter().zip(&keys).filter(|(n, _)| **n != me) {
            vm.must(&format!("overlay-bpf host key {n} --set {k} --state {ENCRYPTED}"), STEP)?;
        }
        if vm.name != names[0] {
            return Ok(None);
        }
        Ok(Some(json_step(vm, &format!("overlay-bpf validate -o json --state {ENCRYPTED}"))?))
    });
    let resolved = match resolved.into_iter().collect::<Result<Vec<_>>>() {
        Ok(r) => r.into_iter().flatten().next().context("node1's validate")?,
        Err(e) => {
            check("keys: every host's public key in every copy of the file", false, format!("{e:#}"));
            return Ok(());
        }
    };
    check("keys: every host's public key in every copy of the file", true, String::new());
    let eps = checks::endpoints(&resolved)?;
    let ups = on_all(vms, |vm| -> Result<()> {
        let new: BTreeSet<&str> =
            eps.iter().filter(|e| e.host == vm.name && !made.contains(&e.netns)).map(|e| e.netns.as_str()).collect();
        if !new.is_empty() {
            vm.must(&format!("mkns {}", new.into_iter().collect::<Vec<_>>().join(" ")), STEP)?;
        }
        vm.must(&format!("overlay-bpf up --state {ENCRYPTED} --host {}", vm.name), STEP)?;
        Ok(())
    });
    let errors: Vec<String> = ups.iter().filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}"))).collect();
    check("up: overlay-bpf up on every VM", errors.is_empty(), errors.join("; "));
    if !errors.is_empty() {
        return Ok(());
    }
    let mut cluster = Vms { series, lab, vms };
    // The first packet between two hosts waits for their WireGuard handshake
    // (Curve25519, slow under emulation, every pair at once). The checks
    // start once every host has handshaked with every other, as each host's
    // WireGuard reports it, not after a guess at how long that takes:
    // pings across hosts (their outcome not a check) start the handshakes.
    let warm: Vec<checks::Ping> = eps
        .iter()
        .flat_map(|a| eps.iter().map(move |b| (a, b)))
        .filter(|(a, b)| a.host != b.host && a.network == b.network && a.network == "uber-svc")
        .map(|(a, b)| checks::Ping { host: a.host.clone(), netns: a.netns.clone(), ip: b.ip.clone(), want: true })
        .collect();
    let peers = names.len() * (names.len() - 1) / 2;
    let (done, detail) = handshakes(&mut cluster, &warm, &names, &keys, HANDSHAKES)?;
    check(&format!("wireguard: every pair of hosts handshaked ({peers} pairs)"), done, detail);
    checks::run(&mut cluster, &resolved, hosts, &mut |c| check(&c.name, c.passed, c.detail))?;
    check_interrupt()?;

    // On the wire: an HTTP request whose path is a marker, across hosts
    // over each network, captured on the VMs' L2 from this machine.
    let find = |name: &str| eps.iter().find(|e| e.name == name).with_context(|| format!("endpoint {name}"));
    let (client, web1, db1, db2) = (find("client")?, find("web.1")?, find("db.1")?, find("db.2")?);
    checks::Cluster::serve(&mut cluster, &[db2])?;
    let pcap = super::work_dir().join(format!("run-{series}-wire.pcap"));
    let _ = std::fs::remove_file(&pcap);
    let mut cap = Command::new("ip")
        .args(["netns", "exec", lab, "tcpdump", "-i", "br0", "-U", "-s", "0", "-w"])
        .arg(&pcap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("tcpdump on the VMs' L2")?;
    std::thread::sleep(Duration::from_secs(2));
    let secret = format!("SECRET-MARKER-{series}");
    let plain = format!("PLAIN-MARKER-{series}");
    let a = checks::Cluster::get_inside(&mut cluster, client, &format!("http://{}/?{secret}", web1.ip), 1)?;
    let b = checks::Cluster::get_inside(&mut cluster, db1, &format!("http://{}/?{plain}", db2.ip), 1)?;
    std::thread::sleep(Duration::from_secs(1));
    let _ = cap.kill();
    let _ = cap.wait();
    let wire = std::fs::read(&pcap).unwrap_or_default();
    let seen = |m: &str| wire.windows(m.len()).any(|w| w == m.as_bytes());
    say(
        series,
        &format!(
            "capture of the L2 ({} bytes, {}): GET /?{secret} client -> web.1 over uber-svc (encrypted): {}; GET \
             /?{plain} db.1 -> db.2 over backend (plain): {}",
            wire.len(),
            pcap.display(),
            if seen(&secret) { "READABLE" } else { "not on the wire" },
            if seen(&plain) { "readable" } else { "NOT SEEN" }
        ),
    );
    check(
        "wire: the plain network's request readable in the capture (the capture works)",
        seen(&plain) && b.iter().all(Option::is_some),
        format!("marker seen: {}, answered: {b:?}", seen(&plain)),
    );
    check(
        "wire: the encrypted network's request not in the capture",
        !seen(&secret) && a.iter().all(Option::is_some),
        format!("marker seen: {}, answered: {a:?}", seen(&secret)),
    );
    Ok(())
}

/// The JSON a guest's command prints (`-o json`), from its first `{` line on.
fn json_step(vm: &mut Vm, command: &str) -> Result<Value> {
    let out = vm.must(command, STEP)?;
    let json = out.iter().skip_while(|l| !l.starts_with('{')).cloned().collect::<Vec<_>>().join("\n");
    serde_json::from_str(&json).with_context(|| format!("{command}: {json}"))
}

/// How long the hosts' WireGuard handshakes may take: a bound on a failure,
/// never a wait (the checks start as soon as every pair has handshaked).
const HANDSHAKES: Duration = Duration::from_secs(180);

/// Waits until every host's WireGuard reports a handshake with every other
/// host (`overlay-bpf status -o json`), pinging across hosts each round so
/// that the handshakes start; at most `bound`. (every pair done, detail).
fn handshakes(
    cluster: &mut Vms,
    warm: &[checks::Ping],
    names: &[String],
    keys: &[String],
    bound: Duration,
) -> Result<(bool, String)> {
    let t = Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let _ = checks::Cluster::pings(cluster, warm)?;
        let waiting = on_all(cluster.vms, |vm| -> Result<Vec<String>> {
            let status = json_step(vm, &format!("overlay-bpf status -o json --host {}", vm.name))?;
            let peers = status["wireguard"]["peers"].as_array().cloned().unwrap_or_default();
            let me = vm.name.clone();
            Ok(names
                .iter()
                .zip(keys)
                .filter(|(n, _)| **n != me)
                .filter(|(_, k)| !peers.iter().any(|p| p["public_key"] == k.as_str() && p["last_handshake"].is_u64()))
                .map(|(n, _)| format!("{me} with {n}"))
                .collect())
        });
        let waiting: Vec<String> = waiting.into_iter().collect::<Result<Vec<_>>>()?.concat();
        if waiting.is_empty() {
            let line = format!(
                "WireGuard: every pair of hosts handshaked, after {:.1}s and {rounds} rounds of pings",
                t.elapsed().as_secs_f64()
            );
            say(cluster.series, &line);
            return Ok((true, line));
        }
        if t.elapsed() > bound {
            return Ok((
                false,
                format!("no handshake after {:.0}s: {}", t.elapsed().as_secs_f64(), waiting.join(", ")),
            ));
        }
        check_interrupt()?;
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The demo's hosts as VMs: containers are namespaces inside them, the
/// outside client is this machine's end of the lab bridge.
struct Vms<'a> {
    series: &'a str,
    lab: &'a str,
    vms: &'a mut [Vm],
}

impl Vms<'_> {
    fn vm(&mut self, host: &str) -> Result<&mut Vm> {
        self.vms.iter_mut().find(|v| v.name == host).with_context(|| format!("no VM for host {host}"))
    }
}

impl checks::Cluster for Vms<'_> {
    fn say(&self, line: &str) {
        say(self.series, line);
    }

    fn pings(&mut self, pings: &[checks::Ping]) -> Result<Vec<bool>> {
        let outputs: Vec<Result<Vec<String>>> = on_all(self.vms, |vm| {
            let triples: Vec<String> = pings
                .iter()
                .filter(|p| p.host == vm.name)
                .map(|p| format!("{} {} {}", p.netns, p.ip, if p.want { "ok" } else { "blocked" }))
                .collect();
            if triples.is_empty() {
                return Ok(Vec::new());
            }
            // `pings` fails when an outcome is not the wanted one: the lines say which.
            Ok(vm.step(&format!("pings {}", triples.join(" ")), STEP, |_| {})?.output)
        });
        let mut seen = BTreeMap::new();
        for out in outputs {
            for l in out? {
                if let ["PING", ns, ip, got, _] = l.split_whitespace().collect::<Vec<_>>()[..] {
                    seen.insert((ns.to_string(), ip.to_string()), got == "got=ok");
                }
            }
        }
        Ok(pings.iter().map(|p| seen.get(&(p.netns.clone(), p.ip.clone())).copied().unwrap_or(false)).collect())
    }

    fn serve(&mut self, webs: &[&checks::Ep]) -> Result<()> {
        let served = on_all(self.vms, |vm| -> Result<()> {
            let mine: Vec<&&checks::Ep> = webs.iter().filter(|w| w.host == vm.name).collect();
            for w in mine {
                vm.must(&format!("serve {} {}", w.netns, w.name), STEP)?;
            }
            Ok(())
        });
        served.into_iter().collect()
    }

    fn get_outside(&mut self, url: &str) -> Result<Option<String>> {
        let out =
            Command::new("ip").args(["netns", "exec", self.lab, "curl", "-s", "--max-time", "5", url]).output()?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }

    fn get_inside(&mut self, ep: &checks::Ep, url: &str, n: usize) -> Result<Vec<Option<String>>> {
        let vm = self.vm(&ep.host)?;
        // One line per request: "GET <body>", the body empty when nothing answered.
        let out = vm.step(
            &format!("for i in $(seq {n}); do echo \"GET $(get {} {url} 2>/dev/null)\"; done", ep.netns),
            STEP,
            |_| {},
        )?;
        let mut answers: Vec<Option<String>> = out
            .output
            .iter()
            .filter_map(|l| l.strip_prefix("GET"))
            .map(|b| Some(b.trim().to_string()).filter(|b| !b.is_empty()))
            .collect();
        answers.resize(n, None);
        Ok(answers)
    }
}
