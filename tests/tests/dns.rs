//! The resolver (issue 18): agents on a two-host namespace cluster answer
//! real clients (`dig`, `getent`, `curl`) in the containers at their
//! network's gateway; the upstream is dnsmasq on the host's loopback (no
//! query ever leaves the test's namespaces). Host tier only (dig, dnsmasq).

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::*;

/// Hosts n1, n2; alpha (web1 on n1, web2 on n2, alias web; cl, a client on
/// n1; both, on alpha and beta), beta (db on n2), quiet (internal, q1);
/// services api (VIP) and rr (dnsrr) on web1 and web2.
fn dns_state(p: &str, health: bool) -> String {
    let mut y = String::from("version: 1\nhosts:\n");
    for i in 1..=2 {
        y += &format!("  - {{name: {p}n{i}, address: 192.168.200.1{i}}}\n");
    }
    y += "networks:\n  - {name: alpha, attachable: true, subnets: [{subnet: 10.60.0.0/24}]}\n";
    y += "  - {name: beta, attachable: true, subnets: [{subnet: 10.61.0.0/24}]}\n";
    y += "  - {name: quiet, internal: true, attachable: true, subnets: [{subnet: 10.62.0.0/24}]}\n";
    y += "endpoints:\n";
    for (name, host, net, ip, extra) in [
        ("web1", "n1", "alpha", "10.60.0.11", ", aliases: [web]"),
        ("web2", "n2", "alpha", "10.60.0.12", ", aliases: [web]"),
        ("cl", "n1", "alpha", "10.60.0.20", ""),
        ("db", "n2", "beta", "10.61.0.5", ""),
        ("q1", "n1", "quiet", "10.62.0.5", ""),
    ] {
        y += &format!("  - {{name: {name}, host: {p}{host}, network: {net}, netns: {p}-{name}, ip: {ip}{extra}}}\n");
    }
    y += &format!("  - {{name: both, host: {p}n1, network: alpha, netns: {p}-both, ip: 10.60.0.30}}\n");
    y += &format!("  - {{name: both, host: {p}n1, network: beta, netns: {p}-both, ip: 10.61.0.30}}\n");
    y += "services:\n";
    y += "  - {name: api, network: alpha, backends: [web1, web2], ports: [{protocol: tcp, published: 8080, target: 80}]}\n";
    y += "  - {name: far, network: alpha, backends: [web2], ports: [{protocol: tcp, published: 8090, target: 80}]}\n";
    if !health {
        y += "  - {name: rr, network: alpha, endpoint_mode: dnsrr, backends: [web1, web2]}\n";
    }
    y
}

