//! `cargo xtask bench`: release builds, then traffic between namespaces over
//! overlay-bpf and over the kernel's own VXLAN path (traffic.rs, load.rs),
//! per-packet costs through BPF_PROG_TEST_RUN (tests/benches/progs.rs) beside
//! empty programs, and `overlay-bpf up` times with growing states. Prints a table and writes
//! target/bench/report.json: {"rows": [{name, unit, overlay_bpf, baseline,
//! baseline_name, ratio, spread, samples}]}. No thresholds: a benchmark
//! measures, tests check.
//!
//! `--vm` runs the groups that need kernel modules this machine lacks
//! (encrypted.rs: WireGuard and ESP) inside a VM of a Debian kernel: the
//! image carries this xtask binary, which measures there (`guest-bench`)
//! and prints each row as an `OBROW` JSON line for the host to report
//! (target/bench/report-vm.json).

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{
    build,
    testbed::{Deployment, Netns, Underlay},
    util::{catch_signals, check_interrupt, is_root, root, step},
    vm,
};

mod dns;
mod encrypted;
mod load;
mod store;
mod traffic;

/// One row of the report.
struct Row {
    name: String,
    unit: &'static str,
    ours: Vec<f64>,
    baseline: Option<(String, Vec<f64>)>,
}

/// What a guest prints before each row's JSON.
const ROW_LINE: &str = "OBROW ";

impl Row {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "unit": self.unit,
            "samples": self.ours,
            "baseline": self.baseline.as_ref().map(|(n, s)| json!({"name": n, "samples": s})),
        })
    }

    fn from_json(v: &Value) -> Result<Row> {
        let samples = |v: &Value| -> Result<Vec<f64>> {
            Ok(v.as_array().context("samples")?.iter().filter_map(Value::as_f64).collect())
        };
        let unit = v["unit"].as_str().context("unit")?.to_string();
        Ok(Row {
            name: v["name"].as_str().context("name")?.to_string(),
            // A handful of rows per run.
            unit: Box::leak(unit.into_boxed_str()),
            ours: samples(&v["samples"])?,
            baseline: match &v["baseline"] {
                Value::Null => None,
                b => Some((b["name"].as_str().context("baseline name")?.to_string(), samples(&b["samples"])?)),
            },
        })
    }
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    s[s.len() / 2]
}

/// (max - min) / median, as a fraction.
fn spread(v: &[f64]) -> f64 {
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
    (hi - lo) / median(v)
}

/// `perf record -a -g` while `run` runs (at least `secs`), the symbols above
/// 1 % of the samples printed under `label`: where the CPU goes on a path.
pub(crate) fn profile(label: &str, secs: f64, run: impl FnOnce() -> Result<()>) -> Result<()> {
    let data = std::env::temp_dir().join("obbench-perf.data");
    let rec = Command::new("perf")
        .args(["record", "-a", "-g", "-o"])
        .arg(&data)
        .args(["--", "sleep", &format!("{}", secs.max(1.0))])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("perf record (Debian's linux-perf)")?;
    run()?;
    rec.wait_with_output()?;
    let rep = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "--sort", "sym", "-g", "none", "--percent-limit", "1", "-i"])
        .arg(&data)
        .output()
        .context("perf report")?;
    let _ = std::fs::remove_file(&data);
    for l in String::from_utf8_lossy(&rep.stdout).lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        println!("  profile {label:<30} {}", l.trim());
    }
    Ok(())
}

/// The groups `--vm` runs (and the only ones it can).
pub const VM_GROUPS: &[&str] = &["encrypted", "traffic"];

