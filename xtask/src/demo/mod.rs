//! `cargo xtask run`: a 3-host cluster on this machine, each host a network
//! namespace on a shared underlay bridge, brought up from examples/cluster.yaml.

use std::{net::Ipv4Addr, path::Path, process::Command, time::Instant};

use anyhow::{bail, Context, Result};

use crate::{
    build, setup,
    util::{catch_signals, check_interrupt, is_root, output, root, step},
};

use crate::testbed::{Deployment, Netns, Underlay};

pub mod checks;

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
    let hosts = checks::hosts(&state)?;
    let addrs: Vec<(&str, Ipv4Addr)> =
        hosts.iter().map(|h| Ok((h.name.as_str(), h.addr.parse()?))).collect::<Result<_>>()?;

    step(&format!("run: creating {} hosts (namespaces {PREFIX}-<host>) on an underlay bridge", hosts.len()));
    let mut underlay = Underlay::new(PREFIX, &addrs);
    let mut containers: Vec<Netns> = Vec::new();
    for e in checks::endpoints(&resolved)? {
        if !containers.iter().any(|c| c.name == e.netns) {
            containers.push(Netns::new(&e.netns));
        }
    }
    let mut dep = Deployment::new(&bin);
    for h in &hosts {
        check_interrupt()?;
        let h = &h.name;
        step(&format!("run: overlay-bpf up --state examples/cluster.yaml --host {h} --netns {PREFIX}-{h}"));
        let out = dep.up(&state, h, &format!("{PREFIX}-{h}"));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!("overlay-bpf up failed for {h}");
        }
    }

    check_interrupt()?;
    let outside = underlay.add_host("outside", checks::CLIENT.parse()?);
    let mut cluster = Namespaces { containers: &containers, outside, servers: Vec::new() };
    let mut results = Vec::new();
    let ran = checks::run(&mut cluster, &resolved, &hosts, &mut |c| {
        println!("  {}: {}", c.name, if c.passed { "PASS" } else { "FAIL" });
        results.push(c);
    });
    drop(cluster);

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
    ran?;
    let failed: Vec<&checks::Check> = results.iter().filter(|c| !c.passed).collect();
    for c in &failed {
        println!("FAIL {}: {}", c.name, c.detail);
    }
    step(&format!(
        "run: {} of {} checks passed in {:.1}s",
        results.len() - failed.len(),
        results.len(),
        t0.elapsed().as_secs_f64()
    ));
    if !failed.is_empty() {
        bail!("{} checks failed", failed.len());
    }
    Ok(())
}

/// The demo's hosts as namespaces on this machine: the containers are
/// namespaces, the outside client a namespace on the underlay bridge.
struct Namespaces<'a> {
    containers: &'a [Netns],
    outside: &'a Netns,
    /// HTTP servers (python), killed by PID on drop.
    servers: Vec<std::process::Child>,
}

impl Drop for Namespaces<'_> {
    fn drop(&mut self) {
        for c in &mut self.servers {
            // SAFETY: kill has no memory effects; the PID is our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// The demo's HTTP server: answers "<label> saw <client address>".
const SERVER: &str = "import http.server as h, sys\n\
class H(h.BaseHTTPRequestHandler):\n    \
def do_GET(self):\n        \
b = (sys.argv[1] + ' saw ' + self.client_address[0] + '\\n').encode()\n        \
self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)\n    \
def log_message(self, *a): pass\n\
h.ThreadingHTTPServer(('0.0.0.0', 80), H).serve_forever()\n";

fn curl(ns: &Netns, url: &str) -> Option<String> {
    let o = ns.cmd("curl").args(["-s", "--max-time", "3", url]).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

impl Namespaces<'_> {
    fn netns(&self, name: &str) -> Result<&Netns> {
        self.containers.iter().find(|c| c.name == name).with_context(|| format!("namespace {name}"))
    }
}

impl checks::Cluster for Namespaces<'_> {
    fn say(&self, line: &str) {
        println!("{line}");
    }

    fn pings(&mut self, pings: &[checks::Ping]) -> Result<Vec<bool>> {
        let mut runs = Vec::new();
        for p in pings {
            runs.push(
                self.netns(&p.netns)?
                    .cmd("ping")
                    .args(["-c", "1", "-W", "2", &p.ip])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()?,
            );
        }
        runs.into_iter().map(|mut c| Ok(c.wait()?.success())).collect()
    }

    fn serve(&mut self, webs: &[&checks::Ep]) -> Result<()> {
        for w in webs {
            let child = self
                .netns(&w.netns)?
                .cmd("python3")
                .args(["-c", SERVER, &w.name])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            self.servers.push(child);
        }
        let t = Instant::now();
        for w in webs {
            while curl(self.netns(&w.netns)?, "http://127.0.0.1/").is_none() {
                check_interrupt()?;
                if t.elapsed().as_secs() > 15 {
                    bail!("the HTTP server in {} did not start", w.netns);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
        Ok(())
    }

    fn get_outside(&mut self, url: &str) -> Result<Option<String>> {
        Ok(curl(self.outside, url))
    }

    fn get_inside(&mut self, ep: &checks::Ep, url: &str, n: usize) -> Result<Vec<Option<String>>> {
        let ns = self.netns(&ep.netns)?;
        Ok((0..n).map(|_| curl(ns, url)).collect())
    }
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