/// dnsmasq on 127.0.0.1:PORT in `ns`, answering `outside.test` (and nothing
/// else: no resolv.conf, no hosts file).
fn upstream(ns: &Netns, p: &str, port: u16) -> Proc {
    let child = ns
        .cmd("dnsmasq")
        .args(["--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--pid-file=/tmp/{p}-dnsmasq.pid"))
        .args(["--address=/outside.test/192.0.2.7", "--user=root"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq (Debian dnsmasq-base; `cargo xtask setup` installs it)");
    Proc(child)
}

/// `dig @gateway ARGS` from `ns`: (status, answers).
fn dig(ns: &Netns, server: &str, args: &[&str]) -> (String, Vec<String>) {
    let mut a = vec![
        format!("@{server}"),
        "+time=3".into(),
        "+tries=1".into(),
        "+noall".into(),
        "+comments".into(),
        "+answer".into(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    let out = ns.run("dig", &a.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .map(|s| s.split(',').next().unwrap_or_default().to_string())
        .unwrap_or_else(|| format!("no answer: {text}"));
    let mut answers: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    answers.sort();
    (status, answers)
}

#[test]
fn every_row_of_the_table_from_containers_on_two_hosts() {
    require_root();
    let p = "obns";
    let u = underlay(p, 2);
    let cs = containers(p, &["web1", "web2", "cl", "db", "q1", "both"]);
    let st = StateFile::new(p, &dns_state(p, false));
    let _up1 = upstream(u.host("n1"), p, 5353);
    let mut dep = Deployment::new(&bin());
    let a1 = Agent::start(
        &mut dep,
        &st.0,
        &format!("{p}n1"),
        &format!("{p}-n1"),
        &["--no-health", "--dns-upstream", "127.0.0.1:5353"],
    );
    // n2's upstream answers nothing: its forwarded questions get SERVFAIL.
    let a2 = Agent::start(
        &mut dep,
        &st.0,
        &format!("{p}n2"),
        &format!("{p}-n2"),
        &["--no-health", "--dns-upstream", "127.0.0.1:5399"],
    );
    let (cl, web2, q1, both) = (&cs[2], &cs[1], &cs[4], &cs[5]);
    let gw = "10.60.0.1";
    wait_until("the resolver on n1 answers", 30, || dig(cl, gw, &["web1"]).0 == "NOERROR");
    let _ = (&a1, &a2);

    let vip = {
        let o = dep
            .cmd(&format!("{p}n1"), &format!("{p}-n1"))
            .args(["validate", "--state", st.0.to_str().unwrap(), "-o", "json"])
            .output()
            .unwrap();
        let v = json(&assert_ok(&o));
        v["services"].as_array().unwrap().iter().find(|s| s["name"] == "api").unwrap()["vip"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let ok = |name: &str, want: &[&str]| {
        let (status, answers) = dig(cl, gw, &[name]);
        assert_eq!(status, "NOERROR", "{name}");
        assert_eq!(answers, want, "{name}");
    };
    ok("web1", &["10.60.0.11"]);
    ok("web2", &["10.60.0.12"]);
    ok("web", &["10.60.0.11", "10.60.0.12"]);
    ok("api", &[vip.as_str()]);
    ok("rr", &["10.60.0.11", "10.60.0.12"]);
    ok("tasks.api", &["10.60.0.11", "10.60.0.12"]);
    ok("web2.alpha", &["10.60.0.12"]);
    ok("outside.test", &["192.0.2.7"]);
    let (status, answers) = dig(cl, gw, &["AAAA", "web1"]);
    assert_eq!((status.as_str(), answers.len()), ("NOERROR", 0), "AAAA of a known name: no data");
    let (status, answers) = dig(cl, gw, &["-x", "10.60.0.12"]);
    assert_eq!((status.as_str(), answers), ("NOERROR", vec!["web2.alpha.".to_string()]));
    assert_eq!(dig(cl, gw, &["db"]).0, "NXDOMAIN", "beta's names do not exist on alpha");
    assert_eq!(dig(cl, gw, &["db.beta"]).0, "NXDOMAIN");
    // A container on alpha and beta resolves both.
    assert_eq!(dig(both, gw, &["db"]).1, ["10.61.0.5"]);
    // TCP answers too.
    assert_eq!(dig(cl, gw, &["+tcp", "web2"]).1, ["10.60.0.12"]);
    // The other host answers its containers at the same gateway address.
    assert_eq!(dig(web2, gw, &["web1"]).1, ["10.60.0.11"]);
    // An internal network resolves its own names and forwards nothing.
    assert_eq!(dig(q1, "10.62.0.1", &["q1"]).1, ["10.62.0.5"]);
    assert_eq!(dig(q1, "10.62.0.1", &["outside.test"]).0, "NXDOMAIN");
    // A dead upstream: SERVFAIL within the 2 s bound.
    let t = Instant::now();
    assert_eq!(dig(web2, gw, &["outside.test"]).0, "SERVFAIL");
    assert!(t.elapsed() < Duration::from_secs(3), "SERVFAIL took {:?}", t.elapsed());

    // The resolver through the system's own resolver: the netns's
    // resolv.conf (`ip netns exec` mounts /etc/netns/NAME/resolv.conf).
    let conf = std::fs::read_to_string(format!("/etc/netns/{p}-cl/resolv.conf")).unwrap();
    assert!(conf.contains("nameserver 10.60.0.1"), "{conf}");
    let o = cl.run("getent", &["hosts", "web2"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("10.60.0.12"), "{}", text(&o));
    // curl by name, through the VIP, to a server on the other host.
    let _w1 = Web::start(&cs[0], "web1", 80);
    let _w2 = Web::start(&cs[1], "web2", 80);
    wait_until("curl http://api/", 20, || {
        let body = curl(cl, &["http://api/"]);
        body == ["web1"] || body == ["web2"]
    });
    // far's one backend is on the other host: by name, through its VIP, across hosts.
    wait_until("curl http://far/", 20, || curl(cl, &["http://far/"]) == ["web2"]);
    // The gateway answers ping; the host's other services stay out of reach.
    assert!(cl.run("ping", &["-c", "1", "-W", "2", gw]).status.success(), "ping the gateway");

    // down takes the resolver's address and the resolv.conf with it.
    drop(a1);
    assert_ok(&dep.cmd(&format!("{p}n1"), &format!("{p}-n1")).arg("down").output().unwrap());
    assert!(!std::path::Path::new(&format!("/etc/netns/{p}-cl/resolv.conf")).exists());
    let lo = u.host("n1").ip(&["-4", "-o", "addr", "show", "dev", "lo"]);
    assert!(!lo.contains("10.60.0.1/32"), "{lo}");
    drop(cs);
}

#[test]
fn a_backend_the_health_checks_take_out_leaves_the_answers() {
    require_root();
    let p = "obnh";
    let _u = underlay(p, 2);
    let cs = containers(p, &["web1", "web2", "cl", "db", "q1", "both"]);
    let st = StateFile::new(p, &dns_state(p, true));
    let mut dep = Deployment::new(&bin());
    let w1 = Web::start(&cs[0], "web1", 80);
    let mut w2 = Some(Web::start(&cs[1], "web2", 80));
    let fast = ["--health-interval", "1", "--health-fails", "2", "--health-passes", "1"];
    let _a1 = Agent::start(&mut dep, &st.0, &format!("{p}n1"), &format!("{p}-n1"), &fast);
    let _a2 = Agent::start(&mut dep, &st.0, &format!("{p}n2"), &format!("{p}-n2"), &fast);
    let cl = &cs[2];
    let tasks = || dig(cl, "10.60.0.1", &["tasks.api"]).1;
    wait_until("both backends answer", 30, || tasks() == ["10.60.0.11", "10.60.0.12"]);
    drop(w2.take());
    let t = Instant::now();
    wait_until("web2 out of tasks.api", 30, || tasks() == ["10.60.0.11"]);
    eprintln!("web2 left tasks.api {:?} after its server stopped", t.elapsed());
    assert_eq!(dig(cl, "10.60.0.1", &["web2"]).1, ["10.60.0.12"], "its own name stays");
    w2 = Some(Web::start(&cs[1], "web2", 80));
    wait_until("web2 back in tasks.api", 30, || tasks() == ["10.60.0.11", "10.60.0.12"]);
    drop((w1, w2));
}
