//! Upgrades in place: hosts run the previous release (its own `overlay-bpf`,
//! built from commit 4faeb4b by `cargo xtask test` into target/previous/),
//! then `up` with this build replaces every attached program in one step
//! (link update) under a steady ping and TCP connections open through a VIP
//! and through the routing mesh. Nothing is lost: every connection carries
//! on with its connection-table entries, links and the connection table
//! stay, and the maps whose layout this release changed are filled anew
//! before the new programs run, then the old ones retired.

mod common;

use std::{net::Ipv4Addr, process::Stdio, thread::sleep, time::Duration};

use common::*;
use testbed::{tcp_echo, wait_listening, Talk};

const P: &str = "obup";
const CLIENT: &str = "192.168.200.100";

/// a1 on n1 and a2, w on n2; service echo: a VIP and port 7500 published
/// on every host, backend w.
fn upgrade_state() -> String {
    let mut y = front_state(P, &[("a1", "n1", "10.10.0.11"), ("a2", "n2", "10.10.0.12"), ("w", "n2", "10.10.0.21")]);
    y += "services:\n  - {name: echo, network: front, vip: 10.10.0.100, \
          ports: [{protocol: tcp, target: 7500, published: 7500}], backends: [w]}\n";
    y
}

/// (link, link id, program id) of every attached program of host `h`.
fn programs(dep: &Deployment, h: &str) -> Vec<(String, Option<u64>, u64)> {
    let st = status(dep, P, h);
    let mut v: Vec<_> = st["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let name = format!("{}@{}", l["kind"].as_str().unwrap(), l["ifname"].as_str().unwrap());
            (name, l["link_id"].as_u64(), l["prog_id"].as_u64().unwrap_or_else(|| panic!("not attached: {l}")))
        })
        .collect();
    v.sort();
    v
}

