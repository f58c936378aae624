//! The connection table under a flood of new flows (issue 7): a table sized
//! small with `up --ct-size`, flooded with far more new UDP flows than it
//! holds, through the routing mesh (XDP) and a VIP (TC) at once, while TCP
//! connections through both talk or sit idle.
//!
//! What docs/data-path.md promises ("The connection table"): a flow that carries packets
//! keeps its pair of entries; an idle flow whose entries were evicted is
//! picked again by Maglev on its client's next packet, which gives the same
//! backend while the backend set is unchanged, so it carries on too.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::*;
use testbed::{tcp_echo, wait_listening, Talk};

const P: &str = "obfl";
const CT: u32 = 1024;
const N1: &str = "192.168.200.11";
const CLIENT: &str = "192.168.200.100";
const C1: &str = "10.10.0.31";
const FLOOD_SECS: f64 = 3.0;

fn flood_state() -> String {
    let mut y = front_state(P, &[("w1", "n1", "10.10.0.21"), ("w2", "n2", "10.10.0.22"), ("c1", "n1", C1)]);
    y += "services:
  - {name: near, network: front, ports: [{protocol: tcp, target: 7000, published: 7001}], backends: [w1]}
  - {name: far, network: front, vip: 10.10.0.100, ports: [{protocol: tcp, target: 7000, published: 7002}], backends: [w2]}
  - {name: sink, network: front, vip: 10.10.0.101, ports: [{protocol: udp, target: 9000, published: 9000}], backends: [w1, w2]}
";
    y
}

/// A UDP server on :9000 that reads and drops, so the flood costs the
/// backends no ICMP errors.
fn udp_sink(ns: &Netns) -> Proc {
    let script = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)\ns.bind(('0.0.0.0', 9000))\n\
                  while True:\n    s.recv(2048)\n";
    Proc(ns.cmd("/usr/bin/python3").args(["-c", script]).spawn().unwrap())
}

/// A flood: new UDP flows of `per_flow` datagrams, each source sending at
/// least `flows` of them (and for FLOOD_SECS at least), as fast as it can or
/// at most `per_round` flows for each round the active connections have
/// talked.
#[derive(Clone, Copy)]
struct Flood {
    per_flow: u8,
    per_round: Option<u64>,
    flows: u64,
}

/// Scans, spoofed SYNs: one datagram per flow, as fast as possible, and at
/// least 16 tables' worth from each source (the VMs' emulated CPUs).
const SCAN: Flood = Flood { per_flow: 1, per_round: None, flows: 16 * CT as u64 };
/// Short real flows (a request and a retry): two datagrams, each pair of
/// entries used twice like an established flow's. Two sources of 16 flows
/// per round of the active connections write 64 entries on n1 between two
/// uses of an active connection's entries: a sixteenth of the table, which
/// turns over 16 times in all. (An eighth was once too much for 6.1's LRU,
/// which frees and evicts in per-CPU batches of up to 128 entries: one CI
/// run in about twenty saw an active mesh connection lose its reply entry
/// and reset; 6.12 never did.) Paced by rounds, not by the clock: the
/// emulated CPUs of the VM tier can stall the talking thread for longer than
/// the table takes to turn over at any fixed rate, and "active" would mean
/// nothing then.
const CHURN: Flood = Flood { per_flow: 2, per_round: Some(16), flows: 4 * CT as u64 };

