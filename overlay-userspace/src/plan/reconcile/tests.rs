use std::net::Ipv4Addr;

use super::*;
use crate::state::model::{parse_state, resolve, Capabilities};

const STATE: &str = r#"
version: 1
hosts:
  - {name: node1, address: 192.168.246.194}
  - {name: node2, address: 192.168.246.195}
networks:
  - name: uber-svc
    vni: 4097
    subnets: [{subnet: 10.0.0.0/24}]
    attachable: true
  - name: other
    subnets: [{subnet: 10.0.1.0/24}]
    internal: true
    attachable: true
endpoints:
  - {name: web.1, host: node1, network: uber-svc, netns: web1, ip: 10.0.0.3}
  - {name: web.2, host: node2, network: uber-svc, netns: web2, ip: 10.0.0.4}
  - {name: db.1, host: node2, network: other, netns: db1, ip: 10.0.1.9}
services:
  - name: web
    network: uber-svc
    vip: 10.0.0.2
    ports:
      - {protocol: tcp, target: 80, published: 8080}
      - {protocol: udp, target: 53, published: 5353, mode: host}
    backends: [web.1, web.2]
"#;

fn cluster(yaml: &str) -> Cluster {
    resolve("t", &parse_state("t", yaml.as_bytes()).unwrap(), Capabilities::default()).unwrap()
}

fn facts(pairs: &[(&str, u32)]) -> HostFacts {
    HostFacts {
        underlay_ifindex: 2,
        veths: pairs
            .iter()
            .map(|(n, i)| (n.to_string(), Veth { ifindex: *i, mac: [0xaa, 0, 0, 0, 0, *i as u8] }))
            .collect(),
        ..Default::default()
    }
}

fn ek(vni: u32, ip: [u8; 4]) -> EndpointKey {
    EndpointKey { vni, ip }
}

#[test]
fn desired_content_for_node1() {
    let c = cluster(STATE);
    let m = desired(&c, 0, &facts(&[("web.1", 10)]));
    assert_eq!(
        m.config[&0],
        HostConfig {
            underlay_ip: [192, 168, 246, 194],
            underlay_ifindex: 2,
            vxlan_port: 4789,
            underlay_mtu: 1500,
            ct_tcp_timeout: 432_000,
            ct_udp_timeout: 300,
        }
    );
    // The endpoints of the networks node1 programs (uber-svc: web.1 runs
    // here); only the local one has an ifindex. Two endpoints and the VIP
    // (answered in ARP, flagged as a VIP); db.1's network has nothing here.
    assert_eq!(m.endpoints.len(), 3);
    assert!(!m.endpoints.contains_key(&ek(4096, [10, 0, 1, 9])), "db.1's network is not node1's");
    let vip = m.endpoints[&ek(4097, [10, 0, 0, 2])];
    assert_eq!((vip.flags, vip.mac, vip.ifindex), (ENDPOINT_F_VIP, [2, 0x42, 10, 0, 0, 2], 0));
    let w1 = m.endpoints[&ek(4097, [10, 0, 0, 3])];
    assert_eq!((w1.ifindex, w1.flags, w1.vtep), (10, ENDPOINT_F_LOCAL | ENDPOINT_F_BACKEND, [192, 168, 246, 194]));
    assert_eq!(w1.mac, [2, 0x42, 10, 0, 0, 3]);
    let w2 = m.endpoints[&ek(4097, [10, 0, 0, 4])];
    assert_eq!((w2.ifindex, w2.flags, w2.vtep), (0, ENDPOINT_F_BACKEND, [192, 168, 246, 195]));
    let node2 = desired(&c, 1, &facts(&[("web.2", 7), ("db.1", 8)]));
    assert_eq!(node2.endpoints[&ek(4096, [10, 0, 1, 9])].flags, ENDPOINT_F_LOCAL, "db.1 backs nothing");
    assert_eq!(m.ifaces.len(), 1);
    assert_eq!(
        m.ifaces[&10],
        IfaceValue {
            vni: 4097,
            ip: [10, 0, 0, 3],
            mac: [2, 0x42, 10, 0, 0, 3],
            host_mac: [0xaa, 0, 0, 0, 0, 10],
            flags: ENDPOINT_F_BACKEND
        }
    );
    assert_eq!(m.vteps, BTreeMap::from([([192, 168, 246, 194], PRESENT), ([192, 168, 246, 195], PRESENT)]));
    // Networks: gateway + its MAC, MTU, flags.
    let n = m.networks[&4097];
    assert_eq!((n.gateway, n.mtu, n.flags), ([10, 0, 0, 1], 1450, NETWORK_F_LOCAL));
    assert_eq!(n.gateway_mac, [2, 0x42, 10, 0, 0, 1]);
    assert_eq!(m.networks[&4096].flags, NETWORK_F_INTERNAL, "internal, no endpoint on node1");
    assert_eq!(m.subnets[&(24, [10, 0, 1, 0])], SubnetValue { vni: 4096, gateway: [10, 0, 1, 1] });
    // VIP for each port, the ingress-published port; host-mode port: node1 runs web.1.
    let vip80 = m.services[&ServiceKey { addr: [10, 0, 0, 2], port: 80, proto: PROTO_TCP, _pad: 0 }];
    assert_eq!((vip80.vni, vip80.target_port, vip80.flags), (4097, 80, 0));
    let pub8080 = m.services[&ServiceKey { addr: [0; 4], port: 8080, proto: PROTO_TCP, _pad: 0 }];
    assert_eq!(pub8080.flags, SERVICE_F_PUBLISHED);
    let host5353 = m.services[&ServiceKey { addr: [0; 4], port: 5353, proto: PROTO_UDP, _pad: 0 }];
    assert_eq!(host5353.flags, SERVICE_F_PUBLISHED | SERVICE_F_HOST_MODE);
    assert_eq!(m.services.len(), 4);
}

