//! Upgrades in place: hosts run the previous release (its own `overlay-bpf`,
//! built from commit 4faeb4b by `cargo xtask test` into target/previous/,
//! XDP on the underlay), then `up` with this build replaces every endpoint's
//! program in one step (link update) and moves the underlay to the default
//! data path (TC on a veth: attached before the XDP link goes), under a
//! steady ping and TCP connections open through a VIP and through the
//! routing mesh. Nothing is lost (bar at most one ping per host that the
//! kernel frees from the veth's XDP ring as XDP leaves it): every
//! connection carries on with its connection-table entries, the endpoints'
//! links stay, the maps `up` fills whose layout this release changed are
//! filled anew before the new programs run, the connection table's entries
//! are converted into its new layout (`OB_CT_V1` -> `OB_CT_V2`), and then
//! the old maps are retired.

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

/// What a connection-table entry says about its flow, in either layout.
type Flow = (([u8; 4], [u8; 4], u16, u16, u8), (u8, [u8; 4], u16, [u8; 4], u32, u32));

/// Host `h`'s connection table: the previous release's (`OB_CT_V1`) or
/// this one's, entry by entry.
fn ct_entries(h: &str) -> std::collections::BTreeSet<Flow> {
    use aya::maps::{HashMap, Map, MapData};
    use overlay_bpf::host::convert::CtValueV1;
    use overlay_common::{CtKey, CtValue, MAP_CT};
    let open = |name: &str| {
        let path = pins(P, h).join("maps").join(name);
        path.exists().then(|| Map::from_map_data(MapData::from_pin(path).unwrap()).unwrap())
    };
    let key = |k: CtKey| (k.src, k.dst, k.sport, k.dport, k.proto);
    if let Some(m) = open("OB_CT_V1") {
        let m: HashMap<MapData, CtKey, CtValueV1> = HashMap::try_from(m).unwrap();
        return m
            .iter()
            .map(|e| e.unwrap())
            .map(|(k, v)| (key(k), (v.action, v.new_dst, v.new_dport, v.vtep, v.vni, v.service_id)))
            .collect();
    }
    let m: HashMap<MapData, CtKey, CtValue> = HashMap::try_from(open(MAP_CT).expect("a connection table")).unwrap();
    m.iter()
        .map(|e| e.unwrap())
        .map(|(k, v)| (key(k), (v.action, v.new_dst, v.new_dport, v.vtep, v.vni, v.service_id)))
        .collect()
}

