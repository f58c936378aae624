//! The store rows of `cargo xtask bench` (issue 15): a real etcd, three
//! namespace hosts running agents on it, the other endpoints on simulated
//! hosts that run no agent.
//!
//! - `store_converge_ms_<N>_endpoints`: a change written to etcd (an endpoint
//!   created) until it is in every agent's maps, p50 and p99 over the changes,
//!   read from each agent's own measure (`overlay_bpf_store_apply_lag_seconds`:
//!   from the write's timestamp to its maps; one clock, one machine).
//! - `store_ipam_allocs_per_s`: `endpoint create` by three writers at once,
//!   against one writer alone (the baseline), and the duplicate addresses
//!   found (0).
//! - `agent_rss_mib_<N>_endpoints`: an agent's resident memory.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{median, Row};
use crate::{
    testbed::{Deployment, Netns, Underlay},
    util::{check_interrupt, root, step},
};

const P: &str = "obbs";
const ETCD: &str = "192.168.220.11";

/// A child process killed by PID when dropped.
pub(super) struct Killed(pub(super) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ob(bin: &Path, ns: &str, args: &[&str]) -> Result<String> {
    let o = Command::new("ip").args(["netns", "exec", ns]).arg(bin).args(args).output()?;
    if !o.status.success() {
        bail!("overlay-bpf {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The bench's state: three real hosts (one endpoint each, on `front`) and
/// `n` endpoints on simulated hosts.
fn state(n: u32) -> String {
    let mut y = String::from("version: 1\nhosts:\n");
    for i in 1..=3 {
        y += &format!("  - {{name: {P}n{i}, address: 192.168.220.1{i}}}\n");
    }
    for s in 0..10 {
        y += &format!("  - {{name: sim{s}, address: 192.168.221.{}}}\n", 10 + s);
    }
    y += "networks:\n  - {name: front, attachable: true, subnets: [{subnet: 10.96.0.0/12}]}\nendpoints:\n";
    for i in 1..=3 {
        y +=
            &format!("  - {{name: real{i}, host: {P}n{i}, network: front, netns: {P}-c{i}, ip: 10.96.0.{}}}\n", 10 + i);
    }
    for i in 0..n {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 97, 0, 0)) + i);
        y += &format!("  - {{name: s{i}, host: sim{}, network: front, netns: s{i}, ip: {ip}}}\n", i % 10);
    }
    y
}

/// A percentile of `v` (0..=100), nearest rank.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[i.clamp(1, s.len()) - 1]
}

