//! `cargo xtask soak`: a bounded run (minutes) of a 3-host namespace cluster
//! with one `overlay-bpf agent` per host, where the state file changes every
//! second under traffic: an endpoint comes or goes, and the web service gets
//! another set of backends. At the end it reports loss, stale backends,
//! counters and memory, and fails on what must not happen:
//!
//! - a ping between two endpoints that never change loses a packet;
//! - a TCP connection between them sees an error;
//! - a new connection to the service (through the mesh or its VIP) is
//!   answered by a backend that left the service more than 3 s before;
//! - an agent fails to re-apply;
//! - after the last state is the first one again, the maps, the veths or an
//!   agent's open files differ from the start.
//!
//! Not part of `cargo xtask test`: it takes minutes.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{
    build,
    testbed::{tcp_echo, wait_listening, Deployment, Netns, Proc, Rng, Talk, Underlay},
    util::{catch_signals, check_interrupt, interrupted, is_root, root, step},
};

const P: &str = "obsk";
const HOSTS: [&str; 3] = ["n1", "n2", "n3"];
/// Endpoints that never change: s1 pings and talks to s2; c3 calls the VIP.
const STABLE: [(&str, usize, &str); 3] = [("s1", 0, "10.10.0.11"), ("s2", 1, "10.10.0.12"), ("c3", 2, "10.10.0.13")];
/// The service's backend pool, two per host; the state picks 2 to 5.
const POOL: [(&str, usize, &str); 6] = [
    ("b1", 0, "10.10.0.21"),
    ("b2", 0, "10.10.0.22"),
    ("b3", 1, "10.10.0.23"),
    ("b4", 1, "10.10.0.24"),
    ("b5", 2, "10.10.0.25"),
    ("b6", 2, "10.10.0.26"),
];
/// Endpoints that come and go, one per second.
const CHURN: usize = 8;
const VIP: &str = "10.10.0.100";
/// How long a removed backend may still answer new connections: the agents
/// poll the file every second and then apply.
const GRACE: f64 = 3.0;

fn host(i: usize) -> String {
    format!("{P}{}", HOSTS[i])
}

fn churn_ep(k: usize) -> (String, usize, String) {
    (format!("e{}", k + 1), k % 3, format!("10.10.0.{}", 31 + k))
}

/// The state: the stable endpoints, the pool, the churn endpoints in
/// `present`, and `backends` behind the web service.
fn state(present: &BTreeSet<usize>, backends: &BTreeSet<usize>) -> String {
    let mut y = String::from("version: 1\nhosts:\n");
    for (i, h) in HOSTS.iter().enumerate() {
        y += &format!("  - {{name: {P}{h}, address: 192.168.200.1{}}}\n", i + 1);
    }
    y += "networks:\n  - {name: front, attachable: true, subnets: [{subnet: 10.10.0.0/24}]}\nendpoints:\n";
    let churn: Vec<(String, usize, String)> = present.iter().map(|&k| churn_ep(k)).collect();
    let eps = STABLE.iter().chain(POOL.iter()).map(|(n, h, ip)| (n.to_string(), *h, ip.to_string())).chain(churn);
    for (n, h, ip) in eps {
        y += &format!("  - {{name: {n}, host: {}, network: front, netns: {P}-{n}, ip: {ip}}}\n", host(h));
    }
    let names: Vec<&str> = backends.iter().map(|&i| POOL[i].0).collect();
    y += &format!(
        "services:\n  - name: web\n    network: front\n    vip: {VIP}\n    ports: [{{protocol: tcp, target: 7000, published: 8080}}]\n    backends: [{}]\n",
        names.join(", ")
    );
    y
}

/// Writes the state so an agent never reads half a file.
fn write_state(path: &Path, yaml: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, yaml)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// 2 to 5 of the pool.
fn pick_backends(rng: &mut Rng) -> BTreeSet<usize> {
    let n = 2 + rng.below(4);
    let mut set = BTreeSet::new();
    while set.len() < n {
        set.insert(rng.below(POOL.len()));
    }
    set
}

/// What an agent uses: resident memory (kB) and open files.
fn proc_usage(pid: u32) -> (u64, usize) {
    let rss = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (rss, fds)
}

