//! The CNI plugin (issue 17): the protocol by direct invocation, as runtimes
//! call it (environment and stdin, in the host's network namespace), and
//! Debian's podman with its CNI backend running containers on two hosts of a
//! namespace cluster, the store on a real etcd. Host tier only.

mod common;

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{etcd::*, *};
use serde_json::{json, Value};

/// Hosts n1..n3; networks app (10.50.0.0/24), beta (10.51.0.0/24) and the
/// macvlan network lan (the underlay's 192.168.200.0/24); a
/// namespace endpoint `ns3` on app on n3.
fn cni_state(p: &str) -> String {
    let mut y = String::from("version: 1\nhosts:\n");
    for i in 1..=3 {
        y += &format!("  - {{name: {p}n{i}, address: 192.168.200.1{i}}}\n");
    }
    y += "networks:\n  - {name: app, attachable: true, subnets: [{subnet: 10.50.0.0/24}]}\n";
    y += "  - {name: beta, attachable: true, subnets: [{subnet: 10.51.0.0/24}]}\n";
    // The hosts' own LAN, for containers with macvlan sub-interfaces.
    y += "  - {name: lan, driver: macvlan, parent: eth0, subnets: [{subnet: 192.168.200.0/24, gateway: \
          192.168.200.1, ip_range: 192.168.200.192/27}]}\n";
    y += &format!("endpoints:\n  - {{name: ns3, host: {p}n3, network: app, netns: {p}-ns3, ip: 10.50.0.250}}\n");
    y
}

/// A cluster with etcd and an agent on each host.
struct CniCluster {
    _agents: Vec<Agent>,
    dep: Deployment,
    etcd: Etcd,
    url: String,
    p: &'static str,
    u: Underlay,
    ns3: Netns,
}

impl CniCluster {
    fn new(p: &'static str) -> CniCluster {
        let u = underlay(p, 3);
        let ns3 = Netns::new(&format!("{p}-ns3"));
        let etcd = Etcd::start(u.host("n1"), "192.168.200.11", p);
        let url = etcd.url.clone();
        let st = StateFile::new(p, &cni_state(p));
        assert_ok(&ob(u.host("n1"), &["store", "import", st.0.to_str().unwrap(), "--store", &url]));
        let mut dep = Deployment::new(&bin());
        let agents = (1..=3)
            .map(|i| {
                let (h, ns) = (format!("{p}n{i}"), format!("{p}-n{i}"));
                Agent::start_with(&mut dep, &["--store", &url], &h, &ns, &["--no-health"])
            })
            .collect();
        let c = CniCluster { _agents: agents, dep, etcd, url, p, u, ns3 };
        wait_until("ns3 up on n3", 30, || c.ns3.ip(&["-o", "addr"]).contains("10.50.0.250"));
        c
    }

    fn conf(&self, network: &str) -> Value {
        json!({"cniVersion": "1.0.0", "name": network, "type": "overlay-bpf", "network": network, "store": self.url})
    }

    fn endpoints(&self, network: &str) -> Vec<Value> {
        let o = ob(self.u.host("n1"), &["endpoint", "ls", "--network", network, "-o", "json", "--store", &self.url]);
        json(&assert_ok(&o)).as_array().cloned().unwrap_or_default()
    }

    fn names(&self, network: &str) -> Vec<String> {
        self.endpoints(network).iter().filter_map(|e| e["name"].as_str().map(str::to_string)).collect()
    }
}

impl Drop for CniCluster {
    fn drop(&mut self) {
        let _ = &self.etcd;
        self.dep.down_all();
    }
}

/// What the plugin printed and its exit code.
struct Call {
    code: i32,
    out: String,
    err: String,
}

impl Call {
    fn json(&self) -> Value {
        json(&self.out)
    }

    /// The error object's code (the call must have failed).
    fn cni_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected a failure: {}", self.out);
        self.json()["code"].as_u64().unwrap_or_else(|| panic!("no code: {}", self.out))
    }
}

