//! A container that forwards what the overlay delivers to it: a gateway
//! container on n2 (a VPN or a router in a container) that passes TCP from
//! a container on n1 on to a LAN behind it. In the default data path the
//! overlay hands it 64 KB GSO packets, decapsulated in TC; it forwards them
//! out of a device that cannot segment them itself (TSO and GSO off), so
//! the kernel must cut them in software, and every segment must arrive.

mod common;

use common::*;
use testbed::Netns;

/// The gateway container `gw` gets a second interface, `lan0`
/// (172.30.0.1/24), whose peer lives in netns `lan` (172.30.0.2/24), and
/// forwards TCP to its overlay address's port 5201 there, masqueraded.
fn make_gateway(gw: &Netns, lan: &Netns) {
    testbed::ip(&[
        "link", "add", "lan0", "netns", &gw.name, "type", "veth", "peer", "name", "lan0", "netns", &lan.name,
    ]);
    gw.ip(&["addr", "add", "172.30.0.1/24", "dev", "lan0"]);
    gw.ip(&["link", "set", "lan0", "up"]);
    lan.ip(&["addr", "add", "172.30.0.2/24", "dev", "lan0"]);
    lan.ip(&["link", "set", "lan0", "up"]);
    lan.ip(&["link", "set", "lo", "up"]);
    // The LAN side cannot segment: what the gateway forwards there is cut
    // in software, tunnel GSO types included.
    let off = ["-K", "lan0", "tso", "off", "gso", "off", "tx-udp_tnl-segmentation", "off"];
    assert_ok(&gw.run("ethtool", &off));
    assert_ok(&gw.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"]));
    let rules = "table ip gw {
        chain pre {
            type nat hook prerouting priority dstnat;
            tcp dport 5201 dnat to 172.30.0.2;
            tcp dport 5202 dnat to 10.10.0.23:5201;
        }
        chain post { type nat hook postrouting priority srcnat; masquerade; }
    }";
    let mut nft = gw.cmd("nft");
    nft.args(["-f", "-"]).stdin(std::process::Stdio::piped());
    let mut child = nft.spawn().unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "nft rules in the gateway");
}

/// Sends 32 MiB over TCP from `from` to `to` (ip:port), which a sink in
/// `sink` on `listen` (ip:port) counts; the count the sink answers.
fn send_32m(sink: &Netns, listen: (&str, u16), from: &Netns, to: (&str, u16)) -> Result<u64, String> {
    let server = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{}', {})); s.listen(1); print('ready', flush=True)\nc, _ = s.accept(); n = 0\n\
         while True:\n    b = c.recv(1 << 20)\n    if not b: break\n    n += len(b)\n\
         c.sendall(str(n).encode()); c.close()\n",
        listen.0, listen.1
    );
    let mut srv = sink.cmd("timeout");
    srv.args(["60", "python3", "-c", &server]).stdout(std::process::Stdio::piped());
    let mut child = testbed::Proc(srv.spawn().unwrap());
    let mut ready = String::new();
    use std::io::BufRead as _;
    std::io::BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready", "the sink listens");
    let client = format!(
        "import socket\ns = socket.create_connection(('{}', {}), timeout=30); buf = b'x' * (1 << 20)\n\
         for _ in range(32): s.sendall(buf)\n\
         s.shutdown(socket.SHUT_WR); print(s.recv(64).decode())\n",
        to.0, to.1
    );
    let out = from.run("timeout", &["60", "python3", "-c", &client]);
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    said.parse().map_err(|_| format!("no count from the sink: {said:?}, {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_gateway_container_forwards_gso_packets_the_overlay_delivers() {
    require_root();
    let p = "obrt";
    let u = underlay(p, 2);
    let cs = containers(p, &["c1", "gw", "lan", "c3"]);
    let eps = [("c1", "n1", "10.10.0.21"), ("gw", "n2", "10.10.0.22"), ("c3", "n1", "10.10.0.23")];
    let st = StateFile::new(p, &front_state(p, &eps));
    let mut dep = Deployment::new(&bin());
    for n in ["n1", "n2"] {
        assert_ok(&dep.up(&st.0, &format!("{p}{n}"), &format!("{p}-{n}")));
    }
    make_gateway(&cs[1], &cs[2]);
    const SENT: u64 = 32 << 20;
    let before = status(&dep, p, "n2");
    // c1 -> gw's overlay address -> (DNAT) the LAN's sink.
    let got = send_32m(&cs[2], ("172.30.0.2", 5201), &cs[0], ("10.10.0.22", 5201));
    assert_eq!(got, Ok(SENT), "through the gateway to the LAN");
    let after = status(&dep, p, "n2");
    let decap = |s: &serde_json::Value| counted(s, UNDERLAY, "decapsulated");
    let (packets, bytes) = (decap(&after).0 - decap(&before).0, decap(&after).1 - decap(&before).1);
    eprintln!("n2 decapsulated {packets} packets, {bytes} bytes for the gateway");
    assert!(packets > 0 && bytes / packets > 1500, "the gateway was not handed GSO packets: {packets}, {bytes}");
    // And back into the overlay: the gateway sends what it was handed on to
    // c3 on n1, as a load balancer in a container would (its own address as
    // the source): decapsulated GSO packets encapsulated again.
    let got = send_32m(&cs[3], ("10.10.0.23", 5201), &cs[0], ("10.10.0.22", 5202));
    assert_eq!(got, Ok(SENT), "through the gateway back into the overlay");
    drop(dep);
    drop(cs);
    drop(u);
}
