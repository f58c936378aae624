//! Upgrades in place: hosts run the previous release's programs (its eBPF
//! object, kept as a fixture: tests/fixtures/overlay-ebpf-7d63fd5.o, the
//! programs of commit 7d63fd5), then `up` with this build replaces every
//! attached program in one step (link update) under a steady ping and an open
//! TCP connection through a VIP: nothing is lost, the connection carries on
//! with its connection-table entries, links and maps stay, and a map of
//! another layout version is retired.

mod common;

use std::{
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use common::*;
use testbed::{tcp_echo, wait_listening, Talk};

const P: &str = "obup";
/// The previous release's programs.
static PREVIOUS: &[u8] = include_bytes!("../fixtures/overlay-ebpf-7d63fd5.o");

fn upgrade_state() -> String {
    let mut y = front_state(P, &[("a1", "n1", "10.10.0.11"), ("a2", "n2", "10.10.0.12"), ("w", "n2", "10.10.0.21")]);
    y += "services:\n  - {name: echo, network: front, vip: 10.10.0.100, ports: [{protocol: tcp, target: 7500}], backends: [w]}\n";
    y
}

/// (link, program id) of every attached program of host `h`.
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

/// The digests of host `h`'s pinned programs (`progs/<PROG>@<digest>`), by program name.
fn pinned_programs(p: &str, h: &str) -> Vec<String> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(pins(p, h).join("progs"))
        .unwrap()
        .flatten()
        .map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let (prog, digest) = n.split_once('@').unwrap();
            (prog.to_string(), digest.to_string())
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, d)| d).collect()
}

#[test]
fn a_new_build_replaces_the_programs_in_place_under_traffic() {
    require_root();
    let st = StateFile::new(P, &upgrade_state());
    let previous = std::env::temp_dir().join(format!("{P}-previous.o"));
    std::fs::write(&previous, PREVIOUS).unwrap();
    let _u = underlay(P, 3);
    let cs = containers(P, &["a1", "a2", "w"]);
    let mut dep = Deployment::new(&bin());
    let hosts = ["n1", "n2"];
    let up = |dep: &mut Deployment, h: &str, prev: bool| -> String {
        let (host, ns) = (format!("{P}{h}"), format!("{P}-{h}"));
        dep.track(&host, &ns);
        let mut c = dep.cmd(&host, &ns);
        c.args(["up", "--state"]).arg(&st.0);
        if prev {
            c.env("OVERLAY_BPF_OBJECT", &previous);
        }
        assert_ok(&c.stdin(Stdio::null()).output().unwrap())
    };
    for h in hosts {
        up(&mut dep, h, true);
    }
    let old = overlay_bpf::host::loader::digest(PREVIOUS);
    assert_eq!(pinned_programs(P, "n1"), [old.clone(), old.clone()], "the previous build's programs, pinned");
    let before: Vec<_> = hosts.iter().map(|h| programs(&dep, h)).collect();
    let _server = tcp_echo(&cs[2], "w", 7500);
    wait_listening(&cs[2], 7500).unwrap();
    let mut talk = Talk::open(&cs[0].name, "10.10.0.100:7500".parse().unwrap(), "a1 to the VIP").unwrap();
    assert_eq!(talk.exchange(0).unwrap(), "w");
    let flows = |dep: &Deployment| service_flows(&status_named(dep, P, "n1", &st.0), "echo");
    let flows_before = flows(&dep);

    // A map of another layout version, as an older build would have left it.
    let stale = pins(P, "n1").join("maps/OB_CT_V0");
    must(
        Command::new("bpftool")
            .args(["map", "create"])
            .arg(&stale)
            .args(["type", "hash", "key", "4", "value", "4", "entries", "16", "name", "OB_CT_V0"]),
    );

    // 100 pings a second from a1 to a2, until stopped.
    let pinger = Pinger::start(&cs[0].name, "10.10.0.12", 50);
    sleep(Duration::from_secs(1));

    // This build's `up`: every program replaced, nothing else.
    let out: Vec<String> = hosts.iter().map(|h| up(&mut dep, h, false)).collect();
    assert!(out[0].contains("links attached, 2 replaced, 0 removed"), "{}", out[0]);
    assert!(out[1].contains("links attached, 3 replaced, 0 removed"), "{}", out[1]);
    assert!(out[0].contains("programs loaded and verified"), "{}", out[0]);
    let new = pinned_programs(P, "n1");
    assert!(new[0] != old && new[0] == new[1], "only this build's programs stay pinned: {new:?}");
    for (i, h) in hosts.iter().enumerate() {
        let after = programs(&dep, h);
        assert_eq!(after.len(), before[i].len(), "{h}: {after:?}");
        for (b, a) in before[i].iter().zip(&after) {
            assert_eq!((&b.0, b.1), (&a.0, a.1), "{h}: the same link, kept");
            assert_ne!(b.2, a.2, "{h}: {} runs a new program", a.0);
        }
    }
    assert!(!stale.exists(), "the map of another layout version was retired");
    sleep(Duration::from_secs(1));
    let (sent, got) = pinger.stop();

    // The connection carries on, on its connection-table entries: no new flow.
    assert_eq!(talk.exchange(1).unwrap(), "w");
    assert_eq!(flows(&dep), flows_before, "the flow was picked again: its entries were lost");
    eprintln!("upgrade under traffic: {sent} pings sent, {got} received; the TCP connection carried on");
    assert!(sent >= 200, "{sent}");
    assert_eq!(sent, got, "packets lost");

    // Once upgraded, `up` keeps what runs.
    let now: Vec<_> = hosts.iter().map(|h| programs(&dep, h)).collect();
    for h in hosts {
        let o = up(&mut dep, h, false);
        assert!(o.contains("nothing changed"), "{o}");
        assert!(o.contains("programs reused from their pins"), "not verified again: {o}");
    }
    assert_eq!(now, hosts.iter().map(|h| programs(&dep, h)).collect::<Vec<_>>());
    let _ = std::fs::remove_file(&previous);
}