/// The plugin as a runtime runs it: in the host's network namespace (with
/// nsenter: `ip netns exec` would hide /sys/fs/bpf), an environment of
/// CNI_* only, the configuration on stdin.
fn plugin(host_ns: &Netns, command: &str, vars: &[(&str, &str)], stdin: &str) -> Call {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", host_ns.path().display()))
        .arg(bin())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/usr/lib/cni")
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let o: Output = child.wait_with_output().unwrap();
    Call {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn vars<'a>(cid: &'a str, netns: &'a str, ifname: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![("CNI_CONTAINERID", cid), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname)]
}

fn add(host: &Netns, conf: &Value, cid: &str, c: &Netns) -> Call {
    let path = c.path().display().to_string();
    plugin(host, "ADD", &vars(cid, &path, "eth0"), &conf.to_string())
}

fn ok_add(host: &Netns, conf: &Value, cid: &str, c: &Netns) -> Value {
    let r = add(host, conf, cid, c);
    assert_eq!(r.code, 0, "ADD {cid}: {}\n{}", r.out, r.err);
    r.json()
}

fn address(r: &Value) -> String {
    r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

fn pings(from: &Netns, to: &str) -> bool {
    from.run("ping", &["-c", "1", "-W", "2", to]).status.success()
}

#[test]
fn version_add_check_and_del_across_hosts() {
    require_root();
    let c = CniCluster::new("obcp");
    let (n1, n2) = (c.u.host("n1"), c.u.host("n2"));
    let cs = containers(c.p, &["c1", "c2", "c3"]);
    let app = c.conf("app");

    // VERSION: no network name; the versions spoken.
    let v = plugin(n1, "VERSION", &[], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(v.code, 0);
    assert_eq!(
        v.json(),
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );

    // ADD on two hosts: the result, the interface, and traffic across hosts.
    let r1 = ok_add(n1, &app, "c1000000000000000001", &cs[0]);
    assert_eq!(r1["cniVersion"], "1.0.0");
    assert_eq!(r1["interfaces"][1]["name"], "eth0");
    assert_eq!(r1["interfaces"][1]["sandbox"], cs[0].path().display().to_string());
    assert_eq!(r1["interfaces"][1]["mtu"], 1450);
    assert_eq!(r1["ips"][0]["gateway"], "10.50.0.1");
    assert_eq!(r1["ips"][0]["interface"], 1);
    assert_eq!(r1["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.50.0.1"}]));
    assert_eq!(r1["dns"], json!({"nameservers": ["10.50.0.1"]}), "the resolver, at the gateway");
    let a1 = address(&r1);
    // From a hash of the endpoint's name, probing upwards: the same on every run.
    assert_eq!(r1["ips"][0]["address"], "10.50.0.86/24");
    let link = link_json(&cs[0], "eth0").expect("eth0 in the container");
    assert_eq!(link["address"], r1["interfaces"][1]["mac"]);
    assert_eq!(link["mtu"], 1450);
    assert_eq!(cs[0].ip(&["-4", "-br", "addr", "show", "eth0"]).split_whitespace().nth(2), Some(&*format!("{a1}/24")));
    assert_eq!(cs[0].ip(&["route", "show", "default"]).trim(), "default via 10.50.0.1 dev eth0 proto static");
    let r2 = ok_add(n2, &app, "c2000000000000000002", &cs[1]);
    let a2 = address(&r2);
    assert_ne!(a1, a2);
    // The name: the container ID's first 12 characters (no K8S_POD_NAME).
    let mut names = c.names("app");
    names.sort();
    assert_eq!(names, ["c10000000000", "c20000000000", "ns3"]);
    // c2, made on n2, resolves on n1 once n1's agent has it (the watch).
    let t = Instant::now();
    wait_until("c1 resolves c2 by name", 20, || {
        let o = cs[0].run("dig", &["@10.50.0.1", "+short", "+time=1", "+tries=1", "c20000000000"]);
        String::from_utf8_lossy(&o.stdout).trim() == a2
    });
    eprintln!("c2 resolved on the other host {:?} after its ADD returned", t.elapsed());
    wait_until("c1 reaches c2 across hosts", 20, || pings(&cs[0], &a2));
    wait_until("c2 reaches ns3 on a third host", 20, || pings(&cs[1], "10.50.0.250"));
    assert!(pings(&c.ns3, &a1), "ns3 reaches c1");
    // K8S_POD_NAME names the endpoint; another network is isolated.
    let beta = c.conf("beta");
    let path3 = cs[2].path().display().to_string();
    let mut v3 = vars("c3000000000000000003", &path3, "eth0");
    v3.push(("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-3"));
    let r3 = plugin(n2, "ADD", &v3, &beta.to_string());
    assert_eq!(r3.code, 0, "{}", r3.out);
    assert_eq!(c.names("beta"), ["prod.web-3"]);
    let a3 = address(&r3.json());
    assert!(!pings(&cs[0], &a3), "app reaches nothing on beta");

    // CHECK: fine as made; after the address is removed, the drift is named.
    let mut conf = app.clone();
    conf["prevResult"] = r2.clone();
    let path2 = cs[1].path().display().to_string();
    let chk = plugin(n2, "CHECK", &vars("c2000000000000000002", &path2, "eth0"), &conf.to_string());
    assert_eq!((chk.code, chk.out.as_str()), (0, ""), "{}", chk.err);
    cs[1].ip(&["addr", "flush", "dev", "eth0"]);
    let chk = plugin(n2, "CHECK", &vars("c2000000000000000002", &path2, "eth0"), &conf.to_string());
    assert_eq!(chk.cni_code(), 100);
    assert_eq!(chk.json()["msg"], format!("endpoint c20000000000: eth0 has [], not {a2}/24"), "{}", chk.out);

    // DEL: nothing printed, the endpoint and its veth gone; again: fine.
    let veths_before = our_veths(n2).len();
    for _ in 0..2 {
        let d = plugin(n2, "DEL", &vars("c2000000000000000002", &path2, "eth0"), &app.to_string());
        assert_eq!((d.code, d.out.as_str()), (0, ""), "{}", d.err);
    }
    assert_eq!(c.names("app"), ["ns3", "c10000000000"]);
    assert_eq!(our_veths(n2).len(), veths_before - 1);
    assert!(link_json(&cs[1], "eth0").is_none());
    // DEL without CNI_NETNS (the container's netns already gone) works too.
    let d = plugin(n2, "DEL", &[("CNI_CONTAINERID", "never-added"), ("CNI_IFNAME", "eth0")], &app.to_string());
    assert_eq!(d.code, 0, "{}", d.out);
}

#[test]
fn every_error_has_its_cni_code_and_leaves_nothing_behind() {
    require_root();
    let c = CniCluster::new("obce");
    let n1 = c.u.host("n1");
    let cs = containers(c.p, &["c1", "c4"]);
    let app = c.conf("app");
    let a1 = address(&ok_add(n1, &app, "c1000000000000000001", &cs[0]));

    // CNI's codes (and ours) and the exact messages that name the fix.
    let path4 = cs[1].path().display().to_string();
    let v4 = vars("c4000000000000000004", &path4, "eth0");
    let bad = |command: &str, vars: &[(&str, &str)], stdin: &str| plugin(n1, command, vars, stdin);
    assert_eq!(bad("ADD", &v4, "{not json").cni_code(), 6);
    let mut nope = app.clone();
    nope["network"] = json!("nope");
    let f = bad("ADD", &v4, &nope.to_string());
    assert_eq!(f.cni_code(), 7);
    assert_eq!(
        f.json()["msg"],
        "network nope is not in the store; create it (`overlay-bpf network create --subnet ... nope`) or fix \
         \"network\" in the CNI configuration",
        "{}",
        f.out
    );
    let mut old = app.clone();
    old["cniVersion"] = json!("0.2.0");
    assert_eq!(bad("ADD", &v4, &old.to_string()).cni_code(), 1);
    let f = bad("ADD", &v4[1..], &app.to_string());
    assert_eq!(f.cni_code(), 4);
    assert_eq!(f.json()["msg"], "CNI_CONTAINERID is not set; ADD needs it");
    assert_eq!(bad("FROB", &v4, &app.to_string()).cni_code(), 4);
    let gone = vars("c4000000000000000004", "/run/netns/obce-no-such-netns", "eth0");
    assert_eq!(bad("ADD", &gone, &app.to_string()).cni_code(), 3);
    let mut taken = v4.clone();
    let ip_arg = format!("IP={a1}");
    taken.push(("CNI_ARGS", &ip_arg));
    let f = bad("ADD", &taken, &app.to_string());
    assert_eq!(f.cni_code(), 101, "{}", f.out);
    let duplicate = [
        format!(
            "the store: endpoints[2] (c40000000000): duplicate address {a1}: already used by endpoint c10000000000"
        ),
        "the store: endpoints[2] (c40000000000): duplicate MAC 02:42:0a:32:00:56: endpoints[1] (c10000000000) already \
         has it"
            .to_string(),
    ];
    assert_eq!(f.json()["msg"], duplicate.join("\n"), "{}", f.out);
    // A failure half-way (the interface name is taken in the container)
    // leaves nothing: no endpoint in the store, no veth.
    cs[1].ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "taken0"]);
    let veths = our_veths(n1).len();
    let f = bad("ADD", &v4, &app.to_string());
    assert_eq!(f.cni_code(), 5, "{}", f.out);
    assert_eq!(c.names("app"), ["ns3", "c10000000000"]);
    assert_eq!(our_veths(n1).len(), veths);
    cs[1].ip(&["link", "del", "eth0"]);
    // A static address through CNI_ARGS.
    let mut fixed = v4.clone();
    fixed.push(("CNI_ARGS", "IP=10.50.0.77"));
    let r4 = plugin(n1, "ADD", &fixed, &app.to_string());
    assert_eq!(r4.code, 0, "{}", r4.out);
    assert_eq!(address(&r4.json()), "10.50.0.77");
}

