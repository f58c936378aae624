//! macvlan networks: containers on the hosts' own LAN, beside an overlay.
//!
//! The LAN is the testbed's switch: two hosts and a plain machine plugged
//! into one bridge. Containers get macvlan sub-interfaces of the hosts'
//! `eth0` and reach each other and the plain machine directly, with no
//! VXLAN on the wire; the overlay in the same state file keeps working.

mod common;

use std::{
    io::Read,
    process::{Child, Stdio},
    thread::sleep,
    time::Duration,
};

use common::*;

const N1: &str = "192.168.200.11";
const N2: &str = "192.168.200.12";
const LAN: &str = "192.168.200.100";
const M1: &str = "192.168.200.131";
const M1B: &str = "192.168.200.132";
const M2: &str = "192.168.200.133";

fn state(p: &str, mode: &str, with_m1b: bool) -> String {
    let mut y = String::from("version: 1\nhosts:\n");
    y += &format!("  - {{name: {p}n1, address: {N1}}}\n  - {{name: {p}n2, address: {N2}}}\n");
    y += "networks:\n  - {name: front, attachable: true, subnets: [{subnet: 10.10.0.0/24}]}\n";
    y += &format!(
        "  - name: lan\n    driver: macvlan\n    parent: eth0\n    macvlan_mode: {mode}\n    subnets: [{{subnet: \
         192.168.200.0/24, gateway: {LAN}, ip_range: 192.168.200.128/26}}]\n"
    );
    y += "endpoints:\n";
    y += &format!("  - {{name: o1, host: {p}n1, network: front, netns: {p}-o1, ip: 10.10.0.11}}\n");
    y += &format!("  - {{name: o2, host: {p}n2, network: front, netns: {p}-o2, ip: 10.10.0.12}}\n");
    y += &format!("  - {{name: m1, host: {p}n1, network: lan, netns: {p}-m1, ip: {M1}}}\n");
    if with_m1b {
        y += &format!("  - {{name: m1b, host: {p}n1, network: lan, netns: {p}-m1b, ip: {M1B}}}\n");
    }
    y += &format!("  - {{name: m2, host: {p}n2, network: lan, netns: {p}-m2, ip: {M2}}}\n");
    y
}

fn pings(from: &Netns, to: &str) -> bool {
    from.run("ping", &["-c", "2", "-i", "0.2", "-W", "1", to]).status.success()
}

/// `tcpdump -e` on the switch's bridge, as text, from when it listens.
struct Capture(Child);

impl Capture {
    fn start(sw: &Netns, filter: &str) -> Capture {
        Capture(tcpdump(sw, &["-i", "br0", "--immediate-mode", "-l", "-n", "-e", filter], Stdio::piped()))
    }