/// The maps whose layout this release changed (4faeb4b's names, this one's).
const CHANGED: [(&str, &str); 5] = [
    ("OB_CT_V1", "OB_CT_V2"),
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
    let mut u = underlay_wire_like(P, 3);
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
    // The entries the connections made, on both hosts.
    let ct_before: Vec<_> = hosts.iter().map(|h| ct_entries(h)).collect();
    assert!(ct_before.iter().all(|c| !c.is_empty()), "{ct_before:?}");
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

    // This build's `up`: every endpoint's program replaced, the underlay
    // moved from XDP to TC, the changed maps anew.
    let out: Vec<String> = hosts.iter().map(|h| up(&mut dep, h)).collect();
    // The entries written: those of the four maps of a new layout (config
    // 1, hosts 3, the VIP and the published port 2, the backend 1), and
    // echo's Maglev table again (16381 slots, the same values): the table is
    // read through the services that point into it, and the new services
    // map starts empty.
    // Links: the underlay's TC program attached (before TCX, a filter,
    // which counts as one), the endpoints' replaced, the underlay's XDP
    // link removed.
    for (o, (h, links, entries)) in out.iter().zip([("n1", 1, 16388), ("n2", 2, 16388)]) {
        let upgraded = UpSummary {
            on: "eth0".into(),
            changed: true,
            links: (1, links, 1),
            entries: (entries, 0),
            verified: true,
            ..Default::default()
        };
        assert_eq!(UpSummary::of(o, &format!("{P}{h}")), upgraded, "{o}");
    }
    for (i, h) in hosts.iter().enumerate() {
        let after = programs(&dep, h);
        let under = |v: &[(String, Option<u64>, u64)]| v.iter().filter(|l| l.0.ends_with("@eth0")).count();
        assert_eq!(under(&before[i]), 1, "{h}: {:?}", before[i]);
        assert!(before[i].iter().any(|l| l.0 == "xdp@eth0"), "{h}: {:?}", before[i]);
        assert!(after.iter().any(|l| l.0 == "tc@eth0") && under(&after) == 1, "{h}: now TC, not XDP: {after:?}");
        let endpoints = |v: &[(String, Option<u64>, u64)]| -> Vec<(String, Option<u64>, u64)> {
            v.iter().filter(|l| !l.0.ends_with("@eth0")).cloned().collect()
        };
        let (eb, ea) = (endpoints(&before[i]), endpoints(&after));
        assert_eq!(ea.len(), eb.len(), "{h}: {after:?}");
        for (b, a) in eb.iter().zip(&ea) {
            assert_eq!((&b.0, b.1), (&a.0, a.1), "{h}: the same link, kept");
            assert_ne!(b.2, a.2, "{h}: {} runs a new program", a.0);
        }
        let maps = pinned_maps(h);
        for (old, new) in CHANGED {
            assert!(!maps.contains(&old.to_string()) && maps.contains(&new.to_string()), "{h}: {maps:?}");
        }
        // The connection table's new layout holds every entry of the old
        // one, converted: the flows' backends, hosts and services.
        let now = ct_entries(h);
        assert!(
            ct_before[i].is_subset(&now),
            "{h}: entries lost in the conversion: {:?}",
            ct_before[i].difference(&now)
        );
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
    // Each host's veth lost its XDP program.
    assert_lost_only_to_xdp_removals(sent, got, hosts.len() as u64, "the upgrade");

    // Once upgraded, `up` keeps what runs.
    let now: Vec<_> = hosts.iter().map(|h| programs(&dep, h)).collect();
    for h in hosts {
        let o = up(&mut dep, h);
        let same = UpSummary { on: "eth0".into(), changed: false, verified: false, ..Default::default() };
        assert_eq!(UpSummary::of(&o, &format!("{P}{h}")), same, "{o}");
    }
    assert_eq!(now, hosts.iter().map(|h| programs(&dep, h)).collect::<Vec<_>>());
}

#[test]
fn a_connection_table_of_another_layout_is_carried_entry_by_entry() {
    use aya::maps::{HashMap, Map, MapData};
    use overlay_bpf::host::{convert, convert::CtValueV1, pins::Pins};
    use overlay_common::{CtKey, CtValue, CT_DNAT, CT_F_CARRIED, CT_REVNAT, MAP_CT};

    require_root();
    let pins = Pins::new(std::path::Path::new("/sys/fs/bpf/overlay-bpf").join("obuc-carry"));
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(pins.dir.clone());
    std::fs::create_dir_all(pins.maps_dir()).unwrap();
    let create = |name: &str, value: usize| {
        must(std::process::Command::new("bpftool").args(["map", "create"]).arg(pins.map(name)).args([
            "type",
            "lru_hash",
            "key",
            "16",
            "value",
            &value.to_string(),
            "entries",
            "64",
            "name",
            name,
        ]))
    };
    create("OB_CT_V1", std::mem::size_of::<CtValueV1>());
    create(MAP_CT, std::mem::size_of::<CtValue>());
    let open = |name: &str| Map::from_map_data(MapData::from_pin(pins.map(name)).unwrap()).unwrap();
    let mut old: HashMap<MapData, CtKey, CtValueV1> = HashMap::try_from(open("OB_CT_V1")).unwrap();
    let mut new: HashMap<MapData, CtKey, CtValue> = HashMap::try_from(open(MAP_CT)).unwrap();
    let key = |port: u16| CtKey {
        src: [10, 10, 0, 11],
        dst: [10, 10, 0, 100],
        sport: port,
        dport: 80,
        proto: 6,
        _pad: [0; 3],
    };
    let v1 = |action: u8, backend: u8| CtValueV1 {
        action,
        new_dst: [10, 10, 0, backend],
        new_dport: 8080,
        vtep: [192, 168, 200, 12],
        vni: 4097,
        service_id: 7,
        last_seen_ns: 1_000 + backend as u64,
        ..Default::default()
    };
    // Three flows in the old table; a fourth entry of no known action; and
    // one of the three already in the new table, as a new program wrote it.
    for (port, action, backend) in [(40001, CT_DNAT, 21), (40002, CT_DNAT, 22), (40003, CT_REVNAT, 23), (40004, 0, 24)]
    {
        old.insert(key(port), v1(action, backend), 0).unwrap();
    }
    let newer = CtValue { action: CT_DNAT, new_dst: [10, 10, 0, 29], last_seen_ns: 5, ..Default::default() };
    new.insert(key(40002), newer, 0).unwrap();

    // This build's own conversion, as `up` runs it.
    let table = convert::CONVERSIONS;
    assert_eq!(convert::carry_other_versions(&pins, table).unwrap(), [("OB_CT_V1", 2)]);
    let mut held: Vec<(u16, u8, [u8; 4], u64)> =
        new.iter().map(|e| e.unwrap()).map(|(k, v)| (k.sport, v.action, v.new_dst, v.last_seen_ns)).collect();
    held.sort();
    assert_eq!(
        held,
        [
            (40001, CT_DNAT, [10, 10, 0, 21], 1_021),
            (40002, CT_DNAT, [10, 10, 0, 29], 5),
            (40003, CT_REVNAT, [10, 10, 0, 23], 1_023)
        ],
        "carried, the newer entry kept, the unknown one left behind"
    );
    let carried = new.get(&key(40001), 0).unwrap();
    assert_eq!(
        (carried.new_dport, carried.vtep, carried.vni, carried.service_id),
        (8080, [192, 168, 200, 12], 4097, 7)
    );
    // Nothing carried for the mesh yet: its next packet reads the maps.
    assert_eq!(carried.flags & CT_F_CARRIED, 0);
    assert_eq!((carried.mac, carried.ifindex, carried.carried_ns), ([0; 6], 0, 0));

    // A flow the old programs started after the first pass: the second
    // pass carries it alone.
    old.insert(key(40005), v1(CT_DNAT, 25), 0).unwrap();
    assert_eq!(convert::carry_other_versions(&pins, table).unwrap(), [("OB_CT_V1", 1)]);
    assert_eq!(new.get(&key(40005), 0).unwrap().new_dst, [10, 10, 0, 25]);
    // Without a conversion for it, nothing is carried.
    assert_eq!(convert::carry_other_versions(&pins, &[]).unwrap(), []);
}
