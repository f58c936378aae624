//! Helpers shared by the namespace-cluster tests.
#![allow(dead_code)]

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;

pub mod docker;
pub mod etcd;
// Each test binary uses its own share of these.
#[allow(unused_imports)]
pub use testbed::{enter_netns, iperf3, must, remove_host_lock, tcpdump, Deployment, Netns, Proc, Underlay};

pub fn bin() -> PathBuf {
    std::env::var_os("OVERLAY_BPF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/overlay-bpf"))
}

/// The previous release's `overlay-bpf` (commit 4faeb4b), which rolling
/// upgrades start from: `cargo xtask test` builds it and names it in
/// $OVERLAY_BPF_PREVIOUS_BIN.
pub fn previous_bin() -> PathBuf {
    let bin = std::env::var_os("OVERLAY_BPF_PREVIOUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/previous/4faeb4b/overlay-bpf"));
    assert!(bin.is_file(), "{} is missing: build it with `cargo xtask build --previous`", bin.display());
    bin
}

pub fn require_root() {
    assert!(unsafe { libc::geteuid() } == 0, "the kernel tests need root (run `sudo -E cargo xtask test`)");
    assert!(bin().exists(), "{} is missing: build it with `cargo xtask build`", bin().display());
}

/// A state file removed on drop.
pub struct StateFile(pub PathBuf);

impl StateFile {
    pub fn new(prefix: &str, yaml: &str) -> StateFile {
        let p = std::env::temp_dir().join(format!("{prefix}-state.yaml"));
        std::fs::write(&p, yaml).unwrap();
        StateFile(p)
    }
    pub fn write(&self, yaml: &str) {
        std::fs::write(&self.0, yaml).unwrap();
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn assert_ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What `up` printed on its summary line, read back into its counts, so a
/// test compares them all at once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpSummary {
    /// The underlay device (`up on eth0 (...)`).
    pub on: String,
    /// `up on ...` (false: `up to date on ...: nothing changed`).
    pub changed: bool,
    /// Created, removed.
    pub veths: (u64, u64),
    /// Created, removed (shown only when not both 0).
    pub macvlans: (u64, u64),
    /// Attached, replaced, removed.
    pub links: (u64, u64, u64),
    /// Written, deleted.
    pub entries: (u64, u64),
    /// `programs loaded and verified` (false: `reused from their pins`).
    pub verified: bool,
}

impl UpSummary {
    /// The summary of host `host` in `up`'s stdout; panics naming the output
    /// when there is none.
    pub fn of(out: &str, host: &str) -> UpSummary {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{host}: up ")))
            .unwrap_or_else(|| panic!("no summary of {host} in: {out}"));
        let verified = match line.rsplit("; ").next() {
            Some("programs loaded and verified") => true,
            Some("programs reused from their pins") => false,
            _ => panic!("how were the programs loaded? {line}"),
        };
        let device = |after: &str| line[after.len()..].split(' ').next().unwrap_or_default().to_string();
        let unchanged = format!("{host}: up to date on ");
        if line.starts_with(&unchanged) {
            assert!(line.ends_with(&format!("): nothing changed; {}", line.rsplit("; ").next().unwrap())), "{line}");
            return UpSummary { on: device(&unchanged), changed: false, verified, ..Default::default() };
        }
        let counts = line.split_once("): ").unwrap_or_else(|| panic!("{line}")).1;
        let n: Vec<u64> = counts.split([' ', ',', ';']).filter_map(|w| w.parse().ok()).collect();
        let (macvlans, rest) = match n.len() {
            7 => ((0, 0), &n[2..]),
            9 => ((n[2], n[3]), &n[4..]),
            _ => panic!("{} counts in {line}", n.len()),
        };
        UpSummary {
            on: device(&format!("{host}: up on ")),
            changed: true,
            veths: (n[0], n[1]),
            macvlans,
            links: (rest[0], rest[1], rest[2]),
            entries: (rest[3], rest[4]),
            verified,
        }
    }
}

/// The lines of a command's stderr.
pub fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr).lines().map(str::to_string).collect()
}