#[test]
fn host_mode_ports_only_where_a_backend_runs() {
    let y = STATE.replace("backends: [web.1, web.2]", "backends: [web.2]");
    let m = desired(&cluster(&y), 0, &facts(&[("web.1", 10)]));
    assert!(!m.services.contains_key(&ServiceKey { addr: [0; 4], port: 5353, proto: PROTO_UDP, _pad: 0 }));
    assert!(m.services.contains_key(&ServiceKey { addr: [0; 4], port: 8080, proto: PROTO_TCP, _pad: 0 }));
}

#[test]
fn same_state_gives_an_empty_diff() {
    let c = cluster(STATE);
    let m = desired(&c, 1, &facts(&[("web.2", 7), ("db.1", 8)]));
    let d = Diff::between(&m, &m.clone());
    assert!(d.is_empty());
    // From nothing, everything is written and nothing deleted.
    let d = Diff::between(&m, &MapContents::default());
    // sizes() counts Maglev tables; the diff counts their entries.
    let total: usize = m.sizes(&declared).iter().map(|s| s.1).sum::<usize>() - m.maglev.len()
        + m.maglev.values().map(Vec::len).sum::<usize>();
    assert_eq!(d.counts(), (total, 0));
}

#[test]
fn adding_an_endpoint_touches_only_its_entries() {
    let c = cluster(STATE);
    let before = desired(&c, 0, &facts(&[("web.1", 10)]));
    let y = STATE.replace(
        "  - {name: db.1,",
        "  - {name: web.3, host: node2, network: uber-svc, netns: web3, ip: 10.0.0.7}\n  - {name: db.1,",
    );
    let after = desired(&cluster(&y), 0, &facts(&[("web.1", 10)]));
    let d = Diff::between(&after, &before);
    assert_eq!(d.counts(), (1, 0), "{d:?}");
    assert_eq!(d.endpoints.upsert[0].0, ek(4097, [10, 0, 0, 7]));
}

#[test]
fn removing_a_local_endpoint_deletes_its_entries_and_flags() {
    let c = cluster(STATE);
    let before = desired(&c, 1, &facts(&[("web.2", 7), ("db.1", 8)]));
    let y = STATE.replace("  - {name: db.1, host: node2, network: other, netns: db1, ip: 10.0.1.9}\n", "");
    let after = desired(&cluster(&y), 1, &facts(&[("web.2", 7)]));
    let d = Diff::between(&after, &before);
    assert_eq!(d.endpoints.delete, vec![ek(4096, [10, 0, 1, 9])]);
    assert_eq!(d.ifaces.delete, vec![8]);
    // The network lost its last local endpoint: only its flags change.
    assert_eq!(d.networks.upsert.len(), 1);
    assert_eq!(d.networks.upsert[0].1.flags, NETWORK_F_INTERNAL);
    assert!(d.endpoints.upsert.is_empty() && d.services.is_empty() && d.vteps.is_empty() && d.config.is_empty());
}

