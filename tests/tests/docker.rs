//! Docker runs containers on overlay-bpf networks (issue 16): two Docker
//! engines (Debian's docker.io) on two hosts of a namespace cluster, each with
//! an agent serving the plugin, a third host with a plain namespace endpoint,
//! and the store on a real etcd. Host tier only: the VMs carry no Docker.

mod common;

use std::{
    path::Path,
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

/// The agent serves the plugin (from its start) and has applied its host
/// (its pins are there).
fn serving(e: &DockerEngine) -> bool {
    let log = agent_log(e);
    log.contains("Docker network and IPAM plugin") && log.contains("applied; watching")
}

/// The store's endpoints (`endpoint ls -o json`) on `network`.
fn endpoints(ns: &Netns, url: &str, network: &str) -> Vec<serde_json::Value> {
    let o = ob(ns, &["endpoint", "ls", "--network", network, "-o", "json", "--store", url]);
    json(&assert_ok(&o)).as_array().cloned().unwrap_or_default()
}

/// What Docker said refusing a command, without its own framing: the
/// lines from "Error response from daemon: " on, less that and the "remote: "
/// Docker puts before a plugin's words (`docker run` also says "docker: "
/// before, and "See 'docker run --help'." after).
fn docker_refusal(o: &Output) -> String {
    assert!(!o.status.success(), "{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    const DAEMON: &str = "Error response from daemon: ";
    let lines: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.contains(DAEMON))
        .take_while(|l| !l.starts_with("See '"))
        // The CLI's own log lines (`time="..." level=error msg=...`).
        .filter(|l| !l.starts_with("time=\""))
        .collect();
    let said = lines.join("\n");
    let said = said.split_once(DAEMON).unwrap_or_else(|| panic!("not Docker's refusal: {err}")).1;
    said.strip_prefix("remote: ").unwrap_or(said).to_string()
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
    wait_until("both plugins serving, their hosts applied", 30, || (0..2).all(|i| serving(&engines[i])));

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
    assert_eq!(sh(&engines[0], "c1", "cat /sys/class/net/eth0/address"), c1["mac"].as_str().unwrap());
    assert_eq!(sh(&engines[0], "c1", "cat /sys/class/net/eth0/mtu"), "1450");
    let addr = sh(&engines[0], "c1", "ip -4 -o addr show eth0");
    assert_eq!(addr.split_whitespace().nth(3), Some(&*format!("{a1}/24")), "{addr}");
    let routes: Vec<String> = sh(&engines[0], "c1", "ip route").lines().map(|l| l.trim_end().to_string()).collect();
    assert_eq!(
        routes,
        ["default via 10.30.0.1 dev eth0".to_string(), format!("10.30.0.0/24 dev eth0 scope link  src {a1}")]
    );

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
    let first = String::from_utf8_lossy(&alias.stdout).lines().next().map(str::to_string);
    assert_eq!(first, Some(format!("PING web ({a2}): 56 data bytes")), "web is c2's alias: {}", text(&alias));
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
        while !serving(e) {
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

#[test]
fn docker_network_create_makes_one_store_network_and_is_refused_as_the_store_refuses() {
    require_root();
    let c = DockerCluster::new("obdn", 2);
    let n1 = c.u.host("n1");
    // `app`, created on both engines (DockerCluster::new), is one network.
    let ids = || assert_ok(&ob(n1, &["network", "ls", "-q", "--store", &c.url])).lines().count();
    assert_eq!(ids(), 1);
    let app = json(&assert_ok(&ob(n1, &["network", "inspect", "app", "--store", &c.url])))[0].clone();
    assert_eq!(app["IPAM"]["Config"][0]["Subnet"], "10.40.0.0/24", "{app}");

    // Without our IPAM, or overlapping app: refused, with the fix or the culprit.
    let create = ["network", "create", "-d", "overlay-bpf", "--ipam-driver", "overlay-bpf"];
    let e = &c.engines;
    assert_eq!(
        docker_refusal(&e[0].docker(&["network", "create", "-d", "overlay-bpf", "--subnet", "10.41.0.0/24", "noipam"])),
        "the network's addresses come from Docker's default IPAM, which allocates on each host alone and would hand \
         out the same address on two hosts: add --ipam-driver overlay-bpf"
    );
    // The store's own rule, in its words: the network Docker has not named
    // yet goes by its subnet.
    assert_eq!(
        docker_refusal(&e[1].docker(&[&create[..], &["--subnet", "10.40.0.0/16", "wide"]].concat())),
        "the store: networks[1] (new-10.40.0.0-16).subnets[0]: subnet 10.40.0.0/16 overlaps 10.40.0.0/24 of networks[0] \
         (app).subnets[0]; subnets of all networks must not overlap"
    );
    assert_eq!(
        docker_refusal(
            &e[0].docker(&[&create[..], &["--subnet", "10.42.0.0/24", "-o", "encrypted", "secret"]].concat())
        ),
        "the store: networks[1] (new-10.42.0.0-24): encrypted: true needs WireGuard in the kernel \
         (CONFIG_WIREGUARD=y or =m) and this kernel has none (`modprobe wireguard` fails): run the hosts on a kernel \
         with WireGuard (Debian's 6.1 and 6.12 have it), or remove `encrypted`"
    );
    assert_eq!(ids(), 1, "nothing refused was kept");
}

#[test]
fn a_docker_macvlan_network_puts_containers_on_the_lan() {
    require_root();
    let mut c = DockerCluster::new("obdv", 2);
    c.u.add_host("cl", "192.168.200.100".parse().unwrap());
    let (e, url, n1) = (&c.engines, c.url.clone(), c.u.host("n1"));
    let logs = || format!("n1:\n{}\nn2:\n{}", agent_log(&e[0]), agent_log(&e[1]));
    // From Docker's macvlan flags: containers on the LAN (the switch the
    // hosts and `cl` share), with sub-interfaces, no veths.
    let mv = [
        &["network", "create", "-d", "overlay-bpf", "--ipam-driver", "overlay-bpf"][..],
        &["-o", "parent=eth0", "-o", "macvlan_mode=bridge", "--subnet", "192.168.200.0/24"],
        &["--gateway", "192.168.200.100", "--ip-range", "192.168.200.160/28", "lan"],
    ]
    .concat();
    let no_parent: Vec<&str> = mv.iter().map(|a| if *a == "parent=eth0" { "parent=eth9" } else { a }).collect();
    assert_eq!(
        docker_refusal(&e[0].docker(&no_parent)),
        "-o parent=eth9: no such device on host obdvn1; name a device every host has (`ip link`)"
    );
    let passthru: Vec<&str> =
        mv.iter().map(|a| if *a == "macvlan_mode=bridge" { "macvlan_mode=passthru" } else { a }).collect();
    assert_eq!(
        docker_refusal(&e[0].docker(&passthru)),
        "-o macvlan_mode=passthru: Docker would set the container's MAC on the parent device itself; use bridge (the \
         default), private or vepa, or passthru through the state file or CNI"
    );
    let ok = |e: &DockerEngine, args: &[&str]| {
        let o = e.docker(args);
        assert!(o.status.success(), "{}\n{}", text(&o), logs());
    };
    for e in e {
        ok(e, &mv);
    }
    let lan = json(&assert_ok(&ob(n1, &["network", "inspect", "lan", "--store", &url])))[0].clone();
    assert_eq!(lan["Driver"], "macvlan", "{lan}");
    assert_eq!(lan["Options"], serde_json::json!({"parent": "eth0", "macvlan_mode": "bridge"}), "{lan}");
    let veths = [our_veths(c.u.host("n1")).len(), our_veths(c.u.host("n2")).len()];
    for (e, name) in [(&e[0], "m1"), (&e[1], "m2")] {
        ok(e, &["run", "-d", "--network", "lan", "--name", name, IMAGE, "sleep", "3600"]);
    }
    let (b1, b2) = (address(&e[0], "m1"), address(&e[1], "m2"));
    let in_range = |a: &str| {
        a.strip_prefix("192.168.200.").and_then(|o| o.parse::<u8>().ok()).is_some_and(|o| (160..176).contains(&o))
    };
    assert!(in_range(&b1) && in_range(&b2) && b1 != b2, "two addresses of the ip-range 192.168.200.160/28: {b1} {b2}");
    let pid = e[0].ok(&["inspect", "-f", "{{.State.Pid}}", "m1"]);
    let o =
        Command::new("nsenter").args(["-t", &pid, "-n", "ip", "-j", "-d", "link", "show", "eth0"]).output().unwrap();
    let link = json(&assert_ok(&o))[0].clone();
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan", "{link}");
    assert_eq!(link["mtu"], 1500, "the parent's MTU: {link}");
    let routes: Vec<String> = sh(&e[0], "m1", "ip route").lines().map(|l| l.trim_end().to_string()).collect();
    let lan_route = format!("192.168.200.0/24 dev eth0 scope link  src {b1}");
    assert_eq!(routes, ["default via 192.168.200.100 dev eth0", lan_route.as_str()]);
    assert_eq!([our_veths(c.u.host("n1")).len(), our_veths(c.u.host("n2")).len()], veths, "no veth for m1, m2");
    wait_ping(&e[0], "m1", &b2);
    wait_ping(&e[1], "m2", "192.168.200.100");
    assert!(pings_from(c.u.host("cl"), &b1), "the LAN machine reaches m1");
    for (e, name) in [(&e[0], "m1"), (&e[1], "m2")] {
        e.ok(&["rm", "-f", name]);
        e.ok(&["network", "rm", "lan"]);
    }
    for h in ["n1", "n2"] {
        let links = json(&c.u.host(h).ip(&["-j", "-d", "link", "show"]));
        let kept: Vec<_> =
            links.as_array().unwrap().iter().filter(|l| l["linkinfo"]["info_kind"] == "macvlan").collect();
        assert!(kept.is_empty(), "{h} kept a sub-interface: {kept:?}");
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

/// Ping's summary (busybox's or iputils'): (transmitted, received).
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
    let log = agent_log(&c.engines[0]);
    assert!(log.lines().any(|l| l.contains("applied; watching") && l.contains("programs=Pinned")), "{log}");

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
    // the agent's next start, which the test above covers. `kept` runs on
    // through the crash (--live-restore).
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
    assert_eq!(kept["endpoint_id"], old_kept, "kept ran on, on its endpoint");
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
    let addr =
        |e: &DockerEngine, c: &str| sh(e, c, "ip -4 -o addr show eth0").split_whitespace().nth(3).map(str::to_string);
    assert_eq!(addr(e, "ca").as_deref(), Some("10.41.0.50/24"));
    assert_eq!(sh(e, "ca", "cat /sys/class/net/eth0/mtu"), "1400");
    let routes =
        |e: &DockerEngine, c: &str| sh(e, c, "ip route").lines().map(|l| l.trim_end().to_string()).collect::<Vec<_>>();
    assert_eq!(
        routes(e, "ca"),
        ["10.41.0.0/24 dev eth0 scope link  src 10.41.0.50"],
        "an internal network has no gateway route"
    );
    let taken = e.docker(&["run", "--rm", "--network", "inner", "--ip", "10.41.0.50", IMAGE, "true"]);
    // The endpoint-to-be is named after Docker's endpoint ID: "pending-<4 hex>-1".
    let pending = |said: String| -> String {
        let Some(at) = said.find("(pending-") else { return said };
        let id = &said[at + 1..at + said[at..].find(')').unwrap()];
        said.replace(id, "pending-ID")
    };
    assert_eq!(
        pending(docker_refusal(&taken)),
        "the store: endpoints[1] (pending-ID): duplicate address 10.41.0.50: already used by endpoint ca\nthe store: \
         endpoints[1] (pending-ID): duplicate MAC 02:42:0a:29:00:32: endpoints[0] (ca) already has it."
    );
    let aux = e.docker(&["run", "--rm", "--name", "aux", "--network", "inner", "--ip", "10.41.0.2", IMAGE, "true"]);
    assert_eq!(
        docker_refusal(&aux),
        "failed to create endpoint aux on network inner: remote: 10.41.0.2 is reserved on network inner (aux address \
         router); give the container another --ip."
    );

    // connect: b, on app, gets a second interface on inner and reaches a.
    e.ok(&["run", "-d", "--network", "app", "--name", "cb", IMAGE, "sleep", "3600"]);
    assert_eq!(
        routes(e, "cb").first().map(String::as_str),
        Some("default via 10.40.0.1 dev eth0"),
        "app's gateway route"
    );
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
    assert_eq!(addr(e, "ca").as_deref(), Some("10.41.0.50/24"));
    e.ok(&["network", "connect", "inner", "cb"]);
    wait_ping(e, "cb", "10.41.0.50");

    // rm and network rm: inner, created by Docker and used by no other
    // host, leaves the store; app, still used, stays.
    e.ok(&["rm", "-f", "ca", "cb"]);
    e.ok(&["network", "rm", "inner"]);
    assert!(our_veths(n1).is_empty());
    let ls = assert_ok(&ob(n1, &["network", "ls", "--store", &c.url]));
    let names: Vec<&str> = ls.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(names, ["app"], "{ls}");
}

/// Pings from inside container `name`'s network namespace (entered by its
/// PID, not through Docker, which may be restarting meanwhile): `count` at
/// 20 ms. Returns the running ping.
fn ping_from_container(e: &DockerEngine, name: &str, to: &str, count: u32) -> std::process::Child {
    let pid = e.ok(&["inspect", "-f", "{{.State.Pid}}", name]);
    Command::new("nsenter")
        .args(["-t", &pid, "-n", "ping", "-q", "-c", &count.to_string(), "-i", "0.02", "-W", "1", to])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// iputils ping's summary of a finished run: (transmitted, received).
fn ping_counts(p: std::process::Child) -> (u64, u64) {
    ping_summary(&String::from_utf8_lossy(&p.wait_with_output().unwrap().stdout))
}

/// Lines of an agent's log that hold `what`.
fn log_lines(e: &DockerEngine, what: &str) -> usize {
    agent_log(e).lines().filter(|l| l.contains(what)).count()
}

/// Docker's boot order and dockerd's failures, with the plugin's agent
/// running throughout (issue 29):
///
/// 1. The agents start before dockerd, as their systemd unit orders them:
///    they serve the plugin's socket at once and say once that Docker's API
///    does not answer; when dockerd comes, once that it answers, and the
///    containers get their names from it.
/// 2. dockerd restarted (`--live-restore`) with containers running: no
///    packet lost, the same endpoints and veths after.
/// 3. dockerd killed while a container is being removed (its agent frozen
///    in the middle of Docker's call), then started again: the container's
///    endpoint, address and veth do not outlive it, and the running
///    container loses no packet.
#[test]
fn the_plugin_outlives_a_dockerd_that_starts_late_restarts_and_crashes() {
    require_root();
    let p = "obdb";
    let u = underlay(p, 2);
    let etcd = Etcd::start(u.host("n1"), "192.168.200.11", p);
    let url = etcd.url.clone();
    let n1 = u.host("n1");
    let mut y = String::from("version: 1\nhosts:\n");
    for i in 1..=2 {
        y += &format!("  - {{name: {p}n{i}, address: 192.168.200.1{i}}}\n");
    }
    let st = StateFile::new(p, &y);
    assert_ok(&ob(n1, &["store", "import", st.0.to_str().unwrap(), "--store", &url]));
    let mut engines = [
        DockerEngine::new(&format!("{p}n1"), &format!("{p}-n1")),
        DockerEngine::new(&format!("{p}n2"), &format!("{p}-n2")),
    ];
    let mut dep = Deployment::new(&bin());

    // 1. The plugins first: their sockets are there while Docker's is not.
    let mut agents =
        [plugin_agent(&mut dep, p, "n1", &url, &engines[0]), plugin_agent(&mut dep, p, "n2", &url, &engines[1])];
    for e in &engines {
        wait_until("the plugin's socket before dockerd", 30, || e.plugin_socket().exists());
        wait_until("the agent saying Docker does not answer", 30, || log_lines(e, "does not answer") > 0);
    }
    // Its retries back off, and say nothing more.
    std::thread::sleep(Duration::from_secs(4));
    for e in &engines {
        assert_eq!(log_lines(e, "does not answer"), 1, "said once:\n{}", agent_log(e));
        assert_eq!(log_lines(e, " WARN "), 1, "{}", agent_log(e));
    }
    for e in engines.iter_mut() {
        e.start_dockerd();
    }
    for e in &engines {
        wait_until("the agent seeing Docker answer", 30, || log_lines(e, "answers") > 0);
        assert_eq!(log_lines(e, "does not answer"), 1, "{}", agent_log(e));
        assert!(!agent_log(e).contains('\x1b'), "escape codes in a log file:\n{}", agent_log(e));
    }
    let create =
        ["network", "create", "-d", "overlay-bpf", "--ipam-driver", "overlay-bpf", "--subnet", "10.42.0.0/24", "app"];
    for e in &engines {
        e.ok(&create);
    }
    engines[0].ok(&["run", "-d", "--network", "app", "--name", "c1", IMAGE, "sleep", "3600"]);
    engines[1].ok(&["run", "-d", "--network", "app", "--name", "c2", IMAGE, "sleep", "3600"]);
    let (a1, a2) = (address(&engines[0], "c1"), address(&engines[1], "c2"));
    let names = || -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = endpoints(n1, &url, "app")
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["endpoint_id"].as_str().unwrap_or("").to_string()))
            .collect();
        v.sort();
        v
    };
    wait_until("c1 and c2 named after their containers", 30, || {
        names().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>() == ["c1", "c2"]
    });
    wait_ping(&engines[0], "c1", &a2);
    wait_ping(&engines[1], "c2", &a1);
    let before = names();
    let veths = [our_veths(u.host("n1")), our_veths(u.host("n2"))];

    // 2. dockerd restarted under a steady ping from c1 (on the restarting
    // host) to c2: live-restore keeps c1 running, on the same endpoint.
    let c1_pid = engines[0].ok(&["inspect", "-f", "{{.State.Pid}}", "c1"]);
    let ping = ping_from_container(&engines[0], "c1", &a2, 400);
    std::thread::sleep(Duration::from_secs(1));
    engines[0].stop_dockerd();
    engines[0].start_dockerd();
    assert_eq!(ping_counts(ping), (400, 400), "c1 lost pings while dockerd restarted");
    assert_eq!(engines[0].ok(&["inspect", "-f", "{{.State.Pid}}", "c1"]), c1_pid, "c1 kept running");
    assert_eq!(names(), before, "the same endpoints after dockerd's restart");
    assert_eq!([our_veths(u.host("n1")), our_veths(u.host("n2"))], veths);
    wait_ping(&engines[0], "c1", &a2);

    // 3. c3 is being removed when dockerd dies: its agent is frozen, so
    // Docker waits on the plugin in the middle of releasing c3's network.
    engines[0].ok(&["run", "-d", "--network", "app", "--name", "c3", IMAGE, "sleep", "3600"]);
    wait_until("c3 named", 30, || names().iter().any(|(n, _)| n == "c3"));
    let c3_pid: i32 = engines[0].ok(&["inspect", "-f", "{{.State.Pid}}", "c3"]).parse().unwrap();
    let c3_ip = address(&engines[0], "c3");
    let ping = ping_from_container(&engines[0], "c1", &a2, 1000);
    let agent1 = agents[0].0.id() as i32;
    // SAFETY: signals to the agent this test started, by its PID.
    unsafe { libc::kill(agent1, libc::SIGSTOP) };
    let mut rm = Command::new(DOCKER)
        .args(["-H", &engines[0].socket(), "rm", "-f", "c3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("c3's process killed by docker rm -f", 30, || !Path::new(&format!("/proc/{c3_pid}")).exists());
    std::thread::sleep(Duration::from_secs(1));
    assert!(rm.try_wait().unwrap().is_none(), "docker rm returned while the plugin was frozen");
    engines[0].kill_dockerd();
    let _ = rm.wait();
    // SAFETY: as above.
    unsafe { libc::kill(agent1, libc::SIGCONT) };
    engines[0].start_dockerd();
    // Whatever Docker kept of c3 goes as a user would make it go.
    if engines[0].docker(&["inspect", "c3"]).status.success() {
        engines[0].ok(&["rm", "-f", "c3"]);
    }
    wait_until("c3's endpoint out of the store", 60, || !names().iter().any(|(n, _)| n == "c3"));
    assert_eq!(names(), before, "only c1 and c2 in the store: {:?}", names());
    wait_until("c3's veth gone", 30, || our_veths(u.host("n1")) == veths[0]);
    let (sent, received) = ping_counts(ping);
    assert_eq!((sent, received), (1000, 1000), "c1 lost pings while dockerd crashed");
    // Its address is free again: no endpoint of any network holds it.
    let all = json(&assert_ok(&ob(n1, &["endpoint", "ls", "-o", "json", "--store", &url])));
    assert!(!all.as_array().unwrap().iter().any(|e| e["ip"] == c3_ip.as_str()), "{c3_ip} still held: {all}");
    // The next container on the host works as before.
    engines[0].ok(&["run", "-d", "--network", "app", "--name", "c4", IMAGE, "sleep", "3600"]);
    wait_ping(&engines[0], "c4", &a2);
    engines[0].ok(&["rm", "-f", "c4"]);
    wait_until("c4 gone from the store", 30, || names() == before);

    for (e, c) in engines.iter().zip(["c1", "c2"]) {
        e.ok(&["rm", "-f", c]);
        e.ok(&["network", "rm", "app"]);
    }
    for h in ["n1", "n2"] {
        assert!(our_veths(u.host(h)).is_empty(), "{h} kept veths: {:?}", our_veths(u.host(h)));
    }
    drop(engines);
    let _ = &mut agents;
    drop(agents);
    dep.down_all();
    drop(etcd);
}

/// A service scaled to zero (issue 29): `docker rm` of the only container
/// carrying the alias a service names as its backend succeeds and leaves
/// nothing in the store; the service keeps its VIP and its published ports,
/// refusing connections at once (a TCP reset, ICMP port unreachable for
/// UDP, each counted as `reject_no_backend`); `validate` warns and the agents
/// say it once. A new container with the alias fills the service again.
#[test]
fn a_service_scaled_to_zero_refuses_at_once_and_fills_again() {
    require_root();
    let mut c = DockerCluster::new("obdz", 2);
    c.u.add_host("cl", "192.168.200.100".parse().unwrap());
    let (e1, e2) = (&c.engines[0], &c.engines[1]);
    let n1 = c.u.host("n1");
    let web = |e: &DockerEngine, name: &str| {
        e.ok(&[
            "run",
            "-d",
            "--network",
            "app",
            "--network-alias",
            "web",
            "--name",
            name,
            IMAGE,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/",
        ]);
        e.ok(&["inspect", "-f", "{{.Config.Hostname}}", name])
    };
    let host1 = web(e2, "web1");
    e1.ok(&["run", "-d", "--network", "app", "--name", "client", IMAGE, "sleep", "3600"]);
    wait_until("web1 named, with its alias", 30, || {
        c.endpoints()
            .iter()
            .any(|e| e["name"] == "web1" && e["aliases"].as_array().is_some_and(|a| a.iter().any(|x| x == "web")))
    });
    let made = assert_ok(&ob(
        n1,
        &[
            "service",
            "create",
            "websvc",
            "--network",
            "app",
            "--backend",
            "web",
            "--publish",
            "8090:80",
            "--publish",
            "5300:53/udp",
            "--store",
            &c.url,
        ],
    ));
    let vip = made.split("vip ").nth(1).and_then(|r| r.split(',').next()).expect("a VIP").to_string();
    let fetch = || {
        e1.docker(&["exec", "client", "timeout", "10", "wget", "-q", "-O", "-", &format!("http://{vip}/etc/hostname")])
    };
    let cl = c.u.host("cl");
    let curl = || cl.run("curl", &["-s", "-m", "10", "http://192.168.200.11:8090/etc/hostname"]);
    wait_until("the VIP leads to web1", 30, || String::from_utf8_lossy(&fetch().stdout).trim() == host1);
    wait_until("the mesh leads to web1", 30, || String::from_utf8_lossy(&curl().stdout).trim() == host1);

    // Scaled to zero: the container goes, and all of its endpoint with it.
    let ip1 = address(e2, "web1");
    let rm = e2.docker(&["rm", "-f", "web1"]);
    assert!(rm.status.success(), "{}", text(&rm));
    assert!(!e2.log().contains("driver error"), "dockerd:\n{}", e2.log());
    let all = json(&assert_ok(&ob(n1, &["endpoint", "ls", "-o", "json", "--store", &c.url])));
    assert!(!all.as_array().unwrap().iter().any(|e| e["name"] == "web1" || e["ip"] == ip1.as_str()), "{all}");
    assert!(our_veths(c.u.host("n2")).is_empty(), "web1's veth: {:?}", our_veths(c.u.host("n2")));
    // The service stays, with its VIP and ports, and no backend.
    let svc = json(&assert_ok(&ob(n1, &["service", "inspect", "websvc", "--store", &c.url])));
    let svc = if svc.is_array() { svc[0].clone() } else { svc };
    assert_eq!(svc["vip"], vip.as_str(), "{svc}");
    assert_eq!(svc["endpoints"].as_array().map(|a| a.len()), Some(0), "{svc}");
    let v = ob(n1, &["validate", "--store", &c.url]);
    assert!(v.status.success(), "a warning, not an error: {}", text(&v));
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("warning: ")
            && String::from_utf8_lossy(&v.stderr)
                .contains("backend \"web\" matches no endpoint or alias on network \"app\""),
        "{}",
        text(&v)
    );

    // Refused at once, from the VIP (TC) and through the mesh (XDP).
    let counts = |prog: &str| counter(&status(&c.dep, c.p, "n1"), prog, "reject_no_backend");
    let (tc0, xdp0) = (counts("tc_endpoint_egress"), counts(UNDERLAY));
    let f = fetch();
    assert!(!f.status.success() && String::from_utf8_lossy(&f.stderr).contains("Connection refused"), "{}", text(&f));
    assert_eq!(curl().status.code(), Some(7), "curl: couldn't connect (refused), not a timeout (28)");
    let udp = cl.run(
        "python3",
        &[
            "-c",
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(10); \
                 s.connect(('192.168.200.11', 5300)); s.send(b'x'); s.recv(16)",
        ],
    );
    assert!(
        String::from_utf8_lossy(&udp.stderr).contains("ConnectionRefusedError"),
        "ICMP port unreachable: {}",
        text(&udp)
    );
    assert_eq!(counts("tc_endpoint_egress") - tc0, 1, "one SYN to the VIP, refused");
    assert_eq!(counts(UNDERLAY) - xdp0, 2, "one SYN and one datagram through the mesh, refused");

    // A new container with the alias: the service fills again.
    let host2 = web(e2, "web2");
    wait_until("the VIP leads to web2", 30, || String::from_utf8_lossy(&fetch().stdout).trim() == host2);
    wait_until("the mesh leads to web2", 30, || String::from_utf8_lossy(&curl().stdout).trim() == host2);
    let v = ob(n1, &["validate", "--store", &c.url]);
    assert!(!String::from_utf8_lossy(&v.stderr).contains("warning"), "{}", text(&v));
    // Each agent said it once when it started and once when it ended.
    let log = agent_log(e1);
    assert_eq!(
        log.lines().filter(|l| l.contains(" WARN ") && l.contains("backend \"web\" matches no endpoint")).count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.lines().filter(|l| l.contains("resolved: ") && l.contains("backend \"web\" matches no endpoint")).count(),
        1,
        "{log}"
    );
    for (e, n) in [(e1, "client"), (e2, "web2")] {
        e.ok(&["rm", "-f", n]);
    }
}
