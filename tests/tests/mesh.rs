//! The routing mesh end to end, as a user tries it: HTTP and UDP servers as
//! backends on three hosts, a client outside the cluster on the underlay.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    process::Stdio,
};

use common::*;

const HOSTS: [&str; 3] = ["192.168.200.11", "192.168.200.12", "192.168.200.13"];
const CLIENT: &str = "192.168.200.100";

/// name, host, ip; w* are backends, c2 is not.
const EPS: [(&str, &str, &str); 4] =
    [("w1", "n1", "10.10.0.21"), ("w2", "n2", "10.10.0.22"), ("w3", "n3", "10.10.0.23"), ("c2", "n2", "10.10.0.32")];

/// web: tcp 8080 published on every host; echo: udp 9000 published;
/// solo: tcp 8080 published as 8081 in host mode, backend w3 only.
fn mesh_state(p: &str, web: &[&str]) -> String {
    let mut y = front_state(p, &EPS);
    y += &format!(
        "services:
  - name: web
    network: front
    vip: 10.10.0.100
    ports: [{{protocol: tcp, target: 8080, published: 8080}}]
    backends: [{}]
  - name: echo
    network: front
    ports: [{{protocol: udp, target: 9000, published: 9000}}]
    backends: [w1, w2]
  - name: void
    network: front
    ports: [{{protocol: udp, target: 9999, published: 9999}}]
    backends: [w3]
  - name: solo
    network: front
    ports: [{{protocol: tcp, target: 8080, published: 8081, mode: host}}]
    backends: [w3]
",
        web.join(", ")
    );
    y
}

/// A UDP server on :9000 in `ns` answering "<name> <the client address it
/// saw>"; killed on drop.
fn udp_echo(ns: &Netns, name: &str) -> Proc {
    let script = "import socket, sys\n\
                      s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                      s.bind(('0.0.0.0', 9000))\n\
                      while True:\n    d, a = s.recvfrom(2048)\n    s.sendto((sys.argv[1] + ' ' + a[0]).encode(), a)\n";
    Proc(ns.cmd("/usr/bin/python3").args(["-c", script, name]).stdout(Stdio::null()).spawn().unwrap())
}

/// One UDP datagram from `ns` to `host`:9000 on a new socket: (answer, the
/// address and port the answer came from).
fn udp_ask(ns: &Netns, host: &str) -> Option<(String, String)> {
    let out = ns.run(
        "python3",
        &[
            "-c",
            "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(2)\n\
             s.sendto(b'hi', (sys.argv[1], 9000))\nd, a = s.recvfrom(2048)\nprint(d.decode() + '|' + a[0] + ':' + str(a[1]))",
            host,
        ],
    );
    let o = String::from_utf8_lossy(&out.stdout).trim().to_string();
    o.split_once('|').map(|(a, b)| (a.to_string(), b.to_string()))
}

struct Mesh {
    p: &'static str,
    dep: Deployment,
    webs: Vec<Web>,
    _echos: Vec<Proc>,
    cs: Vec<Netns>,
    u: Underlay,
    st: StateFile,
}

impl Mesh {
    fn new(p: &'static str) -> Mesh {
        require_root();
        let st = StateFile::new(p, &mesh_state(p, &["w1", "w2", "w3"]));
        let mut u = underlay(p, 3);
        u.add_host("cl", CLIENT.parse::<Ipv4Addr>().unwrap());
        let cs: Vec<Netns> = EPS.iter().map(|(n, ..)| Netns::new(&format!("{p}-{n}"))).collect();
        let mut dep = Deployment::new(&bin());
        for h in ["n1", "n2", "n3"] {
            assert_ok(&dep.up(&st.0, &format!("{p}{h}"), &format!("{p}-{h}")));
        }
        let webs = (0..3).map(|i| Web::start(&cs[i], EPS[i].0, 8080)).collect();
        let echos = (0..2).map(|i| udp_echo(&cs[i], EPS[i].0)).collect();
        let m = Mesh { p, dep, webs, _echos: echos, cs, u, st };
        // Each server answers on its own loopback before the mesh is tried.
        wait_until("the HTTP servers", 60, || {
            (0..3).all(|i| m.cs[i].run("curl", &["-s", "--max-time", "1", "http://127.0.0.1:8080/"]).status.success())
        });
        m
    }

