//! Network-namespace testbed shared by the kernel tests and `cargo xtask run`:
//! hosts as namespaces on one underlay bridge, containers as namespaces, and
//! guards that remove all of it by name when dropped, also after a panic.
//!
//! Only std, libc and serde_json here: xtask includes this file by path, and
//! both crates have those.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

/// Runs a command, returning its output; panics with stderr when it fails.
pub fn must(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip ARGS...`.
pub fn ip(args: &[&str]) -> String {
    must(Command::new("ip").args(args))
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        // A leftover from an earlier crashed run of the same name goes first.
        let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
        ip(&["netns", "add", name]);
        let ns = Netns { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
    /// `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> String {
        must(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }
    /// A command run inside the namespace (`ip netns exec`).
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }
    pub fn run(&self, prog: &str, args: &[&str]) -> Output {
        self.cmd(prog).args(args).stdin(Stdio::null()).output().expect("ip netns exec")
    }
}

/// `tcpdump ARGS` in `ns`, its output to `stdout`, returned once it says it
/// is listening (slow to start in a VM): what it captures from then on is
/// all there. Stop it with SIGINT so it writes out what it holds.
pub fn tcpdump(ns: &Netns, args: &[&str], stdout: Stdio) -> Child {
    let mut dump = ns.cmd("tcpdump").args(args).stdout(stdout).stderr(Stdio::piped()).spawn().expect("tcpdump");
    let mut err = BufReader::new(dump.stderr.take().expect("piped"));
    let mut said = String::new();
    while err.read_line(&mut said).unwrap_or(0) > 0 && !said.contains("listening on") {}
    assert!(said.contains("listening on"), "tcpdump did not start: {said}");
    dump
}

/// Moves the calling thread, and only it, into namespace /run/netns/NAME;
/// the sockets it opens afterwards live there.
pub fn enter_netns(name: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(Path::new("/run/netns").join(name))?;
    setns_fd(file.as_raw_fd())
}

