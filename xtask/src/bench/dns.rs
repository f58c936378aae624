//! The DNS rows of `cargo xtask bench` (issue 18): dnsperf in a container
//! asks 100 names at its network's gateway, answered by the agent's
//! resolver, then by dnsmasq serving the same names from a hosts file at the
//! same address (the agent running with --no-dns), same run, same path.
//!
//! - `dns_qps`: queries per second, dnsperf unthrottled (4 clients, 100
//!   outstanding) for `secs`.
//! - `dns_latency_p99_us`: the 99th percentile of each answer's latency,
//!   dnsperf throttled to 2,000 queries/s for 3 s (`-v` reports each).

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{median, store::Killed, Row};
use crate::{
    testbed::{Deployment, Netns, Underlay},
    util::{check_interrupt, root, step},
};

const P: &str = "obbd";
const GW: &str = "10.70.0.1";
const NAMES: u32 = 100;

fn state() -> String {
    let mut y = format!(
        "version: 1\nhosts:\n  - {{name: {P}n1, address: 192.168.212.11}}\n  - {{name: {P}sim, address: 192.168.212.99}}\n"
    );
    y += "networks:\n  - {name: alpha, attachable: true, subnets: [{subnet: 10.70.0.0/16}]}\nendpoints:\n";
    y += &format!("  - {{name: client, host: {P}n1, network: alpha, netns: {P}-c, ip: 10.70.0.2}}\n");
    for i in 0..NAMES {
        y += &format!("  - {{name: web{i}, host: {P}sim, network: alpha, netns: w{i}, ip: {}}}\n", addr(i));
    }
    y
}

fn addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 70, 1, i as u8)
}

/// dnsperf from the client's namespace; its stdout.
fn dnsperf(client: &Netns, data: &Path, args: &[&str]) -> Result<String> {
    let o = client
        .cmd("dnsperf")
        .args(["-s", GW, "-d"])
        .arg(data)
        .args(args)
        .output()
        .context("dnsperf (Debian dnsperf; `cargo xtask setup` installs it)")?;
    if !o.status.success() {
        bail!("dnsperf: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// (queries per second, p99 latency in µs) of the server at the gateway now.
fn measure(client: &Netns, data: &Path, secs: f64) -> Result<(f64, f64)> {
    let secs = format!("{}", secs.max(1.0).round() as u64);
    let out = dnsperf(client, data, &["-l", &secs, "-c", "4", "-q", "100"])?;
    let qps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries per second:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no 'Queries per second' in dnsperf's output:\n{out}"))?;
    let lost = out.lines().find(|l| l.contains("Queries lost:")).unwrap_or_default().to_string();
    let verbose = dnsperf(client, data, &["-l", "3", "-Q", "2000", "-v"])?;
    let mut lat: Vec<f64> = verbose
        .lines()
        .filter(|l| l.starts_with('>'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .collect();
    if lat.is_empty() {
        bail!("dnsperf -v reported no answers:\n{verbose}");
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let p99 = lat[((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1] * 1e6;
    println!("    {qps:.0} queries/s ({}), p99 {p99:.0} µs over {} answers", lost.trim(), lat.len());
    Ok((qps, p99))
}

fn wait_answer(client: &Netns, what: &str) -> Result<()> {
    let t = Instant::now();
    loop {
        let o = client.cmd("dig").args([&format!("@{GW}"), "+short", "+time=1", "+tries=1", "web7"]).output()?;
        if String::from_utf8_lossy(&o.stdout).trim() == addr(7).to_string() {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("{what} did not answer web7 at {GW}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn rows(bin: &Path, rounds: u32, secs: f64) -> Result<Vec<Row>> {
    step("bench: DNS, dnsperf against the resolver and against dnsmasq at the same gateway");
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let (state_file, data, hosts) = (dir.join("dns-state.yaml"), dir.join("dns-queries"), dir.join("dns-hosts"));
    std::fs::write(&state_file, state())?;
    std::fs::write(&data, (0..NAMES).map(|i| format!("web{i} A\n")).collect::<String>())?;
    std::fs::write(&hosts, (0..NAMES).map(|i| format!("{} web{i}\n", addr(i))).collect::<String>())?;
    let u = Underlay::new(P, &[(&format!("{P}n1"), Ipv4Addr::new(192, 168, 212, 11))]);
    let host_ns = u.hosts[0].0.name.clone();
    let client = Netns::new(&format!("{P}-c"));
    let mut dep = Deployment::new(bin);
    dep.track(&format!("{P}n1"), &host_ns);
    let agent = |dep: &Deployment, extra: &[&str]| -> Result<Killed> {
        Ok(Killed(
            dep.cmd(&format!("{P}n1"), &host_ns)
                .args(["agent", "--no-health", "--dns-upstream", "127.0.0.1:5399", "--state"])
                .arg(&state_file)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ))
    };
    let (mut ours_qps, mut ours_p99, mut base_qps, mut base_p99) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        check_interrupt()?;
        println!("  round {}: overlay-bpf's resolver", round + 1);
        {
            let _a = agent(&dep, &[])?;
            wait_answer(&client, "the resolver")?;
            let (q, p) = measure(&client, &data, secs)?;
            ours_qps.push(q);
            ours_p99.push(p);
        }
        println!("  round {}: dnsmasq (hosts file) at the same address, agent --no-dns", round + 1);
        {
            let _a = agent(&dep, &["--no-dns"])?;
            let _d = Killed(
                Command::new("ip")
                    .args(["netns", "exec", &host_ns, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts"])
                    .args(["--bind-interfaces", &format!("--listen-address={GW}"), "--port=53", "--user=root"])
                    .arg(format!("--addn-hosts={}", hosts.display()))
                    .args(["--local-ttl=5", "--cache-size=1000"])
                    .arg(format!("--pid-file={}", dir.join("dns-dnsmasq.pid").display()))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
            wait_answer(&client, "dnsmasq")?;
            let (q, p) = measure(&client, &data, secs)?;
            base_qps.push(q);
            base_p99.push(p);
        }
    }
    println!(
        "  dns_qps: {:.0} vs dnsmasq {:.0}; dns_latency_p99_us: {:.0} vs dnsmasq {:.0} (medians of {rounds})",
        median(&ours_qps),
        median(&base_qps),
        median(&ours_p99),
        median(&base_p99)
    );
    drop(dep);
    drop(client);
    drop(u);
    Ok(vec![
        Row { name: "dns_qps".into(), unit: "queries/s", ours: ours_qps, baseline: Some(("dnsmasq".into(), base_qps)) },
        Row {
            name: "dns_latency_p99_us".into(),
            unit: "us",
            ours: ours_p99,
            baseline: Some(("dnsmasq".into(), base_p99)),
        },
    ])
}