#[test]
fn adding_a_host_adds_its_vtep_only() {
    let c = cluster(STATE);
    let before = desired(&c, 0, &facts(&[("web.1", 10)]));
    let y = STATE.replace("hosts:\n", "hosts:\n  - {name: node0, address: 192.168.246.193}\n");
    // node1 is now index 1; its id changes with it.
    let after = desired(&cluster(&y), 1, &facts(&[("web.1", 10)]));
    let d = Diff::between(&after, &before);
    assert!(d.vteps.upsert.iter().any(|(k, _)| *k == Ipv4Addr::new(192, 168, 246, 193).octets()));
    assert!(d.endpoints.is_empty() && d.ifaces.is_empty() && d.services.is_empty() && d.networks.is_empty());
}

#[test]
fn diff_map_upserts_changes_and_deletes_leftovers() {
    let want: BTreeMap<u32, u32> = [(1, 10), (2, 20), (3, 30)].into();
    let have: BTreeMap<u32, u32> = [(2, 21), (3, 30), (4, 40)].into();
    let d = diff_map(&want, &have);
    assert_eq!(d.upsert, vec![(1, 10), (2, 20)]);
    assert_eq!(d.delete, vec![4]);
}

#[test]
fn load_balancing_tables_per_service_and_host_mode() {
    let c = cluster(STATE);
    let m = desired(&c, 0, &facts(&[("web.1", 10)]));
    // web has a VIP and an ingress port (slot 0: both backends) and a
    // host-mode port with a backend here (slot 1: web.1 only).
    assert_eq!(m.maglev.len(), 2);
    let all: std::collections::BTreeSet<[u8; 4]> = m.maglev[&0].iter().copied().collect();
    assert_eq!(all, [[10, 0, 0, 3], [10, 0, 0, 4]].into());
    assert!(m.maglev[&1].iter().all(|ip| *ip == [10, 0, 0, 3]));
    assert_eq!(m.maglev[&0].len(), MAGLEV_SIZE as usize);
    let id = service_id("web");
    let vip = m.services[&ServiceKey { addr: [10, 0, 0, 2], port: 80, proto: PROTO_TCP, _pad: 0 }];
    assert_eq!((vip.service_id, vip.lb_slot), (id, 0));
    let host = m.services[&ServiceKey { addr: [0; 4], port: 5353, proto: PROTO_UDP, _pad: 0 }];
    assert_eq!(host.lb_slot, 1);
    let members: Vec<_> = m.backends.keys().filter(|k| k.service_id == id).map(|k| k.ip).collect();
    assert_eq!(members, [[10, 0, 0, 3], [10, 0, 0, 4]], "both healthy backends, local or not");
    assert_eq!(m.config[&0].ct_tcp_timeout, 432_000, "idle TCP flows are not cut at 900 s");
}

#[test]
fn an_unhealthy_backend_leaves_the_tables_and_only_its_slots_move() {
    let c = cluster(STATE);
    let healthy = desired(&c, 0, &facts(&[("web.1", 10)]));
    let mut f = facts(&[("web.1", 10)]);
    f.unhealthy.insert("web.2".into());
    let sick = desired(&c, 0, &f);
    assert!(sick.maglev[&0].iter().all(|ip| *ip == [10, 0, 0, 3]));
    assert!(!sick.backends.contains_key(&BackendKey { service_id: service_id("web"), ip: [10, 0, 0, 4] }));
    let d = Diff::between(&sick, &healthy);
    // Only web.2's slots change; web.1's stay.
    let moved = d.maglev.upsert.iter().filter(|((slot, _), _)| *slot == 0).count();
    let had: usize = healthy.maglev[&0].iter().filter(|ip| **ip == [10, 0, 0, 4]).count();
    assert_eq!(moved, had);
    assert_eq!(d.backends.delete.len(), 1);
    assert!(Diff::between(&sick, &sick).is_empty());
}