/// One host's kernel side: map fill, counters, host-side veths.
fn snapshot(bin: &Path, state: &Path, i: usize) -> Result<Value> {
    let out = Command::new(bin)
        .args(["--host", &host(i), "--netns", &format!("{P}-{}", HOSTS[i]), "status", "-o", "json", "--state"])
        .arg(state)
        .output()?;
    if !out.status.success() {
        bail!("overlay-bpf status on {}: {}", host(i), String::from_utf8_lossy(&out.stderr));
    }
    let st: Value = serde_json::from_slice(&out.stdout)?;
    let veths =
        Command::new("ip").args(["-n", &format!("{P}-{}", HOSTS[i]), "-o", "link", "show", "type", "veth"]).output()?;
    let ours = String::from_utf8_lossy(&veths.stdout).lines().filter(|l| l.contains(": ob")).count();
    let maps: BTreeMap<String, u64> = st["maps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| (m["name"].as_str().unwrap_or("").to_string(), m["entries"].as_u64().unwrap_or(0)))
        .collect();
    let counters: BTreeMap<String, u64> = st["counters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                format!("{}/{}", c["program"].as_str().unwrap_or(""), c["reason"].as_str().unwrap_or("")),
                c["packets"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    Ok(json!({"maps": maps, "counters": counters, "veths": ours}))
}

/// A probe: a new connection and one message, to the mesh or the VIP.
struct Probe {
    at: f64,
    answer: Result<String, String>,
}

/// New connections from `netns` to the targets in turn, every 50 ms, until
/// `stop`.
fn prober(netns: String, targets: Vec<String>, t0: Instant, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<Probe>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let to = &targets[n as usize % targets.len()];
            let at = t0.elapsed().as_secs_f64();
            let answer = Talk::open(&netns, to.parse().expect("address"), &format!("probe {to}"))
                .and_then(|mut t| t.exchange(n));
            out.push(Probe { at, answer });
            n += 1;
            thread::sleep(Duration::from_millis(50));
        }
        out
    })
}

