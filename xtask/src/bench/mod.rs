//! `cargo xtask bench`: release builds, then traffic between namespaces over
//! overlay-bpf and over the kernel's own VXLAN path (traffic.rs, load.rs),
//! per-packet costs through BPF_PROG_TEST_RUN (tests/benches/progs.rs) beside
//! empty programs, and `overlay-bpf up` times with growing states. Prints a table and writes
//! target/bench/report.json: {"rows": [{name, unit, overlay_bpf, baseline,
//! baseline_name, ratio, spread, samples}]}. No thresholds: a benchmark
//! measures, tests check.

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
};

mod dns;
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

pub fn bench(packets: u32, rounds: u32, secs: f64, only: &[String], store_sizes: &[u32]) -> Result<()> {
    let want = |g: &str| only.is_empty() || only.iter().any(|o| o == g);
    if !is_root() {
        bail!("`cargo xtask bench` loads eBPF programs and creates namespaces: run it as root");
    }
    let t0 = Instant::now();
    crate::setup::setup()?;
    catch_signals();
    let obj = build::build_ebpf()?;
    let bin = build::build(true)?;
    let mut rows = Vec::new();
    if want("traffic") {
        rows.extend(traffic::traffic(&bin, rounds, secs)?);
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
    report(&rows)?;
    step(&format!("bench: done in {:.1}s", t0.elapsed().as_secs_f64()));
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

fn report(rows: &[Row]) -> Result<()> {
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
    let path = dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json!({ "rows": json_rows }))?)?;
    println!("report: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
