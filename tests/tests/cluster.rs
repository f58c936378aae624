//! Namespace clusters driven through the real `overlay-bpf` binary: hosts as
//! namespaces on an underlay bridge, containers as namespaces. Each test has
//! its own name prefix, and guards remove everything it made, also on failure.

mod common;

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

#[test]
fn up_status_reapply_and_down_on_three_hosts() {
    require_root();
    let p = "obta";
    let eps = [
        ("web1", "n1", "front", "10.10.0.3"),
        ("db1", "n1", "back", "10.20.0.9"),
        ("web2", "n2", "front", "10.10.0.4"),
        ("web3", "n3", "front", "10.10.0.5"),
    ];
    let st = StateFile::new(p, &state(p, &eps, 3));
    let u = underlay(p, 3);
    let cs = containers(p, &["web1", "db1", "web2", "web3"]);
    let mut dep = Deployment::new(&bin());
    for (h, veths, links, entries) in [("n1", 2, 3, 14), ("n2", 1, 2, 12), ("n3", 1, 2, 12)] {
        let host = format!("{p}{h}");
        let out = assert_ok(&dep.up(&st.0, &host, &format!("{p}-{h}")));
        let made = UpSummary {
            on: "eth0".into(),
            changed: true,
            veths: (veths, 0),
            links: (links, 0, 0),
            entries: (entries, 0),
            verified: true,
            ..Default::default()
        };
        assert_eq!(UpSummary::of(&out, &host), made, "{out}");
    }

    // Pins: every map, the underlay's link and one TC link per local endpoint.
    for m in overlay_common::ALL_MAPS {
        assert!(pins(p, "n1").join("maps").join(m).exists(), "map {m} not pinned");
    }
    let s1 = status(&dep, p, "n1");
    let links = link_ids(&s1);
    assert_eq!(links.len(), 3, "{links:?}");
    assert!(links.iter().any(|(n, _)| n == UNDERLAY_LINK), "{links:?}");
    assert!(s1["links"].as_array().unwrap().iter().all(|l| l["attached"] == true));
    assert_eq!(map_entries(&s1, "OB_ENDPOINTS_V1"), 4);
    assert_eq!(map_entries(&s1, overlay_common::MAP_IFACES), 2);
    assert_eq!(map_entries(&s1, "OB_VTEPS_V2"), 3);
    assert_eq!(map_entries(&s1, "OB_NETWORKS_V1"), 2);

    // The kernel sees our program at TC ingress of the underlay (no XDP: the
    // default data path on a veth), and our veths in the host namespace.
    let n1 = u.host("n1");
    assert_eq!(hooks_on(n1, "eth0"), (false, true), "(XDP, TC) on eth0");
    assert_eq!(our_veths(n1).len(), 2);

    // bpftool prints named fields from BTF.
    let dump = bpftool_dump(&pins(p, "n1").join("maps/OB_ENDPOINTS_V1"));
    let entries = dump.as_array().unwrap();
    assert_eq!(entries.len(), 4);
    let web1 = entries.iter().find(|e| e["key"]["ip"] == serde_json::json!([10, 10, 0, 3])).expect("web1 in the map");
    assert_eq!(web1["key"]["vni"], 5001);
    assert_eq!(web1["value"]["mac"], serde_json::json!([2, 66, 10, 10, 0, 3]));
    assert_eq!(web1["value"]["vtep"], serde_json::json!([192, 168, 200, 11]));
    assert_eq!(web1["value"]["flags"], 1);

    // The container side: address, MAC, MTU, default route via the gateway.
    let web1_ns = &cs[0];
    let c = link_json(web1_ns, "eth0").expect("eth0 in web1");
    assert_eq!(c["address"], "02:42:0a:0a:00:03");
    assert_eq!(c["mtu"], 1450);
    let addrs = json(&web1_ns.ip(&["-j", "-4", "addr", "show", "dev", "eth0"]));
    assert_eq!(addrs[0]["addr_info"][0]["local"], "10.10.0.3");
    assert_eq!(addrs[0]["addr_info"][0]["prefixlen"], 24);
    let route = json(&web1_ns.ip(&["-j", "route", "show", "default"]));
    assert_eq!(route[0]["gateway"], "10.10.0.1");
    assert_eq!(link_json(&cs[1], "eth0").unwrap()["mtu"], 1400, "the network's own MTU");

    // Traffic is counted by outcome.
    let _ = web1_ns.run("ping", &["-c", "2", "-i", "0.2", "-W", "1", "10.10.0.1"]);
    let n2 = u.host("n2");
    assert!(n2.run("ping", &["-c", "1", "-W", "2", "192.168.200.11"]).status.success(), "underlay ping n2 -> n1");
    assert!(n2.run("bash", &["-c", "echo x > /dev/udp/192.168.200.11/4789"]).status.success());
    let s1 = status(&dep, p, "n1");
    assert!(counter(&s1, "tc_endpoint_egress", "arp_replied") >= 1, "the gateway's ARP is answered: {s1}");
    assert!(counter(&s1, UNDERLAY, "pass_not_ours") >= 1, "{s1}");
    assert!(counter(&s1, UNDERLAY, "drop_malformed") >= 1, "a 2-byte 'VXLAN' payload is malformed: {s1}");

    // Running up again with the same file changes nothing.
    let before = bpftool_dump(&pins(p, "n1").join("maps/OB_ENDPOINTS_V1"));
    let out = assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    let same = UpSummary { on: "eth0".into(), changed: false, verified: false, ..Default::default() };
    assert_eq!(UpSummary::of(&out, &format!("{p}n1")), same, "nothing changed, and nothing verified again");
    assert_eq!(link_ids(&status(&dep, p, "n1")), links, "the same links stay attached");
    assert_eq!(bpftool_dump(&pins(p, "n1").join("maps/OB_ENDPOINTS_V1")), before);
    // ...nor in the container: its neighbour entries stay (setting its MAC
    // again, even the same one, would flush them, and lose any reply that was
    // waiting there for its ARP answer).
    let gateway_neigh = web1_ns.ip(&["neigh", "show", "10.10.0.1"]);
    let lladdr = gateway_neigh.split_whitespace().skip_while(|w| *w != "lladdr").nth(1);
    assert_eq!(
        lladdr,
        Some("02:42:0a:0a:00:01"),
        "the ping to the gateway left its neighbour entry: {gateway_neigh:?}"
    );

    // down removes everything up made on that host, and only there.
    assert_ok(&dep.cmd(&format!("{p}n1"), &format!("{p}-n1")).arg("down").output().unwrap());
    assert!(!pins(p, "n1").exists(), "pins left behind");
    assert!(our_veths(n1).is_empty(), "veths left behind");
    assert_eq!(hooks_on(n1, "eth0"), (false, false), "a program left on eth0");
    assert!(link_json(web1_ns, "eth0").is_none(), "the container end went with the pair");
    assert!(pins(p, "n2").exists());
    // down twice is fine.
    let again = assert_ok(&dep.cmd(&format!("{p}n1"), &format!("{p}-n1")).arg("down").output().unwrap());
    assert_eq!(again, format!("{p}n1: nothing to take down at {}\n", pins(p, "n1").display()));
    drop(dep);
    drop(cs);
    drop(u);
}