#[test]
fn status_says_whether_the_store_answers_and_gc_keeps_the_valid() {
    require_root();
    let c = CniCluster::new("obcg");
    let n1 = c.u.host("n1");
    let cs = containers(c.p, &["c1", "c3", "c4", "c5"]);
    let (app, beta) = (c.conf("app"), c.conf("beta"));
    ok_add(n1, &app, "c1000000000000000001", &cs[0]);
    ok_add(n1, &beta, "c3000000000000000003", &cs[1]);
    ok_add(n1, &app, "c4000000000000000004", &cs[2]);

    // STATUS: ready with the store, 50 without.
    let s = plugin(n1, "STATUS", &[], &app.to_string());
    assert_eq!((s.code, s.out.as_str()), (0, ""));
    let mut dead = app.clone();
    dead["store"] = json!("etcd://127.0.0.1:1");
    let f = plugin(n1, "STATUS", &[], &dead.to_string());
    assert_eq!(f.cni_code(), 50);
    // Without its store, ADD says try again later.
    let path5 = cs[3].path().display().to_string();
    let v5 = vars("c5", &path5, "eth0");
    assert_eq!(plugin(n1, "ADD", &v5, &dead.to_string()).cni_code(), 11);

    // GC: attachments not in the valid list go (c4 here), the listed stay (c1).
    let mut gc = app.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1000000000000000001", "ifname": "eth0"}]);
    let g = plugin(n1, "GC", &[], &gc.to_string());
    assert_eq!((g.code, g.out.as_str()), (0, ""), "{}", g.err);
    assert_eq!(c.names("app"), ["ns3", "c10000000000"]);
    assert!(link_json(&cs[2], "eth0").is_none(), "c4's interface went with its veth");
    assert_eq!(c.names("beta"), ["c30000000000"], "another network's attachments stay");
}