/// Runs flood `f` from `from` to `to` in namespace `netns`: every source
/// port in turn, each once per lap of 64512 ports (63 tables), so every flow
/// is one the table no longer holds. 60 s at most. `rounds` counts the
/// active connections' rounds. Returns the flows sent.
fn flood(netns: &str, from: Ipv4Addr, to: SocketAddr, f: Flood, rounds: Arc<AtomicU64>) -> thread::JoinHandle<u64> {
    let netns = netns.to_string();
    thread::spawn(move || {
        enter_netns(&netns).unwrap();
        let (t, mut sent, mut port) = (Instant::now(), 0u64, 1024u16);
        let more = |sent: u64, secs: f64| secs < 60.0 && (secs < FLOOD_SECS || sent < f.flows);
        while more(sent, t.elapsed().as_secs_f64()) {
            for _ in 0..16 {
                if let Ok(s) = UdpSocket::bind((from, port)) {
                    if (0..f.per_flow).all(|_| s.send_to(b"flood", to).is_ok()) {
                        sent += 1;
                    }
                }
                port = if port == u16::MAX { 1024 } else { port + 1 };
            }
            if let Some(per_round) = f.per_round {
                while sent >= per_round * rounds.load(Ordering::Relaxed) && t.elapsed().as_secs_f64() < 60.0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
        sent
    })
}

/// `status -o json` of host `h`, services named from the state file.
fn status_of(dep: &Deployment, st: &StateFile, h: &str) -> serde_json::Value {
    status_named(dep, P, h, &st.0)
}

fn ct_map(st: &serde_json::Value) -> (u64, u64) {
    let m = st["maps"].as_array().unwrap().iter().find(|m| m["name"] == "OB_CT_V2").expect("OB_CT_V2 in status");
    (m["entries"].as_u64().unwrap(), m["max_entries"].as_u64().unwrap())
}

#[test]
fn a_flood_of_new_flows_leaves_established_flows_working() {
    require_root();
    let st = StateFile::new(P, &flood_state());
    let mut u = underlay(P, 3);
    u.add_host("cl", CLIENT.parse().unwrap());
    let cs = containers(P, &["w1", "w2", "c1"]);
    let mut dep = Deployment::new(&bin());
    for h in ["n1", "n2"] {
        let (host, ns) = (format!("{P}{h}"), format!("{P}-{h}"));
        dep.track(&host, &ns);
        let args = ["up", "--ct-size", &CT.to_string(), "--state", st.0.to_str().unwrap()];
        assert_ok(&dep.cmd(&host, &ns).args(args).output().unwrap());
    }
    let s1 = status_of(&dep, &st, "n1");
    assert_eq!(ct_map(&s1).1, CT as u64, "--ct-size sized the table");

    // Another size for a live table is refused whole, naming the table and
    // the way out; without the flag, `up` keeps the table it has.
    let host1 = format!("{P}n1");
    let ns1 = format!("{P}-n1");
    let o = dep.cmd(&host1, &ns1).args(["up", "--ct-size", "2048", "--state"]).arg(&st.0).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("OB_CT_V2") && err.contains("already has 1024 entries") && err.contains("overlay-bpf down"),
        "{err}"
    );
    assert_ok(&dep.up(&st.0, &host1, &ns1));
    assert_eq!(ct_map(&status_of(&dep, &st, "n1")).1, CT as u64);

    let _servers: Vec<Proc> =
        [(0, "w1"), (1, "w2")].iter().flat_map(|&(i, name)| [tcp_echo(&cs[i], name, 7000), udp_sink(&cs[i])]).collect();
    for c in &cs[..2] {
        wait_listening(c, 7000).unwrap();
    }

    // (namespace, destination, what, the backend that must answer)
    let cl = u.host("cl").name.clone();
    let c1 = cs[2].name.clone();
    let targets = [
        (&cl, format!("{N1}:7001"), "mesh, local backend", "w1"),
        (&cl, format!("{N1}:7002"), "mesh, remote backend", "w2"),
        (&c1, "10.10.0.100:7000".to_string(), "VIP, remote backend", "w2"),
    ];
    let open = |kind: &str| -> Vec<(Talk, &str)> {
        targets
            .iter()
            .map(|(ns, to, what, want)| {
                let mut t = Talk::open(ns, to.parse().unwrap(), &format!("{kind} {what}")).unwrap();
                assert_eq!(t.exchange(0).unwrap(), *want, "{}", t.what);
                (t, *want)
            })
            .collect()
    };
    let mut active = open("active");
    let mut idle = open("idle");

    // Phase 1, flows of one datagram (scans, spoofed SYNs): the kernel's LRU
    // keeps an entry used more than once on its active list, which it ages
    // only when the list outgrows the inactive one. So a flood of these evicts
    // only its own kind: no established flow, idle or not, loses its entries.
    let one = flood_phase(&dep, &st, &cl, &c1, SCAN, &mut active);
    assert_eq!(one.repicked, 0, "a one-datagram flood evicted an established flow");
    let quiet = status_of(&dep, &st, "n1");
    for (i, (t, want)) in idle.iter_mut().enumerate() {
        assert_eq!(t.exchange(100 + i as u64).as_deref(), Ok(*want), "after the first flood");
    }
    assert_eq!(picks(&status_of(&dep, &st, "n1")) - picks(&quiet), 0, "an idle flow had lost its entries");

    // Phase 2, flows of two datagrams: now the flood's entries are used
    // twice too and compete with the established ones. The active
    // connections keep talking; the idle ones lose their entries. Their
    // client speaks first: Maglev picks again, the same backend, and they
    // carry on as new flows.
    let two = flood_phase(&dep, &st, &cl, &c1, CHURN, &mut active);
    let quiet = status_of(&dep, &st, "n1");
    for (i, (t, want)) in idle.iter_mut().enumerate() {
        assert_eq!(t.exchange(200 + i as u64).as_deref(), Ok(*want), "idle through the second flood");
    }
    let back = picks(&status_of(&dep, &st, "n1")) - picks(&quiet);
    eprintln!("after the two-datagram flood: the {} idle connections answered, {back} as new flows", idle.len());
    assert_eq!(back, idle.len() as u64, "the idle connections kept their entries through the two-datagram flood");
    for (t, want) in active.iter_mut() {
        assert_eq!(t.exchange(300).as_deref(), Ok(*want), "active after both floods");
    }
    assert!(one.rounds + two.rounds > 0);
    for (ns, to, what, want) in &targets {
        let mut t = Talk::open(ns, to.parse().unwrap(), &format!("new {what}")).unwrap();
        assert_eq!(t.exchange(1).as_deref(), Ok(*want));
    }
}

/// Flows the programs on n1 (re)started for the TCP services: a connection
/// whose entries were gone is one more.
fn picks(st: &serde_json::Value) -> u64 {
    service_flows(st, "near") + service_flows(st, "far")
}

/// The drop counters that moved between two statuses of a host.
fn drops(a: &serde_json::Value, b: &serde_json::Value) -> String {
    let count = |st: &serde_json::Value, c: &serde_json::Value| {
        counter(st, c["program"].as_str().unwrap(), c["reason"].as_str().unwrap())
    };
    let moved: Vec<String> = b["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["drop"] == true && count(b, c) > count(a, c))
        .map(|c| {
            format!(
                "{}/{} +{}",
                c["program"].as_str().unwrap(),
                c["reason"].as_str().unwrap(),
                count(b, c) - count(a, c)
            )
        })
        .collect();
    if moved.is_empty() {
        "none".into()
    } else {
        moved.join(", ")
    }
}

struct Phase {
    rounds: u64,
    repicked: u64,
}

/// A flood of new UDP flows of `per_flow` datagrams, to the published port
/// from outside and to the sink's VIP from c1 at once, while the `active`
/// connections talk every 10 ms. Asserts that no active connection saw an
/// error and that the flood overran the table many times.
fn flood_phase(
    dep: &Deployment,
    st: &StateFile,
    cl: &str,
    c1: &str,
    f: Flood,
    active: &mut Vec<(Talk, &'static str)>,
) -> Phase {
    let (before, before2) = (status_of(dep, st, "n1"), status_of(dep, st, "n2"));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let talker = {
        let (stop, done, mut active) = (stop.clone(), done.clone(), std::mem::take(active));
        thread::spawn(move || {
            let (mut rounds, mut errors) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                rounds += 1;
                for (t, want) in active.iter_mut() {
                    match t.exchange(rounds) {
                        Ok(name) if name == *want => {}
                        Ok(name) => errors.push(format!("{}: answered by {name}, not {want}", t.what)),
                        Err(e) => errors.push(e),
                    }
                }
                done.store(rounds, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
            (rounds, errors, active)
        })
    };
    let t = Instant::now();
    let mesh = flood(cl, CLIENT.parse().unwrap(), format!("{N1}:9000").parse().unwrap(), f, done.clone());
    let vip = flood(c1, C1.parse().unwrap(), "10.10.0.101:9000".parse().unwrap(), f, done);
    let (mesh_sent, vip_sent) = (mesh.join().unwrap(), vip.join().unwrap());
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (rounds, errors, talked) = talker.join().unwrap();
    *active = talked;
    let (after, after2) = (status_of(dep, st, "n1"), status_of(dep, st, "n2"));
    let new_flows = service_flows(&after, "sink") - service_flows(&before, "sink");
    let (ct1, ct2) = (ct_map(&after), ct_map(&after2));
    let repicked = picks(&after) - picks(&before);
    eprintln!(
        "flood of {}-datagram flows: {mesh_sent} mesh + {vip_sent} VIP flows in {secs:.1} s; {new_flows} new \
         flows on n1 ({:.0}x its table); OB_CT_V2 n1 {}/{}, n2 {}/{}; active connections: {rounds} rounds, {} \
         errors, {repicked} re-picked",
        f.per_flow,
        new_flows as f64 / CT as f64,
        ct1.0,
        ct1.1,
        ct2.0,
        ct2.1,
        errors.len()
    );
    eprintln!("  n1 drops: {}\n  n2 drops: {}", drops(&before, &after), drops(&before2, &after2));
    assert!(errors.is_empty(), "established connections broke under the flood: {errors:#?}");
    assert!(rounds >= 20, "the active connections talked only {rounds} times during the flood");
    // The flood overran the table: most flows were new to it, many times
    // its size, and the table kept its size.
    assert!(new_flows >= (mesh_sent + vip_sent) / 2, "{new_flows} new flows of {mesh_sent}+{vip_sent} sent");
    assert!(new_flows >= f.flows, "only {new_flows} new flows: not the flood of a {CT}-entry table asked for");
    assert!(ct1.0 <= CT as u64 && ct1.1 == CT as u64 && ct2.1 == CT as u64, "{ct1:?} {ct2:?}");
    Phase { rounds, repicked }
}
