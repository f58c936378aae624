//! `cargo xtask run`: a 3-host cluster on this machine, each host a network
//! namespace on a shared underlay bridge, brought up from examples/cluster.yaml.

use std::{net::Ipv4Addr, path::Path, process::Command, time::Instant};

use anyhow::{bail, Context, Result};

use crate::{
    build, setup,
    util::{catch_signals, check_interrupt, is_root, output, root, step},
};

use crate::testbed::{Deployment, Netns, Underlay};

const PREFIX: &str = "obdemo";

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
    let mut underlay = Underlay::new(PREFIX, &hosts);
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
    let wrong = matrix(&resolved)?;

    check_interrupt()?;
    let mesh_wrong = mesh(&mut underlay, &containers, &resolved, &hosts)?;

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
    step("run: the container side of web.1 (ip -n obdemo-web1 addr show)");
    let web1 = containers.iter().find(|c| c.name == "obdemo-web1").context("web1 netns")?;
    print!("{}", web1.ip(&["-br", "-4", "addr", "show"]));

    if keep {
        std::mem::forget(dep);
        std::mem::forget(containers);
        std::mem::forget(underlay);
        step("run: left running (--keep); remove it with `cargo xtask run --netns --clean`");
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
    if wrong > 0 {
        bail!("{wrong} pairs of the connectivity matrix were not as the networks say");
    }
    if mesh_wrong > 0 {
        bail!("{mesh_wrong} routing-mesh requests were not answered as they should be");
    }
    step(&format!("run: done in {:.1}s", t0.elapsed().as_secs_f64()));
    Ok(())
}

/// HTTP servers (python) killed by PID on drop.
struct Servers(Vec<std::process::Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// The routing mesh as a user tries it: an HTTP server in each web.N that
/// answers with its name and the client address it saw, and a client outside
/// the cluster (on the underlay) asking every host's published port 8080.
/// Then the VIP from the `client` container and from web.1 itself (hairpin).
/// Returns how many requests went wrong.
fn mesh(
    underlay: &mut Underlay,
    containers: &[Netns],
    resolved: &serde_json::Value,
    hosts: &[(&str, Ipv4Addr)],
) -> Result<usize> {
    const SERVER: &str = "import http.server as h, sys\n\
class H(h.BaseHTTPRequestHandler):\n    \
def do_GET(self):\n        \
b = (sys.argv[1] + ' saw ' + self.client_address[0] + '\\n').encode()\n        \
self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)\n    \
def log_message(self, *a): pass\n\
h.ThreadingHTTPServer(('0.0.0.0', 80), H).serve_forever()\n";
    let client_addr = Ipv4Addr::new(192, 168, 100, 100);
    step(&format!(
        "run: routing mesh: HTTP servers in web.1..3 on :80; a client outside the cluster ({PREFIX}-outside, \
         {client_addr}) asks every host's published port 8080"
    ));
    let mut servers = Servers(Vec::new());
    for (i, c) in containers.iter().filter(|c| c.name.starts_with(&format!("{PREFIX}-web"))).enumerate() {
        let name = format!("web.{}", i + 1);
        servers.0.push(
            c.cmd("python3")
                .args(["-c", SERVER, &name])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?,
        );
    }
    let outside = underlay.add_host("outside", client_addr);
    let curl = |ns: &Netns, url: &str| -> Option<String> {
        let o = ns.cmd("curl").args(["-s", "--max-time", "3", url]).output().ok()?;
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let t = Instant::now();
    while !containers
        .iter()
        .filter(|c| c.name.starts_with(&format!("{PREFIX}-web")))
        .all(|c| curl(c, "http://127.0.0.1/").is_some())
    {
        check_interrupt()?;
        if t.elapsed().as_secs() > 15 {
            bail!("the demo's HTTP servers did not start");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut wrong = 0;
    for (h, addr) in hosts {
        let mut answers = Vec::new();
        for _ in 0..6 {
            match curl(outside, &format!("http://{addr}:8080/")) {
                Some(a) if a.ends_with(&format!("saw {client_addr}")) => answers.push(a.replace(" saw ", "<-")),
                Some(a) => {
                    wrong += 1;
                    answers.push(format!("WRONG({a})"));
                }
                None => {
                    wrong += 1;
                    answers.push("NO ANSWER".into());
                }
            }
        }
        println!("  curl http://{addr}:8080/ ({h}) x6: {}", answers.join(", "));
    }
    let vip = resolved["services"][0]["vip"].as_str().unwrap_or("?");
    for (who, ns) in [("client", format!("{PREFIX}-client")), ("web.1 (hairpin)", format!("{PREFIX}-web1"))] {
        let Some(c) = containers.iter().find(|c| c.name == ns) else { continue };
        let mut answers = Vec::new();
        for _ in 0..4 {
            match curl(c, &format!("http://{vip}/")) {
                Some(a) => answers.push(a.replace(" saw ", "<-")),
                None => {
                    wrong += 1;
                    answers.push("NO ANSWER".into());
                }
            }
        }
        println!("  curl http://{vip}/ (VIP of web) from {who} x4: {}", answers.join(", "));
    }
    println!(
        "  (backend<-the client address it saw: the callers' own, no SNAT; web.1 picked by its own VIP sees the VIP)"
    );
    Ok(wrong)
}

/// Pings every endpoint from every other endpoint's namespace, all at once,
/// and prints what was reached. A namespace may reach an endpoint when it has
/// an endpoint on the same network. Returns how many pairs were not so.
fn matrix(resolved: &serde_json::Value) -> Result<usize> {
    step("run: connectivity matrix (rows ping columns through the overlay; ok = reached, x = blocked)");
    // (name, network, netns, ip) of every endpoint.
    let eps: Vec<(String, String, String, String)> = resolved["endpoints"]
        .as_array()
        .context("endpoints")?
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("name"), s("network"), s("netns").trim_start_matches("/run/netns/").to_string(), s("ip"))
        })
        .collect();
    let mut runs = Vec::new();
    for (a, _, ns, _) in &eps {
        for (b, net_b, ns_b, ip_b) in &eps {
            if ns == ns_b {
                continue;
            }
            let may = eps.iter().any(|(_, n, s, _)| s == ns && n == net_b);
            let child = Command::new("ip")
                .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "2", ip_b])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            runs.push((a.clone(), b.clone(), may, child));
        }
    }
    let mut got = std::collections::HashMap::new();
    let mut wrong = 0;
    for (a, b, may, mut child) in runs {
        let ok = child.wait()?.success();
        if ok != may {
            wrong += 1;
        }
        got.insert((a, b), (ok, may));
    }
    let w = eps.iter().map(|e| e.0.len()).max().unwrap_or(4).max(4);
    print!("{:w$}  ", "");
    for (b, ..) in &eps {
        print!("{b:>w$} ");
    }
    println!();
    for (a, ..) in &eps {
        print!("{a:>w$}  ");
        for (b, ..) in &eps {
            let cell = match got.get(&(a.clone(), b.clone())) {
                None => "-",
                Some((true, true)) => "ok",
                Some((false, false)) => "x",
                Some((true, false)) => "LEAK",
                Some((false, true)) => "FAIL",
            };
            print!("{cell:>w$} ");
        }
        println!();
    }
    let nets: Vec<String> = eps.iter().map(|(n, net, _, _)| format!("{n}: {net}")).collect();
    println!("networks: {}", nets.join(", "));
    Ok(wrong)
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