#[test]
fn reapplying_a_changed_file_touches_only_the_difference() {
    require_root();
    let p = "obtb";
    let first =
        [("e1", "n1", "front", "10.10.0.3"), ("e2", "n1", "front", "10.10.0.4"), ("e3", "n2", "front", "10.10.0.5")];
    let st = StateFile::new(p, &state(p, &first, 2));
    let u = underlay(p, 3);
    let cs = containers(p, &["e1", "e2", "e3", "e4"]);
    let mut dep = Deployment::new(&bin());
    assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    let before = link_ids(&status(&dep, p, "n1"));

    // e2 leaves, e4 joins on n1 (with a new IP), and a third host appears.
    let second =
        [("e1", "n1", "front", "10.10.0.3"), ("e3", "n2", "front", "10.10.0.5"), ("e4", "n1", "back", "10.20.0.4")];
    st.write(&state(p, &second, 3));
    let out = assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    assert_eq!(UpSummary::of(&out, &format!("{p}n1")).veths, (1, 1), "{out}");
    let after = link_ids(&status(&dep, p, "n1"));
    // Links that stay keep their IDs: nothing was detached and re-attached.
    for (name, id) in &before {
        if let Some((_, id2)) = after.iter().find(|(n, _)| n == name) {
            assert_eq!(id, id2, "{name} was re-attached");
        }
    }
    assert_eq!(after.len(), before.len(), "one TC link removed, one added: {before:?} -> {after:?}");
    assert!(link_json(&cs[1], "eth0").is_none(), "e2's interface is gone");
    assert_eq!(json(&cs[3].ip(&["-j", "-4", "addr", "show", "dev", "eth0"]))[0]["addr_info"][0]["local"], "10.20.0.4");
    let dump = bpftool_dump(&pins(p, "n1").join("maps/OB_ENDPOINTS_V1"));
    let ips: Vec<Value> = dump.as_array().unwrap().iter().map(|e| e["key"]["ip"].clone()).collect();
    assert!(
        ips.contains(&serde_json::json!([10, 20, 0, 4])) && !ips.contains(&serde_json::json!([10, 10, 0, 4])),
        "{ips:?}"
    );
    assert_eq!(bpftool_dump(&pins(p, "n1").join("maps/OB_VTEPS_V2")).as_array().unwrap().len(), 3);

    // An endpoint's IP changes: its container gets exactly the new address.
    let third =
        [("e1", "n1", "front", "10.10.0.33"), ("e3", "n2", "front", "10.10.0.5"), ("e4", "n1", "back", "10.20.0.4")];
    st.write(&state(p, &third, 3));
    assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    let a = json(&cs[0].ip(&["-j", "-4", "addr", "show", "dev", "eth0"]));
    let locals: Vec<&Value> = a[0]["addr_info"].as_array().unwrap().iter().map(|i| &i["local"]).collect();
    assert_eq!(locals, vec!["10.10.0.33"]);
    drop(dep);
    drop(cs);
    drop(u);
}