pub fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A state with hosts `<p>n1..n3` and endpoints in namespaces `<p>-<name>`.
pub fn state(p: &str, endpoints: &[(&str, &str, &str, &str)], hosts: usize) -> String {
    let mut y = String::from("version: 1\ncluster: {vxlan_port: 4789, underlay_mtu: 1500}\nhosts:\n");
    for i in 1..=hosts {
        y += &format!("  - {{name: {p}n{i}, address: 192.168.200.1{i}}}\n");
    }
    y += "networks:\n  - {name: front, vni: 5001, attachable: true, subnets: [{subnet: 10.10.0.0/24}]}\n";
    y += "  - {name: back, internal: true, attachable: true, subnets: [{subnet: 10.20.0.0/24}], mtu: 1400}\n";
    y += "endpoints:\n";
    for (name, host, net, ip) in endpoints {
        y += &format!("  - {{name: {name}, host: {p}{host}, network: {net}, netns: {p}-{name}, ip: {ip}}}\n");
    }
    y
}

/// The start of a state for the service tests: hosts `<p>n1..n3`, network
/// `front` (10.10.0.0/24), and `eps` (name, host, ip) on it in namespaces
/// `<p>-<name>`; the caller appends `services:`.
pub fn front_state(p: &str, eps: &[(&str, &str, &str)]) -> String {
    let mut y = String::from("version: 1\nhosts:\n");
    for i in 1..=3 {
        y += &format!("  - {{name: {p}n{i}, address: 192.168.200.1{i}}}\n");
    }
    y += "networks:\n  - {name: front, attachable: true, subnets: [{subnet: 10.10.0.0/24}]}\nendpoints:\n";
    for (n, h, ip) in eps {
        y += &format!("  - {{name: {n}, host: {p}{h}, network: front, netns: {p}-{n}, ip: {ip}}}\n");
    }
    y
}

pub fn underlay(p: &str, hosts: usize) -> Underlay {
    Underlay::new(p, &numbered_hosts(hosts))
}

/// The same with the veths set up as the XDP data path needs them (the
/// previous release ran XDP only).
pub fn underlay_wire_like(p: &str, hosts: usize) -> Underlay {
    Underlay::wire_like(p, &numbered_hosts(hosts))
}

/// n1 at 192.168.200.11, n2 at .12, ...
fn numbered_hosts(hosts: usize) -> Vec<(&'static str, Ipv4Addr)> {
    const NAMES: [&str; 9] = ["n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"];
    NAMES[..hosts].iter().enumerate().map(|(i, n)| (*n, Ipv4Addr::new(192, 168, 200, 11 + i as u8))).collect()
}

pub fn containers(p: &str, names: &[&str]) -> Vec<Netns> {
    names.iter().map(|n| Netns::new(&format!("{p}-{n}"))).collect()
}

pub fn pins(p: &str, host: &str) -> PathBuf {
    Path::new("/sys/fs/bpf/overlay-bpf").join(format!("{p}{host}"))
}

pub fn status(dep: &Deployment, p: &str, host: &str) -> Value {
    json(&assert_ok(
        &dep.cmd(&format!("{p}{host}"), &format!("{p}-{host}")).args(["status", "-o", "json"]).output().unwrap(),
    ))
}

/// `status -o json` with services and backends named from the state file.
pub fn status_named(dep: &Deployment, p: &str, host: &str, state: &Path) -> Value {
    let cmd = &mut dep.cmd(&format!("{p}{host}"), &format!("{p}-{host}"));
    json(&assert_ok(&cmd.args(["status", "-o", "json", "--state"]).arg(state).output().unwrap()))
}

/// New flows this host's programs gave the named service's backends
/// (a `status_named` output).
pub fn service_flows(st: &Value, service: &str) -> u64 {
    let s = st["services"].as_array().unwrap().iter().find(|s| s["name"] == service);
    let s = s.unwrap_or_else(|| panic!("no service {service} in status"));
    s["backends"].as_array().unwrap().iter().map(|b| b["flows"].as_u64().unwrap()).sum()
}

pub fn counter(st: &Value, prog: &str, reason: &str) -> u64 {
    counted(st, prog, reason).0
}