/// The names of host `h`'s pinned maps.
fn pinned_maps(h: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(pins(P, h).join("maps"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The id of host `h`'s pinned connection table.
fn ct_map_id(h: &str) -> u64 {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(pins(P, h).join("maps/OB_CT_V1"))
        .output()
        .unwrap();
    json(&assert_ok(&out))["id"].as_u64().unwrap()
}

/// The maps whose layout this release changed (4faeb4b's names, this one's).
const CHANGED: [(&str, &str); 4] = [
    ("OB_CONFIG_V2", "OB_CONFIG_V3"),
    ("OB_VTEPS_V1", "OB_VTEPS_V2"),
    ("OB_SERVICES_V2", "OB_SERVICES_V3"),
    ("OB_BACKENDS_V1", "OB_BACKENDS_V2"),
];

#[test]
fn the_previous_release_upgrades_in_place_under_traffic() {
    require_root();
    let previous = previous_bin();
    let st = StateFile::new(P, &upgrade_state());
    let mut u = underlay(P, 3);
    u.add_host("cl", CLIENT.parse::<Ipv4Addr>().unwrap());
    let cs = containers(P, &["a1", "a2", "w"]);
    let mut dep = Deployment::new(&previous);
    let hosts = ["n1", "n2"];
    let up = |dep: &mut Deployment, h: &str| -> String {
        let (host, ns) = (format!("{P}{h}"), format!("{P}-{h}"));
        dep.track(&host, &ns);
        assert_ok(&dep.cmd(&host, &ns).args(["up", "--state"]).arg(&st.0).stdin(Stdio::null()).output().unwrap())
    };
    for h in hosts {
        up(&mut dep, h);
    }
    for h in hosts {
        let maps = pinned_maps(h);
        for (old, new) in CHANGED {
            assert!(maps.contains(&old.to_string()) && !maps.contains(&new.to_string()), "{h}: {maps:?}");
        }
    }
    let before: Vec<_> = hosts.iter().map(|h| programs(&dep, h)).collect();
    let ct_before: Vec<u64> = hosts.iter().map(|h| ct_map_id(h)).collect();

    // Connections through the VIP (from a1 on n1) and through the mesh (from
    // a client on the underlay, to n1, whose backend is on n2, and to n2).
    let _server = tcp_echo(&cs[2], "w", 7500);
    wait_listening(&cs[2], 7500).unwrap();
    let client = u.host("cl").name.clone();
    let targets = [
        (cs[0].name.clone(), "10.10.0.100:7500", "a1 to the VIP"),
        (cs[0].name.clone(), "10.10.0.100:7500", "a1 to the VIP, again"),
        (client.clone(), "192.168.200.11:7500", "the client to n1's published port"),
        (client.clone(), "192.168.200.11:7500", "the client to n1's published port, again"),
        (client.clone(), "192.168.200.12:7500", "the client to n2's published port"),
    ];
    let mut talks: Vec<Talk> =
        targets.iter().map(|(ns, to, what)| Talk::open(ns, to.parse().unwrap(), what).unwrap()).collect();
    for t in &mut talks {
        assert_eq!(t.exchange(0).unwrap(), "w", "{}", t.what);
    }
    // New flows picked per host (by the previous release's `status`; the
    // backends' counters keep their layout in this one).
    let flows = |dep: &Deployment| -> Vec<u64> {
        hosts.iter().map(|h| service_flows(&status_named(dep, P, h, &st.0), "echo")).collect()
    };
    let flows_before = flows(&dep);
    dep.bin = bin();
    // This release's `status` on a host not upgraded yet says so.
    let o = dep.cmd(&format!("{P}n1"), &format!("{P}-n1")).arg("status").output().unwrap();
    let said = String::from_utf8_lossy(&o.stderr).trim_end().to_string();
    let upgrade_me = |(old, new): (&str, &str)| {
        format!(
            "error: this host runs another release's programs: its {old} is pinned where this release has {new}; \
             `overlay-bpf up` with this release upgrades it in place (links, connection table and traffic kept)"
        )
    };
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(CHANGED.into_iter().map(upgrade_me).any(|m| m == said), "{said}");
    assert_eq!(flows_before, [4, 1], "n1 picked for the VIP and its published port, n2 for its own");

    // 100 pings a second from a1 to a2, until stopped.
    let pinger = Pinger::start(&cs[0].name, "10.10.0.12", 50);
    sleep(Duration::from_secs(1));

    // This build's `up`: every program replaced, the changed maps anew.
    let out: Vec<String> = hosts.iter().map(|h| up(&mut dep, h)).collect();
    for (o, (h, links)) in out.iter().zip([("n1", 2), ("n2", 3)]) {
        let replaced = format!("0 veths created, 0 removed; 0 links attached, {links} replaced, 0 removed;");
        assert!(o.contains(&replaced), "{h}: {o}");
        assert!(o.ends_with("programs loaded and verified\n"), "{h}: {o}");
    }
    for (i, h) in hosts.iter().enumerate() {
        let after = programs(&dep, h);
        assert_eq!(after.len(), before[i].len(), "{h}: {after:?}");
        for (b, a) in before[i].iter().zip(&after) {
            assert_eq!((&b.0, b.1), (&a.0, a.1), "{h}: the same link, kept");
            assert_ne!(b.2, a.2, "{h}: {} runs a new program", a.0);
        }
        let maps = pinned_maps(h);
        for (old, new) in CHANGED {
            assert!(!maps.contains(&old.to_string()) && maps.contains(&new.to_string()), "{h}: {maps:?}");
        }
        assert_eq!(ct_map_id(h), ct_before[i], "{h}: the connection table is the same map");
    }
    sleep(Duration::from_secs(1));
    let (sent, got) = pinger.stop();

    // Every connection carries on, on its connection-table entries: no new flow.
    let mut carried = 0;
    for t in &mut talks {
        assert_eq!(t.exchange(1).unwrap(), "w", "{}", t.what);
        carried += 1;
    }
    assert_eq!(carried, targets.len());
    assert_eq!(flows(&dep), flows_before, "a flow was picked again: its entries were lost");
    eprintln!("upgrade under traffic: {sent} pings sent, {got} received; {carried} TCP connections carried on");
    assert!(sent >= 200, "{sent}");
    assert_eq!(sent, got, "packets lost");

    // Once upgraded, `up` keeps what runs.
    let now: Vec<_> = hosts.iter().map(|h| programs(&dep, h)).collect();
    for h in hosts {
        let o = up(&mut dep, h);
        assert!(o.contains(": nothing changed; programs reused from their pins"), "{h}: {o}");
    }
    assert_eq!(now, hosts.iter().map(|h| programs(&dep, h)).collect::<Vec<_>>());
}
