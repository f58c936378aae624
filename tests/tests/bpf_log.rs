//! The programs' debug logs (aya-log): off unless `up --bpf-log` switched
//! them on, then a line per dropped packet with its summary, from TC and XDP,
//! printed by `overlay-bpf agent --bpf-log` through tracing.

mod common;

use std::{
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use common::*;

const P: &str = "obbl";
const N1: &str = "192.168.200.11";
const CLIENT: &str = "192.168.200.100";

fn log_state() -> String {
    let mut y = front_state(P, &[("c1", "n1", "10.10.0.11")]);
    y += "services:\n  - {name: void, network: front, ports: [{protocol: tcp, target: 7400, published: 7400}], backends: []}\n";
    y
}

/// One connection attempt from the outside client to the published port,
/// which has no backend: XDP refuses the SYN with a reset.
fn knock(client: &str) {
    let to: SocketAddr = format!("{N1}:7400").parse().unwrap();
    let client = client.to_string();
    std::thread::spawn(move || {
        enter_netns(&client).unwrap();
        let e = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect_err("nothing should accept");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    })
    .join()
    .unwrap();
}

/// A neighbour entry in the container for an unused address of its network,
/// so that it sends IPv4 there (rather than only ARP, which goes unanswered).
fn unused_neighbour(c: &Netns, addr: &str) {
    c.ip(&["neigh", "replace", addr, "lladdr", "02:42:0a:0a:00:63", "dev", "eth0"]);
}

fn switch(p: &std::path::Path) -> u64 {
    let v = bpftool_dump(&p.join("maps/OB_LOG_V1"));
    v[0]["value"].as_u64().unwrap_or_else(|| panic!("OB_LOG_V1: {v}"))
}

#[test]
fn drops_are_logged_only_while_bpf_log_is_on() {
    require_root();
    let st = StateFile::new(P, &log_state());
    let mut u = underlay(P, 3);
    u.add_host("cl", CLIENT.parse().unwrap());
    let cs = containers(P, &["c1"]);
    let mut dep = Deployment::new(&bin());
    let (host, ns) = (format!("{P}n1"), format!("{P}-n1"));
    let pin_dir = pins(P, "n1");

    // Off: the drop is counted, and no record is written.
    assert_ok(&dep.up(&st.0, &host, &ns));
    assert_eq!(switch(&pin_dir), 0);
    unused_neighbour(&cs[0], "10.10.0.98");
    assert!(!cs[0].run("ping", &["-c", "1", "-W", "1", "10.10.0.98"]).status.success());

    // On: `up --bpf-log`, and an agent printing the records.
    assert_ok(&dep.cmd(&host, &ns).args(["up", "--bpf-log", "--state"]).arg(&st.0).output().unwrap());
    assert_eq!(switch(&pin_dir), 1);
    let agent = Agent::start(&mut dep, &st.0, &host, &ns, &["--bpf-log", "--no-health"]);
    wait_until("the agent's first apply", 30, || agent.log_text().contains("applied; watching"));
    unused_neighbour(&cs[0], "10.10.0.99");
    assert!(!cs[0].run("ping", &["-c", "1", "-W", "1", "10.10.0.99"]).status.success());
    knock(&u.host("cl").name);
    let tc = "tc drop drop_no_endpoint";
    let under = "tc drop reject_no_backend";
    let seen = |log: &str| {
        log.lines().any(|l| l.contains(tc) && l.contains("10.10.0.11 -> 10.10.0.99 proto 1"))
            && log.lines().any(|l| l.contains(under) && l.contains(&format!("{CLIENT} -> {N1} proto 6")))
    };
    let t = std::time::Instant::now();
    while !seen(&agent.log_text()) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no record of both drops in the agent's log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = agent.log_text();
    assert!(log.contains("overlay_bpf::bpf"), "the records go through tracing's target overlay_bpf::bpf:\n{log}");
    assert!(!log.contains("10.10.0.98"), "a drop from while the logs were off was logged:\n{log}");
    drop(agent);

    // `up` without the flag switches them off again; the counters saw every drop.
    assert_ok(&dep.up(&st.0, &host, &ns));
    assert_eq!(switch(&pin_dir), 0);
    let s = status(&dep, P, "n1");
    assert!(counter(&s, "tc_endpoint_egress", "drop_no_endpoint") >= 2);
    assert!(counter(&s, UNDERLAY, "reject_no_backend") >= 1);
}
