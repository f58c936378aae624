//! The overlay data path end to end, in namespaces: three hosts running
//! overlay-bpf, one host with a plain kernel `vxlan` device and static FDB
//! entries (the peer nobody here wrote), an outside host on the underlay, and
//! two networks (`front`, and `back`, internal).

mod common;

use std::{
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use common::*;
use serde_json::Value;

const FRONT_VNI: u32 = 5001;

/// name, host, network, ip.
const EPS: [(&str, &str, &str, &str); 6] = [
    ("a1", "n1", "front", "10.10.0.11"),
    ("a2", "n2", "front", "10.10.0.12"),
    ("a3", "n3", "front", "10.10.0.13"),
    ("b1", "n1", "back", "10.20.0.21"),
    ("b2", "n2", "back", "10.20.0.22"),
    ("k1", "kp", "front", "10.10.0.50"),
];

fn mac_of(ip: &str) -> String {
    let o: Vec<u8> = ip.split('.').map(|x| x.parse().unwrap()).collect();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

fn host_addr(h: &str) -> Ipv4Addr {
    match h {
        "n1" => Ipv4Addr::new(192, 168, 200, 11),
        "n2" => Ipv4Addr::new(192, 168, 200, 12),
        "n3" => Ipv4Addr::new(192, 168, 200, 13),
        "n4" => Ipv4Addr::new(192, 168, 200, 14),
        "kp" => Ipv4Addr::new(192, 168, 200, 20),
        _ => unreachable!(),
    }
}

fn cluster_state(p: &str, eps: &[(&str, &str, &str, &str)], extra_host: bool) -> String {
    let mut y = String::from("version: 1\ncluster: {vxlan_port: 4789, underlay_mtu: 1500}\nhosts:\n");
    let mut hosts = vec!["n1", "n2", "n3", "kp"];
    if extra_host {
        hosts.push("n4");
    }
    for h in hosts {
        y += &format!("  - {{name: {p}{h}, address: {}}}\n", host_addr(h));
    }
    y += &format!(
        "networks:\n  - {{name: front, vni: {FRONT_VNI}, attachable: true, subnets: [{{subnet: 10.10.0.0/24}}]}}\n"
    );
    y += "  - {name: back, internal: true, attachable: true, subnets: [{subnet: 10.20.0.0/24}]}\n";
    y += "endpoints:\n";
    for (name, host, net, ip) in eps {
        y += &format!("  - {{name: {name}, host: {p}{host}, network: {net}, netns: {p}-{name}, ip: {ip}}}\n");
    }
    y
}

/// The whole world of one test: underlay, containers, the kernel peer, the
/// outside host, and overlay-bpf up on n1..n3. Dropped in reverse: down, then
/// namespaces.
struct World {
    p: &'static str,
    dep: Deployment,
    containers: Vec<Netns>,
    u: Underlay,
    st: StateFile,
}

impl World {
    fn new(p: &'static str) -> World {
        require_root();
        let st = StateFile::new(p, &cluster_state(p, &EPS, false));
        let mut u = Underlay::new(p, &[("n1", host_addr("n1")), ("n2", host_addr("n2")), ("n3", host_addr("n3"))]);
        u.add_host("kp", host_addr("kp"));
        u.add_host("out", Ipv4Addr::new(192, 168, 200, 200));
        let containers: Vec<Netns> = EPS.iter().map(|(n, ..)| Netns::new(&format!("{p}-{n}"))).collect();
        let mut dep = Deployment::new(&bin());
        for h in ["n1", "n2", "n3"] {
            assert_ok(&dep.up(&st.0, &format!("{p}{h}"), &format!("{p}-{h}")));
        }
        let w = World { p, dep, containers, u, st };
        w.kernel_peer();
        w
    }

    fn c(&self, name: &str) -> &Netns {
        self.containers.iter().find(|c| c.name == format!("{}-{name}", self.p)).unwrap()
    }

    /// Host kp: a kernel vxlan device on VNI 5001 in a bridge with k1, static
    /// FDB entries for every front endpoint behind overlay-bpf, and all-zero
    /// entries (flooding ARP to the overlay-bpf hosts).
    fn kernel_peer(&self) {
        let kp = self.u.host("kp");
        let k1 = self.c("k1");
        // A veth underlay hands partial checksums on; overlay-bpf hosts turn
        // that off on theirs (`up` does), a kernel peer on a veth must too.
        must(kp.cmd("ethtool").args(["-K", "eth0", "tx", "off"]));
        kp.ip(&[
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            &FRONT_VNI.to_string(),
            "dstport",
            "4789",
            "local",
            "192.168.200.20",
            "dev",
            "eth0",
            "nolearning",
        ]);
        kp.ip(&["link", "add", "br0", "type", "bridge"]);
        kp.ip(&["link", "set", "vx0", "master", "br0", "up"]);
        ip_link_pair(kp, "kpv", k1, "eth0");
        kp.ip(&["link", "set", "kpv", "master", "br0", "up"]);
        kp.ip(&["link", "set", "br0", "up"]);
        k1.ip(&["link", "set", "eth0", "address", &mac_of("10.10.0.50"), "mtu", "1450", "up"]);
        k1.ip(&["addr", "add", "10.10.0.50/24", "dev", "eth0"]);
        for (_, host, net, ip) in EPS {
            if net == "front" && host != "kp" {
                must(Command::new("bridge").args([
                    "-n",
                    &kp.name,
                    "fdb",
                    "append",
                    &mac_of(ip),
                    "dev",
                    "vx0",
                    "dst",
                    &host_addr(host).to_string(),
                ]));
            }
        }
        for h in ["n1", "n2", "n3"] {
            must(Command::new("bridge").args([
                "-n",
                &kp.name,
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                "vx0",
                "dst",
                &host_addr(h).to_string(),
            ]));
        }
    }

    fn status(&self, h: &str) -> Value {
        status(&self.dep, self.p, h)
    }
}

/// A veth pair with one end in each namespace.
fn ip_link_pair(a: &Netns, a_name: &str, b: &Netns, b_name: &str) {
    must(
        Command::new("ip")
            .args(["link", "add", a_name, "netns", &a.name, "type", "veth", "peer", "name", b_name, "netns", &b.name]),
    );
}

fn ping(from: &Netns, to: &str) -> Child {
    from.cmd("ping").args(["-c", "1", "-W", "2", to]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

#[test]
fn connectivity_matrix_with_a_kernel_vxlan_peer() {
    let w = World::new("obto");
    // Every ordered pair at once: same network reaches, other network does not.
    let mut runs = Vec::new();
    for (a, _, na, _) in EPS {
        for (b, _, nb, ipb) in EPS {
            if a != b {
                runs.push((a, b, na == nb, ping(w.c(a), ipb)));
            }
        }
    }
    let mut wrong = Vec::new();
    let mut matrix = String::from("      ");
    for (b, ..) in EPS {
        matrix += &format!("{b:>4}");
    }
    let mut results = std::collections::HashMap::new();
    for (a, b, expect, mut child) in runs {
        let ok = child.wait().unwrap().success();
        results.insert((a, b), ok);
        if ok != expect {
            wrong.push(format!(
                "{a} -> {b}: {} (expected {})",
                if ok { "reached" } else { "not reached" },
                if expect { "reached" } else { "blocked" }
            ));
        }
    }
    for (a, ..) in EPS {
        matrix += &format!("\n{a:>6}");
        for (b, ..) in EPS {
            matrix += if a == b {
                "   -"
            } else if results[&(a, b)] {
                "  ok"
            } else {
                "   x"
            };
        }
    }
    eprintln!("connectivity (rows ping columns):\n{matrix}");
    assert!(wrong.is_empty(), "{}\n{matrix}", wrong.join("\n"));

    // The kernel peer learned a1's MAC through the ARP answer our XDP sent it.
    let neigh = json(&w.c("k1").ip(&["-j", "neigh", "show", "10.10.0.11"]));
    assert_eq!(neigh[0]["lladdr"], mac_of("10.10.0.11"), "{neigh}");
    let s1 = w.status("n1");
    assert!(counter(&s1, UNDERLAY, "arp_replied") >= 1, "{s1}");
    assert!(counter(&s1, UNDERLAY, "decapsulated") >= 1, "{s1}");
    assert!(counter(&s1, "tc_endpoint_egress", "encapsulated") >= 1, "{s1}");
    assert!(counter(&s1, "tc_endpoint_egress", "drop_cross_network") >= 1, "{s1}");
    // The other network's endpoint on the same host was not reached either.
    assert!(!results[&("a1", "b1")]);
}

/// Reads the first UDP/4789 packet of a pcap file (Ethernet link type).
fn first_vxlan(pcap: &[u8]) -> Vec<u8> {
    assert!(pcap.len() > 24, "empty capture");
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let incl = u32::from_le_bytes(pcap[off + 8..off + 12].try_into().unwrap()) as usize;
        let pkt = &pcap[off + 16..off + 16 + incl];
        if pkt.len() > 42 && pkt[12..14] == [8, 0] && pkt[23] == 17 && pkt[36..38] == 4789u16.to_be_bytes() {
            return pkt.to_vec();
        }
        off += 16 + incl;
    }
    panic!("no VXLAN packet in the capture");
}

fn csum_ok(h: &[u8]) -> bool {
    let mut s: u32 = h.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

#[test]
fn the_wire_format_on_an_underlay_capture() {
    let w = World::new("obtw");
    let pcap = std::env::temp_dir().join("obtw-underlay.pcap");
    let _ = std::fs::remove_file(&pcap);
    // Immediate mode: packets are written as they come, not when the
    // capture ring's block times out (1 s), which may be after SIGINT.
    let args = ["-i", "br0", "--immediate-mode", "-U", "-n", "-c", "4", "-w", pcap.to_str().unwrap()];
    let mut dump =
        tcpdump(&w.u.switch, &[&args[..], &["udp port 4789 and src host 192.168.200.11"]].concat(), Stdio::null());
    let ok = w.c("a1").run("ping", &["-c", "3", "-i", "0.2", "-W", "2", "10.10.0.12"]).status.success();
    sleep(Duration::from_millis(300));
    unsafe { libc::kill(dump.id() as i32, libc::SIGINT) };
    let _ = dump.wait();
    assert!(ok, "a1 -> a2");
    let p = first_vxlan(&std::fs::read(&pcap).unwrap());
    let _ = std::fs::remove_file(&pcap);
    let (ip, udp, vx, inner) = (&p[14..34], &p[34..42], &p[42..50], &p[50..]);
    assert_eq!(ip[0], 0x45);
    assert!(csum_ok(ip), "outer IPv4 checksum");
    assert_eq!(ip[9], 17);
    assert_eq!(ip[12..16], [192, 168, 200, 11]);
    assert_eq!(ip[16..20], [192, 168, 200, 12]);
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, p.len() - 14, "outer length");
    assert!(u16::from_be_bytes([udp[0], udp[1]]) >= 49152, "source port from the flow hash");
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4789);
    assert_eq!(udp[6..8], [0, 0], "outer UDP checksum 0");
    assert_eq!(vx[0], 0x08, "VXLAN flags");
    assert_eq!(u32::from_be_bytes([0, vx[4], vx[5], vx[6]]), FRONT_VNI);
    assert_eq!(inner[0..6], [2, 0x42, 10, 10, 0, 12], "inner destination MAC");
    assert_eq!(inner[6..12], [2, 0x42, 10, 10, 0, 11], "inner source MAC");
    assert_eq!(inner[14 + 12..14 + 20], [10, 10, 0, 11, 10, 10, 0, 12], "inner addresses");
    // The outer destination MAC is n2's underlay MAC: the neighbour was resolved.
    let n2 = link_json(w.u.host("n2"), "eth0").unwrap();
    assert_eq!(
        p[0..6].iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
        n2["address"].as_str().unwrap()
    );
}

/// iperf3 TCP for `secs` from `client` to `server_ip` (server in `server`):
/// received bits per second.
fn iperf(server: &Netns, client: &Netns, server_ip: &str, secs: u32) -> f64 {
    iperf3(server, client, server_ip, secs as f64, &[]).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn tcp_bulk_through_the_overlay_and_through_kernel_vxlan() {
    let w = World::new("obti");
    let before = counter(&w.status("n1"), "tc_endpoint_egress", "encapsulated");
    let overlay = iperf(w.c("a2"), w.c("a1"), "10.10.0.12", 3);
    let after = counter(&w.status("n1"), "tc_endpoint_egress", "encapsulated");
    assert!(overlay > 0.0);
    assert!(after > before + 100, "the bulk went through our encapsulation ({before} -> {after})");
    let s2 = w.status("n2");
    assert!(counter(&s2, UNDERLAY, "decapsulated") > 100, "and our decapsulation: {s2}");

    // The baseline between the same host namespaces: kernel vxlan (port 4790,
    // which our XDP passes) in a bridge, as Docker's overlay driver does.
    let kc: Vec<Netns> = ["kc1", "kc2"].iter().map(|n| Netns::new(&format!("{}-{n}", w.p))).collect();
    for (i, (h, other)) in [("n1", "n2"), ("n2", "n1")].iter().enumerate() {
        let host = w.u.host(h);
        host.ip(&[
            "link",
            "add",
            "kvx",
            "type",
            "vxlan",
            "id",
            "6001",
            "dstport",
            "4790",
            "local",
            &host_addr(h).to_string(),
            "remote",
            &host_addr(other).to_string(),
            "dev",
            "eth0",
        ]);
        host.ip(&["link", "add", "kbr", "type", "bridge"]);
        host.ip(&["link", "set", "kvx", "master", "kbr", "up"]);
        ip_link_pair(host, "kcv", &kc[i], "eth0");
        host.ip(&["link", "set", "kcv", "master", "kbr", "up"]);
        host.ip(&["link", "set", "kbr", "up"]);
        kc[i].ip(&["link", "set", "eth0", "mtu", "1450", "up"]);
        kc[i].ip(&["addr", "add", &format!("10.99.0.{}/24", i + 1), "dev", "eth0"]);
    }
    let kernel = iperf(&kc[1], &kc[0], "10.99.0.2", 3);
    eprintln!(
        "iperf3 TCP, 3 s, n1 -> n2: overlay-bpf {:.2} Gbit/s, kernel vxlan+bridge {:.2} Gbit/s, ratio {:.2}",
        overlay / 1e9,
        kernel / 1e9,
        overlay / kernel
    );
    assert!(kernel > 0.0);
}

#[test]
fn pmtu_discovery_works_and_oversize_without_df_is_dropped() {
    let w = World::new("obtm");
    // The containers claim a 1500-byte MTU: 1500 + 50 would not fit the underlay.
    for c in ["a1", "a3"] {
        w.c(c).ip(&["link", "set", "eth0", "mtu", "1500"]);
    }
    // Without DF: dropped and counted, nothing sent.
    let before = counter(&w.status("n3"), "tc_endpoint_egress", "drop_too_big");
    let out = w.c("a3").run("ping", &["-M", "dont", "-s", "1472", "-c", "1", "-W", "1", "10.10.0.12"]);
    assert!(!out.status.success());
    assert_eq!(counter(&w.status("n3"), "tc_endpoint_egress", "drop_too_big"), before + 1);

    // With DF: ICMP fragmentation needed, MTU 1450, from the gateway.
    let before = counter(&w.status("n1"), "tc_endpoint_egress", "icmp_frag_needed");
    let out = w.c("a1").run("ping", &["-M", "do", "-s", "1472", "-c", "1", "-W", "1", "10.10.0.12"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let from: Vec<&str> = text.lines().filter(|l| l.starts_with("From ")).collect();
    assert_eq!(from, ["From 10.10.0.1 icmp_seq=1 Frag needed and DF set (mtu = 1450)"], "{text}");
    assert_eq!(counter(&w.status("n1"), "tc_endpoint_egress", "icmp_frag_needed"), before + 1);
    // The sender learned the path MTU: a full-size TCP transfer now works.
    let route = w.c("a1").ip(&["route", "get", "10.10.0.12"]);
    assert!(route.contains("mtu 1450"), "{route}");
    let bps = iperf(w.c("a2"), w.c("a1"), "10.10.0.12", 1);
    assert!(bps > 0.0);
    assert!(w.c("a1").run("ping", &["-M", "do", "-s", "1422", "-c", "1", "-W", "2", "10.10.0.12"]).status.success());
}

#[test]
fn traffic_leaves_the_overlay_masqueraded_unless_internal() {
    let w = World::new("obte");
    // The outside host has no route to 10.10.0.0/24: a reply proves masquerade.
    let out = w.c("a1").run("ping", &["-c", "1", "-W", "2", "192.168.200.200"]);
    assert!(out.status.success(), "front (not internal) reaches outside: {}", String::from_utf8_lossy(&out.stdout));
    let s1 = w.status("n1");
    assert!(counter(&s1, "tc_endpoint_egress", "pass_to_host") >= 1, "{s1}");
    let rules = w.u.host("n1").run("nft", &["list", "table", "ip", "overlay_bpf"]);
    assert!(String::from_utf8_lossy(&rules.stdout).contains("10.10.0.0/24"), "masquerade rule");
    // back is internal: nothing leaves.
    let before = counter(&s1, "tc_endpoint_egress", "drop_internal");
    assert!(!w.c("b1").run("ping", &["-c", "1", "-W", "1", "192.168.200.200"]).status.success());
    assert!(counter(&w.status("n1"), "tc_endpoint_egress", "drop_internal") > before);
    // down removes the rule.
    assert_ok(&w.dep.cmd(&format!("{}n1", w.p), &format!("{}-n1", w.p)).arg("down").output().unwrap());
    assert!(!w.u.host("n1").run("nft", &["list", "table", "ip", "overlay_bpf"]).status.success());
}

#[test]
fn reapplying_changed_files_loses_no_packet() {
    let mut w = World::new("obth");
    let extra = Netns::new(&format!("{}-a4", w.p));
    let ping = w
        .c("a1")
        .cmd("ping")
        .args(["-i", "0.01", "-c", "400", "-W", "1", "10.10.0.12"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(300));
    // Endpoint added (a4 on n1), endpoint removed (b2), host added (n4).
    let mut eps: Vec<(&str, &str, &str, &str)> = EPS.iter().copied().filter(|e| e.0 != "b2").collect();
    eps.push(("a4", "n1", "front", "10.10.0.14"));
    let p = w.p;
    let (changed, original) = (cluster_state(p, &eps, true), cluster_state(p, &EPS, false));
    for round in 0..3 {
        w.st.write(if round % 2 == 0 { &changed } else { &original });
        for h in ["n1", "n2", "n3"] {
            assert_ok(&w.dep.up(&w.st.0, &format!("{p}{h}"), &format!("{p}-{h}")));
        }
    }
    let out = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or("").to_string();
    eprintln!("steady ping during 3 re-applies x 3 hosts: {summary}");
    assert!(summary.starts_with("400 packets transmitted, 400 received"), "{summary}");
    // The last apply (round 2) left a4 in: it is reachable.
    assert!(extra.run("ping", &["-c", "1", "-W", "2", "10.10.0.12"]).status.success());
}