    fn client(&self) -> &Netns {
        self.u.host("cl")
    }

    fn c(&self, name: &str) -> &Netns {
        self.cs.iter().find(|c| c.name == format!("{}-{name}", self.p)).unwrap()
    }

    fn reapply(&mut self, web: &[&str]) {
        self.st.write(&mesh_state(self.p, web));
        let p = self.p;
        for h in ["n1", "n2", "n3"] {
            assert_ok(&self.dep.up(&self.st.0, &format!("{p}{h}"), &format!("{p}-{h}")));
        }
    }

    /// `n` new connections to `host`:`port`; answers counted by backend.
    fn spread(&self, host: &str, port: u16, n: usize) -> BTreeMap<String, usize> {
        let url = format!("http://{host}:{port}/");
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            for body in curl(self.client(), &[&url]) {
                *seen.entry(body).or_insert(0) += 1;
            }
        }
        seen
    }

    /// Every host's non-zero counters, for failure messages.
    fn counters(&self) -> String {
        let mut out = String::new();
        for h in ["n1", "n2", "n3"] {
            let st = status(&self.dep, self.p, h);
            for c in st["counters"].as_array().unwrap() {
                if c["packets"].as_u64() > Some(0) {
                    out += &format!("{h} {} {} {}\n", c["program"], c["reason"], c["packets"]);
                }
            }
        }
        out
    }

    /// Client addresses the backends logged, loopback probes left out.
    fn seen_clients(&self) -> BTreeSet<String> {
        self.webs.iter().flat_map(|w| w.clients()).filter(|c| c != "127.0.0.1").collect()
    }
}

#[test]
fn published_ports_reach_every_backend_through_every_host_with_the_client_address() {
    let m = Mesh::new("obmh");
    for host in HOSTS {
        let seen = m.spread(host, 8080, 30);
        eprintln!("30 connections through {host}:8080: {seen:?}");
        assert_eq!(
            seen.values().sum::<usize>(),
            30,
            "every request through {host} answered: {seen:?}\n{}",
            m.counters()
        );
        assert_eq!(seen.len(), 3, "every backend reached through {host}: {seen:?}");
    }
    // No SNAT: the backends saw the outside client's own address.
    assert_eq!(m.seen_clients(), BTreeSet::from([CLIENT.to_string()]));

    // A keep-alive connection stays on one backend.
    let url = format!("http://{}:8080/", HOSTS[1]);
    let bodies = curl(m.client(), &[&url, &url, &url, &url, &url]);
    assert_eq!(bodies.len(), 5, "{bodies:?}");
    assert!(bodies.iter().all(|b| *b == bodies[0]), "one connection, one backend: {bodies:?}");

    // UDP: answered from the address and port the client sent to, by
    // backends that saw the client's address.
    let mut udp_backends = BTreeSet::new();
    for host in HOSTS {
        for _ in 0..8 {
            let (answer, from) = udp_ask(m.client(), host).unwrap_or_else(|| panic!("no UDP answer through {host}"));
            assert_eq!(from, format!("{host}:9000"), "the answer's source");
            let (name, saw) = answer.split_once(' ').unwrap();
            assert_eq!(saw, CLIENT, "the UDP backend saw the client's address");
            udp_backends.insert(name.to_string());
        }
    }
    assert_eq!(udp_backends, BTreeSet::from(["w1".to_string(), "w2".to_string()]));

    // An ICMP error about a mesh flow reaches the client translated: a
    // connected UDP socket to a port nobody listens on (void's backend runs
    // no server) is refused, through every host.
    for host in HOSTS {
        let out = m.client().run(
            "python3",
            &[
                "-c",
                "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(2)\n\
                 s.connect((sys.argv[1], 9999))\ns.send(b'hi')\ntry:\n    s.recv(100)\n    print('answered')\n\
                 except ConnectionRefusedError:\n    print('refused')\nexcept socket.timeout:\n    print('timeout')",
                host,
            ],
        );
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if host == HOSTS[2] {
            // void's backend is local to n3: translated by TC.
            assert_eq!(said, "refused", "port unreachable through {host}\n{}", m.counters());
        } else {
            // Through another host the reply is tunnelled back; the ICMP
            // error is not (docs/design.md: known limits).
            assert!(said == "refused" || said == "timeout", "{host}: {said}");
        }
    }

    // mode: host: only n3 (running solo's backend) answers on 8081.
    assert_eq!(m.spread(HOSTS[2], 8081, 3), BTreeMap::from([("w3".to_string(), 3)]));
    for host in &HOSTS[..2] {
        assert!(m.spread(host, 8081, 1).is_empty(), "{host} has no solo backend but answered on 8081");
    }

    // Internal VIP of the same service from a non-backend endpoint.
    let from_c2 = curl(m.c("c2"), &["http://10.10.0.100:8080/"]);
    assert_eq!(from_c2.len(), 1, "VIP from c2: {from_c2:?}");

    // Per-service, per-backend counters in `status`.
    let st = status_named(&m.dep, m.p, "n1", &m.st.0);
    let web = st["services"].as_array().unwrap().iter().find(|s| s["name"] == "web").expect("web in status");
    let flows = service_flows(&st, "web");
    assert!(flows >= 30, "n1 counted the flows it balanced: {web}");
    assert!(web["backends"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["in_rotation"] == true && b["packets"].as_u64() > Some(0)));
    assert!(counter(&st, UNDERLAY, "mesh_tunneled") > 0);
    assert!(counter(&st, UNDERLAY, "mesh_replied") > 0);
    assert!(counter(&st, UNDERLAY, "mesh_local") > 0);
}