/// (packets, bytes) of a counter in `status -o json`.
pub fn counted(st: &Value, prog: &str, reason: &str) -> (u64, u64) {
    let c = st["counters"].as_array().unwrap().iter().find(|c| c["program"] == prog && c["reason"] == reason);
    let c = c.unwrap_or_else(|| panic!("no counter {prog}/{reason}"));
    (c["packets"].as_u64().unwrap(), c["bytes"].as_u64().unwrap())
}

pub fn map_entries(st: &Value, map: &str) -> u64 {
    st["maps"].as_array().unwrap().iter().find(|m| m["name"] == map).unwrap()["entries"].as_u64().unwrap()
}

/// Link IDs by pin name ("xdp@eth0", "tc@ob...").
pub fn link_ids(st: &Value) -> Vec<(String, u64)> {
    st["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                format!("{}@{}", l["kind"].as_str().unwrap(), l["ifname"].as_str().unwrap()),
                l["link_id"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// `bpftool -j map dump pinned`, reduced to the BTF-formatted entries
/// ({"key": .., "value": ..} with field names).
pub fn bpftool_dump(pin: &Path) -> Value {
    let raw = json(&must(Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(pin)));
    let entries = raw
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.get("formatted").cloned().unwrap_or_else(|| panic!("no BTF-formatted fields in {e}")));
    Value::Array(entries.collect())
}

/// Our veths (ob + 8 hex) in a namespace.
pub fn our_veths(ns: &Netns) -> Vec<String> {
    json(&ns.ip(&["-j", "link", "show"]))
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.len() == 10 && n.starts_with("ob"))
        .map(str::to_string)
        .collect()
}

/// The underlay program in the default data path on a veth underlay (every
/// namespace lab): TC (`auto` picks it for veth). Its counters go by its name.
pub const UNDERLAY: &str = "tc_underlay_ingress";
/// Its pinned link.
pub const UNDERLAY_LINK: &str = "tc@eth0";

/// Whether the pin dir `pins` holds the underlay program's link. Before TCX
/// (6.6) a TC program is a clsact filter, which is not pinned: true there.
pub fn underlay_pinned(pins: &std::path::Path) -> bool {
    !overlay_bpf::host::loader::has_tcx() || pins.join("links").join(UNDERLAY_LINK).exists()
}

/// The hooks of `dev` in `ns` that run a BPF program: (XDP, TC ingress), as
/// the kernel answers: XDP from `ip link`, TC from a TCX query made in `ns`
/// (Debian's bpftool predates TCX) or, before TCX, `bpftool net`'s clsact
/// filters.
pub fn hooks_on(ns: &Netns, dev: &str) -> (bool, bool) {
    let xdp = link_json(ns, dev).is_some_and(|l| l.get("xdp").is_some());
    let (name, d) = (ns.name.clone(), dev.to_string());
    let tcx = std::thread::spawn(move || {
        testbed::enter_netns(&name).expect("enter the netns");
        overlay_bpf::host::netdev::ifindex(&d)
            .is_some_and(|i| !overlay_bpf::host::loader::tcx_ingress_progs(i).is_empty())
    })
    .join()
    .unwrap();
    let out = ns.cmd("bpftool").args(["-j", "net", "show"]).output().unwrap();
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let clsact = v
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["tc"].as_array().cloned().unwrap_or_default())
        .any(|p| p["devname"] == dev && p["kind"].as_str().is_some_and(|k| k.ends_with("ingress")));
    (xdp, tcx || clsact)
}

pub fn link_json(ns: &Netns, dev: &str) -> Option<Value> {
    let out = ns.cmd("ip").args(["-j", "-d", "link", "show", "dev", dev]).stderr(Stdio::null()).output().unwrap();
    if !out.status.success() {
        return None;
    }
    json(&String::from_utf8_lossy(&out.stdout)).as_array().and_then(|a| a.first().cloned())
}

/// An HTTP/1.1 server on `port` in `ns` answering its own name; its log
/// (client addresses) goes to a file. Killed by PID on drop.
pub struct Web {
    _child: Proc,
    dir: PathBuf,
}

impl Web {
    pub fn start(ns: &Netns, name: &str, port: u16) -> Web {
        let dir = std::env::temp_dir().join(format!("{}-www{port}", ns.name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), name).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = ns
            .cmd("/usr/bin/python3")
            .args([
                "-c",
                "import http.server as h, sys; h.SimpleHTTPRequestHandler.protocol_version = 'HTTP/1.1'; \
                 h.ThreadingHTTPServer(('0.0.0.0', int(sys.argv[1])), h.SimpleHTTPRequestHandler).serve_forever()",
                &port.to_string(),
            ])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Web { _child: Proc(child), dir }
    }