#[test]
fn a_macvlan_attachment_is_a_sub_interface_on_the_lan() {
    require_root();
    let c = CniCluster::new("obcv");
    let (n1, n2) = (c.u.host("n1"), c.u.host("n2"));
    let cs = containers(c.p, &["c5", "c6"]);
    // The container's eth0 is a sub-interface of its host's eth0, on the
    // LAN, with no host end and no resolver of ours.
    let lan = c.conf("lan");
    let r6 = ok_add(n1, &lan, "c6000000000000000006", &cs[1]);
    assert_eq!(r6["interfaces"].as_array().unwrap().len(), 1, "no host end: {r6}");
    assert_eq!(r6["interfaces"][0]["sandbox"], cs[1].path().display().to_string());
    assert_eq!(r6["interfaces"][0]["mtu"], 1500, "the parent's MTU");
    assert_eq!(r6["ips"][0]["interface"], 0);
    assert_eq!(r6["routes"], json!([{"dst": "0.0.0.0/0", "gw": "192.168.200.1"}]));
    assert_eq!(r6["dns"], json!({}), "no resolver of ours: {r6}");
    let a6 = address(&r6);
    assert_eq!(a6, "192.168.200.216", "from the ip_range, by a hash of the name");
    let link = link_json(&cs[1], "eth0").expect("eth0 in c6");
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan", "{link}");
    assert_eq!(link["address"], r6["interfaces"][0]["mac"]);
    let path6 = cs[1].path().display().to_string();
    let mut conf6 = lan.clone();
    conf6["prevResult"] = r6.clone();
    let chk = plugin(n1, "CHECK", &vars("c6000000000000000006", &path6, "eth0"), &conf6.to_string());
    assert_eq!((chk.code, chk.out.as_str()), (0, ""), "{}", chk.err);
    let r5 = ok_add(n2, &lan, "c5000000000000000005", &cs[0]);
    let a5 = address(&r5);
    assert_eq!(a5, "192.168.200.217");
    wait_until("c6 on n1 reaches c5 on n2 over the LAN", 20, || pings(&cs[1], &a5));
    assert!(pings(n2, &a6), "n2 itself reaches c6 on the LAN");
    for (h, cid, ns) in [(n1, "c6000000000000000006", &cs[1]), (n2, "c5000000000000000005", &cs[0])] {
        let path = ns.path().display().to_string();
        let d = plugin(h, "DEL", &vars(cid, &path, "eth0"), &lan.to_string());
        assert_eq!((d.code, d.out.as_str()), (0, ""), "{}", d.err);
        assert!(link_json(ns, "eth0").is_none(), "{cid}'s sub-interface after DEL");
    }
    assert_eq!(c.names("lan"), Vec::<String>::new());
}

