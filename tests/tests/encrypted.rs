//! Encrypted networks (`encrypted: true`): the hop between hosts is
//! WireGuard, the overlay's work stays the programs'.
//!
//! On a kernel with WireGuard (the VM tier's Debian 6.1 and 6.12) two hosts
//! run an encrypted network beside a plain one: containers talk across hosts
//! on both; a capture on the underlay's bridge shows a marker sent over the
//! plain network and never the one sent over the encrypted network; the two
//! networks stay isolated; a machine outside the cluster gets nothing through
//! the WireGuard port and plaintext VXLAN for the encrypted network is
//! dropped, and data messages that do not authenticate are rejected (each
//! counted); the VIP and the routing mesh work over it; a key
//! rotation under a steady ping is measured. On a kernel without WireGuard
//! (this machine's), `validate` and `up` refuse the network, naming the kernel
//! option, and nothing is applied.

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::*;
use testbed::{must, KeyDir, Netns, Proc};

const P: &str = "obwg";
const N1: &str = "192.168.200.11";
const N2: &str = "192.168.200.12";
const OUTSIDER: &str = "192.168.200.99";

/// Whether this kernel has WireGuard (the module loaded or loadable).
fn has_wireguard() -> bool {
    let _ = Command::new("modprobe").args(["-q", "wireguard"]).status();
    Path::new("/sys/module/wireguard").exists()
}

/// Hosts n1 and n2 with the given public keys; network `secret` encrypted
/// and `plain` not, an endpoint of each on each host, and service `web` on
/// `secret` with a VIP and a published port, its backend on n2.
fn enc_state(keys: [Option<&str>; 2]) -> String {
    let mut y = String::from("version: 1\nhosts:\n");
    for (i, (addr, key)) in [(N1, keys[0]), (N2, keys[1])].into_iter().enumerate() {
        y += &format!("  - {{name: {P}n{}, address: {addr}", i + 1);
        if let Some(k) = key {
            y += &format!(", wireguard_key: \"{k}\"");
        }
        y += "}\n";
    }
    y += "networks:\n";
    y += "  - {name: secret, vni: 5101, encrypted: true, attachable: true, subnets: [{subnet: 10.40.0.0/24}]}\n";
    y += "  - {name: plain, vni: 5102, attachable: true, subnets: [{subnet: 10.41.0.0/24}]}\n";
    y += "endpoints:\n";
    for (name, host, net, ip) in [
        ("s1", "n1", "secret", "10.40.0.11"),
        ("s2", "n2", "secret", "10.40.0.12"),
        ("c1", "n1", "plain", "10.41.0.11"),
        ("c2", "n2", "plain", "10.41.0.12"),
    ] {
        y += &format!("  - {{name: {name}, host: {P}{host}, network: {net}, netns: {P}-{name}, ip: {ip}}}\n");
    }
    y += "services:\n  - {name: web, network: secret, vip: 10.40.0.2, backends: [s2], \
          ports: [{protocol: tcp, target: 8080, published: 8080}]}\n";
    y
}

fn ping(ns: &Netns, dst: &str) -> bool {
    ns.run("ping", &["-c", "2", "-i", "0.2", "-W", "2", dst]).status.success()
}

#[test]
fn an_encrypted_network_is_unreadable_on_the_wire_and_refused_where_the_kernel_cannot() {
    require_root();
    if !has_wireguard() {
        refused_without_wireguard();
        return;
    }
    encrypted_across_hosts();
}

/// This kernel has no WireGuard: every way in refuses, naming the option,
/// and nothing reaches the kernel.
fn refused_without_wireguard() {
    let p = "obwx";
    let st = StateFile::new(p, &enc_state([None, None]).replace(P, p));
    let u = underlay(p, 2);
    let _cs = containers(p, &["s1", "c1"]);
    let mut dep = Deployment::new(&bin());
    let v = Command::new(bin()).args(["validate", "--state"]).arg(&st.0).output().unwrap();
    assert_eq!(v.status.code(), Some(1), "validate refuses: {}", text(&v));
    let no_wireguard = |file: &StateFile, network: &str| {
        [format!(
            "error: {}: networks[0] ({network}): encrypted: true needs WireGuard in the kernel (CONFIG_WIREGUARD=y or \
             =m) and this kernel has none (`modprobe wireguard` fails): run the hosts on a kernel with WireGuard \
             (Debian's 6.1 and 6.12 have it), or remove `encrypted`",
            file.0.display()
        )]
    };
    assert_eq!(stderr_lines(&v), no_wireguard(&st, "secret"));
    let up = dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1"));
    assert_eq!(up.status.code(), Some(1), "up refuses: {}", text(&up));
    assert_eq!(stderr_lines(&up), no_wireguard(&st, "secret"));
    assert!(!pins(p, "n1").exists(), "nothing applied: no pins");
    assert_eq!(hooks_on(u.host("n1"), "eth0"), (false, false), "nothing applied: no program on eth0");
    assert!(link_json(u.host("n1"), "ob-wg").is_none(), "nothing applied: no WireGuard device");
    // `network create --opt encrypted` too.
    let plain = StateFile::new(&format!("{p}b"), &format!("version: 1\nhosts:\n  - {{name: {p}n1, address: {N1}}}\n"));
    let c = Command::new(bin())
        .args(["network", "create", "--subnet", "10.42.0.0/24", "--opt", "encrypted", "vault", "--state"])
        .arg(&plain.0)
        .output()
        .unwrap();
    assert_eq!(c.status.code(), Some(1), "{}", text(&c));
    assert_eq!(stderr_lines(&c), no_wireguard(&plain, "vault"));
    assert!(!std::fs::read_to_string(&plain.0).unwrap().contains("vault"), "the file is unchanged");
}