pub fn soak(secs: u64, seed: Option<u64>) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask soak` creates namespaces and loads eBPF programs: run it as root");
    }
    let t_all = Instant::now();
    crate::setup::setup()?;
    catch_signals();
    let bin = build::build(true)?;
    let seed = seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        now.as_nanos() as u64 | 1
    });
    let mut rng = Rng(seed | 1);
    step(&format!("soak: {secs} s of churn every second, seed {seed} (replay: cargo xtask soak --seed {seed})"));

    // The cluster: 3 hosts and an outside client on one underlay.
    let mut u = Underlay::new(
        P,
        &[("n1", "192.168.200.11".parse()?), ("n2", "192.168.200.12".parse()?), ("n3", "192.168.200.13".parse()?)],
    );
    u.add_host("cl", "192.168.200.100".parse()?);
    let mut names: Vec<String> = STABLE.iter().chain(POOL.iter()).map(|(n, ..)| n.to_string()).collect();
    names.extend((0..CHURN).map(|k| churn_ep(k).0));
    let containers: BTreeMap<String, Netns> =
        names.iter().map(|n| (n.clone(), Netns::new(&format!("{P}-{n}")))).collect();
    let dir = root().join("target/soak");
    fs::create_dir_all(&dir)?;
    let state_path = dir.join("cluster.yaml");
    let first_backends: BTreeSet<usize> = [0, 2, 4].into();
    write_state(&state_path, &state(&BTreeSet::new(), &first_backends))?;

    let mut dep = Deployment::new(&bin);
    let mut agents = Vec::new();
    for (i, name) in HOSTS.iter().enumerate() {
        let (h, ns) = (host(i), format!("{P}-{name}"));
        dep.track(&h, &ns);
        let log = fs::File::create(dir.join(format!("agent-{h}.log")))?;
        let child = Command::new(&bin)
            .args([
                "--host",
                &h,
                "--netns",
                &ns,
                "agent",
                "--interval",
                "1",
                "--no-health",
                "--dns-upstream",
                "127.0.0.1:5399",
                "--state",
            ])
            .arg(&state_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start overlay-bpf agent")?;
        agents.push(Proc(child));
    }
    let _servers: Vec<Proc> = POOL
        .iter()
        .map(|(n, ..)| tcp_echo(&containers[*n], n, 7000))
        .chain([tcp_echo(&containers["s2"], "s2", 7100)])
        .collect();
    for (n, ..) in POOL {
        wait_listening(&containers[n], 7000).map_err(anyhow::Error::msg)?;
    }
    wait_listening(&containers["s2"], 7100).map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    while !containers["s1"].run("ping", &["-c", "1", "-W", "1", "10.10.0.12"]).status.success() {
        check_interrupt()?;
        if t.elapsed() > Duration::from_secs(60) {
            bail!("s1 could not reach s2 within 60 s of starting the agents (logs in {})", dir.display());
        }
    }
    thread::sleep(Duration::from_secs(2));
    let before: Vec<Value> = (0..3).map(|i| snapshot(&bin, &state_path, i)).collect::<Result<_>>()?;
    let usage_before: Vec<(u64, usize)> = agents.iter().map(|a| proc_usage(a.0.id())).collect();
    step("soak: cluster up; traffic and churn start");

    // Traffic for the whole run.
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let pings = (secs * 100).to_string();
    let ping = containers["s1"]
        .cmd("ping")
        .args(["-q", "-i", "0.01", "-W", "1", "-c", &pings, "10.10.0.12"])
        .stdout(Stdio::piped())
        .spawn()?;
    let steady = {
        let stop = stop.clone();
        let mut talk =
            Talk::open(&format!("{P}-s1"), "10.10.0.12:7100".parse()?, "s1 to s2").map_err(anyhow::Error::msg)?;
        thread::spawn(move || {
            let (mut n, mut errors) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if let Err(e) = talk.exchange(n) {
                    errors.push(e);
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            (n, errors)
        })
    };
    let mesh_targets = (1..=3).map(|i| format!("192.168.200.1{i}:8080")).collect();
    let mesh = prober(u.host("cl").name.clone(), mesh_targets, t0, stop.clone());
    let vip = prober(format!("{P}-c3"), vec![format!("{VIP}:7000")], t0, stop.clone());
    // (new endpoint, seconds until it answered a ping)
    type Reached = Vec<(String, Option<f64>)>;
    let reach_log: Arc<Mutex<Reached>> = Arc::default();

    // The churn.
    let mut present = BTreeSet::new();
    let mut backends = first_backends.clone();
    let mut history: Vec<(f64, BTreeSet<usize>)> = vec![(0.0, backends.clone())];
    let (mut added, mut removed, mut peak_rss) = (0u64, 0u64, usage_before.iter().map(|u| u.0).collect::<Vec<_>>());
    let mut tick = 0u64;
    let mut reachers = Vec::new();
    while t0.elapsed().as_secs() < secs && !interrupted() {
        let k = rng.below(CHURN);
        let adding = present.insert(k);
        if !adding {
            present.remove(&k);
            removed += 1;
        } else {
            added += 1;
        }
        backends = pick_backends(&mut rng);
        write_state(&state_path, &state(&present, &backends))?;
        history.push((t0.elapsed().as_secs_f64(), backends.clone()));
        if adding {
            // Time until the new endpoint answers a ping from s1.
            let (name, _, ip) = churn_ep(k);
            let log = reach_log.clone();
            let s1 = format!("{P}-s1");
            reachers.push(thread::spawn(move || {
                let t = Instant::now();
                let mut ok = None;
                while t.elapsed() < Duration::from_secs(5) {
                    let st =
                        Command::new("ip").args(["netns", "exec", &s1, "ping", "-c", "1", "-W", "1", &ip]).output();
                    if st.map(|o| o.status.success()).unwrap_or(false) {
                        ok = Some(t.elapsed().as_secs_f64());
                        break;
                    }
                }
                log.lock().unwrap().push((name, ok));
            }));
        }
        for (i, a) in agents.iter().enumerate() {
            peak_rss[i] = peak_rss[i].max(proc_usage(a.0.id()).0);
        }
        tick += 1;
        if tick.is_multiple_of(10) {
            step(&format!(
                "soak: {:>4.0} s: {added} endpoints added, {removed} removed, {} backend sets",
                t0.elapsed().as_secs_f64(),
                history.len() - 1
            ));
        }
        let next = Duration::from_secs(tick);
        if let Some(wait) = next.checked_sub(t0.elapsed()) {
            thread::sleep(wait);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let ping_out = ping.wait_with_output()?;
    let (steady_n, steady_errors) = steady.join().map_err(|_| anyhow::anyhow!("steady talker panicked"))?;
    let mesh = mesh.join().map_err(|_| anyhow::anyhow!("prober panicked"))?;
    let vip = vip.join().map_err(|_| anyhow::anyhow!("prober panicked"))?;
    for r in reachers {
        let _ = r.join();
    }
    check_interrupt()?;

    // Back to the first state; the cluster must look as it did.
    step("soak: churn over; back to the first state");
    write_state(&state_path, &state(&BTreeSet::new(), &first_backends))?;
    thread::sleep(Duration::from_secs(5));
    let after: Vec<Value> = (0..3).map(|i| snapshot(&bin, &state_path, i)).collect::<Result<_>>()?;
    let usage_after: Vec<(u64, usize)> = agents.iter().map(|a| proc_usage(a.0.id())).collect();
    let logs: Vec<String> =
        (0..3).map(|i| fs::read_to_string(dir.join(format!("agent-{}.log", host(i)))).unwrap_or_default()).collect();
    drop(agents);
    dep.down_all();

    // The figures.
    let ping_text = String::from_utf8_lossy(&ping_out.stdout).to_string();
    let (sent, received) = ping_counts(&ping_text);
    let stale = |probes: &[Probe]| -> Vec<String> {
        probes
            .iter()
            .filter_map(|p| {
                let name = p.answer.as_ref().ok()?;
                let i = POOL.iter().position(|(n, ..)| n == name)?;
                // Sets in force from GRACE s before the probe up to it.
                let from = history.iter().rposition(|(t, _)| *t <= p.at - GRACE).unwrap_or(0);
                let ok = history[from..].iter().take_while(|(t, _)| *t <= p.at).any(|(_, set)| set.contains(&i));
                (!ok).then(|| format!("{name} answered at {:.1} s", p.at))
            })
            .collect()
    };
    let (mesh_stale, vip_stale) = (stale(&mesh), stale(&vip));
    let failed = |probes: &[Probe]| probes.iter().filter(|p| p.answer.is_err()).count();
    let reach = reach_log.lock().unwrap().clone();
    let reached: Vec<f64> = reach.iter().filter_map(|(_, t)| *t).collect();
    let reapplied: Vec<usize> = logs.iter().map(|l| l.matches("re-applied").count()).collect();
    let apply_failures: Vec<String> = logs
        .iter()
        .flat_map(|l| l.lines().filter(|x| x.contains("failed") || x.contains("rejected")).map(str::to_string))
        .collect();
    let mut drops = BTreeMap::new();
    for i in 0..3 {
        for (k, v) in after[i]["counters"].as_object().into_iter().flatten() {
            let d = v.as_u64().unwrap_or(0) - before[i]["counters"][k].as_u64().unwrap_or(0);
            if d > 0 {
                *drops.entry(k.clone()).or_insert(0u64) += d;
            }
        }
    }
    // The maps the state fills; the programs fill the connection table and
    // the next-hop cache as traffic comes.
    let state_maps = |v: &Value| -> Value {
        let mut m = v["maps"].clone();
        if let Some(o) = m.as_object_mut() {
            o.remove("OB_CT_V2");
            o.remove("OB_NEXT_HOPS_V1");
        }
        m
    };
    let maps_same = (0..3).all(|i| state_maps(&before[i]) == state_maps(&after[i]));
    let veths_same = (0..3).all(|i| before[i]["veths"] == after[i]["veths"]);
    let failures = |probes: &[Probe]| -> Vec<String> {
        probes.iter().filter_map(|p| p.answer.as_ref().err().map(|e| format!("{:.1} s: {e}", p.at))).collect()
    };
    let report = json!({
        "seed": seed,
        "secs": t0.elapsed().as_secs_f64(),
        "churn": {"endpoints_added": added, "endpoints_removed": removed, "backend_sets": history.len() - 1,
                  "reapplies_per_host": reapplied, "apply_failures": apply_failures},
        "ping_s1_s2": {"sent": sent, "received": received},
        "tcp_s1_s2": {"messages": steady_n, "errors": steady_errors},
        "mesh_probes": {"total": mesh.len(), "failed": failures(&mesh), "stale": mesh_stale},
        "vip_probes": {"total": vip.len(), "failed": failures(&vip), "stale": vip_stale},
        "new_endpoints": {"added": reach.len(), "reached": reached.len(),
                          "max_secs": reached.iter().cloned().fold(0.0, f64::max),
                          "unreached": reach.iter().filter(|(_, t)| t.is_none()).map(|(n, _)| n.clone()).collect::<Vec<_>>()},
        "counters_moved": drops,
        "kernel_before": before, "kernel_after": after,
        "agents": (0..3).map(|i| json!({"host": host(i), "rss_kb_before": usage_before[i].0, "rss_kb_peak": peak_rss[i],
                   "rss_kb_after": usage_after[i].0, "fds_before": usage_before[i].1, "fds_after": usage_after[i].1})).collect::<Vec<_>>(),
    });
    fs::write(dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;

    println!("\nsoak: {:.0} s, seed {seed}", t0.elapsed().as_secs_f64());
    println!("  churn: {added} endpoints added, {removed} removed, {} backend sets; re-applies per host {reapplied:?}, {} failed", history.len() - 1, apply_failures.len());
    println!("  ping s1 -> s2: {sent} sent, {received} received");
    println!("  TCP s1 -> s2: {steady_n} messages, {} errors", steady_errors.len());
    for (name, p, st) in [("mesh", &mesh, &report["mesh_probes"]), ("VIP", &vip, &report["vip_probes"])] {
        println!(
            "  new connections via the {name}: {} made, {} failed, {} answered by a backend gone over {GRACE} s",
            p.len(),
            failed(p),
            st["stale"].as_array().map(Vec::len).unwrap_or(0)
        );
    }
    println!(
        "  new endpoints: {} added, {} answered a ping within 5 s (slowest {:.2} s)",
        reach.len(),
        reached.len(),
        report["new_endpoints"]["max_secs"].as_f64().unwrap_or(0.0)
    );
    println!("  counters moved: {}", drops.iter().map(|(k, v)| format!("{k} +{v}")).collect::<Vec<_>>().join(", "));
    for (name, p) in [("mesh", &mesh), ("VIP", &vip)] {
        for f in failures(p).iter().take(5) {
            println!("    {name} failure at {f}");
        }
    }
    for i in 0..3 {
        println!(
            "  {}: agent RSS {} kB, peak {}, at the end {} kB; open files {} -> {}; state maps as at the start: {}; \
             veths {} -> {}; OB_CT_V2 {} entries",
            host(i),
            usage_before[i].0,
            peak_rss[i],
            usage_after[i].0,
            usage_before[i].1,
            usage_after[i].1,
            if state_maps(&before[i]) == state_maps(&after[i]) { "yes" } else { "NO" },
            before[i]["veths"],
            after[i]["veths"],
            after[i]["maps"]["OB_CT_V2"]
        );
    }
    println!("  report: {}", dir.join("report.json").display());

    let mut bad = Vec::new();
    if received < sent || sent == 0 {
        bad.push(format!("ping lost {} of {sent}", sent - received));
    }
    if !steady_errors.is_empty() {
        bad.push(format!("the steady TCP connection broke: {}", steady_errors[0]));
    }
    if !mesh_stale.is_empty() || !vip_stale.is_empty() {
        bad.push(format!("stale backends answered: {:?} {:?}", mesh_stale, vip_stale));
    }
    if !apply_failures.is_empty() {
        bad.push(format!("agents failed to apply: {}", apply_failures[0]));
    }
    if !maps_same || !veths_same {
        bad.push("map entries or veths differ from the start after returning to the first state".into());
    }
    if (0..3).any(|i| usage_after[i].1 > usage_before[i].1) {
        bad.push("an agent holds more open files than at the start".into());
    }
    if reached.len() < reach.len() {
        bad.push(format!("{} new endpoints never answered", reach.len() - reached.len()));
    }
    step(&format!("soak: done in {:.0}s", t_all.elapsed().as_secs_f64()));
    if !bad.is_empty() {
        bail!("soak failed:\n  {}", bad.join("\n  "));
    }
    Ok(())
}

/// (transmitted, received) from ping's summary line.
fn ping_counts(out: &str) -> (u64, u64) {
    let line = out.lines().find(|l| l.contains("packets transmitted")).unwrap_or("");
    let nums: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
    (nums.first().copied().unwrap_or(0), nums.get(1).copied().unwrap_or(0))
}