/// A host's namespace deleted without `down` leaves its pins, links
/// included, attached to a device that no longer exists. The host rebuilt
/// under the same name must attach afresh, not keep those dead links.
#[test]
fn a_host_rebuilt_under_its_old_pins_attaches_afresh() {
    require_root();
    let p = "obtr";
    let eps = [("e1", "n1", "front", "10.10.0.3"), ("e2", "n2", "front", "10.10.0.4")];
    let st = StateFile::new(p, &state(p, &eps, 2));
    // No `down` can run once the namespaces are gone: the resolv.conf files
    // `up` wrote for them go by name.
    struct NetnsEtc(&'static str);
    impl Drop for NetnsEtc {
        fn drop(&mut self) {
            for c in ["e1", "e2"] {
                let _ = std::fs::remove_dir_all(format!("/etc/netns/{}-{c}", self.0));
            }
        }
    }
    let _etc = NetnsEtc(p);
    let mut dep = Deployment::new(&bin());
    // The kernel tears a deleted namespace down later, in a worker: until
    // then its devices live on with their indexes, which the devices of the
    // new namespaces reuse. Holding the old namespaces open makes that window
    // last the whole round (a CI run once hit it by chance).
    let mut held = Vec::new();
    for round in 0..2 {
        let u = underlay(p, 2);
        let cs = containers(p, &["e1", "e2"]);
        for h in ["n1", "n2"] {
            let out = assert_ok(&dep.up(&st.0, &format!("{p}{h}"), &format!("{p}-{h}")));
            if round == 1 {
                let links = UpSummary::of(&out, &format!("{p}{h}")).links;
                assert_eq!(links, (2, 0, 0), "the dead links are replaced: {out}");
            }
        }
        let s1 = status(&dep, p, "n1");
        assert!(s1["links"].as_array().unwrap().iter().all(|l| l["attached"] == true), "{s1}");
        assert_eq!(hooks_on(u.host("n1"), "eth0"), (false, true), "round {round}: (XDP, TC) on eth0");
        let ping = cs[0].run("ping", &["-c", "2", "-i", "0.2", "-W", "2", "10.10.0.4"]);
        assert!(ping.status.success(), "round {round}: e1 -> e2 across hosts: {}", text(&ping));
        // The end of the round deletes every namespace, and no `down` runs.
        for e in std::fs::read_dir("/run/netns").unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with(p) {
                held.push(std::fs::File::open(e.path()).unwrap());
            }
        }
        drop(cs);
        drop(u);
        assert!(underlay_pinned(&pins(p, "n1")));
    }
    drop(dep);
}

