//! A first-time user's lab: two hosts and a client plugged into a veth
//! "switch" whose ports keep veth's defaults (GRO off, TX checksum offload
//! on). In the default data path (TC on a veth underlay) it works as it is,
//! nothing of any device changed, and 64 KB GSO packets go through encap and
//! decap whole. In the XDP data path the routing mesh cannot work there:
//! `up` says so and prints the command that mends it, and with that command
//! run as printed, it works. An agent says it once, at WARN, however often
//! it applies, and once that it is mended.

mod common;

use std::net::Ipv4Addr;

use common::*;
use testbed::wait_listening;

const N1: &str = "192.168.200.11";
const N2: &str = "192.168.200.12";
const CLIENT: &str = "192.168.200.100";

/// The command in an `up` warning's "Fix: `...`".
fn printed_fix(stderr: &str) -> Option<String> {
    let at = stderr.find("Fix: `")? + "Fix: `".len();
    let len = stderr[at..].find('`')?;
    Some(stderr[at..at + len].to_string())
}

/// Hosts n1 and n2, network front, w2 on n2 (and `with_w1`, w1 on n1), and
/// service web published on 8080 with backend w2.
fn lab_state(p: &str, with_w1: bool) -> String {
    let mut y = String::from("version: 1\nhosts:\n");
    y += &format!("  - {{name: {p}n1, address: {N1}}}\n  - {{name: {p}n2, address: {N2}}}\n");
    y += "networks:\n  - {name: front, attachable: true, subnets: [{subnet: 10.10.0.0/24}]}\nendpoints:\n";
    if with_w1 {
        y += &format!("  - {{name: w1, host: {p}n1, network: front, netns: {p}-w1, ip: 10.10.0.21}}\n");
    }
    y += &format!("  - {{name: w2, host: {p}n2, network: front, netns: {p}-w2, ip: 10.10.0.22}}\n");
    y += "services:\n  - {name: web, network: front, ports: [{protocol: tcp, target: 8080, published: 8080}], \
          backends: [w2]}\n";
    y
}

/// Whether TX checksum offload is on for `dev` in `ns` (`ethtool -k`).
fn tx_checksum(ns: &Netns, dev: &str) -> bool {
    let out = String::from_utf8_lossy(&ns.run("ethtool", &["-k", dev]).stdout).into_owned();
    match out.lines().find_map(|l| l.strip_prefix("tx-checksumming: ")) {
        Some(v) => v.starts_with("on"),
        None => panic!("no tx-checksumming in `ethtool -k {dev}`: {out}"),
    }
}

#[test]
fn a_veth_lab_at_its_defaults_works_in_the_default_data_path() {
    require_root();
    let p = "oblad";
    let ip = |a: &str| a.parse::<Ipv4Addr>().unwrap();
    let u = Underlay::new(p, &[("n1", ip(N1)), ("n2", ip(N2)), ("cl", ip(CLIENT))]);
    let cs = containers(p, &["w1", "w2"]);
    let y = lab_state(p, true);
    let st = StateFile::new(p, &y);
    let web = Web::start(&cs[1], "w2", 8080);
    wait_listening(&cs[1], 8080).unwrap();
    let client = u.host("cl");
    let mut dep = Deployment::new(&bin());
    for n in ["n1", "n2"] {
        let out = dep.up(&st.0, &format!("{p}{n}"), &format!("{p}-{n}"));
        assert_ok(&out);
        let said: Vec<String> = stderr_lines(&out)
            .into_iter()
            .filter(|l| l.contains(": warning: ") || l.contains(": data path: "))
            .collect();
        let why = "auto: a veth underlay (XDP there would turn off GSO on its peer and copy every frame)";
        assert_eq!(said, [format!("{p}{n}: data path: tc on eth0 ({why})")], "{n}: no warning, the mode and why");
        assert_eq!(hooks_on(u.host(n), "eth0"), (false, true), "{n}: (XDP, TC) on eth0");
    }
    // Nothing of any device was changed: TX checksum offload stays on.
    for (i, n) in ["n1", "n2"].iter().enumerate() {
        assert!(tx_checksum(u.host(n), "eth0"), "{n}: TX checksum offload turned off");
        assert!(tx_checksum(&u.switch, &format!("p{i}")), "switch port p{i}: TX checksum offload turned off");
    }
    // The mesh answers through both hosts, the client's address kept.
    for host in [N1, N2] {
        let url = format!("http://{host}:8080/");
        assert_eq!(curl(client, &[&url, &url]), ["w2", "w2"], "through {host}");
    }
    assert!(web.clients().iter().all(|c| c == CLIENT), "{:?}", web.clients());
    // The overlay carries TCP between the hosts in GSO packets, whole: what
    // was encapsulated on n1 and decapsulated on n2 averages more than one
    // MTU-sized frame per packet.
    let before = (status(&dep, p, "n1"), status(&dep, p, "n2"));
    let bps = iperf3(&cs[1], &cs[0], "10.10.0.22", 2.0, &[]).unwrap();
    assert!(bps > 0.0, "no TCP through the overlay");
    let after = (status(&dep, p, "n1"), status(&dep, p, "n2"));
    let delta = |a: &serde_json::Value, b: &serde_json::Value, prog: &str, reason: &str| {
        let ((p0, b0), (p1, b1)) = (counted(a, prog, reason), counted(b, prog, reason));
        (p1 - p0, b1 - b0)
    };
    let (packets, bytes) = delta(&before.0, &after.0, "tc_endpoint_egress", "encapsulated");
    assert!(packets > 0 && bytes / packets > 1500, "n1 encapsulated {packets} packets of {bytes} bytes: not GSO");
    let (packets, bytes) = delta(&before.1, &after.1, UNDERLAY, "decapsulated");
    assert!(packets > 0 && bytes / packets > 1500, "n2 decapsulated {packets} packets of {bytes} bytes: not GSO");
    drop(dep);
    // `down` leaves the devices as they were.
    for n in ["n1", "n2"] {
        assert!(tx_checksum(u.host(n), "eth0"), "{n}: TX checksum offload off after down");
        assert_eq!(hooks_on(u.host(n), "eth0"), (false, false), "{n}: a program left on eth0");
    }
    drop(web);
    drop(cs);
}