/// Moves the calling thread into the network namespace open as `fd`. Only
/// a system call: safe between fork and exec (the VM launcher's pre_exec).
pub fn setns_fd(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: setns reads only its arguments; a bad fd is an error return.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP server on `port` in `ns` that answers each line with "<name> <line>"
/// on the connection it came on (a reset connection ends quietly); killed on
/// drop. Wait for it with `wait_listening`.
pub fn tcp_echo(ns: &Netns, name: &str, port: u16) -> Proc {
    let script = "import socket, sys, threading\n\
                  def serve(c):\n    try:\n        for line in c.makefile('rb'):\n            \
                  c.sendall(sys.argv[1].encode() + b' ' + line)\n    except OSError:\n        pass\n\
                  s = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                  s.bind(('0.0.0.0', int(sys.argv[2])))\ns.listen(128)\n\
                  while True:\n    c, _ = s.accept()\n    threading.Thread(target=serve, args=(c,), daemon=True).start()\n";
    Proc(
        ns.cmd("/usr/bin/python3")
            .args(["-c", script, name, &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3"),
    )
}

/// Waits until something in `ns` listens on TCP `port`.
pub fn wait_listening(ns: &Netns, port: u16) -> Result<(), String> {
    let t = Instant::now();
    let filter = format!("sport = :{port}");
    while !String::from_utf8_lossy(&ns.run("ss", &["-Hltn", &filter]).stdout).contains("LISTEN") {
        if t.elapsed() > Duration::from_secs(60) {
            return Err(format!("nothing listened on {port} in {} within 60 s", ns.name));
        }
        sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A TCP connection to a `tcp_echo` server, opened from inside a namespace.
pub struct Talk {
    r: BufReader<TcpStream>,
    w: TcpStream,
    /// What the connection is for, in messages.
    pub what: String,
}

impl Talk {
    /// Connects to `to` from namespace `netns` (a thread enters it: the socket
    /// lives there, and can be used from any thread after).
    pub fn open(netns: &str, to: SocketAddr, what: &str) -> Result<Talk, String> {
        let ns = netns.to_string();
        let s = std::thread::spawn(move || {
            enter_netns(&ns)?;
            TcpStream::connect_timeout(&to, Duration::from_secs(3))
        })
        .join()
        .map_err(|_| "the connecting thread panicked".to_string())?
        .map_err(|e| format!("{what}: connect to {to} from {netns}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let w = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Talk { r: BufReader::new(s), w, what: what.to_string() })
    }

    /// Sends line `n` and reads the echo: the name of the server that answered.
    pub fn exchange(&mut self, n: u64) -> Result<String, String> {
        let err = |e: std::io::Error| format!("{}: message {n}: {e}", self.what);
        self.w.write_all(format!("{n}\n").as_bytes()).map_err(err)?;
        let mut line = String::new();
        if self.r.read_line(&mut line).map_err(err)? == 0 {
            return Err(format!("{}: message {n}: the connection was closed", self.what));
        }
        match line.trim_end().rsplit_once(' ') {
            Some((name, echo)) if echo == n.to_string() => Ok(name.to_string()),
            _ => Err(format!("{}: message {n}: wrong answer {line:?}", self.what)),
        }
    }
}

/// xorshift64*: small, seeded, the same everywhere (the fuzz tests, the
/// soak's churn), so a printed seed replays a run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// A child process, killed by PID (SIGKILL) and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One iperf3 TCP run of `secs` from `client` to a one-off server on
/// `server_ip` in `server`, with `extra` client arguments: the received bits
/// per second.
pub fn iperf3(server: &Netns, client: &Netns, server_ip: &str, secs: f64, extra: &[&str]) -> Result<f64, String> {
    iperf3_via(server, server_ip, client, server_ip, secs, extra)
}

/// The same with the server listening on `listen_ip` and the client
/// connecting to `connect_ip` (an address translated on the way).
pub fn iperf3_via(
    server: &Netns,
    listen_ip: &str,
    client: &Netns,
    connect_ip: &str,
    secs: f64,
    extra: &[&str],
) -> Result<f64, String> {
    let secs = secs.to_string();
    let v = iperf3_run(server, listen_ip, client, connect_ip, &["-t", secs.as_str()], extra)?;
    v["end"]["sum_received"]["bits_per_second"].as_f64().ok_or_else(|| format!("iperf3 gave no result: {v}"))
}

fn iperf3_run(
    server: &Netns,
    listen_ip: &str,
    client: &Netns,
    connect_ip: &str,
    end: &[&str],
    extra: &[&str],
) -> Result<serde_json::Value, String> {
    let server_ip = listen_ip;
    let _srv = Proc(
        server
            .cmd("iperf3")
            .args(["-s", "-1", "-B", server_ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("iperf3 -s: {e}"))?,
    );
    let t = Instant::now();
    let listening = format!("src {server_ip}:5201");
    while !String::from_utf8_lossy(&server.run("ss", &["-Hltn", &listening]).stdout).contains("LISTEN") {
        if t.elapsed() > Duration::from_secs(60) {
            return Err(format!("iperf3 -s did not listen on {server_ip} within 60 s"));
        }
        sleep(Duration::from_millis(50));
    }
    // A stalled transfer ends there, as a failure, not a hang.
    let mut args = vec!["60", "iperf3", "-c", connect_ip, "--connect-timeout", "3000", "-J"];
    args.extend_from_slice(end);
    args.extend_from_slice(extra);
    let out = client.run("timeout", &args);
    serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 -J output ({}): {e}", out.status))
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// A WireGuard key directory of the caller's own, `$OVERLAY_BPF_KEY_DIR`
/// for every overlay-bpf the process runs after it (so hosts on one machine
/// keep their keys apart from the machine's), emptied first and removed on
/// drop.
pub struct KeyDir(pub PathBuf);

impl KeyDir {
    pub fn new(prefix: &str) -> KeyDir {
        let d = std::env::temp_dir().join(format!("{prefix}-keys"));
        let _ = std::fs::remove_dir_all(&d);
        std::env::set_var("OVERLAY_BPF_KEY_DIR", &d);
        KeyDir(d)
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Hosts on a shared underlay: a "switch" namespace holding bridge `br0`, and
/// one namespace per host whose `eth0` is plugged into it.
pub struct Underlay {
    pub prefix: String,
    pub hosts: Vec<(Netns, Ipv4Addr)>,
    pub switch: Netns,
    /// Whether the switch ports and hosts are set up as a wire and NICs
    /// would behave (see `add_host`), or left at veth's defaults.
    wire_like: bool,
}

impl Underlay {
    /// Namespaces `<prefix>-sw` and `<prefix>-<host name>`, host `i` at
    /// `addrs[i]`/24, every veth at its defaults (GRO off, TX checksum
    /// offload on), as a first-time user's lab has them: what the default
    /// data path (TC, on a veth underlay) takes as it is.
    pub fn new(prefix: &str, hosts: &[(&str, Ipv4Addr)]) -> Underlay {
        Self::build(prefix, hosts, false)
    }

    /// The same with the switch ports and hosts set up as a wire and NICs
    /// would behave (see `add_host`): what the XDP data path needs of a veth
    /// underlay.
    pub fn wire_like(prefix: &str, hosts: &[(&str, Ipv4Addr)]) -> Underlay {
        Self::build(prefix, hosts, true)
    }

    fn build(prefix: &str, hosts: &[(&str, Ipv4Addr)], wire_like: bool) -> Underlay {
        let switch = Netns::new(&format!("{prefix}-sw"));
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let mut u = Underlay { prefix: prefix.to_string(), hosts: Vec::new(), switch, wire_like };
        for (name, addr) in hosts {
            u.add_host(name, *addr);
        }
        u
    }

    pub fn add_host(&mut self, name: &str, addr: Ipv4Addr) -> &Netns {
        let i = self.hosts.len();
        let ns = Netns::new(&format!("{}-{name}", self.prefix));
        let port = format!("p{i}");
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch.name,
        ]);
        self.switch.ip(&["link", "set", &port, "master", "br0", "up"]);
        if self.wire_like {
            // The switch port stands in for the wire: like a NIC it must take
            // whatever the host sends (a veth takes frames that XDP sends into
            // it, XDP_TX or redirect, only with GRO, i.e. NAPI, or an XDP
            // program of its own), and like a wire it carries finished
            // checksums (a veth would pass partial ones along, which only
            // the kernel stack knows to finish). What `overlay-bpf up` asks
            // of a veth underlay's peer.
            must(self.switch.cmd("ethtool").args(["-K", &port, "gro", "on", "tx", "off"]));
            must(ns.cmd("ethtool").args(["-K", "eth0", "tx", "off"]));
        }
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        self.hosts.push((ns, addr));
        &self.hosts[i].0
    }

    pub fn host(&self, name: &str) -> &Netns {
        let full = format!("{}-{name}", self.prefix);
        &self.hosts.iter().find(|(n, _)| n.name == full).unwrap_or_else(|| panic!("no host {name}")).0
    }
}

/// Hosts brought up with `overlay-bpf up`: dropped, it runs `overlay-bpf down`
/// for each and removes their pin dirs by name.
pub struct Deployment {
    pub bin: PathBuf,
    /// (host name, netns name, pin dir).
    pub hosts: Vec<(String, String, PathBuf)>,
    /// The data-path mode its commands ask for (`OVERLAY_BPF_DATAPATH`);
    /// `None`: the default (`auto`).
    pub datapath: Option<&'static str>,
}

impl Deployment {
    pub fn new(bin: &Path) -> Deployment {
        Deployment { bin: bin.to_path_buf(), hosts: Vec::new(), datapath: None }
    }

    /// The same, its commands asking for data-path mode `mode` (tc, xdp).
    pub fn in_mode(bin: &Path, mode: &'static str) -> Deployment {
        Deployment { bin: bin.to_path_buf(), hosts: Vec::new(), datapath: Some(mode) }
    }

    /// The overlay-bpf command for a host in netns `netns`.
    pub fn cmd(&self, host: &str, netns: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["--host", host, "--netns", netns]);
        match self.datapath {
            Some(mode) => c.env("OVERLAY_BPF_DATAPATH", mode),
            None => c.env_remove("OVERLAY_BPF_DATAPATH"),
        };
        c
    }

    /// Remembers a host so drop takes it down.
    pub fn track(&mut self, host: &str, netns: &str) {
        if !self.hosts.iter().any(|(h, _, _)| h == host) {
            let pins = Path::new("/sys/fs/bpf/overlay-bpf").join(host);
            self.hosts.push((host.to_string(), netns.to_string(), pins));
        }
    }

    /// `overlay-bpf up` for a host; returns the raw output.
    pub fn up(&mut self, state: &Path, host: &str, netns: &str) -> Output {
        self.track(host, netns);
        self.cmd(host, netns)
            .arg("up")
            .arg("--state")
            .arg(state)
            .stdin(Stdio::null())
            .output()
            .expect("run overlay-bpf")
    }

    pub fn down_all(&mut self) {
        for (host, netns, pins) in self.hosts.drain(..) {
            let _ = Command::new(&self.bin)
                .args(["--host", &host, "--netns", &netns, "down"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&pins);
            remove_host_lock(&pins);
        }
    }
}

/// Removes the host lock (and applied revision) that applies on the pin dir
/// `pins` took: overlay-bpf keeps them, like /run/lock's files.
pub fn remove_host_lock(pins: &Path) {
    let lock = pins.to_string_lossy().trim_start_matches('/').replace('/', "%");
    for ext in ["lock", "rev", "underlay"] {
        let _ = std::fs::remove_file(Path::new("/run/overlay-bpf/locks").join(format!("{lock}.{ext}")));
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.down_all();
    }
}
