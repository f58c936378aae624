//! Docker runs containers on overlay-bpf networks (issue 16): two Docker
//! engines (Debian's docker.io) on two hosts of a namespace cluster, each with
//! an agent serving the plugin, a third host with a plain namespace endpoint,
//! and the store on a real etcd. Host tier only: the VMs carry no Docker.

mod common;

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{docker::*, etcd::*, *};

/// The cluster: hosts `<p>n1..n3`, no networks yet.
fn hosts_only(p: &str) -> String {
    let mut y = String::from("version: 1\nhosts:\n");
    for i in 1..=3 {
        y += &format!("  - {{name: {p}n{i}, address: 192.168.200.1{i}}}\n");
    }
    y
}

/// An agent for host `h` serving engine `e`'s plugin, in its mount namespace.
fn plugin_agent(dep: &mut Deployment, p: &str, h: &str, url: &str, e: &DockerEngine) -> Proc {
    let (host, ns) = (format!("{p}{h}"), format!("{p}-{h}"));
    dep.track(&host, &ns);
    let log = std::fs::File::create(e.dir.join("agent.log")).unwrap();
    let child = e
        .nsenter()
        .arg(bin())
        .args(["--host", &host, "--netns", &ns, "agent", "--store", url, "--no-health"])
        .args(["--docker-plugin", "--docker-host", &e.socket()])
        // Tests never ask a real upstream resolver: nothing listens there.
        .args(["--dns-upstream", "127.0.0.1:5399"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc(child)
}

fn agent_log(e: &DockerEngine) -> String {
    std::fs::read_to_string(e.dir.join("agent.log")).unwrap_or_default()
}

/// The store's endpoints (`endpoint ls -o json`) on `network`.
fn endpoints(ns: &Netns, url: &str, network: &str) -> Vec<serde_json::Value> {
    let o = ob(ns, &["endpoint", "ls", "--network", network, "-o", "json", "--store", url]);
    json(&assert_ok(&o)).as_array().cloned().unwrap_or_default()
}

fn refused_by_docker(o: &Output, want: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{}", text(o));
    for w in want {
        assert!(err.contains(w), "missing {w:?} in:\n{err}");
    }
}

/// The host-side veths of a host (overlay-bpf's `ob` + 8 hex digits).
fn our_veths(ns: &Netns) -> Vec<String> {
    let o = ns.run("ip", &["-o", "link", "show"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.len() == 10 && n.starts_with("ob") && n[2..].bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

fn pings_from(ns: &Netns, to: &str) -> bool {
    ns.run("ping", &["-c", "2", "-i", "0.2", "-W", "1", to]).status.success()
}

/// A container's address on its one network.
fn address(e: &DockerEngine, name: &str) -> String {
    e.ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name])
}

fn wait_ping(e: &DockerEngine, from: &str, to: &str) {
    let t = Instant::now();
    while !e.docker(&["exec", from, "ping", "-c", "1", "-W", "1", to]).status.success() {
        if t.elapsed() > Duration::from_secs(20) && std::env::var_os("OB_PAUSE").is_some() {
            std::fs::write("/tmp/ob-paused", "").unwrap();
            std::thread::sleep(Duration::from_secs(240));
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{from} never reached {to}; its agent's log:\n{}", agent_log(e));
    }
}

#[test]
fn containers_on_two_docker_engines_and_a_namespace_talk_across_hosts() {
    require_root();
    let p = "obdk";
    let mut u = underlay(p, 3);
    u.add_host("cl", "192.168.200.100".parse().unwrap());
    let cs = containers(p, &["ns1"]);
    let etcd = Etcd::start(u.host("n1"), "192.168.200.11", p);
    let url = etcd.url.clone();
    let n1 = u.host("n1");
    let st = StateFile::new(p, &hosts_only(p));
    assert_ok(&ob(n1, &["store", "import", st.0.to_str().unwrap(), "--store", &url]));
    let engines = [
        DockerEngine::start(&format!("{p}n1"), &format!("{p}-n1")),
        DockerEngine::start(&format!("{p}n2"), &format!("{p}-n2")),
    ];
    let mut dep = Deployment::new(&bin());
    let _agents =
        [plugin_agent(&mut dep, p, "n1", &url, &engines[0]), plugin_agent(&mut dep, p, "n2", &url, &engines[1])];
    let _plain =
        Agent::start_with(&mut dep, &["--store", &url], &format!("{p}n3"), &format!("{p}-n3"), &["--no-health"]);
    let logs = || format!("n1:\n{}\nn2:\n{}", agent_log(&engines[0]), agent_log(&engines[1]));
    wait_until("both plugins serving", 30, || {
        (0..2).all(|i| agent_log(&engines[i]).contains("Docker network and IPAM plugin"))
    });

    // One store network from the same `docker network create` on both engines.
    let create = ["network", "create", "-d", "overlay-bpf", "--ipam-driver", "overlay-bpf", "--subnet", "10.30.0.0/24"];
    for e in &engines {
        let o = e.docker(&[&create[..], &["app"]].concat());
        assert!(o.status.success(), "{}\n{}", text(&o), logs());
    }
    wait_until("app in the store, used by both hosts", 20, || {
        let o = ob(n1, &["network", "inspect", "app", "--store", &url]);
        o.status.success() && {
            let out = String::from_utf8_lossy(&o.stdout);
            out.contains("10.30.0.0/24")
        }
    });
    // Without our IPAM, or overlapping app: refused, with the fix or the culprit.
    refused_by_docker(
        &engines[0].docker(&["network", "create", "-d", "overlay-bpf", "--subnet", "10.31.0.0/24", "noipam"]),
        &["--ipam-driver overlay-bpf"],
    );
    refused_by_docker(
        &engines[1].docker(&[&create[..6], &["--subnet", "10.30.0.0/16", "wide"]].concat()),
        &["overlaps", "\"app\"", "10.30.0.0/24"],
    );
    refused_by_docker(
        &engines[0].docker(
            &[&create[..], &["-o", "encrypted", "secret"]]
                .concat()
                .iter()
                .map(|s| if *s == "10.30.0.0/24" { "10.32.0.0/24" } else { s })
                .collect::<Vec<_>>(),
        ),
        &["encrypted", "CONFIG_WIREGUARD"],
    );

    // Containers on both engines, one behind the alias `web`.
    let run = |e: &DockerEngine, name: &str, extra: &[&str]| {
        let args = [
            &["run", "-d", "--network", "app", "--name", name][..],
            extra,
            &[IMAGE, "httpd", "-f", "-p", "80", "-h", "/"],
        ]
        .concat();
        let o = e.docker(&args);
        assert!(o.status.success(), "{}\n{}\n{}", text(&o), logs(), e.log());
    };
    run(&engines[0], "c1", &["-p", "8081:80"]);
    run(&engines[1], "c2", &["--network-alias", "web"]);
    let (a1, a2) = (address(&engines[0], "c1"), address(&engines[1], "c2"));
    assert!(a1.starts_with("10.30.0.") && a2.starts_with("10.30.0.") && a1 != a2, "{a1} {a2}");
    // Named after their containers, with their aliases, from Docker's API.
    wait_until("c1 and c2 named in the store", 20, || {
        let eps = endpoints(n1, &url, "app");
        let names: Vec<&str> = eps.iter().filter_map(|e| e["name"].as_str()).collect();
        names.contains(&"c1") && names.contains(&"c2")
    });
    let eps = endpoints(n1, &url, "app");
    let c2 = eps.iter().find(|e| e["name"] == "c2").unwrap();
    assert!(c2["aliases"].as_array().unwrap().iter().any(|a| a == "web"), "{c2}");
    assert_eq!(c2["ip"], a2.as_str());

    // The container's interface: the store's address and MAC, the network's
    // MTU, a default route via the gateway.
    let c1 = eps.iter().find(|e| e["name"] == "c1").unwrap().clone();
    let link = engines[0].ok(&["exec", "c1", "ip", "addr", "show", "eth0"]);
    assert!(link.contains(&format!("inet {a1}/24")), "{link}");
    assert!(link.contains(c1["mac"].as_str().unwrap()), "{link} {c1}");
    assert!(link.contains("mtu 1450"), "{link}");
    let routes = engines[0].ok(&["exec", "c1", "ip", "route"]);
    assert!(routes.contains("default via 10.30.0.1 dev eth0"), "{routes}");

    // Across hosts both ways, and from the namespace endpoint on n3.
    wait_ping(&engines[0], "c1", &a2);
    wait_ping(&engines[1], "c2", &a1);
    let page = engines[0].ok(&["exec", "c1", "wget", "-q", "-O", "-", &format!("http://{a2}/etc/hostname")]);
    assert_eq!(page, engines[1].ok(&["inspect", "-f", "{{.Config.Hostname}}", "c2"]));
    // Names across hosts: Docker's resolver (127.0.0.11) knows only this
    // engine's containers and forwards the rest to `--dns`, the network's
    // gateway, where our resolver answers c2 (on the other engine) and web.
    let by_name = engines[0].docker(&[
        "run",
        "--rm",
        "--network",
        "app",
        "--dns",
        "10.30.0.1",
        IMAGE,
        "wget",
        "-q",
        "-O",
        "-",
        "http://c2/etc/hostname",
    ]);
    assert_eq!(assert_ok(&by_name).trim(), page, "c2 by name from a container on the other engine");
    let alias =
        engines[0].docker(&["run", "--rm", "--network", "app", "--dns", "10.30.0.1", IMAGE, "ping", "-c", "1", "web"]);
    assert!(text(&alias).contains(&format!("({a2})")), "web is c2's alias: {}", text(&alias));
    assert_ok(&ob(
        n1,
        &[
            "endpoint",
            "create",
            "ns1",
            "--network",
            "app",
            "--container-netns",
            &cs[0].name,
            "--host",
            &format!("{p}n3"),
            "--store",
            &url,
        ],
    ));
    let ns1 = endpoints(n1, &url, "app").into_iter().find(|e| e["name"] == "ns1").unwrap();
    let ns1_ip = ns1["ip"].as_str().unwrap().to_string();
    let t = Instant::now();
    while !(cs[0].run("ping", &["-c", "1", "-W", "1", &a1]).status.success()
        && cs[0].run("ping", &["-c", "1", "-W", "1", &a2]).status.success())
    {
        assert!(t.elapsed() < Duration::from_secs(20), "ns1 does not reach c1 and c2:\n{}", logs());
    }
    wait_ping(&engines[1], "c2", &ns1_ip);

    // Isolation: a container on another network reaches neither.
    let other =
        ["network", "create", "-d", "overlay-bpf", "--ipam-driver", "overlay-bpf", "--subnet", "10.33.0.0/24", "other"];
    engines[0].ok(&other);
    engines[0].ok(&["run", "-d", "--network", "other", "--name", "c3", IMAGE, "sleep", "3600"]);
    for to in [&a1, &a2] {
        assert!(
            !engines[0].docker(&["exec", "c3", "ping", "-c", "2", "-W", "1", to]).status.success(),
            "c3 reached {to}"
        );
    }

    // A service backed by the alias: through its VIP and through the mesh.
    let svc = [
        "service",
        "create",
        "websvc",
        "--network",
        "app",
        "--backend",
        "web",
        "--publish",
        "8080:80",
        "--store",
        &url,
    ];
    let made = assert_ok(&ob(n1, &svc));
    let vip = made.split("vip ").nth(1).and_then(|r| r.split(',').next()).expect("a VIP").to_string();
    let hostname2 = engines[1].ok(&["inspect", "-f", "{{.Config.Hostname}}", "c2"]);
    let t = Instant::now();
    loop {
        let o = engines[0].docker(&[
            "exec",
            "c1",
            "timeout",
            "3",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{vip}/etc/hostname"),
        ]);
        if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == hostname2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the VIP {vip} did not lead to c2: {}\n{}", text(&o), logs());
    }
    let outside = u.host("cl");
    let curl = |url: &str| outside.run("curl", &["-s", "-m", "3", url]);
    wait_until("the mesh's 8080 on n1 leads to c2", 20, || {
        String::from_utf8_lossy(&curl("http://192.168.200.11:8080/etc/hostname").stdout).trim() == hostname2
    });
    // `-p 8081:80` publishes on c1's host only.
    let hostname1 = engines[0].ok(&["inspect", "-f", "{{.Config.Hostname}}", "c1"]);
    wait_until("c1's -p 8081 on n1", 20, || {
        String::from_utf8_lossy(&curl("http://192.168.200.11:8081/etc/hostname").stdout).trim() == hostname1
    });
    assert!(!curl("http://192.168.200.12:8081/etc/hostname").status.success(), "8081 is n1's only");
    assert_ok(&ob(n1, &["service", "rm", "websvc", "--store", &url]));
    assert_ok(&ob(n1, &["endpoint", "rm", "ns1", "--network", "app", "--store", &url]));

    // A macvlan network from Docker's macvlan flags: containers on the LAN
    // (the switch the hosts and `cl` share), with sub-interfaces, no veths.
    let mv = [
        &create[..6],
        &["-o", "parent=eth0", "-o", "macvlan_mode=bridge", "--subnet", "192.168.200.0/24"],
        &["--gateway", "192.168.200.100", "--ip-range", "192.168.200.160/28", "lan"],
    ]
    .concat();
    let no_parent: Vec<&str> = mv.iter().map(|a| if *a == "parent=eth0" { "parent=eth9" } else { a }).collect();
    refused_by_docker(&engines[0].docker(&no_parent), &["-o parent=eth9: no such device on host obdkn1"]);
    let passthru: Vec<&str> =
        mv.iter().map(|a| if *a == "macvlan_mode=bridge" { "macvlan_mode=passthru" } else { a }).collect();
    refused_by_docker(&engines[0].docker(&passthru), &["Docker would set the container's MAC on the parent"]);
    let ok = |e: &DockerEngine, args: &[&str]| {
        let o = e.docker(args);
        assert!(o.status.success(), "{}\n{}", text(&o), logs());
    };
    for e in &engines {
        ok(e, &mv);
    }
    wait_until("lan in the store", 20, || ob(n1, &["network", "inspect", "lan", "--store", &url]).status.success());
    let lan = json(&assert_ok(&ob(n1, &["network", "inspect", "lan", "--store", &url])))[0].clone();
    assert_eq!(lan["Driver"], "macvlan", "{lan}");
    assert_eq!(lan["Options"], serde_json::json!({"parent": "eth0", "macvlan_mode": "bridge"}), "{lan}");
    let veths = [our_veths(u.host("n1")).len(), our_veths(u.host("n2")).len()];
    for (e, name) in [(&engines[0], "m1"), (&engines[1], "m2")] {
        ok(e, &["run", "-d", "--network", "lan", "--name", name, IMAGE, "sleep", "3600"]);
    }
    let (b1, b2) = (address(&engines[0], "m1"), address(&engines[1], "m2"));
    assert!(b1.starts_with("192.168.200.16") || b1.starts_with("192.168.200.17"), "{b1}");
    let pid = engines[0].ok(&["inspect", "-f", "{{.State.Pid}}", "m1"]);
    let o =
        Command::new("nsenter").args(["-t", &pid, "-n", "ip", "-j", "-d", "link", "show", "eth0"]).output().unwrap();
    let link = json(&assert_ok(&o))[0].clone();
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan", "{link}");
    assert_eq!(link["mtu"], 1500, "the parent's MTU: {link}");
    assert!(sh(&engines[0], "m1", "ip route").contains("default via 192.168.200.100 dev eth0"));
    assert_eq!([our_veths(u.host("n1")).len(), our_veths(u.host("n2")).len()], veths, "no veth for m1, m2");
    wait_ping(&engines[0], "m1", &b2);
    wait_ping(&engines[1], "m2", "192.168.200.100");
    assert!(pings_from(u.host("cl"), &b1), "the LAN machine reaches m1");
    for (e, name) in [(&engines[0], "m1"), (&engines[1], "m2")] {
        e.ok(&["rm", "-f", name]);
        e.ok(&["network", "rm", "lan"]);
    }
    for h in ["n1", "n2"] {
        let links = json(&u.host(h).ip(&["-j", "-d", "link", "show"]));
        let kept: Vec<_> =
            links.as_array().unwrap().iter().filter(|l| l["linkinfo"]["info_kind"] == "macvlan").collect();
        assert!(kept.is_empty(), "{h} kept a sub-interface: {kept:?}");
    }

    // Everything goes with the containers and the networks.
    for (e, names) in [(&engines[0], vec!["c1", "c3"]), (&engines[1], vec!["c2"])] {
        for n in names {
            e.ok(&["rm", "-f", n]);
        }
    }
    engines[0].ok(&["network", "rm", "other"]);
    for e in &engines {
        e.ok(&["network", "rm", "app"]);
    }
    wait_until("no network left in the store", 20, || {
        assert_ok(&ob(n1, &["network", "ls", "-q", "--store", &url])).trim().is_empty()
    });
    for h in ["n1", "n2"] {
        assert!(our_veths(u.host(h)).is_empty(), "{h} kept veths: {:?}", our_veths(u.host(h)));
    }
    drop(_agents);
    drop(_plain);
    dep.down_all();
    drop(engines);
    drop(etcd);
    let _ = Command::new("true").status();
}

/// A cluster of one etcd, `engines` Docker hosts with plugin agents, and
/// the network `app` (10.40.0.0/24) on each engine.
struct DockerCluster {
    agents: Vec<Option<Proc>>,
    dep: Deployment,
    engines: Vec<DockerEngine>,
    etcd: Etcd,
    url: String,
    p: &'static str,
    u: Underlay,
}

impl DockerCluster {
    fn new(p: &'static str, engines: usize) -> DockerCluster {
        let u = underlay(p, engines.max(2));
        let etcd = Etcd::start(u.host("n1"), "192.168.200.11", p);
        let url = etcd.url.clone();
        let mut y = String::from("version: 1\nhosts:\n");
        for i in 1..=engines.max(2) {
            y += &format!("  - {{name: {p}n{i}, address: 192.168.200.1{i}}}\n");
        }
        let st = StateFile::new(p, &y);
        assert_ok(&ob(u.host("n1"), &["store", "import", st.0.to_str().unwrap(), "--store", &url]));
        let engines: Vec<DockerEngine> =
            (1..=engines).map(|i| DockerEngine::start(&format!("{p}n{i}"), &format!("{p}-n{i}"))).collect();
        let mut c = DockerCluster { agents: Vec::new(), dep: Deployment::new(&bin()), engines, etcd, url, p, u };
        for i in 0..c.engines.len() {
            let a = c.start_agent(i);
            c.agents.push(Some(a));
        }
        for e in &c.engines {
            let args = ["network", "create", "-d", "overlay-bpf", "--ipam-driver", "overlay-bpf"];
            let o = e.docker(&[&args[..], &["--subnet", "10.40.0.0/24", "app"]].concat());
            assert!(o.status.success(), "{}\n{}", text(&o), agent_log(e));
        }
        c
    }

    fn start_agent(&mut self, i: usize) -> Proc {
        let e = &self.engines[i];
        let h = format!("n{}", i + 1);
        let a = plugin_agent(&mut self.dep, self.p, &h, &self.url, e);
        let t = Instant::now();
        while !agent_log(e).contains("Docker network and IPAM plugin") {
            assert!(t.elapsed() < Duration::from_secs(30), "the agent did not serve Docker:\n{}", agent_log(e));
            std::thread::sleep(Duration::from_millis(100));
        }
        a
    }

    fn endpoints(&self) -> Vec<serde_json::Value> {
        endpoints(self.u.host("n1"), &self.url, "app")
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        // Containers and engines go first, while the agents still serve them.
        self.engines.clear();
        self.agents.clear();
        self.dep.down_all();
        let _ = &self.etcd;
    }
}

/// Mean wall time of `n` runs of `docker ARGS` on `e`.
fn mean_secs(e: &DockerEngine, n: u32, args: &[&str]) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        e.ok(args);
    }
    t.elapsed().as_secs_f64() / n as f64
}

#[test]
fn a_hundred_docker_run_rm_cycles_leave_nothing_behind() {
    require_root();
    let c = DockerCluster::new("obdr", 1);
    let e = &c.engines[0];
    let n1 = c.u.host("n1");
    let status = || json(&assert_ok(&c.dep.cmd("obdrn1", "obdr-n1").args(["status", "-o", "json"]).output().unwrap()));
    let entries = |s: &serde_json::Value, map: &str| {
        s["maps"].as_array().unwrap().iter().find(|m| m["name"] == map).map(|m| m["entries"].as_u64().unwrap())
    };
    let before = status();
    let ours = mean_secs(e, 100, &["run", "--rm", "--network", "app", IMAGE, "true"]);
    assert!(c.endpoints().is_empty(), "endpoints left: {:?}\n{}", c.endpoints(), agent_log(e));
    assert!(our_veths(n1).is_empty(), "veths left: {:?}", our_veths(n1));
    let after = status();
    for map in ["OB_ENDPOINTS_V1", "OB_IFACES_V1"] {
        assert_eq!(entries(&before, map), entries(&after, map), "{map} entries left");
    }
    let links = |s: &serde_json::Value| s["links"].as_array().map(|l| l.len());
    assert_eq!(links(&before), links(&after), "links left: {}", after["links"]);
    // Not a test of speed: what a container's start costs on our network,
    // for the record (the closing note's numbers).
    let none = mean_secs(e, 20, &["run", "--rm", "--network", "none", IMAGE, "true"]);
    eprintln!("docker run --rm: {:.0} ms on app, {:.0} ms with --network none", ours * 1000.0, none * 1000.0);
}

/// Busybox ping's summary: (transmitted, received).
fn ping_summary(out: &str) -> (u64, u64) {
    let l = out.lines().find(|l| l.contains("packets transmitted")).unwrap_or_else(|| panic!("no summary: {out}"));
    let n: Vec<u64> = l.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    (n[0], n[1])
}

#[test]
fn agents_restart_without_loss_and_gone_containers_leave_the_store() {
    require_root();
    let mut c = DockerCluster::new("obdg", 2);
    c.engines[0].ok(&["run", "-d", "--network", "app", "--name", "c1", IMAGE, "sleep", "3600"]);
    c.engines[1].ok(&["run", "-d", "--network", "app", "--name", "c2", IMAGE, "sleep", "3600"]);
    let a2 = address(&c.engines[1], "c2");
    wait_ping(&c.engines[0], "c1", &a2);

    // A steady ping from c1 to c2 while n1's agent is SIGKILLed and started
    // again: it adopts c1's veth and links, and nothing is lost.
    let ping = Command::new(DOCKER)
        .args(["-H", &c.engines[0].socket(), "exec", "c1", "ping", "-c", "300", "-i", "0.02", &a2])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    c.agents[0] = None;
    std::thread::sleep(Duration::from_millis(500));
    let a = c.start_agent(0);
    c.agents[0] = Some(a);
    let out = ping.wait_with_output().unwrap();
    let (sent, received) = ping_summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!((sent, received), (300, 300), "lost pings across the agent's restart");
    // The restarted agent adopted what was pinned, programs and all.
    assert!(agent_log(&c.engines[0]).contains("reusing them"), "{}", agent_log(&c.engines[0]));

    // n2: its agent stops, and the store keeps a Docker endpoint of n2 whose
    // container Docker does not have (as after a dockerd crash that took its
    // containers while no plugin served it). When the agent starts again,
    // that endpoint leaves the store; c2, which Docker has, stays.
    c.agents[1] = None;
    let n1 = c.u.host("n1");
    let state = assert_ok(&ob(n1, &["store", "export", "--store", &c.url]));
    let ghost = format!(
        "- {{name: ghost, host: obdgn2, network: app, netns: /run/docker/netns/gone, ip: 10.40.0.250, \
         mac: '02:42:0a:28:00:fa', runtime: docker, container_id: c0ffee, endpoint_id: {}}}\n",
        "e".repeat(64)
    );
    let with_ghost = state.replacen("endpoints:\n", &format!("endpoints:\n{ghost}"), 1);
    let st = StateFile::new("obdg-ghost", &with_ghost);
    assert_ok(&ob(n1, &["store", "import", st.0.to_str().unwrap(), "--replace", "--store", &c.url]));
    assert!(c.endpoints().iter().any(|e| e["name"] == "ghost"));
    let a = c.start_agent(1);
    c.agents[1] = Some(a);
    wait_until("ghost out of the store", 30, || !c.endpoints().iter().any(|e| e["name"] == "ghost"));
    assert!(agent_log(&c.engines[1]).contains("removed 1 Docker endpoints of containers Docker no longer has"));
    let names: Vec<String> = c.endpoints().iter().filter_map(|e| e["name"].as_str().map(str::to_string)).collect();
    assert!(names.contains(&"c1".to_string()) && names.contains(&"c2".to_string()), "{names:?}");
    wait_ping(&c.engines[0], "c1", &a2);
    c.engines[1].ok(&["rm", "-f", "c2"]);
    wait_until("no veth of c2 left on n2", 20, || our_veths(c.u.host("n2")).is_empty());
    assert!(!c.endpoints().iter().any(|e| e["name"] == "c2"), "c2 left with its container");
}

/// The parent of process `pid` (a container's init: its shim).
fn parent(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn dockerd_killed_and_restarted_with_a_container_gone_meanwhile() {
    require_root();
    let mut c = DockerCluster::new("obdd", 1);
    let e = &mut c.engines[0];
    e.ok(&["run", "-d", "--network", "app", "--name", "gone", IMAGE, "sleep", "3600"]);
    e.ok(&["run", "-d", "--network", "app", "--name", "kept", "--restart", "always", IMAGE, "sleep", "3600"]);
    let id = e.ok(&["inspect", "-f", "{{.Id}}", "gone"]);
    let pid: i32 = e.ok(&["inspect", "-f", "{{.State.Pid}}", "gone"]).parse().unwrap();
    let shim = parent(pid);
    let names = |c: &DockerCluster| -> Vec<String> {
        c.endpoints().iter().filter_map(|e| e["name"].as_str().map(str::to_string)).collect()
    };
    assert_eq!(names(&c), ["gone", "kept"]);
    let old_kept = c.endpoints().iter().find(|e| e["name"] == "kept").unwrap()["endpoint_id"].clone();

    // dockerd crashes; its container `gone` goes meanwhile (process and shim
    // killed, its state removed); dockerd starts again. The agent runs
    // throughout, as its unit orders it: with no plugin to answer, Docker's
    // restart waits 15 s per call (70 s here) and leaves the endpoints to
    // the agent's next start, which the test above covers.
    c.engines[0].kill_dockerd();
    for p in [pid, shim] {
        // SAFETY: signals to the container's process and its shim, by PID.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let e = &mut c.engines[0];
    std::fs::remove_dir_all(e.dir.join("data/containers").join(&id)).unwrap();
    e.start_dockerd();
    wait_until("gone's endpoint out of the store", 60, || names(&c) == ["kept"]);
    let e = &c.engines[0];
    wait_until("kept running again", 60, || e.ok(&["inspect", "-f", "{{.State.Running}}", "kept"]) == "true");
    let kept = c.endpoints().iter().find(|e| e["name"] == "kept").unwrap().clone();
    assert_ne!(kept["endpoint_id"], old_kept, "kept restarted on a new endpoint");
    assert_eq!(our_veths(c.u.host("n1")).len(), 1, "one veth, kept's: {:?}", our_veths(c.u.host("n1")));
    let to = address(e, "kept");
    let probe = e.docker(&["run", "--rm", "--network", "app", IMAGE, "ping", "-c", "1", "-W", "5", &to]);
    assert!(probe.status.success(), "a new container reaches kept: {}\n{}", text(&probe), agent_log(e));
}

/// `docker exec NAME sh -c CMD`, which must succeed: its stdout.
fn sh(e: &DockerEngine, name: &str, cmd: &str) -> String {
    e.ok(&["exec", name, "sh", "-c", cmd])
}

#[test]
fn network_options_ip_connect_disconnect_and_stop_start() {
    require_root();
    let c = DockerCluster::new("obdo", 1);
    let e = &c.engines[0];
    let n1 = c.u.host("n1");
    e.ok(&[
        "network",
        "create",
        "-d",
        "overlay-bpf",
        "--ipam-driver",
        "overlay-bpf",
        "--subnet",
        "10.41.0.0/24",
        "--gateway",
        "10.41.0.254",
        "--aux-address",
        "router=10.41.0.2",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "--internal",
        "inner",
    ]);
    let inspect = |name: &str| {
        let o = ob(n1, &["network", "inspect", name, "--store", &c.url]);
        json(&assert_ok(&o))[0].clone()
    };
    wait_until("the store's network named inner", 20, || {
        assert_ok(&ob(n1, &["network", "ls", "--store", &c.url])).contains("inner")
    });
    let inner = inspect("inner");
    assert_eq!(inner["Internal"], true, "{inner}");
    assert_eq!(inner["IPAM"]["Config"][0]["Gateway"], "10.41.0.254", "{inner}");
    assert_eq!(inner["IPAM"]["Config"][0]["AuxiliaryAddresses"]["router"], "10.41.0.2", "{inner}");

    // --ip, the network's MTU, and no default route on an internal network.
    e.ok(&["run", "-d", "--network", "inner", "--ip", "10.41.0.50", "--name", "ca", IMAGE, "sleep", "3600"]);
    assert!(sh(e, "ca", "ip -4 -o addr show eth0").contains("10.41.0.50/24"));
    assert_eq!(sh(e, "ca", "cat /sys/class/net/eth0/mtu"), "1400");
    assert!(!sh(e, "ca", "ip route").contains("default"), "an internal network has no gateway route");
    let taken = e.docker(&["run", "--rm", "--network", "inner", "--ip", "10.41.0.50", IMAGE, "true"]);
    refused_by_docker(&taken, &["10.41.0.50"]);
    let aux = e.docker(&["run", "--rm", "--network", "inner", "--ip", "10.41.0.2", IMAGE, "true"]);
    refused_by_docker(&aux, &["10.41.0.2"]);

    // connect: b, on app, gets a second interface on inner and reaches a.
    e.ok(&["run", "-d", "--network", "app", "--name", "cb", IMAGE, "sleep", "3600"]);
    assert!(sh(e, "cb", "ip route").contains("default via 10.40.0.1"), "app's gateway route");
    e.ok(&["network", "connect", "inner", "cb"]);
    assert_eq!(sh(e, "cb", "cat /sys/class/net/eth1/mtu"), "1400");
    wait_ping(e, "cb", "10.41.0.50");
    assert_eq!(endpoints(n1, &c.url, "inner").len(), 2);
    assert_eq!(our_veths(n1).len(), 3);
    // disconnect: b's endpoint on inner, its interface and veth go.
    e.ok(&["network", "disconnect", "inner", "cb"]);
    let left: Vec<_> = endpoints(n1, &c.url, "inner").iter().map(|e| e["name"].clone()).collect();
    assert_eq!(left, ["ca"], "b left inner");
    assert!(e.docker(&["exec", "cb", "ip", "link", "show", "eth1"]).status.code() != Some(0));
    assert_eq!(our_veths(n1).len(), 2);
    assert!(!e.docker(&["exec", "cb", "ping", "-c", "1", "-W", "1", "10.41.0.50"]).status.success(), "isolated again");

    // stop releases a's endpoint and veth; start brings it back at its --ip.
    e.ok(&["stop", "-t", "0", "ca"]);
    assert!(endpoints(n1, &c.url, "inner").is_empty(), "a stopped has no endpoint");
    assert_eq!(our_veths(n1).len(), 1);
    e.ok(&["start", "ca"]);
    assert!(sh(e, "ca", "ip -4 -o addr show eth0").contains("10.41.0.50/24"));
    e.ok(&["network", "connect", "inner", "cb"]);
    wait_ping(e, "cb", "10.41.0.50");

    // rm and network rm: inner, created by Docker and used by no other
    // host, leaves the store; app, still used, stays.
    e.ok(&["rm", "-f", "ca", "cb"]);
    e.ok(&["network", "rm", "inner"]);
    assert!(our_veths(n1).is_empty());
    let ls = assert_ok(&ob(n1, &["network", "ls", "--store", &c.url]));
    assert!(!ls.contains("inner") && ls.contains("app"), "{ls}");
}