/// Keep-alive HTTP connections from the outside client, held open by a
/// Python process: `round()` asks on each and returns who answered.
struct Held {
    child: Proc,
    out: BufReader<std::process::ChildStdout>,
}

impl Held {
    fn open(ns: &Netns, per_host: usize) -> Held {
        let script = "import http.client, sys\n\
            conns = [http.client.HTTPConnection(h, 8080, timeout=3) for h in sys.argv[2:] for _ in range(int(sys.argv[1]))]\n\
            def ask(c):\n    try:\n        c.request('GET', '/')\n        return c.getresponse().read().decode()\n    except Exception:\n        return 'ERR'\n\
            for line in sys.stdin:\n    print(' '.join(ask(c) for c in conns), flush=True)\n";
        let mut args = vec!["-c".to_string(), script.to_string(), per_host.to_string()];
        args.extend(HOSTS.iter().map(|h| h.to_string()));
        let mut child =
            ns.cmd("/usr/bin/python3").args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Held { child: Proc(child), out }
    }

    fn round(&mut self) -> Vec<String> {
        writeln!(self.child.0.stdin.as_mut().unwrap(), "go").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.split_whitespace().map(str::to_string).collect()
    }
}

#[test]
fn removing_a_backend_moves_only_its_flows() {
    let mut m = Mesh::new("obmr");
    let mut held = Held::open(m.client(), 8);
    let before = held.round();
    eprintln!("24 held connections: {before:?}");
    assert_eq!(before.len(), 24);
    assert!(before.iter().all(|b| b.starts_with('w')), "{before:?}");
    assert!(before.contains(&"w2".to_string()), "some held connection on w2 (24 tries): {before:?}");

    m.reapply(&["w1", "w3"]);
    let after = held.round();
    eprintln!("after removing w2: {after:?}");
    for (b, a) in before.iter().zip(&after) {
        if b != "w2" {
            assert_eq!(a, b, "a connection to a remaining backend moved: {before:?} -> {after:?}");
        } else {
            assert_ne!(a, "w2", "a removed backend still answered: {before:?} -> {after:?}");
        }
    }
    // New connections: every host, never w2.
    for host in HOSTS {
        let seen = m.spread(host, 8080, 12);
        assert_eq!(seen.values().sum::<usize>(), 12, "{host}: {seen:?}");
        assert!(!seen.contains_key("w2"), "{host} sent a new flow to a removed backend: {seen:?}");
    }
}