#[test]
fn services_with_the_same_backends_share_one_table() {
    let mut yaml = String::from(
        "version: 1\nhosts: [{name: node1, address: 192.168.246.194}, {name: node2, address: 192.168.246.195}]\n\
         networks: [{name: big, subnets: [{subnet: 10.8.0.0/16}]}]\n\
         endpoints:\n\
         - {name: a, host: node1, network: big, netns: a}\n\
         - {name: b, host: node2, network: big, netns: b}\n\
         services:\n",
    );
    // 300 services (more than the 256 tables there is room for), over 2
    // backend lists.
    for i in 0..300 {
        let backends = if i % 2 == 0 { "[a, b]" } else { "[b]" };
        yaml += &format!(
            "  - {{name: s{i}, network: big, ports: [{{protocol: tcp, target: 80, published: {}}}], backends: {backends}}}\n",
            20000 + i
        );
    }
    let c = cluster(&yaml);
    let m = desired(&c, 0, &facts(&[("a", 10)]));
    assert_eq!(m.maglev.len(), 2);
    let slot = |port: u16| m.services[&ServiceKey { addr: [0; 4], port, proto: PROTO_TCP, _pad: 0 }].lb_slot;
    assert_eq!((slot(20000), slot(20002), slot(20298)), (0, 0, 0));
    assert_eq!((slot(20001), slot(20299)), (1, 1));
    let b = c.endpoints.iter().find(|e| e.name == "b").unwrap().ip.octets();
    assert!(m.maglev[&1].iter().all(|ip| *ip == b));
    assert_eq!(m.maglev[&0].iter().copied().collect::<std::collections::BTreeSet<_>>().len(), 2);
}

#[test]
fn a_backend_leaving_its_service_keeps_the_backend_flag_while_it_exists() {
    let c = cluster(STATE);
    let before = desired(&c, 1, &facts(&[("web.2", 7), ("db.1", 8)]));
    let y = STATE.replace("backends: [web.1, web.2]", "backends: [web.1]");
    let mut after = desired(&cluster(&y), 1, &facts(&[("web.2", 7), ("db.1", 8)]));
    assert_eq!(after.ifaces[&7].flags, 0, "the state alone no longer makes web.2 a backend");
    keep_backend_flags(&mut after, &before);
    assert_eq!(after.ifaces[&7].flags, ENDPOINT_F_BACKEND, "its flows' replies still need the table");
    assert_eq!(after.endpoints[&ek(4097, [10, 0, 0, 4])].flags & ENDPOINT_F_BACKEND, ENDPOINT_F_BACKEND);
    assert_eq!(after.ifaces[&8].flags, 0, "db.1 never was a backend");
    assert!(Diff::between(&after, &before).ifaces.is_empty(), "so nothing changes for it");
    // A veth whose ifindex now belongs to another endpoint inherits nothing.
    let moved = desired(&cluster(&y), 1, &facts(&[("web.2", 8), ("db.1", 7)]));
    let mut m = moved.clone();
    keep_backend_flags(&mut m, &before);
    assert_eq!(m.ifaces[&7].flags, 0);
}

