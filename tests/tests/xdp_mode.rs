//! The XDP data path (`--datapath xdp`), a smoke subset: the namespace
//! scenarios run in the default mode (TC on these veth underlays), and here
//! the overlay and the routing mesh run in XDP, on an underlay set up as XDP
//! needs a veth (see `Underlay::wire_like`). And a host moves between the
//! modes in place, both ways, under a steady ping and a TCP connection
//! through the mesh: nothing lost, no flow picked again.

mod common;

use std::{net::Ipv4Addr, thread::sleep, time::Duration};

use common::*;
use testbed::{tcp_echo, wait_listening, Talk};

const P: &str = "obxm";
const CLIENT: &str = "192.168.200.100";

/// a1 on n1, a2 and w on n2; service echo published on 7500, backend w.
fn state() -> String {
    let mut y = front_state(P, &[("a1", "n1", "10.10.0.11"), ("a2", "n2", "10.10.0.12"), ("w", "n2", "10.10.0.21")]);
    y += "services:\n  - {name: echo, network: front, ports: [{protocol: tcp, target: 7500, published: 7500}], \
          backends: [w]}\n";
    y
}

/// What `status` says of host `h`'s data path: (mode, why).
fn datapath(dep: &Deployment, h: &str) -> (String, String) {
    let st = status(dep, P, h);
    let d = &st["datapath"];
    (d["mode"].as_str().unwrap_or("none").to_string(), d["why"].as_str().unwrap_or_default().to_string())
}

#[test]
fn the_xdp_data_path_and_moving_between_the_modes_under_traffic() {
    require_root();
    let st = StateFile::new(P, &state());
    let mut u = underlay_wire_like(P, 2);
    u.add_host("cl", CLIENT.parse::<Ipv4Addr>().unwrap());
    let cs = containers(P, &["a1", "a2", "w"]);
    let _server = tcp_echo(&cs[2], "w", 7500);
    wait_listening(&cs[2], 7500).unwrap();
    let hosts = ["n1", "n2"];
    let mut dep = Deployment::in_mode(&bin(), "xdp");
    for h in hosts {
        assert_ok(&dep.up(&st.0, &format!("{P}{h}"), &format!("{P}-{h}")));
        assert_eq!(hooks_on(u.host(h), "eth0"), (true, false), "{h}: (XDP, TC) on eth0");
        let why = "set with --datapath xdp (auto would pick tc)".to_string();
        assert_eq!(datapath(&dep, h), ("xdp".to_string(), why), "{h}");
    }
    // The overlay and the mesh in XDP: across hosts, through both hosts.
    let ping = cs[0].run("ping", &["-c", "2", "-i", "0.2", "-W", "2", "10.10.0.12"]);
    assert!(ping.status.success(), "a1 -> a2 in XDP: {}", text(&ping));
    let client = u.host("cl").name.clone();
    let mut talks: Vec<Talk> = ["192.168.200.11:7500", "192.168.200.12:7500"]
        .iter()
        .map(|to| Talk::open(&client, to.parse().unwrap(), to).unwrap())
        .collect();
    for t in &mut talks {
        assert_eq!(t.exchange(0).unwrap(), "w", "{}", t.what);
    }
    let s1 = status(&dep, P, "n1");
    assert!(counter(&s1, "xdp_underlay_ingress", "mesh_tunneled") >= 1, "{s1}");
    let flows = |dep: &Deployment| -> Vec<u64> {
        hosts.iter().map(|h| service_flows(&status_named(dep, P, h, &st.0), "echo")).collect()
    };
    let flows_before = flows(&dep);
    assert_eq!(flows_before, [1, 1]);

    // XDP -> TC -> XDP, host by host, while a1 pings a2 100 times a second.
    let pinger = Pinger::start(&cs[0].name, "10.10.0.12", 50);
    sleep(Duration::from_millis(500));
    for (round, mode) in ["tc", "xdp"].into_iter().enumerate() {
        dep.datapath = Some(mode);
        for h in hosts {
            let out = assert_ok(&dep.up(&st.0, &format!("{P}{h}"), &format!("{P}-{h}")));
            // The new hook's program attached, the old one's removed (a
            // TC filter before TCX counts as a link too).
            let links = UpSummary::of(&out, &format!("{P}{h}")).links;
            assert_eq!(links, (1, 0, 1), "round {round}, {h}: {out}");
            let want = if mode == "tc" { (false, true) } else { (true, false) };
            assert_eq!(hooks_on(u.host(h), "eth0"), want, "round {round}, {h}: (XDP, TC) on eth0");
            assert_eq!(datapath(&dep, h).0, mode, "round {round}, {h}");
            sleep(Duration::from_millis(300));
        }
        for t in &mut talks {
            assert_eq!(t.exchange(round as u64 + 1).unwrap(), "w", "round {round}: {}", t.what);
        }
    }
    let (sent, got) = pinger.stop();
    eprintln!("moving between the modes: {sent} pings sent, {got} received");
    // Round 0 removed XDP from both hosts' veths.
    assert_lost_only_to_xdp_removals(sent, got, hosts.len() as u64, "moving between the modes");
    assert_eq!(flows(&dep), flows_before, "a mesh flow was picked again: its entries were lost");
    drop(talks);
    drop(dep);
    for h in hosts {
        assert_eq!(hooks_on(u.host(h), "eth0"), (false, false), "{h}: a program left on eth0");
    }
}
