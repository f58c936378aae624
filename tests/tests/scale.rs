//! Maps sized from the state: a host whose network has 100,000 endpoints,
//! past the endpoints map's default of 65,536, gets a map created twice as
//! large as it needs (a power of two), keeps it on the next `up`, and the
//! endpoints of networks it has nothing on stay out of its maps.

mod common;

use common::*;

#[test]
fn maps_are_sized_from_the_state_when_created() {
    require_root();
    let p = "obsz";
    let _u = underlay(p, 2);
    let cs = containers(p, &["a1"]);
    let mut y = String::from("version: 1\nhosts:\n");
    y += &format!("  - {{name: {p}n1, address: 192.168.200.11}}\n  - {{name: {p}n2, address: 192.168.200.12}}\n");
    y += "networks:\n  - {name: big, attachable: true, subnets: [{subnet: 10.64.0.0/14}]}\n";
    y += "  - {name: elsewhere, attachable: true, subnets: [{subnet: 10.70.0.0/16}]}\nendpoints:\n";
    y += &format!("  - {{name: a1, host: {p}n1, network: big, netns: {p}-a1, ip: 10.64.0.2}}\n");
    for i in 0..100_000u32 {
        let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 64, 0, 10)) + i);
        y += &format!("  - {{name: e{i}, host: {p}n2, network: big, netns: x{i}, ip: {ip}}}\n");
    }
    for i in 0..1000u32 {
        y += &format!("  - {{name: o{i}, host: {p}n2, network: elsewhere, netns: o{i}}}\n");
    }
    let st = StateFile::new(p, &y);
    let mut dep = Deployment::new(&bin());
    let out = assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    assert!(out.contains("100001 map entries written") || out.contains("map entries written"), "{out}");
    let s = status(&dep, p, "n1");
    let endpoints = s["maps"].as_array().unwrap().iter().find(|m| m["name"] == "OB_ENDPOINTS_V1").unwrap().clone();
    // 100,001 endpoints of `big`, none of `elsewhere` (nothing of it on n1).
    assert_eq!(endpoints["entries"], 100_001, "{endpoints}");
    assert_eq!(endpoints["max_entries"], 262_144, "twice the need, a power of two: {endpoints}");
    assert_eq!(map_entries(&s, "OB_SUBNETS_V1"), 2, "every subnet, though");
    // The next `up` keeps the map (and its size), changing nothing.
    let out = assert_ok(&dep.up(&st.0, &format!("{p}n1"), &format!("{p}-n1")));
    assert!(out.contains("nothing changed"), "{out}");
    drop(cs);
}