#[test]
fn a_veth_lab_at_its_defaults_gets_the_fix_that_makes_the_mesh_work_in_xdp() {
    require_root();
    let p = "oblab";
    let ip = |a: &str| a.parse::<Ipv4Addr>().unwrap();
    let u = Underlay::new(p, &[("n1", ip(N1)), ("n2", ip(N2)), ("cl", ip(CLIENT))]);
    let cs = containers(p, &["w2"]);
    let y = lab_state(p, false);
    let st = StateFile::new(p, &y);
    let web = Web::start(&cs[0], "w2", 8080);
    wait_listening(&cs[0], 8080).unwrap();
    let client = u.host("cl");
    let mut dep = Deployment::in_mode(&bin(), "xdp");

    let mut fixes = Vec::new();
    for (i, n) in ["n1", "n2"].iter().enumerate() {
        let out = dep.up(&st.0, &format!("{p}{n}"), &format!("{p}-{n}"));
        assert_ok(&out);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("{err}");
        let warned: Vec<&str> = err.lines().filter(|l| l.starts_with(&format!("{p}{n}: warning: "))).collect();
        let warning = format!(
            "{p}{n}: warning: the underlay eth0 is a veth whose peer p{i} keeps veth's defaults: with GRO off it drops \
             every frame this host's XDP sends back out (the routing mesh's hand-off to other hosts); and with TX \
             checksum offload on it passes on partial checksums from the hosts and clients behind it, which XDP cannot \
             finish (their TCP SYNs reach backends with bad checksums and are dropped). Fix: `ip netns exec {p}-sw \
             ethtool -K p{i} gro on tx off`"
        );
        assert_eq!(warned, [warning.as_str()], "{n}");
        let fix = printed_fix(&err).unwrap_or_else(|| panic!("{n}: no fix printed: {err}"));
        assert_eq!(fix, format!("ip netns exec {p}-sw ethtool -K p{i} gro on tx off"), "{n}: {err}");
        fixes.push(fix);
    }
    // The trap is real: through n1 to the backend on n2, nothing answers.
    let url = format!("http://{N1}:8080/");
    assert!(curl(client, &[&url]).is_empty(), "the mesh answered through a veth switch at its defaults");

    // An agent on n1 applies three times while the peer stays at its
    // defaults (the state changes twice in between), and says so once.
    let agent = Agent::start(&mut dep, &st.0, &format!("{p}n1"), &format!("{p}-n1"), &["--no-health"]);
    wait_until("the agent's first apply", 60, || agent.log_text().contains("applied; watching"));
    let applies = |a: &Agent| a.log_text().lines().filter(|l| l.contains(" re-applied ")).count();
    for (i, spare) in ["10.11.0.0/24", "10.12.0.0/24"].iter().enumerate() {
        // After the other networks: their VNIs stay as n2 has them.
        let net = format!("  - {{name: spare, subnets: [{{subnet: {spare}}}]}}\nendpoints:\n");
        std::fs::write(&st.0, y.replacen("endpoints:\n", &net, 1)).unwrap();
        wait_until("the agent's re-apply", 60, || applies(&agent) > i);
    }
    let warned =
        |a: &Agent| a.log_text().lines().filter(|l| l.contains(" WARN ") && l.contains("is a veth whose peer")).count();
    assert_eq!(warned(&agent), 1, "said once over three applies:\n{}", agent.log_text());

    for fix in &fixes {
        // As a user's shell runs it (bash: the VMs' busybox sh would run its
        // own `ip` applet, which has no netns).
        let out = std::process::Command::new("bash").args(["-c", fix]).output().unwrap();
        assert_ok(&out);
    }
    // Now the mesh answers through both hosts, the client's address kept.
    for host in [N1, N2] {
        let url = format!("http://{host}:8080/");
        assert_eq!(curl(client, &[&url, &url]), ["w2", "w2"], "through {host} after the printed fix");
    }
    assert!(web.clients().iter().all(|c| c == CLIENT), "{:?}", web.clients());
    // The agent's next apply finds it mended: said once, at INFO.
    std::fs::write(&st.0, &y).unwrap();
    wait_until("the agent's re-apply after the fix", 60, || applies(&agent) >= 3);
    let log = agent.log_text();
    let resolved =
        log.lines().filter(|l| l.contains(" INFO ") && l.contains("resolved: the veth peer of underlay eth0"));
    assert_eq!(resolved.count(), 1, "{log}");
    assert_eq!(warned(&agent), 1, "{log}");
    assert!(!log.contains('\x1b'), "escape codes in a log file:\n{log}");
    drop(agent);
    // And `up` has nothing more to say about it.
    let out = dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1"));
    assert_ok(&out);
    let warned = stderr_lines(&out).into_iter().filter(|l| l.contains(": warning: ")).count();
    assert_eq!(warned, 0, "{}", text(&out));
    // XDP turned TX checksum offload off on the hosts' veths; `down` turns
    // it back on.
    assert!(!tx_checksum(u.host("n1"), "eth0"), "XDP mode left TX checksum offload on");
    drop(dep);
    for n in ["n1", "n2"] {
        assert!(tx_checksum(u.host(n), "eth0"), "{n}: `down` left TX checksum offload off");
    }
    drop(web);
    drop(cs);
}