/// Records what a diff writes, in order, as (phase, map) pairs.
#[derive(Default)]
struct Recorder(Vec<(&'static str, String)>);

impl MapSink for Recorder {
    type Error = std::convert::Infallible;
    fn upsert(&mut self, u: Upsert<'_>) -> Result<(), Self::Error> {
        self.0.push(("upsert", format!("{u:?}")));
        Ok(())
    }
    fn delete(&mut self, d: Delete<'_>) -> Result<(), Self::Error> {
        self.0.push(("delete", format!("{d:?}")));
        Ok(())
    }
}

#[test]
fn a_removed_backend_is_repointed_in_every_table_before_its_endpoint_goes() {
    // web.2 (on node2) leaves: its endpoint, its backend entry and its Maglev
    // slots all change in one diff, seen from node1.
    let before = desired(&cluster(STATE), 0, &facts(&[("web.1", 10)]));
    let gone = STATE.replace("  - {name: web.2, host: node2, network: uber-svc, netns: web2, ip: 10.0.0.4}\n", "");
    let after = desired(&cluster(&gone.replace("[web.1, web.2]", "[web.1]")), 0, &facts(&[("web.1", 10)]));
    let mut rec = Recorder::default();
    Diff::between(&after, &before).write_to(&mut rec).unwrap();
    let ops = rec.0;
    let first_delete = ops.iter().position(|(p, _)| *p == "delete").expect("the diff removes entries");
    assert!(ops[first_delete..].iter().all(|(p, _)| *p == "delete"), "an upsert after a removal: {ops:?}");
    let maglev = ops.iter().filter(|(_, o)| o.starts_with("Maglev(")).count();
    assert!(maglev > 1000, "web.2's slots are re-pointed ({maglev})");
    let endpoint_gone = ops
        .iter()
        .position(|(p, o)| *p == "delete" && o.starts_with("Endpoint(") && o.contains("[10, 0, 0, 4]"))
        .expect("web.2's endpoint is removed");
    let last_maglev = ops.iter().rposition(|(_, o)| o.starts_with("Maglev(")).unwrap();
    assert!(last_maglev < endpoint_gone);
    let backend_gone = ops.iter().position(|(_, o)| o.starts_with("Backend(")).expect("web.2's backend entry goes");
    assert!(last_maglev < backend_gone && backend_gone < endpoint_gone, "{:?}", &ops[first_delete..]);
}

#[test]
fn a_host_programs_its_own_networks_and_the_meshes_not_the_cluster() {
    // node3 runs nothing: of uber-svc it needs the mesh's backends (web's
    // port 8080 answers on every host), of `other` nothing, and no VIP (no
    // container of its network here). node1 likewise skips `other`.
    let y = STATE.replace(
        "  - {name: node2, address: 192.168.246.195}",
        "  - {name: node2, address: 192.168.246.195}\n  - {name: node3, address: 192.168.246.196}",
    );
    let c = cluster(&y);
    let m = desired(&c, 2, &facts(&[]));
    let keys: Vec<EndpointKey> = m.endpoints.keys().copied().collect();
    assert_eq!(keys, [ek(4097, [10, 0, 0, 3]), ek(4097, [10, 0, 0, 4])], "the mesh's backends only");
    assert_eq!(m.subnets.len(), 2, "every subnet stays: traffic to another network is refused, not routed");
    assert!(m.services.contains_key(&ServiceKey { addr: [0; 4], port: 8080, proto: PROTO_TCP, _pad: 0 }));
    assert!(!m.services.contains_key(&ServiceKey { addr: [10, 0, 0, 2], port: 80, proto: PROTO_TCP, _pad: 0 }));
    // Without the published port, node3 programs no endpoint at all.
    let quiet =
        y.replace("      - {protocol: tcp, target: 80, published: 8080}\n", "      - {protocol: tcp, target: 80}\n");
    let m = desired(&cluster(&quiet), 2, &facts(&[]));
    assert!(m.endpoints.is_empty() && m.maglev.is_empty() && m.backends.is_empty(), "{m:?}");
    assert_eq!(m.networks.len(), 2);
}

#[test]
fn a_macvlan_network_puts_nothing_in_the_maps() {
    let with_lan = STATE.replace(
        "endpoints:\n",
        "  - {name: lan, driver: macvlan, parent: eth0, subnets: [{subnet: 192.168.246.0/24}]}\nendpoints:\n  \
         - {name: m1, host: node1, network: lan, netns: m1}\n  - {name: m2, host: node2, network: lan, netns: m2}\n",
    );
    let (plain, lan) = (cluster(STATE), cluster(&with_lan));
    assert_eq!(lan.endpoints.len(), plain.endpoints.len() + 2);
    for h in 0..2 {
        let f = facts(&[("web.1", 10), ("web.2", 11), ("db.1", 12)]);
        assert_eq!(desired(&lan, h, &f), desired(&plain, h, &f), "host {h}: the same maps with the macvlan network");
        assert!(!programmed_networks(&lan, h).contains(&lan.network_index("lan").unwrap()));
    }
}