    fn stop(mut self) -> String {
        sleep(Duration::from_millis(300));
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let mut out = String::new();
        self.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let _ = self.0.wait();
        out
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The interface names in a namespace, lo left out.
fn interfaces(ns: &Netns) -> Vec<String> {
    json(&ns.ip(&["-j", "link", "show"]))
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| *n != "lo")
        .map(str::to_string)
        .collect()
}

fn record(p: &str, host: &str) -> std::path::PathBuf {
    std::path::Path::new("/run/overlay-bpf/macvlan").join(format!("sys%fs%bpf%overlay-bpf%{p}{host}.json"))
}

#[test]
fn a_macvlan_network_beside_an_overlay_puts_containers_on_the_lan() {
    require_root();
    let p = "obmv";
    let ip = |a: &str| a.parse().unwrap();
    let u = Underlay::new(p, &[("n1", ip(N1)), ("n2", ip(N2)), ("lan", ip(LAN))]);
    let cs = containers(p, &["o1", "o2", "m1", "m1b", "m2"]);
    let c = |n: &str| cs.iter().find(|x| x.name == format!("{p}-{n}")).unwrap();
    let lan = u.host("lan");
    let st = StateFile::new(p, &state(p, "bridge", true));
    let mut dep = Deployment::new(&bin());
    // n1: o1's veth, m1 and m1b's sub-interfaces; n2: o2's veth, m2's.
    for (n, macvlans) in [("n1", 2), ("n2", 1)] {
        let out = assert_ok(&dep.up(&st.0, &format!("{p}{n}"), &format!("{p}-{n}")));
        let made = UpSummary {
            on: "eth0".into(),
            changed: true,
            veths: (1, 0),
            macvlans: (macvlans, 0),
            links: (2, 0, 0),
            entries: (8, 0),
            verified: true,
        };
        assert_eq!(UpSummary::of(&out, &format!("{p}{n}")), made, "{out}");
    }

    // Each macvlan endpoint: a sub-interface of its host's eth0, in the
    // network's mode, with its address, the parent's MTU and a default route
    // via the gateway; no veth of ours on the host for it.
    let eth0 = link_json(c("m1"), "eth0").expect("m1 has eth0");
    assert_eq!(eth0["linkinfo"]["info_kind"], "macvlan", "{eth0}");
    assert_eq!(eth0["linkinfo"]["info_data"]["mode"], "bridge", "{eth0}");
    assert_eq!(eth0["mtu"], 1500, "the parent's MTU: {eth0}");
    assert_eq!(eth0["address"], "02:42:c0:a8:c8:83", "its MAC: {eth0}");
    let addr = c("m1").ip(&["-4", "-br", "addr", "show", "eth0"]);
    assert_eq!(addr.split_whitespace().nth(2), Some(&*format!("{M1}/24")), "{addr}");
    let route = c("m1").ip(&["route", "show", "default"]);
    assert_eq!(route.trim_end(), format!("default via {LAN} dev eth0 proto static"));
    assert_eq!(our_veths(u.host("n1")).len(), 1, "only o1 has a veth on n1");
    // `status` lists the host's sub-interfaces.
    let listed = status(&dep, p, "n1")["macvlans"].clone();
    let mut present: Vec<&str> = listed
        .as_array()
        .expect("status lists macvlans")
        .iter()
        .filter(|m| m["present"] == true && m["ifname"] == "eth0")
        .filter_map(|m| m["endpoint"].as_str())
        .collect();
    present.sort();
    assert_eq!(present, ["m1", "m1b"], "{listed}");
    // Not served by the resolver: no resolv.conf naming a gateway of ours.
    assert!(!std::path::Path::new(&format!("/etc/netns/{p}-m1/resolv.conf")).exists());
    assert!(std::path::Path::new(&format!("/etc/netns/{p}-o1/resolv.conf")).exists());

    // Across hosts and to the plain LAN machine, directly: plain frames from
    // m1's own MAC on the switch, and no VXLAN.
    let cap = Capture::start(&u.switch, "icmp or udp port 4789");
    assert!(pings(c("m1"), M2), "m1 -> m2 across hosts");
    let seen = cap.stop();
    let request = seen
        .lines()
        .find(|l| l.contains(&format!("{M1} > {M2}: ICMP echo request")))
        .unwrap_or_else(|| panic!("no echo request m1 -> m2 on the switch:\n{seen}"));
    assert!(request.contains(" 02:42:c0:a8:c8:83 > "), "not from m1's own MAC: {request}");
    assert!(!seen.contains(".4789"), "VXLAN on the wire:\n{seen}");
    assert!(pings(c("m1"), LAN), "m1 -> the LAN machine");
    assert!(pings(lan, M2), "the LAN machine -> m2");
    // Bridge mode: two sub-interfaces of one parent reach each other.
    assert!(pings(c("m1"), M1B), "m1 -> m1b on one host, bridge mode");
    // The overlay beside it.
    assert!(pings(c("o1"), "10.10.0.12"), "o1 -> o2 over the overlay");

    // Re-applied unchanged: nothing made again.
    let before = link_json(c("m1"), "eth0").unwrap()["ifindex"].clone();
    let out = assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    let same = UpSummary { on: "eth0".into(), changed: false, verified: false, ..Default::default() };
    assert_eq!(UpSummary::of(&out, &format!("{p}n1")), same, "{out}");
    assert_eq!(link_json(c("m1"), "eth0").unwrap()["ifindex"], before);

    // VEPA: between sub-interfaces of one parent, traffic goes out to the
    // switch, which sends it back only with hairpin on the port.
    let mode = |n: &str| link_json(c(n), "eth0").unwrap()["linkinfo"]["info_data"]["mode"].clone();
    let hairpin = |on: &str| u.switch.ip(&["link", "set", "dev", "p0", "type", "bridge_slave", "hairpin", on]);
    st.write(&state(p, "vepa", true));
    assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    assert_eq!((mode("m1"), mode("m1b")), ("vepa".into(), "vepa".into()));
    assert!(!pings(c("m1"), M1B), "m1 -> m1b in vepa mode, the switch not sending it back");
    hairpin("on");
    assert!(pings(c("m1"), M1B), "m1 -> m1b in vepa mode, through the switch's hairpin");

    // Private mode: the sub-interfaces of one parent never reach each
    // other, not even through the switch; the LAN and the other host do.
    st.write(&state(p, "private", true));
    assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    assert_eq!(mode("m1"), "private");
    assert!(!pings(c("m1"), M1B), "m1 -> m1b on one host in private mode (hairpin on)");
    assert!(pings(c("m1"), LAN), "m1 -> LAN in private mode");
    assert!(pings(c("m1"), M2), "m1 -> m2 in private mode");
    hairpin("off");

    // m1b moved to the overlay in place: its sub-interface goes first, and
    // a veth takes its name.
    let moved = state(p, "private", false).replace(
        "endpoints:\n",
        &format!("endpoints:\n  - {{name: m1b, host: {p}n1, network: front, netns: {p}-m1b, ip: 10.10.0.31}}\n"),
    );
    st.write(&moved);
    let out = assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    assert_eq!(UpSummary::of(&out, &format!("{p}n1")).macvlans, (0, 1), "{out}");
    assert_eq!(link_json(c("m1b"), "eth0").unwrap()["linkinfo"]["info_kind"], "veth");
    assert!(pings(c("m1b"), "10.10.0.11"), "m1b -> o1 on the overlay");
    // And back: the veth goes, a sub-interface takes its name.
    st.write(&state(p, "private", true));
    assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    assert_eq!(link_json(c("m1b"), "eth0").unwrap()["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(our_veths(u.host("n1")).len(), 1, "m1b's veth is gone");

    // An endpoint that leaves the state leaves no interface behind.
    st.write(&state(p, "private", false));
    assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    assert!(interfaces(c("m1b")).is_empty(), "{:?}", interfaces(c("m1b")));
    assert!(pings(c("m1"), M2));

    // Passthru: m1, now alone on n1's eth0, takes the parent over, with the
    // parent's MAC (setting another would change the parent's).
    st.write(&state(p, "passthru", false));
    assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    let eth0 = link_json(c("m1"), "eth0").unwrap();
    assert_eq!(eth0["linkinfo"]["info_data"]["mode"], "passthru", "{eth0}");
    assert_eq!(eth0["address"], link_json(u.host("n1"), "eth0").unwrap()["address"], "the parent's MAC");
    assert!(pings(c("m1"), M2), "m1 -> m2 with m1 in passthru mode");

    // `down` removes every sub-interface, and the record of them.
    for n in ["n1", "n2"] {
        let out = assert_ok(&dep.cmd(&format!("{p}{n}"), &format!("{p}-{n}")).arg("down").output().unwrap());
        // The XDP link, and o's TC link where there is TCX (6.6+); before
        // that, o's TC filter goes with its veth.
        let links = if overlay_bpf::host::loader::has_tcx() { 2 } else { 1 };
        let said = format!(
            "{p}{n}: down: {links} links detached, 1 veths removed, 1 macvlan sub-interfaces removed, pins at {} \
             removed\n",
            pins(p, n).display()
        );
        assert_eq!(out, said);
        assert!(!record(p, n).exists(), "{}", record(p, n).display());
    }
    for n in ["m1", "m1b", "m2"] {
        assert!(interfaces(c(n)).is_empty(), "{n}: {:?}", interfaces(c(n)));
    }
    drop(dep);
    drop(cs);
    drop(u);
}

#[test]
fn a_missing_parent_or_a_taken_name_is_refused_by_name_and_a_failed_apply_leaves_nothing() {
    require_root();
    let p = "obmx";
    let u = Underlay::new(p, &[("n1", N1.parse().unwrap())]);
    let cs = containers(p, &["m1", "m2"]);
    let host = format!("{p}n1");
    let y = |parent: &str, m2_mac: &str| {
        let mut y = format!("version: 1\nhosts:\n  - {{name: {host}, address: {N1}}}\nnetworks:\n");
        y += &format!(
            "  - {{name: lan, driver: macvlan, parent: {parent}, subnets: [{{subnet: 192.168.200.0/24, gateway: {LAN}}}]}}\n"
        );
        y += &format!("endpoints:\n  - {{name: m1, host: {host}, network: lan, netns: {p}-m1, ip: {M1}}}\n");
        y += &format!("  - {{name: m2, host: {host}, network: lan, netns: {p}-m2, ip: {M2}{m2_mac}}}\n");
        y
    };
    let st = StateFile::new(p, &y("eth7", ""));
    let mut dep = Deployment::new(&bin());
    let out = dep.up(&st.0, &host, &format!("{p}-n1"));
    assert!(!out.status.success(), "{}", text(&out));
    let refused = format!(
        "error: endpoint m1: the parent eth7 of macvlan network lan does not exist on host {host}; create it there, \
         or set the network's `parent` to a device that every host with its endpoints has (`ip link` lists them)"
    );
    assert_eq!(stderr_lines(&out), [refused]);
    // Refused before anything was touched.
    assert!(!pins(p, "n1").exists());
    assert!(interfaces(&cs[0]).is_empty() && interfaces(&cs[1]).is_empty());

    // The kernel refuses m2 (its MAC is the parent's own, which a bridge-mode
    // sub-interface cannot take) after m1's sub-interface was made: the
    // failed apply takes m1's away again.
    let parent_mac = link_json(u.host("n1"), "eth0").unwrap()["address"].as_str().unwrap().to_string();
    st.write(&y("eth0", &format!(", mac: \"{parent_mac}\"")));
    let out = dep.up(&st.0, &host, &format!("{p}-n1"));
    assert!(!out.status.success(), "{}", text(&out));
    let said = stderr_lines(&out);
    let said: Vec<&str> = said.iter().rev().take(2).rev().map(String::as_str).collect();
    let refused = format!(
        "error: endpoint m2: its macvlan sub-interface in /run/netns/{p}-m2: configure eth0: Received a netlink error \
         message Address already in use (os error 98)"
    );
    assert_eq!(said, [format!("{host}: failed: undoing what this run created").as_str(), refused.as_str()]);
    assert!(interfaces(&cs[0]).is_empty(), "m1 after the failed apply: {:?}", interfaces(&cs[0]));
    assert!(interfaces(&cs[1]).is_empty(), "m2 after the failed apply: {:?}", interfaces(&cs[1]));
    assert!(!record(p, "n1").exists());

    // An interface of the endpoint's name that overlay-bpf did not make is
    // not taken over: refused before anything is made.
    cs[0].ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "taken0"]);
    st.write(&y("eth0", ""));
    let out = dep.up(&st.0, &host, &format!("{p}-n1"));
    assert!(!out.status.success(), "{}", text(&out));
    let refused = format!(
        "error: endpoint m1: /run/netns/{p}-m1 already has an interface eth0 (veth) that overlay-bpf did not make; \
         remove it or give the endpoint another `ifname`"
    );
    assert_eq!(stderr_lines(&out), [refused]);
    assert!(interfaces(&cs[1]).is_empty(), "m2: {:?}", interfaces(&cs[1]));
    drop(dep);
    drop(cs);
    drop(u);
}
