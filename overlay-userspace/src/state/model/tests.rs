use std::collections::BTreeSet;

use super::*;

/// The hosts and the ingress network every state here starts with, up to
/// the `uber-svc` network's name.
macro_rules! head {
    () => {
        r#"
version: 1
cluster: {vxlan_port: 4789, underlay_mtu: 1500}
hosts:
  - {name: node1, address: 192.168.246.194}
  - {name: node2, address: 192.168.246.195}
networks:
  - name: ingress
    ingress: true
    subnets: [{subnet: 10.255.0.0/16}]
  - name: uber-svc
"#
    };
}

const BASE: &str = concat!(
    head!(),
    r#"    subnets:
      - subnet: 10.0.0.0/24
        gateway: 10.0.0.1
        ip_range: 10.0.0.128/25
        aux_addresses: {my-router: 10.0.0.5}
    attachable: true
endpoints:
  - {name: web.1, host: node1, network: uber-svc, netns: web1, ip: 10.0.0.3}
  - {name: web.2, host: node2, network: uber-svc, netns: web2}
services:
  - name: web
    network: uber-svc
    ports: [{protocol: tcp, target: 80, published: 8080}]
    backends: [web.1, web.2]
"#
);

/// BASE with a macvlan network `lan` on the hosts' own LAN (their
/// addresses inside it) and an endpoint `m1` on it.
const MACVLAN_BASE: &str = concat!(
    head!(),
    r#"    subnets: [{subnet: 10.0.0.0/24}]
    attachable: true
  - name: lan
    driver: macvlan
    parent: eth0
    macvlan_mode: private
    subnets: [{subnet: 192.168.246.0/24, gateway: 192.168.246.1, ip_range: 192.168.246.192/27}]
endpoints:
  - {name: web.1, host: node1, network: uber-svc, netns: web1}
  - {name: m1, host: node1, network: lan, netns: m1}
  - {name: m2, host: node2, network: lan, netns: m2}
services:
  - name: web
    network: uber-svc
    ports: [{protocol: tcp, target: 80, published: 8080}]
    backends: [web.1]
"#
);

fn parse(yaml: &str) -> Result<Cluster, StateError> {
    let st = parse_state("test.yaml", yaml.as_bytes())?;
    resolve("test.yaml", &st, Capabilities::default())
}

fn ok(yaml: &str) -> Cluster {
    parse(yaml).unwrap_or_else(|e| panic!("expected a valid state, got:\n{e}"))
}

/// BASE with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no {from:?}");
    BASE.replacen(from, to, 1)
}

#[test]
fn base_resolves_with_docker_defaults() {
    let c = ok(BASE);
    assert_eq!(c.vxlan_port, 4789);
    assert_eq!(c.networks[0].vni(), Some(4096));
    assert_eq!(c.networks[1].vni(), Some(4097));
    assert_eq!(c.networks[1].mtu(), Some(1450));
    assert_eq!(c.networks[0].subnets[0].gateway, Ipv4Addr::new(10, 255, 0, 1));
    let w1 = &c.endpoints[0];
    assert_eq!(w1.ip, Ipv4Addr::new(10, 0, 0, 3));
    assert_eq!(w1.mac.to_string(), "02:42:0a:00:00:03");
    assert_eq!(w1.ifname, "eth0");
    assert_eq!(w1.netns, PathBuf::from("/run/netns/web1"));
    assert_eq!(w1.prefix_len, 24);
    assert_eq!(w1.gateway, Ipv4Addr::new(10, 0, 0, 1));
    // Allocated from ip_range, never the gateway or aux addresses.
    let w2 = &c.endpoints[1];
    assert!(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 128), 25).unwrap().contains(&w2.ip), "{}", w2.ip);
    assert_eq!(w2.mac, Mac::from_ipv4(w2.ip));
    let vip = c.services[0].vip.expect("a VIP");
    assert!(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 128), 25).unwrap().contains(&vip));
    assert_ne!(vip, w2.ip);
}