#[test]
fn a_bad_state_is_rejected_and_nothing_is_applied() {
    require_root();
    let p = "obtc";
    let good = state(p, &[("e1", "n1", "front", "10.10.0.3")], 2);
    // Two endpoints claim one address.
    let bad = state(p, &[("e1", "n1", "front", "10.10.0.3"), ("e2", "n1", "front", "10.10.0.3")], 2);
    let st = StateFile::new(p, &bad);
    let u = underlay(p, 2);
    let _cs = containers(p, &["e1", "e2"]);
    let mut dep = Deployment::new(&bin());
    let o = dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let path = st.0.display();
    let refused = [
        format!("error: {path}: endpoints[1] (e2): duplicate address 10.10.0.3: already used by endpoint e1"),
        format!("{path}: endpoints[1] (e2): duplicate MAC 02:42:0a:0a:00:03: endpoints[0] (e1) already has it"),
    ];
    assert_eq!(stderr_lines(&o), refused);
    assert!(!pins(p, "n1").exists(), "pins made for a rejected state");
    assert!(our_veths(u.host("n1")).is_empty());

    // With a good state applied, a bad one changes nothing.
    st.write(&good);
    assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    let before = bpftool_dump(&pins(p, "n1").join("maps/OB_ENDPOINTS_V1"));
    let links = link_ids(&status(&dep, p, "n1"));
    st.write(&bad);
    let o = dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(bpftool_dump(&pins(p, "n1").join("maps/OB_ENDPOINTS_V1")), before);
    assert_eq!(link_ids(&status(&dep, p, "n1")), links);

    // validate says the same, and exits 1.
    let o = Command::new(bin()).args(["validate", "--state"]).arg(&st.0).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr_lines(&o), refused);
}

#[test]
fn a_failure_half_way_is_rolled_back() {
    require_root();
    let p = "obtd";
    let st = StateFile::new(p, &state(p, &[("e1", "n1", "front", "10.10.0.3"), ("e2", "n1", "front", "10.10.0.4")], 1));
    let u = underlay(p, 1);
    let cs = containers(p, &["e1", "e2"]);
    // Something else already owns eth0 inside e2's namespace.
    cs[1].ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "x0"]);
    let mut dep = Deployment::new(&bin());
    let o = dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1"));
    assert_eq!(o.status.code(), Some(2), "a kernel refusal is a system error: {}", text(&o));
    assert_eq!(
        stderr_lines(&o).last().map(String::as_str),
        Some(
            "error: create veth obb539ba36 with peer eth0 in /run/netns/obtd-e2 (is eth0 already used there?): \
             Received a netlink error message File exists (os error 17)"
        ),
        "{}",
        text(&o)
    );
    assert!(!pins(p, "n1").exists(), "pins left by a failed first up");
    assert!(our_veths(u.host("n1")).is_empty(), "e1's veth was not rolled back");
    assert!(link_json(&cs[0], "eth0").is_none());
    assert_eq!(hooks_on(u.host("n1"), "eth0"), (false, false));
}

#[test]
fn user_errors_exit_1_and_name_the_fix() {
    require_root();
    let p = "obte";
    let st = StateFile::new(p, &state(p, &[("e1", "n1", "front", "10.10.0.3")], 1));
    let _u = underlay(p, 1);
    let dep = Deployment::new(&bin());
    // Unknown host.
    let o = Command::new(bin()).args(["up", "--host", "nope", "--state"]).arg(&st.0).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&o),
        [format!("error: unknown host \"nope\"; the state file defines: {p}n1")],
        "{}",
        text(&o)
    );
    // The endpoint's namespace does not exist (not created in this test).
    let o = dep.cmd(&format!("{p}n1"), &format!("{p}-n1")).arg("up").arg("--state").arg(&st.0).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        stderr_lines(&o),
        [format!(
            "error: endpoint e1: network namespace /run/netns/{p}-e1 does not exist; create it (`ip netns add NAME`) \
             or fix `netns`"
        )],
        "{}",
        text(&o)
    );
    assert!(!pins(p, "n1").exists());
    // --netns that does not exist.
    let o = Command::new(bin()).args(["--netns", "obte-missing", "up", "--state"]).arg(&st.0).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr_lines(&o), ["error: --netns obte-missing: /run/netns/obte-missing does not exist (create it with `ip netns add obte-missing`)"], "{}", text(&o));
    // The host is picked by its address when --host is not given.
    let o = Command::new(bin()).args(["--netns", "obte-n1", "status", "--state"]).arg(&st.0).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&o),
        [format!("error: host {p}n1 is not up: no pins at {} (run `overlay-bpf up`)", pins(p, "n1").display())],
        "{}",
        text(&o)
    );
}