/// `vm`: the kernel series to measure in VMs instead; `perf`: a profile of
/// each path of the traffic and encrypted rows first.
pub fn bench(
    packets: u32,
    rounds: u32,
    secs: f64,
    only: &[String],
    store_sizes: &[u32],
    vm: Option<&[String]>,
    perf: bool,
) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask bench` loads eBPF programs and creates namespaces: run it as root");
    }
    if let Some(series) = vm {
        return vm_bench(series, rounds, secs, only, perf);
    }
    if only.iter().any(|g| g == "encrypted") {
        encrypted::supported().context("--only encrypted")?;
    }
    let want = |g: &str| only.is_empty() || only.iter().any(|o| o == g);
    let t0 = Instant::now();
    crate::setup::setup()?;
    catch_signals();
    let obj = build::build_ebpf()?;
    let bin = build::build(true)?;
    let mut rows = Vec::new();
    if want("traffic") {
        rows.extend(traffic::traffic(&bin, rounds, secs, perf)?);
    }
    check_interrupt()?;
    if want("packets") {
        rows.extend(per_packet(&obj, packets, rounds)?);
    }
    check_interrupt()?;
    if want("up") {
        rows.extend(up_times(&bin, rounds)?);
    }
    check_interrupt()?;
    if want("dns") {
        rows.extend(dns::rows(&bin, rounds, secs)?);
    }
    check_interrupt()?;
    // Not in the default set: minutes of etcd and agents at 100,000 endpoints.
    if only.iter().any(|o| o == "store") {
        rows.extend(store::rows(&bin, 20, store_sizes)?);
    }
    // Only when named: this machine's kernel has neither WireGuard nor ESP.
    if only.iter().any(|o| o == "encrypted") {
        rows.extend(encrypted::rows(&bin, rounds, secs, perf)?);
    }
    report(&rows, "report.json")?;
    step(&format!("bench: done in {:.1}s", t0.elapsed().as_secs_f64()));
    Ok(())
}

/// `--vm`: the VM groups (all of them unless `only` names some) measured
/// inside one VM per kernel, one kernel after another (each VM takes both
/// CPUs), under the same emulation for overlay-bpf and its baseline.
fn vm_bench(series: &[String], rounds: u32, secs: f64, only: &[String], perf: bool) -> Result<()> {
    if let Some(g) = only.iter().find(|g| !VM_GROUPS.contains(&g.as_str())) {
        bail!("--vm runs only {}; `--only {g}` runs on this machine (leave out --vm)", VM_GROUPS.join(", "));
    }
    let groups = if only.is_empty() { VM_GROUPS.join(",") } else { only.join(",") };
    let t0 = Instant::now();
    crate::setup::setup()?;
    catch_signals();
    build::build_ebpf()?;
    let bin = build::build(true)?;
    let kernels = vm::kernels(series)?;
    let accel = vm::probe_accel(&kernels[0])?.join().map_err(|_| anyhow::anyhow!("KVM probe panicked"))?;
    step(&format!("vm: accelerator: {}", accel.describe()));
    let strip_dir = vm::work_dir().join("stripped");
    let xtask = std::env::current_exe().context("this xtask binary")?;
    let programs = vec![
        ("/usr/local/bin/overlay-bpf".to_string(), vm::image::stripped(&bin, &strip_dir)?),
        ("/usr/local/bin/xtask".to_string(), vm::image::stripped(&xtask, &strip_dir)?),
        // Debian's linux-perf (setup installs it), for --profile.
        ("/usr/bin/perf".to_string(), std::path::PathBuf::from("/usr/bin/perf")),
    ];
    let mut rows = Vec::new();
    for k in &kernels {
        check_interrupt()?;
        let image = vm::tier::tools_image(k, "bench", &programs)?;
        let tag = format!("bench {}", k.series);
        let spec = vm::qemu::VmSpec {
            name: format!("bench-{}", k.series),
            kernel: k.clone(),
            image,
            accel,
            memory_mb: 3072,
            cpus: 2,
            net: None,
            extra_cmdline: String::new(),
            log: vm::logs_dir()?.join(format!("bench-{}.log", k.release)),
        };
        let mut guest = vm::qemu::Vm::boot(&spec, std::time::Duration::from_secs(300))?;
        vm::say(&tag, &format!("booted {} ({:.1}s, {})", guest.release, guest.boot_secs, accel.qemu_name()));
        let cmd = format!(
            "cd /tmp && /usr/local/bin/xtask guest-bench --bin /usr/local/bin/overlay-bpf --only {groups} --rounds {rounds} --secs {secs}{}",
            if perf { " --profile" } else { "" }
        );
        let out = guest.step(&cmd, std::time::Duration::from_secs(3600), |l| {
            if !l.starts_with(ROW_LINE) {
                vm::say(&tag, l)
            }
        })?;
        if !out.passed {
            bail!("the bench failed in the {} VM ({}; console: {})", k.release, out.status, spec.log.display());
        }
        for l in &out.output {
            if let Some(j) = l.strip_prefix(ROW_LINE) {
                let mut row = Row::from_json(&serde_json::from_str(j).with_context(|| format!("a guest row: {j}"))?)?;
                row.name = format!("{}@{}", row.name, k.series);
                rows.push(row);
            }
        }
    }
    report(&rows, "report-vm.json")?;
    step(&format!("bench: done in {:.1}s", t0.elapsed().as_secs_f64()));
    Ok(())
}

/// Inside a bench VM (`--vm`): the named groups, each row printed as a
/// ROW_LINE for the host; with `perf`, a profile of each path first.
pub fn guest(bin: &Path, only: &[String], rounds: u32, secs: f64, perf: bool) -> Result<()> {
    catch_signals();
    for g in only {
        let rows = match g.as_str() {
            "encrypted" => {
                encrypted::supported()?;
                encrypted::rows(bin, rounds, secs, perf)?
            }
            "traffic" => {
                if !traffic::has_ipvs() {
                    bail!("guest-bench: the guest kernel has no IPVS (/proc/net/ip_vs): the VM's traffic rows are for the mesh against IPVS");
                }
                traffic::traffic(bin, rounds, secs, perf)?
            }
            other => bail!("guest-bench: no group {other}"),
        };
        for r in rows {
            println!("{ROW_LINE}{}", r.to_json());
        }
    }
    Ok(())
}

/// The per-packet rows from the bench binary's JSON lines.
fn per_packet(obj: &Path, packets: u32, rounds: u32) -> Result<Vec<Row>> {
    let t = Instant::now();
    step(&format!("bench: per-packet costs, BPF_PROG_TEST_RUN, {packets} packets x {rounds} rounds per row"));
    let out = Command::new("cargo")
        .current_dir(root())
        .args(["bench", "-p", "tests", "--bench", "progs", "--"])
        .args(["--packets", &packets.to_string(), "--rounds", &rounds.to_string()])
        .env("OVERLAY_EBPF_OBJECT", obj)
        .stderr(Stdio::inherit())
        .output()
        .context("cargo bench -p tests --bench progs")?;
    if !out.status.success() {
        bail!("cargo bench -p tests --bench progs failed ({})", out.status);
    }
    let mut measured: Vec<(String, Vec<f64>)> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let name = v["name"].as_str().context("name")?.to_string();
        let samples: Vec<f64> = v["samples"].as_array().context("samples")?.iter().filter_map(Value::as_f64).collect();
        measured.push((name, samples));
    }
    let mut rows = Vec::new();
    for (name, samples) in &measured {
        if name.ends_with(".baseline") {
            continue;
        }
        let base = measured.iter().find(|(n, _)| *n == format!("{name}.baseline"));
        let baseline = base.map(|(_, s)| {
            let prog = if name.starts_with("tc_") { "empty TC program" } else { "empty XDP program" };
            (prog.to_string(), s.clone())
        });
        rows.push(Row { name: name.clone(), unit: "ns", ours: samples.clone(), baseline });
    }
    step(&format!("bench: per-packet rows done ({:.1}s)", t.elapsed().as_secs_f64()));
    Ok(rows)
}

/// A state with `endpoints` endpoints (two on the measured host, the rest on
/// two other hosts, so only map entries grow) and `services` services with a
/// published port and a VIP each.
fn state_yaml(p: &str, endpoints: u32, services: u32) -> String {
    let mut y = String::from("version: 1\ncluster: {vxlan_port: 4789, underlay_mtu: 1500}\nhosts:\n");
    for i in 1..=3 {
        y += &format!("  - {{name: {p}n{i}, address: 192.168.210.1{i}}}\n");
    }
    y += "networks:\n  - {name: front, vni: 5001, attachable: true, subnets: [{subnet: 10.64.0.0/16}]}\n";
    y += "endpoints:\n";
    for i in 0..endpoints {
        let host = if i < 2 { 1 } else { 2 + i % 2 };
        let ip = Ipv4Addr::new(10, 64, (1 + i / 250) as u8, (1 + i % 250) as u8);
        y += &format!("  - {{name: e{i}, host: {p}n{host}, network: front, netns: {p}-e{i}, ip: {ip}}}\n");
    }
    if services > 0 {
        y += "services:\n";
        for s in 0..services {
            // Eight backend lists: services with the same backends share a
            // Maglev table (256 tables at most).
            let backend = format!("e{}", s % 8.min(endpoints.max(1)));
            y += &format!(
                "  - {{name: s{s}, network: front, ports: [{{protocol: tcp, target: 80, published: {}}}], backends: [{backend}]}}\n",
                20000 + s
            );
        }
    }
    y
}

/// Wall time of `overlay-bpf up` for growing states, each from scratch, and
/// of re-applying the largest one unchanged.
fn up_times(bin: &Path, rounds: u32) -> Result<Vec<Row>> {
    let p = "obbu";
    step("bench: overlay-bpf up with 10, 1,000, 10,000 endpoints and 1, 100, 1,000 services");
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let u = Underlay::new(p, &[(&format!("{p}n1"), Ipv4Addr::new(192, 168, 210, 11))]);
    let host_ns = u.hosts[0].0.name.clone();
    let _containers: Vec<Netns> = (0..2).map(|i| Netns::new(&format!("{p}-e{i}"))).collect();
    let mut rows = Vec::new();
    let cases: Vec<(String, u32, u32)> = [10u32, 1_000, 10_000]
        .iter()
        .map(|&n| (format!("up_s_{n}_endpoints"), n, 1))
        .chain([1u32, 100, 1_000].iter().map(|&s| (format!("up_s_{s}_services"), 1_000, s)))
        .collect();
    for (name, n, s) in cases {
        check_interrupt()?;
        let file = dir.join(format!("state-{n}-{s}.yaml"));
        std::fs::write(&file, state_yaml(p, n, s))?;
        let mut samples = Vec::new();
        let mut reapply = Vec::new();
        for _ in 0..rounds {
            let mut dep = Deployment::new(bin);
            let t = Instant::now();
            let out = dep.up(&file, &format!("{p}n1"), &host_ns);
            samples.push(t.elapsed().as_secs_f64());
            if !out.status.success() {
                bail!("overlay-bpf up ({name}) failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            if n == 10_000 {
                let t = Instant::now();
                let out = dep.up(&file, &format!("{p}n1"), &host_ns);
                reapply.push(t.elapsed().as_secs_f64());
                if !out.status.success() {
                    bail!("re-applying ({name}) failed: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
            drop(dep);
        }
        println!("  {name}: {:.3}s (median of {rounds})", median(&samples));
        rows.push(Row { name, unit: "s", ours: samples, baseline: None });
        if !reapply.is_empty() {
            println!("  up_s_reapply_unchanged_10000_endpoints: {:.3}s", median(&reapply));
            rows.push(Row {
                name: "up_s_reapply_unchanged_10000_endpoints".into(),
                unit: "s",
                ours: reapply,
                baseline: None,
            });
        }
    }
    Ok(rows)
}

fn report(rows: &[Row], file: &str) -> Result<()> {
    println!();
    println!(
        "{:<44} {:>5} {:>12} {:>8} {:>12} {:<18} {:>7}",
        "row", "unit", "overlay-bpf", "spread", "baseline", "baseline is", "ratio"
    );
    let mut json_rows = Vec::new();
    for r in rows {
        let ours = median(&r.ours);
        let (base, base_name) = match &r.baseline {
            Some((n, s)) => (Some(median(s)), Some(n.as_str())),
            None => (None, None),
        };
        let ratio = base.map(|b| ours / b);
        println!(
            "{:<44} {:>5} {:>12.3} {:>7.1}% {:>12} {:<18} {:>7}",
            r.name,
            r.unit,
            ours,
            spread(&r.ours) * 100.0,
            base.map(|b| format!("{b:.3}")).unwrap_or_else(|| "-".into()),
            base_name.unwrap_or("-"),
            ratio.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into()),
        );
        json_rows.push(json!({
            "name": r.name,
            "unit": r.unit,
            "overlay_bpf": ours,
            "baseline": base,
            "baseline_name": base_name,
            "ratio": ratio,
            "spread": spread(&r.ours),
            "samples": r.ours,
            "baseline_samples": r.baseline.as_ref().map(|(_, s)| s.clone()),
        }));
    }
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_string_pretty(&json!({ "rows": json_rows }))?)?;
    println!("report: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_crosses_from_the_guest_unchanged() {
        let r = Row {
            name: "encrypted_tcp_throughput".into(),
            unit: "Gbit/s",
            ours: vec![0.05, 0.052],
            baseline: Some(("vxlan+ESP (Docker)".into(), vec![0.14])),
        };
        let line = format!("{ROW_LINE}{}", r.to_json());
        let back = Row::from_json(&serde_json::from_str(line.strip_prefix(ROW_LINE).unwrap()).unwrap()).unwrap();
        assert_eq!((back.name.as_str(), back.unit, &back.ours), (r.name.as_str(), r.unit, &r.ours));
        assert_eq!(back.baseline, r.baseline);
        let plain = Row { baseline: None, ..back };
        assert!(Row::from_json(&plain.to_json()).unwrap().baseline.is_none());
    }

    #[test]
    fn median_and_spread() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!((spread(&[90.0, 100.0, 110.0]) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn state_puts_two_endpoints_on_the_measured_host() {
        let y = state_yaml("x", 5, 2);
        assert_eq!(y.matches("host: xn1,").count(), 2);
        assert_eq!(y.matches("- {name: e").count(), 5);
        assert!(y.contains("published: 20001"));
    }
}