fn encrypted_across_hosts() {
    let _keys = KeyDir::new(P);
    let st = StateFile::new(P, &enc_state([None, None]));
    let mut u = underlay(P, 2);
    u.add_host("x", OUTSIDER.parse().unwrap());
    let cs = containers(P, &["s1", "s2", "c1", "c2"]);
    let (s1, s2, c1) = (&cs[0], &cs[1], &cs[2]);
    let mut dep = Deployment::new(&bin());
    let (h1, h2) = ((format!("{P}n1"), format!("{P}-n1")), (format!("{P}n2"), format!("{P}-n2")));

    // Each host's key pair, its public half put in the file by `host key`.
    let mut public = Vec::new();
    for (h, ns) in [&h1, &h2] {
        let out = dep.cmd(h, ns).args(["host", "key", "--state"]).arg(&st.0).output().unwrap();
        let key = assert_ok(&out).trim().to_string();
        assert_eq!(key.len(), 44, "a base64 X25519 key: {key:?}");
        public.push(key);
    }
    assert!(std::fs::read_to_string(&st.0).unwrap().contains(&public[1]), "host key wrote it to the file");
    for (h, ns) in [&h1, &h2] {
        let out = dep.up(&st.0, h, ns);
        assert_ok(&out);
        let said = stderr_lines(&out);
        let wireguard = format!("{h}: WireGuard: ob-wg on UDP port 51820, 1 peers");
        assert_eq!(said.iter().filter(|l| **l == wireguard).count(), 1, "{said:?}");
    }
    let n1 = status(&dep, P, "n1");
    assert_eq!(n1["wireguard"]["peers"][0]["public_key"], public[1], "n1's peer is n2: {}", n1["wireguard"]);

    // Across hosts on both networks; not across them.
    assert!(ping(s1, "10.40.0.12"), "s1 -> s2 over the encrypted network");
    assert!(ping(c1, "10.41.0.12"), "c1 -> c2 over the plain network");
    assert!(!ping(s1, "10.41.0.12") && !ping(c1, "10.40.0.12"), "the networks stay apart");

    // On the wire: a marker over each network, captured on the bridge.
    let pcap = std::env::temp_dir().join(format!("{P}-wire.pcap"));
    let _ = std::fs::remove_file(&pcap);
    let cap = Proc(
        u.switch
            .cmd("tcpdump")
            .args(["-i", "br0", "-U", "-s", "0", "-w"])
            .arg(&pcap)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("tcpdump writing", 10, || pcap.exists());
    std::thread::sleep(Duration::from_millis(500));
    for (ns, dst, marker) in [(s1, "10.40.0.12", "SECRET-MARKER-7f3a"), (c1, "10.41.0.12", "PLAIN-MARKER-7f3a")] {
        for _ in 0..5 {
            must(ns.cmd("bash").args(["-c", &format!("echo {marker}{marker} > /dev/udp/{dst}/9999")]));
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    drop(cap);
    let wire = std::fs::read(&pcap).unwrap();
    let _ = std::fs::remove_file(&pcap);
    let seen = |m: &str| wire.windows(m.len()).any(|w| w == m.as_bytes());
    assert!(seen("PLAIN-MARKER-7f3a"), "the capture works: the plain network's marker is on the wire");
    assert!(!seen("SECRET-MARKER-7f3a"), "the encrypted network's marker is not on the wire");

    // A machine outside the cluster gets nothing through the WireGuard port.
    let x = u.host("x");
    let s2_before = status(&dep, P, "n2");
    let crafted = "import socket, os\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                   for n in (148, 92, 32, 200):\n    s.sendto(bytes([1, 0, 0, 0]) + os.urandom(n - 4), ('192.168.200.12', 51820))\n";
    for _ in 0..5 {
        must(x.cmd("python3").args(["-c", crafted]));
    }
    // Plaintext VXLAN for the encrypted network, as n1 would send it in clear.
    let vxlan = "import socket, struct\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 inner = bytes.fromhex('02420a28000c02420a28000b0800') + bytes.fromhex('4500001c00004000401100000a28000b0a28000c') + bytes(8)\n\
                 s.sendto(struct.pack('!BBHI', 8, 0, 0, 5101 << 8) + inner, ('192.168.200.12', 4789))\n";
    for _ in 0..5 {
        must(u.host("n1").cmd("python3").args(["-c", vxlan]));
    }
    let s2_after = status(&dep, P, "n2");
    let moved = |reason: &str| counter(&s2_after, UNDERLAY, reason) - counter(&s2_before, UNDERLAY, reason);
    assert_eq!(moved("drop_not_peer"), 20, "the outsider's 20 datagrams to the WireGuard port are dropped: {s2_after}");
    assert_eq!(moved("drop_unencrypted"), 5, "plaintext VXLAN of the encrypted network is dropped: {s2_after}");
    assert!(counter(&s2_after, "tc_wireguard", "from_wireguard") > 0, "s2's traffic came through WireGuard");

    // Data messages that do not authenticate, from a cluster host's own
    // address: past the XDP program to WireGuard, which drops them without
    // a count of its own; status counts them as rejected.
    let forged = "import socket, os, struct\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  for i in range(5):\n    s.sendto(struct.pack('<IIQ', 4, 0x5eed0000 + i, i) + os.urandom(80), ('192.168.200.12', 51820))\n";
    let rejected =
        |st: &serde_json::Value| st["wireguard"]["rejected"].as_u64().expect("status shows WireGuard's rejections");
    must(u.host("n1").cmd("python3").args(["-c", forged]));
    let wg_data = |st: &serde_json::Value| counter(st, UNDERLAY, "wireguard_data");
    wait_until("n2's XDP to see the 5 forged messages", 30, || {
        wg_data(&status(&dep, P, "n2")) - wg_data(&s2_after) >= 5
    });
    let s2_forged = status(&dep, P, "n2");
    assert_eq!(rejected(&s2_forged) - rejected(&s2_after), 5, "the 5 forged data messages are counted: {s2_forged}");
    assert_eq!(counter(&s2_forged, UNDERLAY, "wireguard_data") - counter(&s2_after, UNDERLAY, "wireguard_data"), 5);

    // The VIP, and the routing mesh from the outsider (its address kept).
    let web = Web::start(s2, "s2", 8080);
    testbed::wait_listening(s2, 8080).unwrap();
    assert_eq!(curl(s1, &["http://10.40.0.2:8080/"]), ["s2"], "the VIP over the encrypted network");
    assert_eq!(curl(x, &[&format!("http://{N1}:8080/")]), ["s2"], "the mesh from n1 to the backend on n2");
    assert!(web.clients().contains(&OUTSIDER.to_string()), "the client's address is kept: {:?}", web.clients());

    // Key rotation of n1 under a steady ping (10 ms): n1 takes its new key
    // with `up`, n2 learns it with its own, both at once (as their agents do
    // when the store changes: with etcd, within a second).
    let pinger = Pinger::start(&s1.name, "10.40.0.12", 100);
    std::thread::sleep(Duration::from_millis(1500));
    let rotated_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (h, ns) = &h1;
    let rotated = assert_ok(&dep.cmd(h, ns).args(["host", "key", "--rotate", "--state"]).arg(&st.0).output().unwrap());
    let new_key = rotated.trim().to_string();
    assert_ne!(new_key, public[0], "a new key");
    let ups: Vec<_> = [&h1, &h2]
        .map(|(h, ns)| dep.cmd(h, ns).arg("up").arg("--state").arg(&st.0).stdin(std::process::Stdio::null()).spawn())
        .into_iter()
        .map(|c| c.unwrap())
        .collect();
    for c in ups {
        assert_ok(&c.wait_with_output().unwrap());
    }
    // WireGuard knows a peer by its key: n1's first handshake with its new
    // key may reach n2 before n2's `up` has the key, and WireGuard tries
    // again only 5 s later (REKEY_TIMEOUT). Wait for the handshake itself,
    // as n2's WireGuard reports it, with a bound that only limits a failure.
    wait_until("n2's handshake with n1's new key", 90, || {
        let peer = status(&dep, P, "n2")["wireguard"]["peers"][0].clone();
        peer["public_key"] == new_key.as_str() && peer["last_handshake"].as_u64().is_some_and(|t| t >= rotated_at)
    });
    let (sent, got) = pinger.stop();
    eprintln!(
        "key rotation of n1 under a 10 ms ping: {sent} sent, {got} received, {} lost ({:.0} ms without replies)",
        sent - got,
        (sent - got) as f64 * 10.0
    );
    assert!(ping(s1, "10.40.0.12"), "s1 -> s2 after the rotation");
    let n2 = status(&dep, P, "n2");
    let peers = n2["wireguard"]["peers"].as_array().expect("status shows the WireGuard peers");
    assert_eq!(peers.len(), 1, "{n2}");
    assert_eq!(peers[0]["public_key"], new_key, "n2 has n1's new key");
    assert!(peers[0]["last_handshake"].as_u64().is_some(), "a handshake with the new key");

    // down removes the device and the veth pair with the rest.
    drop(web);
    dep.down_all();
    for h in ["n1", "n2"] {
        assert!(link_json(u.host(h), "ob-wg").is_none(), "{h}: the WireGuard device is gone");
        assert!(link_json(u.host(h), "ob-wg-tc").is_none(), "{h}: the veth pair is gone");
    }
    drop(cs);
}