/// One agent's `/metrics` sample named `name`.
fn metric(ns: &Netns, host_addr: &str, name: &str) -> Option<f64> {
    let o =
        ns.cmd("curl").args(["-s", "--max-time", "2", &format!("http://{host_addr}:7947/metrics")]).output().ok()?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.lines().find(|l| l.starts_with(&format!("{name} "))).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn rows(bin: &Path, changes: u32, sizes: &[u32]) -> Result<Vec<Row>> {
    step(&format!("bench: the etcd store with {sizes:?} endpoints, 3 agents, {changes} changes each"));
    let dir = root().join("target/bench/store");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let hosts: Vec<(String, Ipv4Addr)> =
        (1..=3).map(|i| (format!("n{i}"), Ipv4Addr::new(192, 168, 220, 10 + i as u8))).collect();
    let refs: Vec<(&str, Ipv4Addr)> = hosts.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let u = Underlay::new(P, &refs);
    let _containers: Vec<Netns> = (1..=3).map(|i| Netns::new(&format!("{P}-c{i}"))).collect();
    let n1 = u.hosts[0].0.name.clone();
    // etcd allows big transactions here: an import is one.
    let log = std::fs::File::create(dir.join("etcd.log"))?;
    let url = format!("etcd://{ETCD}:2379");
    let _etcd = Killed(
        Command::new("ip")
            .args(["netns", "exec", &n1, "etcd", "--name", P, "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &format!("http://{ETCD}:2379"),
                "--advertise-client-urls",
                &format!("http://{ETCD}:2379"),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://{ETCD}:2380"),
                "--initial-advertise-peer-urls",
                &format!("http://{ETCD}:2380"),
            ])
            .args(["--initial-cluster", &format!("{P}=http://{ETCD}:2380")])
            .args([
                "--max-txn-ops",
                "1000000",
                "--max-request-bytes",
                "268435456",
                "--quota-backend-bytes",
                "8589934592",
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("etcd (Debian etcd-server)")?,
    );
    let t = Instant::now();
    while Command::new("ip")
        .args(["netns", "exec", &n1])
        .arg(bin)
        .args(["store", "export", "--store", &url])
        .output()?
        .status
        .code()
        != Some(1)
    {
        if t.elapsed() > Duration::from_secs(30) {
            bail!("etcd did not start: {}", std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut rows = Vec::new();
    let mut dep = Deployment::new(bin);
    for (k, &n) in sizes.iter().enumerate() {
        check_interrupt()?;
        let file = dir.join(format!("state-{n}.yaml"));
        std::fs::write(&file, state(n))?;
        let mut args = vec!["store", "import", file.to_str().unwrap(), "--store", &url];
        if k > 0 {
            args.push("--replace");
        }
        ob(bin, &n1, &args)?;
        // Agents (again) on the new state, their memory measured once they applied it.
        let agents: Vec<Killed> = (1..=3)
            .map(|i| -> Result<Killed> {
                let (host, ns) = (format!("{P}n{i}"), format!("{P}-n{i}"));
                dep.track(&host, &ns);
                let log = std::fs::File::create(dir.join(format!("agent-{i}-{n}.log")))?;
                Ok(Killed(
                    dep.cmd(&host, &ns)
                        .args(["agent", "--store", &url, "--no-health", "--dns-upstream", "127.0.0.1:5399"])
                        .stdout(Stdio::null())
                        .stderr(log)
                        .spawn()?,
                ))
            })
            .collect::<Result<_>>()?;
        let ready =
            |i: usize| metric(&u.hosts[i].0, &hosts[i].1.to_string(), "overlay_bpf_store_watch_up") == Some(1.0);
        let t = Instant::now();
        while !(0..3).all(ready) {
            check_interrupt()?;
            if t.elapsed() > Duration::from_secs(300) {
                bail!("the agents did not come up on {n} endpoints (logs in {})", dir.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let rss: Vec<f64> = agents.iter().filter_map(|a| rss_mib(a.0.id())).collect();
        // Changes: an endpoint created on a simulated host; each agent says
        // how long the change took to reach its maps.
        let mut lags = Vec::new();
        for c in 0..changes {
            check_interrupt()?;
            let before: Vec<Option<f64>> = (0..3)
                .map(|i| metric(&u.hosts[i].0, &hosts[i].1.to_string(), "overlay_bpf_store_applied_revision"))
                .collect();
            ob(
                bin,
                &n1,
                &[
                    "endpoint",
                    "create",
                    &format!("x{n}-{c}"),
                    "--network",
                    "front",
                    "--container-netns",
                    &format!("x{n}-{c}"),
                    "--host",
                    "sim0",
                    "--store",
                    &url,
                ],
            )?;
            let t = Instant::now();
            loop {
                let now: Vec<Option<f64>> = (0..3)
                    .map(|i| metric(&u.hosts[i].0, &hosts[i].1.to_string(), "overlay_bpf_store_applied_revision"))
                    .collect();
                if now.iter().zip(&before).all(|(a, b)| a.is_some() && a > b) {
                    break;
                }
                if t.elapsed() > Duration::from_secs(120) {
                    bail!("change {c} did not reach every agent");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let worst = (0..3)
                .filter_map(|i| metric(&u.hosts[i].0, &hosts[i].1.to_string(), "overlay_bpf_store_apply_lag_seconds"))
                .fold(0.0f64, f64::max);
            lags.push(worst * 1000.0);
        }
        drop(agents);
        // A fresh host for the next size: a live map cannot grow.
        dep.down_all();
        println!(
            "  store_converge_ms_{n}_endpoints: p50 {:.0} ms, p99 {:.0} ms over {changes} changes; agent RSS {:.1} MiB",
            percentile(&lags, 50.0),
            percentile(&lags, 99.0),
            median(&rss)
        );
        rows.push(Row {
            name: format!("store_converge_ms_p50_{n}_endpoints"),
            unit: "ms",
            ours: vec![percentile(&lags, 50.0)],
            baseline: None,
        });
        rows.push(Row {
            name: format!("store_converge_ms_p99_{n}_endpoints"),
            unit: "ms",
            ours: vec![percentile(&lags, 99.0)],
            baseline: None,
        });
        rows.push(Row { name: format!("agent_rss_mib_{n}_endpoints"), unit: "MiB", ours: rss, baseline: None });
    }
    dep.down_all();

    // Allocation: one writer, then three at once, on a small store.
    check_interrupt()?;
    let file = dir.join("state-ipam.yaml");
    std::fs::write(&file, state(0))?;
    ob(bin, &n1, &["store", "import", file.to_str().unwrap(), "--replace", "--store", &url])?;
    let per_writer = 100u32;
    let run = |writers: u32, tag: &str| -> Result<f64> {
        let t = Instant::now();
        let handles: Vec<std::thread::JoinHandle<Result<()>>> = (0..writers)
            .map(|w| {
                let (bin, n1, url, tag): (PathBuf, String, String, String) =
                    (bin.to_path_buf(), n1.clone(), url.clone(), tag.to_string());
                std::thread::spawn(move || {
                    for i in 0..per_writer {
                        ob(
                            &bin,
                            &n1,
                            &[
                                "endpoint",
                                "create",
                                &format!("{tag}{w}-{i}"),
                                "--network",
                                "front",
                                "--container-netns",
                                "x",
                                "--host",
                                "sim1",
                                "--store",
                                &url,
                            ],
                        )?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok((writers * per_writer) as f64 / t.elapsed().as_secs_f64())
    };
    let one = run(1, "a")?;
    let three = run(3, "b")?;
    let eps: serde_json::Value =
        serde_json::from_str(&ob(bin, &n1, &["endpoint", "ls", "--network", "front", "-o", "json", "--store", &url])?)?;
    let ips: Vec<&str> =
        eps.as_array().map(|a| a.iter().filter_map(|e| e["ip"].as_str()).collect()).unwrap_or_default();
    let distinct: std::collections::BTreeSet<&&str> = ips.iter().collect();
    let duplicates = ips.len() - distinct.len();
    println!("  store_ipam_allocs_per_s: {three:.1} with 3 writers, {one:.1} with 1; {} endpoints, {duplicates} duplicate addresses", ips.len());
    rows.push(Row {
        name: "store_ipam_allocs_per_s".into(),
        unit: "1/s",
        ours: vec![three],
        baseline: Some(("one writer".into(), vec![one])),
    });
    rows.push(Row { name: "store_ipam_duplicates".into(), unit: "n", ours: vec![duplicates as f64], baseline: None });
    drop(u);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((percentile(&v, 50.0), percentile(&v, 99.0), percentile(&v, 100.0)), (50.0, 99.0, 100.0));
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn the_state_puts_one_endpoint_on_each_real_host() {
        let y = state(25);
        assert_eq!(y.matches(&format!("host: {P}n")).count(), 3);
        assert_eq!(y.matches("host: sim").count(), 25);
    }
}