/// Every rule of the state (docs/state-file.md), and the loader's own: each bad state is refused
/// with an error naming the entry and the rule.
#[test]
fn every_rule_is_enforced() {
    let cases: Vec<(&str, String, &str, Rule)> = vec![
        // (what, yaml, entry contains, the rule it breaks)
        ("unknown top-level key", format!("{BASE}\nbogus: 1\n"), "line", Rule::Syntax),
        ("unknown nested key", edit("attachable: true", "attachable: true\n    colour: blue"), "line", Rule::Syntax),
        ("wrong type", edit("vxlan_port: 4789", "vxlan_port: lots"), "line", Rule::Syntax),
        ("malformed yaml", edit("hosts:", "hosts: [\n"), "line", Rule::Syntax),
        ("bad version", edit("version: 1", "version: 2"), "version", Rule::Version),
        ("duplicate host name", edit("name: node2, address", "name: node1, address"), "hosts[1] (node1)", Rule::DuplicateName),
        ("duplicate network name", edit("name: ingress", "name: uber-svc"), "networks[1] (uber-svc)", Rule::DuplicateName),
        ("duplicate endpoint name", edit("name: web.2, host", "name: web.1, host"), "endpoints[1] (web.1)", Rule::DuplicateName),
        ("duplicate service name", format!("{BASE}  - {{name: web, network: uber-svc, backends: []}}\n"), "services[1] (web)", Rule::DuplicateName),
        ("duplicate host address", edit("192.168.246.195", "192.168.246.194"), "hosts[1] (node2)", Rule::DuplicateHostAddress),
        ("duplicate VNI", edit("ingress: true\n", "ingress: true\n    vni: 77\n").replacen("    attachable: true", "    attachable: true\n    vni: 77", 1), "networks[1] (uber-svc)", Rule::DuplicateVni),
        ("VNI 0", edit("ingress: true\n", "ingress: true\n    vni: 0\n"), "networks[0] (ingress)", Rule::VniRange),
        ("VNI too big", edit("ingress: true\n", "ingress: true\n    vni: 16777216\n"), "networks[0] (ingress)", Rule::VniRange),
        ("duplicate MAC", edit("netns: web2}", "netns: web2, mac: \"02:42:0a:00:00:03\"}"), "endpoints[1] (web.2)", Rule::DuplicateMac),
        ("duplicate endpoint address", edit("netns: web2}", "netns: web2, ip: 10.0.0.3}"), "endpoints[1] (web.2)", Rule::DuplicateAddress),
        ("endpoint on the gateway", edit("ip: 10.0.0.3}", "ip: 10.0.0.1}"), "endpoints[0] (web.1)", Rule::DuplicateAddress),
        ("endpoint on an aux address", edit("ip: 10.0.0.3}", "ip: 10.0.0.5}"), "endpoints[0] (web.1)", Rule::DuplicateAddress),
        ("address outside its subnet", edit("ip: 10.0.0.3}", "ip: 10.9.9.9}"), "endpoints[0] (web.1)", Rule::AddressOutside),
        ("address inside another network's subnet", edit("ip: 10.0.0.3}", "ip: 10.255.0.9}"), "endpoints[0] (web.1)", Rule::AddressInOtherNetwork),
        ("broadcast address", edit("ip: 10.0.0.3}", "ip: 10.0.0.255}"), "endpoints[0] (web.1)", Rule::NetworkOrBroadcast),
        ("overlapping subnets", edit("subnet: 10.255.0.0/16", "subnet: 10.0.0.0/16"), "networks[1] (uber-svc).subnets[0]", Rule::SubnetOverlap),
        ("overlap within a network", edit("subnets: [{subnet: 10.255.0.0/16}]", "subnets: [{subnet: 10.255.0.0/16}, {subnet: 10.255.1.0/24}]"), "networks[0] (ingress).subnets[1]", Rule::SubnetOverlap),
        ("gateway outside its subnet", edit("gateway: 10.0.0.1", "gateway: 10.0.1.1"), "networks[1] (uber-svc).subnets[0]", Rule::GatewayOutside),
        ("aux address outside its subnet", edit("my-router: 10.0.0.5", "my-router: 10.7.0.5"), "networks[1] (uber-svc).subnets[0]", Rule::AuxOutside),
        ("ip_range outside its subnet", edit("ip_range: 10.0.0.128/25", "ip_range: 10.0.5.0/25"), "networks[1] (uber-svc).subnets[0]", Rule::IpRangeOutside),
        ("host bits in a subnet", edit("subnet: 10.0.0.0/24", "subnet: 10.0.0.7/24"), "networks[1] (uber-svc).subnets[0]", Rule::HostBits),
        ("subnet holding a host address", edit("subnet: 10.255.0.0/16", "subnet: 192.168.246.0/24"), "networks[0] (ingress).subnets[0]", Rule::SubnetHoldsHost),
        ("second ingress network", edit("    attachable: true", "    attachable: true\n    ingress: true"), "networks[1] (uber-svc)", Rule::SecondIngress),
        ("unknown host", edit("host: node2", "host: node9"), "endpoints[1] (web.2)", Rule::UnknownHost),
        ("unknown network (endpoint)", edit("network: uber-svc, netns: web2", "network: nope, netns: web2"), "endpoints[1] (web.2)", Rule::UnknownNetwork),
        ("unknown network (service)", edit("    network: uber-svc\n    ports", "    network: nope\n    ports"), "services[0] (web)", Rule::UnknownNetwork),
        (
            "backend on another network",
            edit("backends: [web.1, web.2]", "backends: [web.1, web.2, x]").replacen("services:", "  - {name: x, host: node1, network: ingress, netns: x}\nservices:", 1),
            "services[0] (web)",
            Rule::BackendNetwork,
        ),
        ("address pool exhausted", edit("ip_range: 10.0.0.128/25", "ip_range: 10.0.0.128/32"), "services[0] (web)", Rule::PoolExhausted),
        ("encrypted without kernel support", edit("    attachable: true", "    attachable: true\n    encrypted: true"), "networks[1] (uber-svc)", Rule::Encryption),
        ("mtu above the underlay's", edit("    attachable: true", "    attachable: true\n    mtu: 1480"), "networks[1] (uber-svc)", Rule::MtuTooLarge),
        ("wireguard_port on the VXLAN port", edit("underlay_mtu: 1500}", "underlay_mtu: 1500, wireguard_port: 4789}"), "cluster.wireguard_port", Rule::WireguardPort),
        ("a WireGuard key that is not one", edit("address: 192.168.246.195}", "address: 192.168.246.195, wireguard_key: \"c2hvcnQ=\"}"), "hosts[1] (node2)", Rule::WireguardKey),
        ("vip outside the network", edit("    network: uber-svc\n    ports", "    network: uber-svc\n    vip: 10.255.0.7\n    ports"), "services[0] (web)", Rule::AddressInOtherNetwork),
        ("vip with dnsrr", edit("    network: uber-svc\n    ports", "    network: uber-svc\n    endpoint_mode: dnsrr\n    vip: 10.0.0.9\n    ports"), "services[0] (web)", Rule::DnsrrVip),
        ("non-attachable network without a service", edit("- {name: web.2, host: node2, network: uber-svc, netns: web2}", "- {name: web.2, host: node2, network: uber-svc, netns: web2}\n  - {name: lone, host: node2, network: ingress, netns: lone}"), "endpoints[2] (lone)", Rule::NotAttachable),
        ("same ifname twice in a netns", edit("netns: web2}", "netns: web1, ifname: eth0}").replacen("netns: web1, ip: 10.0.0.3}", "netns: web1, ip: 10.0.0.3, ifname: eth0}", 1), "endpoints", Rule::InterfaceTaken),
        ("published port twice", format!("{BASE}  - {{name: web2, network: uber-svc, ports: [{{protocol: tcp, target: 81, published: 8080}}], backends: []}}\n"), "services[1] (web2).ports[0]", Rule::PublishedTwice),
        ("bad MAC", edit("netns: web2}", "netns: web2, mac: \"zz:42:0a:00:00:03\"}"), "line", Rule::Syntax),
        ("multicast MAC", edit("netns: web2}", "netns: web2, mac: \"03:42:0a:00:00:03\"}"), "endpoints[1] (web.2)", Rule::Mac),
        ("no subnets", edit("subnets: [{subnet: 10.255.0.0/16}]", "subnets: []"), "networks[0] (ingress)", Rule::NoSubnets),
        ("macvlan without parent", MACVLAN_BASE.replace("    parent: eth0\n", ""), "networks[2] (lan)", Rule::Macvlan),
        ("parent on an overlay network", edit("    attachable: true", "    attachable: true\n    parent: eth0"), "networks[1] (uber-svc)", Rule::Macvlan),
        ("a VNI on a macvlan network", MACVLAN_BASE.replace("    parent: eth0", "    parent: eth0\n    vni: 77"), "networks[2] (lan)", Rule::Macvlan),
        ("encrypted macvlan", MACVLAN_BASE.replace("    parent: eth0", "    parent: eth0\n    encrypted: true"), "networks[2] (lan)", Rule::Macvlan),
        ("a bad parent name", MACVLAN_BASE.replace("parent: eth0", "parent: eth0/x"), "networks[2] (lan)", Rule::InterfaceName),
        ("two endpoints on one host's passthru parent", MACVLAN_BASE.replace("macvlan_mode: private", "macvlan_mode: passthru").replace("  - {name: m2, host: node2, network: lan, netns: m2}\n", "  - {name: m2, host: node2, network: lan, netns: m2}\n  - {name: m3, host: node1, network: lan, netns: m3}\n"), "endpoints[3] (m3)", Rule::Macvlan),
        ("a port published by a macvlan endpoint", MACVLAN_BASE.replace("  - {name: m1, host: node1, network: lan, netns: m1}", "  - {name: m1, host: node1, network: lan, netns: m1, publish: [{protocol: tcp, target: 80, published: 8081}]}"), "endpoints[1] (m1)", Rule::MacvlanService),
        ("a service on a macvlan network", format!("{MACVLAN_BASE}  - {{name: lan-web, network: lan, ports: [{{protocol: tcp, target: 80}}], backends: [m1]}}\n"), "services[1] (lan-web)", Rule::MacvlanService),
    ];
    let mut failures = Vec::new();
    for (what, yaml, entry, rule) in &cases {
        match parse(yaml) {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(e) => {
                if !e.breaks(*rule, entry) || e.file != "test.yaml" {
                    failures.push(format!("{what}: wanted entry ~{entry:?} rule {}, got:\n{e}", rule.name()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn parse_errors_carry_line_and_column() {
    let e = parse(&edit("vxlan_port: 4789", "vxlan_port: lots")).unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert_eq!(e.problems[0].entry, "line 3 column 23", "{e}");
    let shown = e.to_string();
    assert!(shown.starts_with("test.yaml: line 3 column 23: cluster.vxlan_port: invalid type"), "{shown}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let y = edit("host: node2", "host: node9").replacen("gateway: 10.0.0.1", "gateway: 10.0.1.1", 1);
    let e = parse(&y).unwrap_err();
    assert!(e.problems.len() >= 2, "{e}");
}

#[test]
fn non_utf8_empty_and_huge_input_are_named() {
    let e = parse_state("x.yaml", b"version: 1\nhosts: \xff\xfe\n").unwrap_err();
    assert_eq!(e.problems[0].rule, Rule::NotUtf8, "{e}");
    let e = parse_state("x.yaml", b"  \n").unwrap_err();
    assert_eq!(e.problems[0].rule, Rule::Empty, "{e}");
    let big = vec![b'#'; MAX_STATE_BYTES + 1];
    let e = parse_state("x.yaml", &big).unwrap_err();
    assert_eq!(e.problems[0].rule, Rule::TooLarge, "{e}");
}

#[test]
fn allocation_is_deterministic_and_stable_under_edits() {
    let many: String = (0..40)
        .map(|i| format!("  - {{name: w{i}, host: node{}, network: uber-svc, netns: w{i}}}\n", i % 2 + 1))
        .collect();
    let y = edit(
        "  - {name: web.2, host: node2, network: uber-svc, netns: web2}\n",
        &format!("  - {{name: web.2, host: node2, network: uber-svc, netns: web2}}\n{many}"),
    );
    let a = ok(&y);
    let b = ok(&y);
    assert_eq!(a, b, "same file, same answer");
    // Every address unique, inside the range, never the gateway or aux.
    let mut seen = BTreeSet::new();
    for e in &a.endpoints {
        assert!(seen.insert(e.ip), "duplicate {}", e.ip);
        assert_ne!(e.ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_ne!(e.ip, Ipv4Addr::new(10, 0, 0, 5));
    }
    // Removing one endpoint leaves the others where they were, unless they
    // had probed past it (rare: checked that it is at most a few).
    let removed = y.replacen("  - {name: w7, host: node2, network: uber-svc, netns: w7}\n", "", 1);
    let c = ok(&removed);
    let moved =
        c.endpoints.iter().filter(|e| a.endpoints.iter().find(|x| x.name == e.name).unwrap().ip != e.ip).count();
    assert!(moved <= 2, "{moved} endpoints moved when one was removed");
    assert_eq!(a.services[0].vip, c.services[0].vip);
}

#[test]
fn auto_vnis_skip_explicit_ones_in_file_order() {
    let y = edit("ingress: true\n", "ingress: true\n    vni: 4097\n");
    let c = ok(&y);
    assert_eq!(c.networks[0].vni(), Some(4097));
    assert_eq!(c.networks[1].vni(), Some(4096));
    let y = edit("    attachable: true", "    attachable: true\n    vni: 4096");
    let c = ok(&y);
    assert_eq!((c.networks[0].vni(), c.networks[1].vni()), (Some(4097), Some(4096)));
}

#[test]
fn ifnames_default_to_eth0_eth1_per_netns() {
    let y = edit("netns: web2}", "netns: web1}");
    let c = ok(&y);
    assert_eq!(c.endpoints[0].ifname, "eth0");
    assert_eq!(c.endpoints[1].ifname, "eth1");
    let y = edit("netns: web1, ip: 10.0.0.3}", "netns: web1, ip: 10.0.0.3, ifname: eth0}").replacen(
        "netns: web2}",
        "netns: web1}",
        1,
    );
    assert_eq!(ok(&y).endpoints[1].ifname, "eth1");
}

#[test]
fn encryption_is_accepted_where_the_kernel_can() {
    let key = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
    let y = edit("    attachable: true", "    attachable: true\n    encrypted: true")
        .replace("address: 192.168.246.195}", &format!("address: 192.168.246.195, wireguard_key: \"{key}\"}}"));
    let st = parse_state("t", y.as_bytes()).unwrap();
    let c = resolve("t", &st, Capabilities { encryption: true }).unwrap();
    let n = &c.networks[1];
    assert!(n.encrypted());
    // VXLAN (50) and WireGuard (60) inside the underlay's 1500.
    assert_eq!(n.mtu(), Some(1390), "the default MTU leaves room for both");
    assert_eq!(c.wireguard_port, 51820);
    assert_eq!(c.hosts[1].wireguard_key.map(|k| crate::state::model::Key(k).to_string()).as_deref(), Some(key));
    assert_eq!(c.hosts[0].wireguard_key, None);
    // An MTU that fits VXLAN but not WireGuard too is refused, with the fix.
    let big = y.replace("    encrypted: true", "    encrypted: true\n    mtu: 1450");
    let e = resolve("t", &parse_state("t", big.as_bytes()).unwrap(), Capabilities { encryption: true }).unwrap_err();
    assert!(e.to_string().contains("VXLAN and WireGuard") && e.to_string().contains("mtu <= 1390"), "{e}");
}

#[test]
fn dnsrr_service_has_no_vip() {
    let y = edit("    network: uber-svc\n    ports: [{protocol: tcp, target: 80, published: 8080}]", "    network: uber-svc\n    endpoint_mode: dnsrr\n    ports: [{protocol: tcp, target: 80, published: 8080, mode: host}]");
    let c = ok(&y);
    assert_eq!(c.services[0].vip, None);
}

#[test]
fn mac_round_trips() {
    let m: Mac = "02:42:0A:00:00:03".parse().unwrap();
    assert_eq!(m.to_string(), "02:42:0a:00:00:03");
    assert!("02:42:0a:00:00".parse::<Mac>().is_err());
    assert!("02:42:0a:00:00:0g".parse::<Mac>().is_err());
}

#[test]
fn state_round_trips_through_yaml() {
    let st = parse_state("t", BASE.as_bytes()).unwrap();
    let text = serde_yaml::to_string(&st).unwrap();
    let back = parse_state("t", text.as_bytes()).unwrap();
    assert_eq!(st, back);
}

#[test]
fn a_mistake_repeated_on_60000_endpoints_is_one_line() {
    let mut y = String::from(
        "version: 1\nhosts:\n  - {name: node1, address: 192.168.246.194}\nnetworks:\n  - {name: big, attachable: true, subnets: [{subnet: 10.128.0.0/9}]}\nendpoints:\n",
    );
    for i in 0..60_000 {
        y += &format!("  - {{name: e{i}, host: node9, network: big, netns: e{i}}}\n");
    }
    let e = parse(&y).unwrap_err();
    assert_eq!(e.problems.len(), 60_000);
    assert!(e.problems.iter().all(|p| p.rule == Rule::UnknownHost));
    let shown = e.to_string();
    assert_eq!(
        shown,
        "test.yaml: endpoints[0] (e0), endpoints[1] (e1), endpoints[2] (e2) and 59997 more: host \"node9\" does not \
         exist; define it under `hosts:`"
    );
}

#[test]
fn a_rule_broken_many_ways_shows_the_first_and_counts_the_rest() {
    // Eight endpoints on eight different unknown hosts, and one other problem.
    let mut y = BASE.replacen("version: 1", "version: 2", 1);
    let mut eps = String::new();
    for i in 0..8 {
        eps += &format!("  - {{name: x{i}, host: nowhere{i}, network: uber-svc, netns: x{i}}}\n");
    }
    y = y.replacen("services:", &format!("{eps}services:"), 1);
    let e = parse(&y).unwrap_err();
    let shown = e.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 1 + 5 + 1, "{shown}");
    assert!(lines[0].contains("unsupported version 2"), "{shown}");
    assert!(lines[1].contains("endpoints[2] (x0): host \"nowhere0\" does not exist"), "{shown}");
    assert_eq!(lines[6], "test.yaml: ... and 3 more problems of the same kind (unknown-host)");
    assert_eq!(
        e.by_rule().iter().map(|(r, p)| (*r, p.len())).collect::<Vec<_>>(),
        [(Rule::Version, 1), (Rule::UnknownHost, 8)]
    );
}

#[test]
fn an_endpoints_own_published_port_is_a_host_mode_service_of_it_alone() {
    let c = ok(&edit(
        "{name: web.2, host: node2, network: uber-svc, netns: web2}",
        "{name: web.2, host: node2, network: uber-svc, netns: web2, publish: [{published: 9090, target: 80}], \
         runtime: docker, container_id: 3f2a, aliases: [api]}",
    ));
    let s = c.services.iter().find(|s| s.name == "web.2:9090/tcp").expect("the endpoint's port as a service");
    assert_eq!((s.vip, s.endpoint_mode), (None, EndpointMode::Dnsrr));
    assert_eq!(
        s.ports,
        [PortSpec { protocol: Protocol::Tcp, target: 80, published: Some(9090), mode: PublishMode::Host }]
    );
    assert_eq!(s.backends.iter().map(|&b| c.endpoints[b].name.as_str()).collect::<Vec<_>>(), ["web.2"]);
    assert_eq!(c.endpoints[1].aliases, ["api"]);

    // A port a service publishes, or another endpoint on the host, is taken.
    let e = parse(&edit(
        "{name: web.2, host: node2, network: uber-svc, netns: web2}",
        "{name: web.2, host: node2, network: uber-svc, netns: web2, publish: [{published: 8080, target: 80}]}",
    ))
    .unwrap_err();
    assert!(e.breaks(Rule::PublishedTwice, "endpoints[1] (web.2).publish[0]"), "{e}");
    let two = edit(
        "{name: web.2, host: node2, network: uber-svc, netns: web2}",
        "{name: web.2, host: node2, network: uber-svc, netns: web2, publish: [{published: 9090, target: 80}]}\n  \
         - {name: web.3, host: node2, network: uber-svc, netns: web3, publish: [{published: 9090, target: 81}]}",
    );
    let e = parse(&two).unwrap_err();
    assert!(e.to_string().contains("already published on host \"node2\" by endpoints[1] (web.2)"), "{e}");
    // On another host the same port is free.
    ok(&two.replace("{name: web.3, host: node2", "{name: web.3, host: node1"));
}

#[test]
fn endpoint_names_are_unique_within_a_network_not_across_networks() {
    let two_nets = edit(
        "    attachable: true\nendpoints:",
        "    attachable: true\n  - {name: back, attachable: true, subnets: [{subnet: 10.9.0.0/24}]}\nendpoints:",
    );
    let same_name = two_nets.replace(
        "  - {name: web.2, host: node2, network: uber-svc, netns: web2}",
        "  - {name: web.2, host: node2, network: uber-svc, netns: web2}\n  - {name: web.2, host: node2, network: back, netns: web2}",
    );
    let c = ok(&same_name);
    let keys: Vec<&str> = c.endpoints.iter().filter(|e| e.name == "web.2").map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["web.2", "web.2@back"]);
    let dup = same_name.replace("network: back, netns: web2}", "network: uber-svc, netns: web2b}");
    let e = parse(&dup).unwrap_err();
    assert!(e.breaks(Rule::DuplicateName, "endpoints[2] (web.2)"), "{e}");
    assert!(e.to_string().contains("unique within a network"), "{e}");
}

#[test]
fn a_macvlan_network_sits_on_the_hosts_lan_without_a_vni() {
    let c = ok(MACVLAN_BASE);
    let lan = c.networks.iter().find(|n| n.name == "lan").unwrap();
    let want = Macvlan { parent: "eth0".into(), mode: MacvlanMode::Private, mtu: None };
    assert_eq!(lan.kind, NetworkKind::Macvlan(want), "no VNI, and the parent's MTU, which each host knows");
    assert_eq!((lan.vni(), lan.mtu()), (None, None));
    // The overlays' automatic VNIs are unchanged by the macvlan network.
    assert_eq!(c.networks.iter().filter_map(|n| n.vni()).collect::<Vec<_>>(), [4096, 4097]);
    // Addresses from the ip_range, never a host's (.194 and .195 are in it).
    let ips: Vec<_> = c.endpoints.iter().filter(|e| c.networks[e.network].name == "lan").map(|e| e.ip).collect();
    assert_eq!(ips.len(), 2);
    for ip in &ips {
        assert!("192.168.246.192/27".parse::<ipnet::Ipv4Net>().unwrap().contains(ip), "{ip}");
        assert!(c.hosts.iter().all(|h| h.address != *ip), "{ip} is a host's address");
    }
    // A range holding the hosts: every other address is handed out, never
    // theirs; an explicit host address is refused.
    let small = MACVLAN_BASE.replace("ip_range: 192.168.246.192/27", "ip_range: 192.168.246.192/29").replace(
        "  - {name: m2, host: node2, network: lan, netns: m2}\n",
        "  - {name: m2, host: node2, network: lan, netns: m2}\n  - {name: m3, host: node2, network: lan, netns: m3}\n  - {name: m4, host: node2, network: lan, netns: m4}\n",
    );
    let c = ok(&small);
    let got: BTreeSet<String> =
        c.endpoints.iter().filter(|e| c.networks[e.network].name == "lan").map(|e| e.ip.to_string()).collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        !got.contains("192.168.246.194") && !got.contains("192.168.246.195"),
        "a host's address handed out: {got:?}"
    );
    let taken = MACVLAN_BASE.replace("network: lan, netns: m1}", "network: lan, netns: m1, ip: 192.168.246.194}");
    let e = parse(&taken).unwrap_err().to_string();
    assert!(e.contains("192.168.246.194") && e.contains("node1"), "{e}");
    // The mode defaults to bridge; the state round-trips.
    let y = MACVLAN_BASE.replace("    macvlan_mode: private\n", "");
    assert_eq!(ok(&y).networks[2].macvlan().as_ref().unwrap().mode, MacvlanMode::Bridge);
    let st = parse_state("t", MACVLAN_BASE.as_bytes()).unwrap();
    let again = serde_yaml::to_string(&st).unwrap();
    assert_eq!(parse_state("t", again.as_bytes()).unwrap(), st);
}

/// A service whose backend is an alias that no endpoint carries: scaled to
/// zero (its last container removed), or before its first container
/// starts. It resolves, keeps its VIP and ports with no backend, and says
/// so in a warning; an endpoint joining with the alias fills it again.
#[test]
fn a_backend_that_matches_nothing_is_a_warning_not_an_error() {
    let zero = edit("backends: [web.1, web.2]", "backends: [web]");
    let c = parse(&zero).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert_eq!((w.rule, w.entry.as_str()), (Rule::UnknownBackend, "services[0] (web)"));
    assert_eq!(
        w.message,
        "backend \"web\" matches no endpoint or alias on network \"uber-svc\": the service has no backend from it \
         until one joins with that name or alias"
    );
    let svc = &c.services[0];
    assert!(svc.backends.is_empty());
    assert!(svc.vip.is_some(), "the VIP stays");
    assert_eq!(svc.ports.iter().map(|p| p.published).collect::<Vec<_>>(), [Some(8080)], "the published port stays");

    // The alias carried only on another network: the same, with a hint.
    let elsewhere = zero.replacen(
        "services:",
        "  - {name: x, host: node1, network: ingress, netns: x, aliases: [web]}\nservices:",
        1,
    );
    let elsewhere = elsewhere.replacen("    ingress: true\n", "    ingress: true\n    attachable: true\n", 1);
    let c = parse(&elsewhere).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].message.contains("(endpoints on network \"ingress\" carry it)"), "{}", c.warnings[0].message);

    // A container with the alias joins: no warning, one backend.
    let back = zero.replacen("netns: web2}", "netns: web2, aliases: [web]}", 1);
    let c = parse(&back).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let names: Vec<&str> = c.services[0].backends.iter().map(|&b| c.endpoints[b].name.as_str()).collect();
    assert_eq!(names, ["web.2"]);
}