    /// Client addresses the server logged.
    pub fn clients(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `curl` the URLs in one invocation (one keep-alive connection); bodies.
pub fn curl(ns: &Netns, urls: &[&str]) -> Vec<String> {
    curl_within(ns, 3, urls)
}

/// `curl` with `secs` for each answer: for pages that take a while to make,
/// such as `/metrics`, which reads every map (seconds under emulation).
pub fn curl_within(ns: &Netns, secs: u32, urls: &[&str]) -> Vec<String> {
    let secs = secs.to_string();
    let mut args = vec!["-s", "--max-time", &secs, "-w", "\n"];
    args.extend_from_slice(urls);
    let out = ns.run("curl", &args);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// `overlay-bpf agent` for one host, its log in a file; killed by PID on drop.
pub struct Agent {
    _child: Proc,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(dep: &mut Deployment, state: &Path, host: &str, netns: &str, extra: &[&str]) -> Agent {
        let state = state.to_str().expect("a UTF-8 path");
        Agent::start_with(dep, &["--state", state], host, netns, extra)
    }

    /// An agent on the store `source` names (`--state FILE`, `--store URL`).
    pub fn start_with(dep: &mut Deployment, source: &[&str], host: &str, netns: &str, extra: &[&str]) -> Agent {
        dep.track(host, netns);
        let log = std::env::temp_dir().join(format!("{host}-agent.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = dep
            .cmd(host, netns)
            .args(["agent", "--interval", "1"])
            .args(source)
            .args(extra)
            // Tests never ask a real upstream resolver: nothing listens there.
            .args(if extra.contains(&"--dns-upstream") { &[][..] } else { &["--dns-upstream", "127.0.0.1:5399"][..] })
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        Agent { _child: Proc(child), log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the agent has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self._child.0.try_wait(), Ok(None))
    }

    /// SIGKILL, as a crash would: nothing of the agent gets to clean up.
    pub fn kill(&mut self) {
        let _ = self._child.0.kill();
        let _ = self._child.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls `f` every 200 ms until it holds; panics with `what` after `secs`.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(t.elapsed() < std::time::Duration::from_secs(secs), "timed out after {secs} s waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// 100 pings a second from namespace `ns` to `dst`, in back-to-back runs of
/// `per_run` (each waits for its last reply, so a run's count is exact),
/// until [`Pinger::stop`], which gives (sent, received).
pub struct Pinger {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl Pinger {
    pub fn start(ns: &str, dst: &str, per_run: u32) -> Pinger {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, ns, dst, count) = (stop.clone(), ns.to_string(), dst.to_string(), per_run.to_string());
        let thread = std::thread::spawn(move || {
            let (mut sent, mut got) = (0u64, 0u64);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let out = Command::new("ip")
                    .args(["netns", "exec", &ns, "ping", "-q", "-c", &count, "-i", "0.01", "-W", "1", &dst])
                    .stderr(Stdio::null())
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or("").to_string();
                let n: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
                assert!(n.len() >= 2, "ping printed no summary: {text}");
                sent += n[0];
                got += n[1];
            }
            (sent, got)
        });
        Pinger { stop, thread }
    }

    /// Stops after the current run; (sent, received).
    pub fn stop(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Checks a [`Pinger`]'s count across moves of a veth underlay off XDP.
///
/// Removing XDP from a veth deletes its NAPI context and frees the frames
/// still queued in its XDP ring (`veth_napi_del`): the kernel's loss, not
/// the data path's. At 100 pings a second at most one ping is in that ring
/// when it goes, so each removal may cost one ping and nothing else may.
pub fn assert_lost_only_to_xdp_removals(sent: u64, got: u64, removals: u64, what: &str) {
    assert!(got <= sent, "{what}: {got} replies to {sent} pings");
    assert!(
        sent - got <= removals,
        "{what}: {} of {sent} pings lost, more than the {removals} the veth's XDP ring may hold as XDP leaves it",
        sent - got
    );
}
