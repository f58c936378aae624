//! Injection and spoofing end to end, in a namespace cluster: VXLAN crafted
//! by hand and sent from a host that is not in the cluster, from a cluster
//! host with a VNI that does not match the inner destination, with an unknown
//! VNI, and with a forged inner source; and a container sending with another
//! endpoint's IP or MAC. None of it may reach a container. A control packet,
//! crafted the same way but legitimate, must arrive: it proves the injection
//! itself works.

mod common;
mod rig;

use std::{
    net::{Ipv4Addr, UdpSocket},
    sync::mpsc,
    thread,
    time::Duration,
};

use common::*;

const N2: &str = "192.168.200.12";
const STRANGER: &str = "192.168.200.99";
const A1: [u8; 4] = [10, 10, 0, 11];
const A2: [u8; 4] = [10, 10, 0, 12];
const A3: [u8; 4] = [10, 10, 0, 13];
const PORT: u16 = 7000;

fn mac(ip: [u8; 4]) -> [u8; 6] {
    [2, 0x42, ip[0], ip[1], ip[2], ip[3]]
}

/// Runs `f` on a thread inside namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    thread::spawn(move || {
        enter_netns(&ns).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// A UDP listener on :PORT in `ns`; the payloads it got arrive on the channel.
fn listen(ns: &str) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let ns = ns.to_string();
    thread::spawn(move || {
        enter_netns(&ns).unwrap();
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 1500];
        loop {
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                if tx.send(String::from_utf8_lossy(&buf[..n]).to_string()).is_err() {
                    return;
                }
            } else if tx.send(String::new()).is_err() {
                // The receiver is gone: the test ended.
                return;
            }
        }
    });
    ready_rx.recv().unwrap();
    rx
}

/// What arrived within `ms` (empty keep-alives dropped).
fn drain(rx: &mpsc::Receiver<String>, ms: u64) -> Vec<String> {
    let end = std::time::Instant::now() + Duration::from_millis(ms);
    let mut got = Vec::new();
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(s) if !s.is_empty() => got.push(s),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    got
}

/// VXLAN (flags 0x08, `vni`) carrying an Ethernet/IPv4/UDP packet
/// `src` -> `dst`:PORT with `payload`, sent from namespace `from` to `to`:4789.
fn inject(from: &str, to: &str, vni: u32, src: [u8; 4], dst: [u8; 4], payload: &str) {
    let inner = rig::frame(mac(src), mac(dst), src, dst, 17, &rig::udp(40000, PORT, payload.as_bytes()));
    let mut vx = rig::vxlan_hdr(0x08, vni);
    vx.extend(inner);
    let to: Ipv4Addr = to.parse().unwrap();
    in_ns(from, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.send_to(&vx, (to, 4789)).unwrap();
    });
}

#[test]
fn crafted_vxlan_and_forged_sources_reach_no_container() {
    require_root();
    let p = "obtj";
    let eps = [
        ("a1", "n1", "front", "10.10.0.11"),
        ("a2", "n2", "front", "10.10.0.12"),
        ("a3", "n2", "front", "10.10.0.13"),
        ("b2", "n2", "back", "10.20.0.12"),
    ];
    let st = StateFile::new(p, &state(p, &eps, 2));
    let mut u = underlay(p, 2);
    u.add_host("x", STRANGER.parse().unwrap());
    let cs = containers(p, &["a1", "a2", "a3", "b2"]);
    let mut dep = Deployment::new(&bin());
    for h in ["n1", "n2"] {
        assert_ok(&dep.up(&st.0, &format!("{p}{h}"), &format!("{p}-{h}")));
    }
    let (n1, x) = (format!("{p}-n1"), format!("{p}-x"));
    let back_vni = json(&assert_ok(
        &std::process::Command::new(bin()).args(["validate", "-o", "json", "--state"]).arg(&st.0).output().unwrap(),
    ))["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "back")
        .unwrap()["vni"]
        .as_u64()
        .unwrap() as u32;
    let rx = listen(&format!("{p}-a2"));
    let drops = |reason: &str| counter(&status(&dep, p, "n2"), UNDERLAY, reason);

    // Control: a1 (behind n1) to a2, sent by n1 itself: delivered.
    inject(&n1, N2, 5001, A1, A2, "control");
    assert_eq!(drain(&rx, 1000), ["control"], "the crafted control packet must arrive");

    // From an address that is not a cluster host.
    let before = drops("drop_unknown_vtep");
    inject(&x, N2, 5001, A1, A2, "from a stranger");
    // From a cluster host, on the other network's VNI.
    let (nl, vni) = (drops("drop_not_local"), drops("drop_unknown_vni"));
    inject(&n1, N2, back_vni, A1, A2, "wrong vni");
    // An unknown VNI, and VNIs 0 and 16777215.
    for v in [777, 0, 16_777_215] {
        inject(&n1, N2, v, A1, A2, "unknown vni");
    }
    // A forged inner source: a3 lives behind n2, not n1.
    let spoofed = drops("drop_spoofed");
    inject(&n1, N2, 5001, A3, A2, "forged inner source");
    let got = drain(&rx, 1500);
    assert!(got.is_empty(), "injected packets reached a2: {got:?}");
    assert_eq!(drops("drop_unknown_vtep"), before + 1);
    assert_eq!(drops("drop_not_local"), nl + 1, "wrong VNI");
    assert_eq!(drops("drop_unknown_vni"), vni + 3, "unknown VNIs");
    assert_eq!(drops("drop_spoofed"), spoofed + 1, "forged inner source");

    // A container sending with another endpoint's IP, then with its MAC.
    let a1 = &cs[0];
    assert!(a1.run("ping", &["-c", "1", "-W", "2", "10.10.0.12"]).status.success(), "a1 reaches a2 at all");
    let send_from = |src: &'static str, what: &'static str| {
        in_ns(&format!("{p}-a1"), move || {
            let s = UdpSocket::bind((src.parse::<Ipv4Addr>().unwrap(), 0)).unwrap();
            s.send_to(what.as_bytes(), ("10.10.0.12", PORT)).unwrap();
        })
    };
    send_from("10.10.0.11", "honest");
    assert_eq!(drain(&rx, 1000), ["honest"]);
    let tc_spoofed = || counter(&status(&dep, p, "n1"), "tc_endpoint_egress", "drop_spoofed");
    let before = tc_spoofed();
    a1.ip(&["addr", "add", "10.10.0.13/32", "dev", "eth0"]);
    send_from("10.10.0.13", "a3's address");
    assert!(drain(&rx, 1000).is_empty(), "a packet with a3's address reached a2");
    assert!(tc_spoofed() > before, "counted as spoofed");
    a1.ip(&["link", "set", "eth0", "address", "02:42:0a:0a:00:0d"]);
    send_from("10.10.0.11", "a3's MAC");
    assert!(drain(&rx, 1000).is_empty(), "a frame with a3's MAC reached a2");
    assert!(tc_spoofed() > before + 1);
}