#[test]
fn the_agent_applies_reapplies_on_change_and_leaves_the_data_path_on_exit() {
    require_root();
    let p = "obtf";
    let st = StateFile::new(p, &state(p, &[("e1", "n1", "front", "10.10.0.3")], 1));
    let u = underlay(p, 1);
    let _cs = containers(p, &["e1", "e2"]);
    let mut dep = Deployment::new(&bin());
    dep.track(&format!("{p}n1"), &format!("{p}-n1"));
    let mut agent = dep
        .cmd(&format!("{p}n1"), &format!("{p}-n1"))
        .args(["agent", "--interval", "1", "--dns-upstream", "127.0.0.1:5399", "--state"])
        .arg(&st.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _guard = Kill(agent.id());
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !f() {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "timed out waiting for {what}: veths {:?}",
                our_veths(u.host("n1"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("the first apply", &|| our_veths(u.host("n1")).len() == 1);
    st.write(&state(p, &[("e1", "n1", "front", "10.10.0.3"), ("e2", "n1", "front", "10.10.0.4")], 1));
    wait_for("the re-apply", &|| our_veths(u.host("n1")).len() == 2);
    // SIGTERM: the agent exits 0 and the pinned data path stays.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    assert!(status.success(), "agent exit: {status}");
    assert!(underlay_pinned(&pins(p, "n1")));
    assert_eq!(our_veths(u.host("n1")).len(), 2);
}

#[test]
fn pin_dir_moves_every_pin_and_must_be_on_bpffs() {
    require_root();
    let p = "obtg";
    let st = StateFile::new(p, &state(p, &[("e1", "n1", "front", "10.10.0.3")], 1));
    let u = underlay(p, 1);
    let _cs = containers(p, &["e1"]);
    let custom = PathBuf::from(format!("/sys/fs/bpf/{p}-custom"));
    struct RmDir(PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
            remove_host_lock(&self.0);
        }
    }
    let _rm = RmDir(custom.clone());
    let dep = Deployment::new(&bin());
    let with_pins = |args: &[&str]| {
        dep.cmd(&format!("{p}n1"), &format!("{p}-n1"))
            .arg("--pin-dir")
            .arg(&custom)
            .args(args)
            .arg("--state")
            .arg(&st.0)
            .output()
            .unwrap()
    };
    assert_ok(&with_pins(&["up"]));
    assert!(custom.join("maps/OB_ENDPOINTS_V1").exists() && underlay_pinned(&custom));
    assert!(!pins(p, "n1").exists(), "nothing under the default pin dir");
    let st_json = json(&assert_ok(&with_pins(&["status", "-o", "json"])));
    assert_eq!(st_json["pin_dir"], custom.display().to_string());
    assert_ok(&with_pins(&["down"]));
    assert!(!custom.exists());
    assert!(our_veths(u.host("n1")).is_empty());

    // A pin dir outside bpffs cannot hold pins: refused before anything is made.
    let tmp = std::env::temp_dir().join(format!("{p}-not-bpffs"));
    let _rm2 = RmDir(tmp.clone());
    let o = dep
        .cmd(&format!("{p}n1"), &format!("{p}-n1"))
        .arg("--pin-dir")
        .arg(&tmp)
        .arg("up")
        .arg("--state")
        .arg(&st.0)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        stderr_lines(&o),
        [format!(
            "error: {} is not on a bpffs mount; pins must live on bpffs (use a --pin-dir under /sys/fs/bpf)",
            tmp.display()
        )],
        "{}",
        text(&o)
    );
    assert!(our_veths(u.host("n1")).is_empty() && !tmp.exists());
}

#[test]
fn bad_state_files_exit_1_with_the_named_error_from_every_command() {
    let p = "obtv";
    let good = state(p, &[("e1", "n1", "front", "10.10.0.3")], 1);
    let st = StateFile::new(p, &good);
    // (what, file contents, the one line stderr must be after "error: FILE: ")
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed YAML", b"version: 1\nhosts: [\n".to_vec(), "line 3 column 1: did not find expected node content"),
        (
            "wrong type",
            good.replace("vxlan_port: 4789", "vxlan_port: [1]").into_bytes(),
            "line 2 column 23: cluster.vxlan_port: invalid type: sequence, expected u16",
        ),
        (
            "unknown key",
            format!("{good}colour: blue\n").into_bytes(),
            "line 10 column 1: unknown field `colour` in document; docs/state-file.md lists the fields",
        ),
        (
            "non-UTF-8",
            b"version: 1\nhosts: \xff\xfe\n".to_vec(),
            "byte 18: the file is not valid UTF-8; save it as UTF-8",
        ),
        ("empty", b"\n".to_vec(), "file: is empty; it needs at least `version: 1`"),
        ("huge", vec![b'#'; (16 << 20) + 1], "file: is 16777217 bytes; state files are limited to 16777216 bytes"),
        (
            "a rule (VNI 0)",
            good.replace("vni: 5001", "vni: 0").into_bytes(),
            "networks[0] (front): vni 0 is outside 1..16777215",
        ),
        (
            "a rule (unknown host)",
            good.replace(&format!("host: {p}n1"), "host: nowhere").into_bytes(),
            "endpoints[0] (e1): host \"nowhere\" does not exist; define it under `hosts:`",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, bytes, said) in &cases {
        std::fs::write(&st.0, bytes).unwrap();
        let want = [format!("error: {}: {said}", st.0.display())];
        for cmd in [&["validate"][..], &["up", "--host", &format!("{p}n1")][..]] {
            let o = Command::new(bin()).args(cmd).arg("--state").arg(&st.0).output().unwrap();
            if o.status.code() != Some(1) || stderr_lines(&o) != want {
                wrong.push(format!("{what} ({}): exit {:?}, stderr: {:?}", cmd[0], o.status.code(), stderr_lines(&o)));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {}:\n{}", wrong.len(), cases.len() * 2, wrong.join("\n"));
    assert!(!pins(p, "n1").exists(), "nothing was applied");
}

#[test]
fn a_state_beyond_a_map_limit_is_refused_whole() {
    require_root();
    let p = "obtl";
    let st = StateFile::new(p, &state(p, &[("e1", "n1", "front", "10.10.0.3")], 2));
    let _u = underlay(p, 2);
    let _cs = containers(p, &["e1"]);
    let mut dep = Deployment::new(&bin());
    assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    let endpoints = bpftool_dump(&pins(p, "n1").join("maps/OB_ENDPOINTS_V1"));
    let links = link_ids(&status(&dep, p, "n1"));
    // 17 backends on n2 and 272 published services over distinct ordered
    // pairs of them: 272 Maglev tables, where the map holds 256.
    let names: Vec<String> = (0..17).map(|i| format!("r{i}")).collect();
    let ips: Vec<String> = (0..17).map(|i| format!("10.10.0.{}", 100 + i)).collect();
    let mut eps: Vec<(&str, &str, &str, &str)> = vec![("e1", "n1", "front", "10.10.0.3")];
    eps.extend(names.iter().zip(&ips).map(|(n, ip)| (n.as_str(), "n2", "front", ip.as_str())));
    // A /16, so the 272 VIPs fit.
    let mut y = state(p, &eps, 2).replace("10.10.0.0/24", "10.10.0.0/16") + "services:\n";
    let mut k = 0;
    for i in 0..17 {
        for j in (0..17).filter(|&j| j != i) {
            y += &format!(
                "  - {{name: s{k}, network: front, ports: [{{protocol: tcp, target: 80, published: {}}}], backends: [r{i}, r{j}]}}\n",
                20000 + k
            );
            k += 1;
        }
    }
    st.write(&y);
    let o = dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        stderr_lines(&o),
        ["error: map OB_MAGLEV_V1 would hold 272 entries but its limit is 256; nothing was applied. A map's size is \
             set when `up` creates it (twice what the state needs then, at least its default) and a live map cannot \
             grow: reduce the state (for OB_MAGLEV_V1: services with the same backend list share one table), or take \
             the host down and up again (`overlay-bpf down`, then `up`: a break in traffic) to create it larger"],
        "{err}"
    );
    // Nothing of it applied: the maps and links are as they were.
    assert_eq!(bpftool_dump(&pins(p, "n1").join("maps/OB_ENDPOINTS_V1")), endpoints);
    assert_eq!(link_ids(&status(&dep, p, "n1")), links);
    assert_eq!(map_entries(&status(&dep, p, "n1"), "OB_SERVICES_V3"), 0);
}