#[test]
fn a_stopped_backend_drops_out_and_comes_back_by_health_checks() {
    let mut m = Mesh::new("obma");
    let health = ["--health-interval", "1", "--health-fails", "2", "--health-passes", "1", "--health-timeout", "300"];
    let p = m.p;
    let st = m.st.0.clone();
    let agents: Vec<Agent> = ["n1", "n2", "n3"]
        .iter()
        .map(|h| Agent::start(&mut m.dep, &st, &format!("{p}{h}"), &format!("{p}-{h}"), &health))
        .collect();
    // The agents serve their reports on the underlay.
    let t = std::time::Instant::now();
    loop {
        let out = curl(m.client(), &["http://192.168.200.12:7947/health"]);
        if out.first().is_some_and(|b| b.contains("\"w2\":{\"up\":true")) {
            break;
        }
        let logs: Vec<String> = agents.iter().map(|a| a.log_text()).collect();
        // Generous: under software emulation three agents load and verify
        // the programs at once, beside the other tests of this binary.
        assert!(
            t.elapsed().as_secs() < 60,
            "no health report from n2 in 60 s ({out:?}); the agents' logs:\n{}",
            logs.join("\n---\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let all_answered_without_w2 = |m: &Mesh| {
        HOSTS.iter().all(|h| {
            let seen = m.spread(h, 8080, 9);
            seen.values().sum::<usize>() == 9 && !seen.contains_key("w2")
        })
    };

    // w2's server stops: without any manual step, every host stops sending to it.
    drop(m.webs.remove(1));
    wait_until("w2 out of every host's load balancing", 90, || all_answered_without_w2(&m));
    let log = agents[1].log_text();
    assert!(log.contains("backend DOWN") && log.contains("w2"), "n2's agent logged the transition:\n{log}");
    let report = curl(m.client(), &["http://192.168.200.12:7947/health"]);
    assert!(report[0].contains("\"w2\":{\"up\":false"), "{report:?}");
    let metrics = curl_within(m.client(), 60, &["http://192.168.200.12:7947/metrics"]);
    assert!(metrics.iter().any(|l| l == "overlay_bpf_backend_up{host=\"obman2\",backend=\"w2\"} 0"), "{metrics:?}");
    // Everything `status` shows is there too: per reason, per backend, map fill levels.
    let value = |prefix: &str| -> u64 {
        let line = metrics.iter().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix}: {metrics:?}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("overlay_bpf_packets_total{program=\"tc_underlay_ingress\",reason=\"mesh_tunneled\"") > 0);
    assert!(value("overlay_bpf_backend_flows_total{service=\"web\",backend=\"w3\"") > 0);
    let w2_in = "overlay_bpf_backend_in_rotation{service=\"web\",backend=\"w2\"";
    assert!(!metrics.iter().any(|l| l.starts_with(w2_in) && l.ends_with(" 1")), "w2 out of the tables: {metrics:?}");
    assert_eq!(value("overlay_bpf_backend_in_rotation{service=\"web\",backend=\"w3\""), 1);
    assert_eq!(value("overlay_bpf_map_max_entries{map=\"OB_ENDPOINTS_V1\"}"), 65536);
    assert!(value("overlay_bpf_map_entries{map=\"OB_ENDPOINTS_V1\"}") >= 4);
    assert_eq!(value("overlay_bpf_link_attached{kind=\"tc\",ifname=\"eth0\"}"), 1);
    assert!(metrics.iter().any(|l| l == "# EOF"), "OpenMetrics text ends with # EOF");

    // It comes back.
    let w2 = Web::start(m.c("w2"), "w2", 8080);
    wait_until("w2 back in the load balancing", 90, || HOSTS.iter().all(|h| m.spread(h, 8080, 9).contains_key("w2")));
    assert!(agents[1].log_text().contains("backend UP"), "{}", agents[1].log_text());
    drop(w2);
}