/// `cni install` writes the documented conflist and links the binary;
/// `cni uninstall` leaves neither.
#[test]
fn cni_install_and_uninstall() {
    require_root();
    let p = "obci";
    let c = CniCluster::new(p);
    let dir = std::env::temp_dir().join(format!("{p}-cni"));
    let _ = std::fs::remove_dir_all(&dir);
    let (bin_dir, conf_dir) = (dir.join("bin"), dir.join("net.d"));
    let args = |cmd: &str, network: &str| {
        vec![
            "cni".to_string(),
            cmd.into(),
            "--network".into(),
            network.into(),
            "--bin-dir".into(),
            bin_dir.display().to_string(),
            "--conf-dir".into(),
            conf_dir.display().to_string(),
            "--store".into(),
            c.url.clone(),
        ]
    };
    let n1 = c.u.host("n1");
    let run = |a: Vec<String>| ob(n1, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let o = run(args("install", "nope"));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("network nope is not in"), "{}", text(&o));
    assert_ok(&run(args("install", "app")));
    let v: Value = json(&std::fs::read_to_string(conf_dir.join("app.conflist")).unwrap());
    assert_eq!(
        v,
        json!({"cniVersion": "1.0.0", "name": "app",
               "plugins": [{"type": "overlay-bpf", "network": "app", "store": format!("{}/overlay-bpf", c.url)}]})
    );
    assert_eq!(std::fs::canonicalize(bin_dir.join("overlay-bpf")).unwrap(), std::fs::canonicalize(bin()).unwrap());
    let mut un = args("uninstall", "app");
    un.truncate(8);
    assert_ok(&run(un));
    assert!(std::fs::read_dir(&conf_dir).unwrap().next().is_none(), "no conflist left");
    assert!(bin_dir.join("overlay-bpf").symlink_metadata().is_err(), "no link left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn parallel_adds_get_distinct_addresses() {
    require_root();
    let c = CniCluster::new("obcl");
    let n1 = c.u.host("n1");
    let app = c.conf("app");
    let cs = containers(
        c.p,
        &(0..20).map(|i| format!("k{i}")).collect::<Vec<_>>().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    let t = Instant::now();
    let results: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = cs
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                s.spawn({
                    let app = &app;
                    move || ok_add(n1, app, &format!("par{i:02}"), ns)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = t.elapsed();
    let mut addrs: Vec<String> = results.iter().map(address).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 20, "20 distinct addresses: {addrs:?}");
    assert_eq!(c.names("app").len(), 21);
    for (ns, r) in cs.iter().zip(&results) {
        assert!(ns.ip(&["-4", "-o", "addr", "show", "eth0"]).contains(&address(r)));
    }
    wait_until("the last container reaches the first", 20, || pings(&cs[19], &address(&results[0])));
    eprintln!("20 parallel ADDs: {:.0} ms wall", wall.as_secs_f64() * 1000.0);

    // ADD and DEL latency, for the record (OB_CNI_CALLS, default 20).
    let n: usize = std::env::var("OB_CNI_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let extra = Netns::new("obcl-lat");
    let path = extra.path().display().to_string();
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for i in 0..n {
        let cid = format!("lat{i}");
        let t = Instant::now();
        let r = plugin(n1, "ADD", &vars(&cid, &path, "eth0"), &app.to_string());
        adds.push(t.elapsed());
        assert_eq!(r.code, 0, "{}", r.out);
        let t = Instant::now();
        let r = plugin(n1, "DEL", &vars(&cid, &path, "eth0"), &app.to_string());
        dels.push(t.elapsed());
        assert_eq!(r.code, 0, "{}", r.out);
    }
    let q = |v: &mut Vec<Duration>, f: f64| {
        v.sort();
        v[((v.len() - 1) as f64 * f).round() as usize].as_secs_f64() * 1000.0
    };
    eprintln!(
        "{n} ADDs: median {:.0} ms, p99 {:.0} ms; {n} DELs: median {:.0} ms, p99 {:.0} ms",
        q(&mut adds, 0.5),
        q(&mut adds, 0.99),
        q(&mut dels, 0.5),
        q(&mut dels, 0.99)
    );
    assert_eq!(c.names("app").len(), 21, "every DEL removed its endpoint");
}

/// Debian's podman with the CNI backend, its state and configuration in a
/// directory of its own, running in a host's network namespace.
struct Podman {
    dir: PathBuf,
    host_ns: PathBuf,
}

impl Podman {
    fn new(name: &str, host: &Netns, url: &str, network: &str) -> Podman {
        let dir = std::env::temp_dir().join(format!("{name}-podman"));
        let _ = std::fs::remove_dir_all(&dir);
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in ["sh", "sleep", "ip", "ping", "cat", "true", "nc"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        for d in ["etc", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        let conf = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{0}/bin\"]\nnetwork_config_dir = \"{0}/net.d\"\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{0}/events.log\"\n\
             tmp_dir = \"{0}/tmp\"\n",
            dir.display()
        );
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        let pm = Podman { dir, host_ns: host.path() };
        pm.install(network, url);
        pm
    }

    /// The conflist from `cni install` for `network`, unchanged.
    fn install(&self, network: &str, url: &str) {
        let o = Command::new("nsenter")
            .arg(format!("--net={}", self.host_ns.display()))
            .arg(bin())
            .args(["cni", "install", "--network", network, "--store", url, "--bin-dir"])
            .arg(self.dir.join("bin"))
            .arg("--conf-dir")
            .arg(self.dir.join("net.d"))
            .output()
            .unwrap();
        assert_ok(&o);
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("timeout");
        c.args(["120", "nsenter"])
            .arg(format!("--net={}", self.host_ns.display()))
            .args(["podman", "--root"])
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .stdin(Stdio::null());
        c
    }

    /// `podman run -d --network NETWORK --name NAME` of the busybox tree.
    fn run(&self, network: &str, name: &str) -> Output {
        self.cmd()
            .args(["run", "-d", "--network", network, "--name", name])
            .args(["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--rootfs"])
            .arg(self.dir.join("rootfs"))
            .args(["sleep", "3600"])
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        assert_ok(&self.cmd().args(args).output().unwrap()).trim().to_string()
    }

    fn address(&self, name: &str) -> String {
        let out = self.ok(&["exec", name, "ip", "-4", "-o", "addr", "show", "eth0"]);
        out.split_whitespace().nth(3).unwrap().split('/').next().unwrap().to_string()
    }

    fn pings(&self, name: &str, to: &str) -> bool {
        self.cmd().args(["exec", name, "ping", "-c", "1", "-W", "2", to]).output().unwrap().status.success()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-af", "-t", "0"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn podman_containers_on_two_hosts_reach_each_other() {
    require_root();
    let c = CniCluster::new("obcm");
    let (n1, n2) = (c.u.host("n1"), c.u.host("n2"));
    let pm1 = Podman::new("obcmn1", n1, &c.url, "app");
    let pm2 = Podman::new("obcmn2", n2, &c.url, "app");
    assert_ok(&pm1.run("app", "pc1"));
    assert_ok(&pm2.run("app", "pc2"));
    // podman sends the container's name as K8S_POD_NAME.
    let names = c.names("app");
    assert!(names.contains(&"pc1".to_string()) && names.contains(&"pc2".to_string()), "{names:?}");
    let (a1, a2) = (pm1.address("pc1"), pm2.address("pc2"));
    wait_until("pc1 reaches pc2 across hosts", 20, || pm1.pings("pc1", &a2));
    assert!(pm2.pings("pc2", &a1));
    assert!(pm1.pings("pc1", "10.50.0.250"), "pc1 reaches the namespace endpoint on n3");
    assert!(pings(&c.ns3, &a2));
    // Isolation: a container of beta reaches neither.
    pm1.install("beta", &c.url);
    assert_ok(&pm1.run("beta", "pb1"));
    assert!(!pm1.pings("pb1", &a2) && !pm1.pings("pb1", &a1), "beta reaches nothing on app");

    // The macvlan network: containers on the hosts' LAN, from its ip_range,
    // reaching each other across hosts, with no veth of ours.
    let veths = our_veths(n1).len();
    for pm in [&pm1, &pm2] {
        pm.install("lan", &c.url);
    }
    assert_ok(&pm1.run("lan", "pl1"));
    assert_ok(&pm2.run("lan", "pl2"));
    let (l1, l2) = (pm1.address("pl1"), pm2.address("pl2"));
    let in_range =
        |a: &str| a.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.octets()[3] >= 192 && ip.octets()[3] < 224);
    assert!(in_range(&l1) && in_range(&l2) && l1.starts_with("192.168.200."), "{l1} {l2}");
    wait_until("pl1 reaches pl2 over the LAN", 20, || pm1.pings("pl1", &l2));
    assert_eq!(our_veths(n1).len(), veths, "no veth for a macvlan container");
    pm1.ok(&["rm", "-f", "-t", "0", "pl1"]);
    pm2.ok(&["rm", "-f", "-t", "0", "pl2"]);
    assert!(c.names("lan").is_empty(), "{:?}", c.names("lan"));

    // podman rm leaves nothing: no endpoint, no veth.
    pm1.ok(&["rm", "-f", "-t", "0", "pc1", "pb1"]);
    let names = c.names("app");
    assert!(!names.contains(&"pc1".to_string()), "{names:?}");
    assert!(c.names("beta").is_empty());
    assert!(our_veths(n1).is_empty(), "{:?}", our_veths(n1));

    // 20 containers started in parallel: 20 distinct addresses.
    let t = Instant::now();
    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20)
            .map(|i| {
                s.spawn({
                    let pm1 = &pm1;
                    move || pm1.run("app", &format!("par{i}"))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = t.elapsed();
    for o in &outs {
        assert_ok(o);
    }
    let mut addrs: Vec<String> = (0..20).map(|i| pm1.address(&format!("par{i}"))).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 20, "{addrs:?}");
    eprintln!("20 podman run -d in parallel: {:.1} s wall", wall.as_secs_f64());
    pm1.ok(&["rm", "-af", "-t", "0"]);
    assert_eq!(c.names("app").len(), 2, "ns3 and pc2 only: {:?}", c.names("app"));
    assert!(our_veths(n1).is_empty());
    drop(pm2);
}
