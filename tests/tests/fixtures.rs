//! Packet fixtures through the real programs with BPF_PROG_TEST_RUN: tables of
//! {description, input packet, expected verdict, expected output bytes,
//! counter bumped}. The maps describe a small cluster:
//!
//! - this host 192.0.2.1, a peer host 192.0.2.2 (both VTEPs), VXLAN port 4789;
//! - network "front" (VNI 4097, 10.0.0.0/24, gateway 10.0.0.1) with the local
//!   endpoint ME 10.0.0.3 (behind ifindex 1: under test-run a TC program sees
//!   `lo`), local endpoint L 10.0.0.7 (ifindex 42) and remote endpoint R
//!   10.0.0.4 on the peer;
//! - network "back" (VNI 4098, 10.0.1.0/24) with remote endpoint B 10.0.1.9
//!   and local endpoint BL 10.0.1.5 (ifindex 43).

mod rig;

use aya::maps::HashMap;
use overlay_common::*;
use rig::*;

// ---------------------------------------------------------------------------
// XDP on the underlay: decapsulation
// ---------------------------------------------------------------------------

fn decap_accepts_only_what_it_should(u: Hook) {
    use Reason::*;
    let from_r = frame(R_MAC, [0xaa; 6], R, ME, 17, &udp(1000, 2000, b"hello"));
    // Delivered with the destination MAC set to the endpoint's.
    let mut delivered = from_r.clone();
    delivered[0..6].copy_from_slice(&ME_MAC);
    let arp_from_r = arp(1, R_MAC, R, [0; 6], ME);
    // The answer goes back to the peer in VXLAN: outer addresses reversed,
    // to the VXLAN port, inner ARP answered with ME's MAC.
    let arp_answer = {
        let mut payload = vxlan_hdr(0x08, FRONT);
        payload.extend(arp(2, ME_MAC, ME, R_MAC, R));
        let mut p = eth([0x02, 0, 0, 0, 0, 2], [0x02, 0, 0, 0, 0, 1], 0x0800);
        let mut h = ip(HOST, PEER, 17, true, 0, &udp(50000, 4789, &payload));
        // Our reply keeps the request's IP ID and flags.
        h[4..6].copy_from_slice(&[0x12, 0x34]);
        p.extend(h);
        p
    };
    let to_b = frame(R_MAC, [0xaa; 6], R, B, 17, &udp(1, 2, b"x"));
    let from_b_to_me = frame([2, 0x42, 10, 0, 1, 9], ME_MAC, B, ME, 17, &udp(1, 2, b"x"));
    let v6 = {
        let mut p = eth(ME_MAC, R_MAC, 0x86dd);
        p.extend([0x60; 40]);
        p
    };
    let mut frag = vxlan(PEER, 0x08, FRONT, &from_r);
    frag[20] |= 0x20; // MF
    let cases = vec![
        case("ARP on the underlay", arp(1, [2, 0, 0, 0, 0, 2], PEER, [0; 6], HOST), u.pass(), Out::Same, PassNotOurs),
        case(
            "TCP to the host",
            {
                let mut p = eth([2; 6], [4; 6], 0x0800);
                p.extend(ip(PEER, HOST, 6, true, 0, &tcp(1, 22)));
                p
            },
            u.pass(),
            Out::Same,
            PassNotOurs,
        ),
        case(
            "UDP to another port",
            {
                let mut p = eth([2; 6], [4; 6], 0x0800);
                p.extend(ip(PEER, HOST, 17, true, 0, &udp(1, 53, b"dns")));
                p
            },
            u.pass(),
            Out::Same,
            PassNotOurs,
        ),
        case(
            "VXLAN port, another address",
            {
                let mut p = vxlan(PEER, 0x08, FRONT, &from_r);
                p[30..34].copy_from_slice(&[192, 0, 2, 77]);
                p
            },
            u.pass(),
            Out::Same,
            PassNotOurs,
        ),
        case(
            "VXLAN from a cluster host to a local endpoint",
            vxlan(PEER, 0x08, FRONT, &from_r),
            u.redirect(),
            Out::Exactly(delivered.clone()),
            Decapsulated,
        ),
        case(
            "the same with outer IP options",
            {
                let mut payload = vxlan_hdr(0x08, FRONT);
                payload.extend_from_slice(&from_r);
                let mut p = eth([2; 6], [4; 6], 0x0800);
                p.extend(ip(PEER, HOST, 17, true, 2, &udp(50000, 4789, &payload)));
                p
            },
            u.redirect(),
            Out::Exactly(delivered),
            Decapsulated,
        ),
        case(
            "inner ARP request for a local endpoint: answered",
            vxlan(PEER, 0x08, FRONT, &arp_from_r),
            // Sent back out of the device it came in on (a redirect, see mesh::transmit).
            u.redirect(),
            Out::Exactly(arp_answer),
            ArpReplied,
        ),
        case("inner ARP reply", vxlan(PEER, 0x08, FRONT, &arp(2, R_MAC, R, ME_MAC, ME)), u.drop(), Out::Any, DropArp),
        case(
            "VXLAN from a non-cluster address",
            vxlan(STRANGER, 0x08, FRONT, &from_r),
            u.drop(),
            Out::Any,
            DropUnknownVtep,
        ),
        case("VXLAN without the I flag", vxlan(PEER, 0x00, FRONT, &from_r), u.drop(), Out::Any, DropBadVxlan),
        case("unknown VNI", vxlan(PEER, 0x08, 777, &from_r), u.drop(), Out::Any, DropUnknownVni),
        case("VNI 0", vxlan(PEER, 0x08, 0, &from_r), u.drop(), Out::Any, DropUnknownVni),
        case("VNI 16777215", vxlan(PEER, 0x08, 16_777_215, &from_r), u.drop(), Out::Any, DropUnknownVni),
        case("inner destination on another VNI", vxlan(PEER, 0x08, FRONT, &to_b), u.drop(), Out::Any, DropNotLocal),
        case(
            "inner destination remote",
            vxlan(PEER, 0x08, FRONT, &frame(R_MAC, R_MAC, R, R, 17, &udp(1, 2, b"x"))),
            u.drop(),
            Out::Any,
            DropNotLocal,
        ),
        case(
            "inner destination local but on the other network's VNI",
            vxlan(PEER, 0x08, BACK, &from_r),
            u.drop(),
            Out::Any,
            DropNotLocal,
        ),
        case(
            "inner source not behind the sending host",
            vxlan(PEER, 0x08, FRONT, &frame(L_MAC, ME_MAC, L, ME, 17, &udp(1, 2, b"x"))),
            u.drop(),
            Out::Any,
            DropSpoofed,
        ),
        case(
            "inner source from another network",
            vxlan(PEER, 0x08, FRONT, &from_b_to_me),
            u.drop(),
            Out::Any,
            DropSpoofed,
        ),
        case("inner IPv6", vxlan(PEER, 0x08, FRONT, &v6), u.drop(), Out::Any, DropUnsupported),
        case("outer fragment", frag, u.drop(), Out::Any, DropMalformed),
    ];
    let mut rig = Rig::new();
    rig.table(u.prog(), Prog::XdpUnderlay, &cases);

    // A network without a local endpoint is not accepted either.
    let mut nets: HashMap<_, u32, NetworkValue> = rig.map(MAP_NETWORKS);
    nets.insert(FRONT, NetworkValue { gateway: GW, gateway_mac: GW_MAC, mtu: 1450, flags: 0 }, 0).unwrap();
    rig.table(
        u.prog(),
        Prog::XdpUnderlay,
        &[case(
            "VNI with no local endpoint",
            vxlan(PEER, 0x08, FRONT, &from_r),
            u.drop(),
            Out::Any,
            Reason::DropUnknownVni,
        )],
    );
}

fn decap_truncated_at_every_byte(u: Hook) {
    let inner = frame(R_MAC, ME_MAC, R, ME, 17, &udp(1000, 2000, b"hello"));
    let whole = vxlan(PEER, 0x08, FRONT, &inner);
    let (outer_l4, vx, ieth, iip) = (14 + 20, 14 + 20 + 8, 14 + 20 + 16, 14 + 20 + 16 + 14);
    let mut cases = Vec::new();
    // A TC test run refuses an IPv4 frame shorter than an IPv4 header.
    let shortest = if u == Hook::Tc { 14 + 20 } else { 14 };
    for cut in shortest..whole.len() {
        let (verdict, reason) = if cut < vx {
            // Cut inside the outer IPv4 or UDP header: not recognisably ours.
            (u.pass(), Reason::PassNotOurs)
        } else {
            // Ours, but the VXLAN header, inner Ethernet or inner IPv4 is cut,
            // or the inner packet is shorter than its total length says.
            (u.drop(), Reason::DropMalformed)
        };
        let _ = (outer_l4, ieth, iip);
        cases.push(case(&format!("cut at {cut}"), whole[..cut].to_vec(), verdict, Out::Any, reason));
    }
    cases.push(case("whole", whole.clone(), u.redirect(), Out::Any, Reason::Decapsulated));
    let mut rig = Rig::new();
    rig.table(u.prog(), Prog::XdpUnderlay, &cases);
    let total: u64 = Prog::XdpUnderlay.reasons().map(|r| rig.counter(Prog::XdpUnderlay, r)).sum();
    assert_eq!(total, cases.len() as u64, "every packet counted once");
}

// ---------------------------------------------------------------------------
// TC on the endpoint's veth: what a container sends
// ---------------------------------------------------------------------------

#[test]
fn tc_encap_output_is_exact_for_tcp_udp_and_icmp() {
    let mut rig = Rig::new();
    for (what, proto, l4, ports) in [
        ("TCP", 6u8, tcp(40000, 80), (40000, 80)),
        ("UDP", 17, udp(40000, 53, b"query"), (40000, 53)),
        ("ICMP", 1, icmp_echo(), (0, 0)),
    ] {
        // The container addresses R by the MAC our ARP gave it.
        let pkt = frame(ME_MAC, R_MAC, ME, R, proto, &l4);
        let before = rig.counter(Prog::TcEndpoint, Reason::Encapsulated);
        let (verdict, out) = rig.run(PROG_TC_ENDPOINT, &pkt);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{what}");
        assert_eq!(rig.counter(Prog::TcEndpoint, Reason::Encapsulated), before + 1);
        let sport = u16::from_be_bytes([out[34], out[35]]);
        assert!(sport >= VXLAN_SPORT_BASE, "{what}: source port {sport} outside 49152..65535");
        // No socket set the skb's hash: the inner flow's, hashed by the
        // program (ICMP: addresses and protocol only).
        let inner = CtKey { proto, ..ctk(ME, R, ports.0, ports.1) };
        let want = overlay_wire::vxlan::source_port(overlay_common::flow::flow_hash(&inner));
        assert_eq!(sport, want, "{what}: the source port of the inner flow's hash");
        assert_eq!(hex(&out), hex(&encapsulated(&pkt, PEER, FRONT, sport)), "{what}: encapsulated bytes");
        // Same flow, same port; the outer IPv4 checksum verifies.
        let (_, again) = rig.run(PROG_TC_ENDPOINT, &pkt);
        assert_eq!(again, out, "{what}: deterministic");
        assert_eq!(csum(&out[14..34]), 0, "{what}: outer IPv4 checksum");
    }
    // Different flows spread over source ports (ECMP entropy).
    let ports: std::collections::BTreeSet<u16> = (0..8)
        .map(|i| {
            let (_, out) = rig.run(PROG_TC_ENDPOINT, &frame(ME_MAC, R_MAC, ME, R, 6, &tcp(40000 + i, 80)));
            u16::from_be_bytes([out[34], out[35]])
        })
        .collect();
    assert!(ports.len() >= 4, "8 flows used only {ports:?}");
}

#[test]
fn tc_arp_is_answered_from_the_maps() {
    use Reason::*;
    let reply = |mac: [u8; 6], ip: [u8; 4]| {
        let mut p = eth(ME_MAC, mac, 0x0806);
        p.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        p.extend_from_slice(&mac);
        p.extend_from_slice(&ip);
        p.extend_from_slice(&ME_MAC);
        p.extend_from_slice(&ME);
        p
    };
    let cases = vec![
        case(
            "who has the gateway",
            arp(1, ME_MAC, ME, [0; 6], GW),
            TC_ACT_REDIRECT,
            Out::Exactly(reply(GW_MAC, GW)),
            ArpReplied,
        ),
        case(
            "who has a remote endpoint",
            arp(1, ME_MAC, ME, [0; 6], R),
            TC_ACT_REDIRECT,
            Out::Exactly(reply(R_MAC, R)),
            ArpReplied,
        ),
        case(
            "who has a local endpoint",
            arp(1, ME_MAC, ME, [0; 6], L),
            TC_ACT_REDIRECT,
            Out::Exactly(reply(L_MAC, L)),
            ArpReplied,
        ),
        case("who has an endpoint of another network", arp(1, ME_MAC, ME, [0; 6], B), TC_ACT_SHOT, Out::Any, DropArp),
        case(
            "who has the other network's gateway",
            arp(1, ME_MAC, ME, [0; 6], [10, 0, 1, 1]),
            TC_ACT_SHOT,
            Out::Any,
            DropArp,
        ),
        case("who has an unused address", arp(1, ME_MAC, ME, [0; 6], [10, 0, 0, 200]), TC_ACT_SHOT, Out::Any, DropArp),
        case("gratuitous ARP", arp(1, ME_MAC, ME, [0; 6], ME), TC_ACT_SHOT, Out::Any, DropArp),
        case(
            "request with another endpoint's address",
            arp(1, ME_MAC, L, [0; 6], GW),
            TC_ACT_SHOT,
            Out::Any,
            DropSpoofed,
        ),
        case(
            "request with another MAC",
            {
                let mut p = arp(1, L_MAC, ME, [0; 6], GW);
                p[6..12].copy_from_slice(&ME_MAC);
                p
            },
            TC_ACT_SHOT,
            Out::Any,
            DropSpoofed,
        ),
        case("a reply (nobody asked the container)", arp(2, ME_MAC, ME, R_MAC, R), TC_ACT_SHOT, Out::Any, DropArp),
    ];
    Rig::new().table(PROG_TC_ENDPOINT, Prog::TcEndpoint, &cases);
}

#[test]
fn tc_ipv4_goes_only_where_it_may() {
    use Reason::*;
    let to_l = frame(ME_MAC, L_MAC, ME, L, 17, &udp(1, 2, b"x"));
    // Sent to the gateway's MAC (routed): rewritten to the endpoint's.
    let via_gw = frame(ME_MAC, GW_MAC, ME, L, 17, &udp(1, 2, b"x"));
    let outside = frame(ME_MAC, GW_MAC, ME, OUTSIDE, 6, &tcp(1, 443));
    let mut outside_to_host = outside.clone();
    outside_to_host[0..6].copy_from_slice(&HOST_VETH_MAC);
    let dns_udp = frame(ME_MAC, GW_MAC, ME, GW, 17, &udp(40000, 53, b"query"));
    let mut dns_udp_to_host = dns_udp.clone();
    dns_udp_to_host[0..6].copy_from_slice(&HOST_VETH_MAC);
    let dns_tcp = frame(ME_MAC, GW_MAC, ME, GW, 6, &tcp(40000, 53));
    let ping_gw = frame(ME_MAC, GW_MAC, ME, GW, 1, &icmp_echo());
    let big_df = frame(ME_MAC, R_MAC, ME, R, 17, &udp(1, 2, &[7; 1472]));
    let big = {
        let mut p = eth(R_MAC, ME_MAC, 0x0800);
        p.extend(ip(ME, R, 17, false, 0, &udp(1, 2, &[7; 1472])));
        p
    };
    // Exactly fits: 1450 bytes of IP + 50 = 1500.
    let fits = frame(ME_MAC, R_MAC, ME, R, 17, &udp(1, 2, &[7; 1422]));
    let frag_needed = {
        let mut icmp = vec![3, 4, 0, 0, 0, 0];
        icmp.extend_from_slice(&1450u16.to_be_bytes());
        icmp.extend_from_slice(&big_df[14..14 + 28]);
        let c = csum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut h = vec![0x45, 0xc0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0];
        h.extend_from_slice(&GW);
        h.extend_from_slice(&ME);
        let c = csum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let mut p = eth(ME_MAC, GW_MAC, 0x0800);
        p.extend(h);
        p.extend(icmp);
        p
    };
    let cases = vec![
        case("to a local endpoint", to_l.clone(), TC_ACT_REDIRECT, Out::Exactly(to_l.clone()), DeliveredLocal),
        case("to a local endpoint via the gateway MAC", via_gw, TC_ACT_REDIRECT, Out::Exactly(to_l), DeliveredLocal),
        case(
            "to a remote endpoint",
            frame(ME_MAC, R_MAC, ME, R, 1, &icmp_echo()),
            TC_ACT_REDIRECT,
            Out::Any,
            Encapsulated,
        ),
        case("exactly the underlay MTU after encap", fits, TC_ACT_REDIRECT, Out::Any, Encapsulated),
        case(
            "too big with DF: ICMP fragmentation needed",
            big_df,
            TC_ACT_REDIRECT,
            Out::Exactly(frag_needed),
            IcmpFragNeeded,
        ),
        case("too big without DF", big, TC_ACT_SHOT, Out::Any, DropTooBig),
        case(
            "to another network's remote endpoint",
            frame(ME_MAC, GW_MAC, ME, B, 17, &udp(1, 2, b"x")),
            TC_ACT_SHOT,
            Out::Any,
            DropCrossNetwork,
        ),
        case(
            "to another network's local endpoint",
            frame(ME_MAC, GW_MAC, ME, BL, 17, &udp(1, 2, b"x")),
            TC_ACT_SHOT,
            Out::Any,
            DropCrossNetwork,
        ),
        case(
            "to an unused address of its network",
            frame(ME_MAC, GW_MAC, ME, [10, 0, 0, 200], 17, &udp(1, 2, b"x")),
            TC_ACT_SHOT,
            Out::Any,
            DropNoEndpoint,
        ),
        case(
            "from another endpoint's IP",
            frame(ME_MAC, R_MAC, L, R, 17, &udp(1, 2, b"x")),
            TC_ACT_SHOT,
            Out::Any,
            DropSpoofed,
        ),
        case("from another MAC", frame(L_MAC, R_MAC, ME, R, 17, &udp(1, 2, b"x")), TC_ACT_SHOT, Out::Any, DropSpoofed),
        case("leaving the overlay", outside, TC_ACT_OK, Out::Exactly(outside_to_host), PassToHost),
        // The gateway is the host's: DNS (its resolver) and ICMP reach it, and nothing else.
        case("DNS over UDP to the gateway", dns_udp.clone(), TC_ACT_OK, Out::Exactly(dns_udp_to_host), PassToHost),
        case("DNS over TCP to the gateway", dns_tcp, TC_ACT_OK, Out::Any, PassToHost),
        case("ping to the gateway", ping_gw, TC_ACT_OK, Out::Any, PassToHost),
        case(
            "another port of the gateway",
            frame(ME_MAC, GW_MAC, ME, GW, 6, &tcp(40000, 22)),
            TC_ACT_SHOT,
            Out::Any,
            DropNoEndpoint,
        ),
        case(
            "another network's gateway",
            frame(ME_MAC, GW_MAC, ME, [10, 0, 1, 1], 17, &udp(40000, 53, b"q")),
            TC_ACT_SHOT,
            Out::Any,
            DropCrossNetwork,
        ),
        case(
            "IPv6",
            {
                let mut p = eth([0x33, 0x33, 0, 0, 0, 1], ME_MAC, 0x86dd);
                p.extend([0x60; 40]);
                p
            },
            TC_ACT_SHOT,
            Out::Any,
            DropUnsupported,
        ),
        // (The kernel's test-run refuses an IPv4 frame shorter than its header.)
        case(
            "IPv4 header length below 20",
            {
                let mut p = frame(ME_MAC, R_MAC, ME, R, 17, &udp(1, 2, b"x"));
                p[14] = 0x44;
                p
            },
            TC_ACT_SHOT,
            Out::Any,
            DropMalformed,
        ),
        case(
            "ARP ethertype, header cut",
            {
                let mut p = eth([0xff; 6], ME_MAC, 0x0806);
                p.extend([0, 1, 8, 0]);
                p
            },
            TC_ACT_SHOT,
            Out::Any,
            DropMalformed,
        ),
    ];
    let mut rig = Rig::new();
    rig.table(PROG_TC_ENDPOINT, Prog::TcEndpoint, &cases);

    // internal: true keeps it in.
    let mut nets: HashMap<_, u32, NetworkValue> = rig.map(MAP_NETWORKS);
    nets.insert(
        FRONT,
        NetworkValue { gateway: GW, gateway_mac: GW_MAC, mtu: 1450, flags: NETWORK_F_LOCAL | NETWORK_F_INTERNAL },
        0,
    )
    .unwrap();
    let out2 = frame(ME_MAC, GW_MAC, ME, OUTSIDE, 6, &tcp(1, 443));
    let dns_internal = frame(ME_MAC, GW_MAC, ME, GW, 17, &udp(40000, 53, b"query"));
    rig.table(
        PROG_TC_ENDPOINT,
        Prog::TcEndpoint,
        &[
            case("leaving an internal network", out2, TC_ACT_SHOT, Out::Any, DropInternal),
            case("an internal network's DNS to its gateway", dns_internal, TC_ACT_OK, Out::Any, PassToHost),
        ],
    );

    // A veth the maps do not know.
    let mut ifaces: HashMap<_, u32, IfaceValue> = rig.map(MAP_IFACES);
    ifaces.remove(&ME_IF).unwrap();
    let p = frame(ME_MAC, R_MAC, ME, R, 17, &udp(1, 2, b"x"));
    rig.table(PROG_TC_ENDPOINT, Prog::TcEndpoint, &[case("unknown veth", p, TC_ACT_SHOT, Out::Any, DropUnknownIface)]);
}

// ---------------------------------------------------------------------------
// Internal VIPs (TC): connection table, Maglev, DNAT, reverse NAT, hairpin
// ---------------------------------------------------------------------------

#[test]
fn tc_vip_dnat_to_a_remote_backend_keeps_the_client_address() {
    let mut rig = Rig::with_vip(R, FRONT);
    let syn = frame(ME_MAC, GW_MAC, ME, VIP, 6, &tcp_with_csum(ME, VIP, 40000, 80));
    let (verdict, out) = rig.run(PROG_TC_ENDPOINT, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(rig.counter(Prog::TcEndpoint, Reason::Encapsulated), 1);
    let inner = &out[64..];
    assert_eq!(inner[12..16], ME, "the backend sees the client's own address");
    assert_eq!(inner[16..20], R, "destination: the backend");
    assert_eq!(inner[22..24], 8080u16.to_be_bytes(), "the backends' port");
    assert_eq!(csum(&inner[..20]), 0, "inner IPv4 checksum");
    assert!(l4_csum_ok(inner), "inner TCP checksum");
    assert_eq!(out[50..56], R_MAC, "inner destination MAC: the backend's");
    // Both directions are in the connection table.
    let f = rig.ct(ctk(ME, VIP, 40000, 80)).expect("forward entry");
    assert_eq!((f.action, f.new_dst, f.new_dport), (CT_DNAT, R, 8080));
    let r = rig.ct(ctk(R, ME, 8080, 40000)).expect("reverse entry");
    assert_eq!((r.action, r.new_src, r.new_sport), (CT_REVNAT, VIP, 80));
    let stats: aya::maps::PerCpuHashMap<_, BackendKey, BackendStats> =
        aya::maps::PerCpuHashMap::try_from(rig.ebpf().map(MAP_BACKEND_STATS).unwrap()).unwrap();
    let s = stats.get(&BackendKey { service_id: SVC, ip: R }, 0).unwrap();
    assert_eq!((s.iter().map(|c| c.flows).sum::<u64>(), s.iter().map(|c| c.packets).sum::<u64>()), (1, 1));
}

#[test]
fn tc_vip_hairpin_both_ways() {
    let mut rig = Rig::with_vip(ME, FRONT);
    let req = frame(ME_MAC, GW_MAC, ME, VIP, 6, &tcp_with_csum(ME, VIP, 40001, 80));
    let (verdict, out) = rig.run(PROG_TC_ENDPOINT, &req);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(rig.counter(Prog::TcEndpoint, Reason::DeliveredLocal), 1);
    assert_eq!(out[26..30], VIP, "picked itself: it sees the VIP as the source");
    assert_eq!(out[30..34], ME);
    assert!(l4_csum_ok(&out[14..]));
    // Its reply to the VIP goes back to itself, from VIP:80.
    let reply = frame(ME_MAC, GW_MAC, ME, VIP, 6, &tcp_with_csum(ME, VIP, 8080, 40001));
    let (verdict, out) = rig.run(PROG_TC_ENDPOINT, &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!((out[26..30].to_vec(), out[34..36].to_vec()), (VIP.to_vec(), 80u16.to_be_bytes().to_vec()));
    assert_eq!((out[30..34].to_vec(), out[36..38].to_vec()), (ME.to_vec(), 40001u16.to_be_bytes().to_vec()));
    assert!(l4_csum_ok(&out[14..]));
}

#[test]
fn tc_vip_flows_stay_put_until_their_backend_leaves() {
    let mut rig = Rig::with_vip(R, FRONT);
    let pkt = |sport| frame(ME_MAC, GW_MAC, ME, VIP, 6, &tcp_with_csum(ME, VIP, sport, 80));
    rig.run(PROG_TC_ENDPOINT, &pkt(41000));
    // The tables now say L: the established flow stays on R, a new one goes to L.
    rig.set_maglev(L);
    let (_, out) = rig.run(PROG_TC_ENDPOINT, &pkt(41000));
    assert_eq!(out[64 + 16..64 + 20], R, "established flow kept its backend");
    let (v, out) = rig.run(PROG_TC_ENDPOINT, &pkt(41001));
    assert_eq!((v, out[30..34].to_vec()), (TC_ACT_REDIRECT, L.to_vec()), "new flow on the new table");
    // R leaves the service: its flow moves on its next packet.
    let mut b: HashMap<_, BackendKey, u8> = rig.map(MAP_BACKENDS);
    b.remove(&BackendKey { service_id: SVC, ip: R }).unwrap();
    let (_, out) = rig.run(PROG_TC_ENDPOINT, &pkt(41000));
    assert_eq!(out[30..34], L, "flow of a removed backend re-picked");
}

fn a_known_flows_packet_puts_back_its_evicted_reply_entry(u: Hook) {
    // VIP (TC): the reply entry is gone, the forward one is not.
    let mut rig = Rig::with_vip(R, FRONT);
    let pkt = frame(ME_MAC, GW_MAC, ME, VIP, 6, &tcp_with_csum(ME, VIP, 41100, 80));
    rig.run(PROG_TC_ENDPOINT, &pkt);
    let rk = ctk(R, ME, 8080, 41100);
    let before = rig.ct(rk).unwrap();
    rig.evict(rk);
    let (verdict, out) = rig.run(PROG_TC_ENDPOINT, &pkt);
    assert_eq!((verdict, out[64 + 16..64 + 20].to_vec()), (TC_ACT_REDIRECT, R.to_vec()));
    let after = rig.ct(rk).expect("the reply entry is back");
    assert_eq!(after, CtValue { last_seen_ns: after.last_seen_ns, ..before });
    assert_eq!(rig.backend_flows(R), 1, "still one flow: the forward entry was a hit");

    // Routing mesh (XDP), a remote backend.
    private_underlay();
    let mut rig = Rig::with_published(8080, PROTO_TCP, R);
    let pkt = from_client(&tcp_with_csum(OUTSIDE, HOST, 50100, 8080), 6);
    rig.run(u.prog(), &pkt);
    let rk = ctk(R, OUTSIDE, 80, 50100);
    let before = rig.ct(rk).unwrap();
    rig.evict(rk);
    assert_eq!(rig.run(u.prog(), &pkt).0, u.redirect());
    let after = rig.ct(rk).expect("the reply entry is back");
    assert_eq!((after.action, after.new_src, after.new_sport), (CT_SNAT_OUT, HOST, 8080));
    assert_eq!(after, CtValue { last_seen_ns: after.last_seen_ns, ..before });
    assert_eq!(rig.backend_flows(R), 1);
}

#[test]
fn a_flows_packets_write_its_last_seen_time_at_most_once_a_second() {
    let mut rig = Rig::with_vip(R, FRONT);
    let pkt = frame(ME_MAC, GW_MAC, ME, VIP, 6, &tcp_with_csum(ME, VIP, 41200, 80));
    rig.run(PROG_TC_ENDPOINT, &pkt);
    let k = ctk(ME, VIP, 41200, 80);
    // Seen 2 s ago: the next packet writes the time.
    let stale = monotonic_ns() - 2_000_000_000;
    let entry = rig.ct(k).unwrap();
    rig.set_ct(k, CtValue { last_seen_ns: stale, ..entry });
    let before_run = monotonic_ns();
    assert_eq!(rig.run(PROG_TC_ENDPOINT, &pkt).0, TC_ACT_REDIRECT);
    let written = rig.ct(k).unwrap();
    assert!(written.last_seen_ns >= before_run, "refreshed: {} < {before_run}", written.last_seen_ns);
    assert_eq!(written, CtValue { last_seen_ns: written.last_seen_ns, ..entry }, "nothing else changed");
    // Seen just now: the packet leaves the entry as it is.
    let fresh = monotonic_ns();
    rig.set_ct(k, CtValue { last_seen_ns: fresh, ..entry });
    assert_eq!(rig.run(PROG_TC_ENDPOINT, &pkt).0, TC_ACT_REDIRECT);
    assert_eq!(rig.ct(k).unwrap().last_seen_ns, fresh, "not written within a second of the last write");
    // Idle past the TCP timeout: the entry no longer counts, and the flow
    // is picked and recorded afresh.
    let flows = rig.backend_flows(R);
    rig.set_ct(k, CtValue { last_seen_ns: fresh.wrapping_sub(86_400_000_000_000), ..entry });
    assert_eq!(rig.run(PROG_TC_ENDPOINT, &pkt).0, TC_ACT_REDIRECT);
    assert_eq!(rig.backend_flows(R), flows + 1, "an idled-out flow is a new flow");
    assert!(rig.ct(k).unwrap().last_seen_ns >= fresh);
}

/// An IPv4 header the data path writes (ID 0) over `l4`, with `tos`.
fn our_ip(src: [u8; 4], dst: [u8; 4], proto: u8, df: bool, tos: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = ip(src, dst, proto, df, 0, l4);
    h[1] = tos;
    h[4..6].copy_from_slice(&[0, 0]);
    h[10..12].copy_from_slice(&[0, 0]);
    let c = csum(&h[..20]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// What a host with no listener answers a SYN of sequence number 1 with
/// (`tcp()`'s): RST|ACK, sequence 0, acknowledging 2, from `from`:`fport`.
fn reset_of_syn(to_mac: [u8; 6], from_mac: [u8; 6], from: [u8; 4], to: [u8; 4], fport: u16, tport: u16) -> Vec<u8> {
    let mut t = fport.to_be_bytes().to_vec();
    t.extend_from_slice(&tport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, 0x50, 0x14, 0, 0, 0, 0, 0, 0]);
    let c = l4_csum(&from, &to, 6, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    let mut p = eth(to_mac, from_mac, 0x0800);
    p.extend(our_ip(from, to, 6, true, 0, &t));
    p
}

/// ICMP port unreachable from `from` quoting the IPv4 packet `quoted` (its
/// header and 8 bytes).
fn port_unreachable(to_mac: [u8; 6], from_mac: [u8; 6], from: [u8; 4], to: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&quoted[..28]);
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut p = eth(to_mac, from_mac, 0x0800);
    p.extend(our_ip(from, to, 1, false, 0xc0, &m));
    p
}

#[test]
fn tc_vip_without_backends_answers_as_a_closed_port_and_another_networks_is_dropped() {
    let mut rig = Rig::with_vip([0; 4], FRONT);
    let mut svcs: HashMap<_, ServiceKey, ServiceValue> = rig.map(MAP_SERVICES);
    let v = ServiceValue { service_id: SVC, vni: FRONT, target_port: 53, lb_slot: 0, ..Default::default() };
    svcs.insert(ServiceKey { addr: VIP, port: 53, proto: PROTO_UDP, _pad: 0 }, v, 0).unwrap();
    let syn = frame(ME_MAC, GW_MAC, ME, VIP, 6, &tcp_with_csum(ME, VIP, 40000, 80));
    let query = frame(ME_MAC, GW_MAC, ME, VIP, 17, &udp(40001, 53, b"q"));
    let mut rst = syn.clone();
    rst[47] = 0x14; // RST|ACK
    rig.table(
        PROG_TC_ENDPOINT,
        Prog::TcEndpoint,
        &[
            case(
                "TCP to a VIP with no backend: a reset from the VIP",
                syn.clone(),
                TC_ACT_REDIRECT,
                Out::Exactly(reset_of_syn(ME_MAC, GW_MAC, VIP, ME, 80, 40000)),
                Reason::RejectNoBackend,
            ),
            case(
                "UDP to it: port unreachable from the VIP, quoting the datagram",
                query.clone(),
                TC_ACT_REDIRECT,
                Out::Exactly(port_unreachable(ME_MAC, GW_MAC, VIP, ME, &query[14..])),
                Reason::RejectNoBackend,
            ),
            case("a reset to it: never answered", rst, TC_ACT_SHOT, Out::Any, Reason::DropNoBackend),
        ],
    );
    let mut rig = Rig::with_vip(R, BACK);
    rig.table(
        PROG_TC_ENDPOINT,
        Prog::TcEndpoint,
        &[case("another network's VIP", syn, TC_ACT_SHOT, Out::Any, Reason::DropCrossNetwork)],
    );
}

fn mesh_without_backends_answers_as_a_closed_port(u: Hook) {
    private_underlay();
    let client_mac = [2, 0, 0, 0, 0, 0x99];
    let mut rig = Rig::with_published(8080, PROTO_TCP, [0; 4]);
    let syn = from_client(&tcp_with_csum(OUTSIDE, HOST, 50000, 8080), 6);
    let mut rst = syn.clone();
    rst[47] = 0x04;
    rig.table(
        u.prog(),
        Prog::XdpUnderlay,
        &[
            case(
                "TCP to a published port with no backend: a reset from the host's address, back out",
                syn,
                u.redirect(),
                Out::Exactly(reset_of_syn(client_mac, HOST_MAC, HOST, OUTSIDE, 8080, 50000)),
                Reason::RejectNoBackend,
            ),
            case("a reset to it: never answered", rst, u.drop(), Out::Any, Reason::DropNoBackend),
        ],
    );
    assert!(rig.ct(ctk(OUTSIDE, HOST, 50000, 8080)).is_none(), "no flow recorded for a refused connection");
    let mut rig = Rig::with_published(53, PROTO_UDP, [0; 4]);
    // Shorter than the answer: the frame grows to hold it.
    let query = from_client(&udp(50001, 53, b"q"), 17);
    rig.table(
        u.prog(),
        Prog::XdpUnderlay,
        &[case(
            "UDP to it: port unreachable from the host's address",
            query.clone(),
            u.redirect(),
            Out::Exactly(port_unreachable(client_mac, HOST_MAC, HOST, OUTSIDE, &query[14..])),
            Reason::RejectNoBackend,
        )],
    );
}

fn reverse_nat_of_a_remote_backends_reply(u: Hook) {
    let mut rig = Rig::with_vip(R, FRONT);
    // The client here opened ME:40000 -> VIP:80; R was picked.
    let syn = frame(ME_MAC, GW_MAC, ME, VIP, 6, &tcp_with_csum(ME, VIP, 40000, 80));
    assert_eq!(rig.run(PROG_TC_ENDPOINT, &syn).0, TC_ACT_REDIRECT);
    // R's answer arrives from its host in VXLAN.
    for (what, l4) in [("TCP", tcp_with_csum(R, ME, 8080, 40000)), ("TCP again", tcp_with_csum(R, ME, 8080, 40000))] {
        let reply = frame(R_MAC, ME_MAC, R, ME, 6, &l4);
        let (verdict, out) = rig.run(u.prog(), &vxlan(PEER, 0x08, FRONT, &reply));
        assert_eq!(verdict, u.redirect(), "{what}");
        assert_eq!(out[26..30], VIP, "{what}: the reply comes from the VIP");
        assert_eq!(out[34..36], 80u16.to_be_bytes(), "{what}: and its port");
        assert_eq!(out[30..34], ME);
        assert_eq!(csum(&out[14..34]), 0, "{what}: IPv4 checksum");
        assert!(l4_csum_ok(&out[14..]), "{what}: TCP checksum");
    }
    // A packet of no translated flow passes untouched.
    let other = frame(R_MAC, ME_MAC, R, ME, 6, &tcp_with_csum(R, ME, 8080, 49999));
    let (_, out) = rig.run(u.prog(), &vxlan(PEER, 0x08, FRONT, &other));
    assert_eq!(out[26..30], R);
}

// ---------------------------------------------------------------------------
// The routing mesh (XDP ingress, tunnelled replies; TC replies)
// ---------------------------------------------------------------------------

fn mesh_dnat_to_a_local_backend_and_tc_reply_from_the_published_address(u: Hook) {
    private_underlay();
    let mut rig = Rig::with_published(8080, PROTO_TCP, ME);
    let (verdict, out) = rig.run(u.prog(), &from_client(&tcp_with_csum(OUTSIDE, HOST, 50000, 8080), 6));
    assert_eq!(verdict, u.redirect());
    // Exactly the packet the backend would get had the client sent it
    // directly: destination and port rewritten, source kept, checksums right.
    let mut want = eth(ME_MAC, GW_MAC, 0x0800);
    want.extend(ip(OUTSIDE, ME, 6, true, 0, &tcp_with_csum(OUTSIDE, ME, 50000, 80)));
    assert_eq!(out, want);
    assert_eq!(rig.counter(Prog::XdpUnderlay, Reason::MeshLocal), 1);
    assert_eq!(rig.backend_flows(ME), 1);
    let fwd = rig.ct(ctk(OUTSIDE, HOST, 50000, 8080)).expect("the flow's entry");
    assert_eq!((fwd.action, fwd.new_dst, fwd.new_dport), (CT_DNAT, ME, 80));
    let rev = rig.ct(ctk(ME, OUTSIDE, 80, 50000)).expect("the reply's entry");
    assert_eq!((rev.action, rev.new_src, rev.new_sport), (CT_SNAT_OUT, HOST, 8080));

    // The backend's reply leaves from the published address, through the
    // underlay (redirect_neigh), checksums right.
    let reply = frame(ME_MAC, GW_MAC, ME, OUTSIDE, 6, &tcp_with_csum(ME, OUTSIDE, 80, 50000));
    let (verdict, out) = rig.run(PROG_TC_ENDPOINT, &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(rig.counter(Prog::TcEndpoint, Reason::MeshReplied), 1);
    let mut want = eth(GW_MAC, ME_MAC, 0x0800);
    want.extend(ip(HOST, OUTSIDE, 6, true, 0, &tcp_with_csum(HOST, OUTSIDE, 8080, 50000)));
    assert_eq!(out, want);

    // Connection-table hit: the tables change, the flow stays; a new flow
    // follows the tables.
    rig.set_maglev(L);
    let (_, out) = rig.run(u.prog(), &from_client(&tcp_with_csum(OUTSIDE, HOST, 50000, 8080), 6));
    assert_eq!(out[30..34], ME, "established flow kept its backend");
    let (_, out) = rig.run(u.prog(), &from_client(&tcp_with_csum(OUTSIDE, HOST, 50009, 8080), 6));
    assert_eq!(out[30..34], L, "a new flow follows the new table");
    assert_eq!(rig.backend_flows(ME), 1, "a hit is not a new flow");

    // A port nobody published: the host stack gets it untouched.
    let other = from_client(&tcp_with_csum(OUTSIDE, HOST, 50000, 8081), 6);
    let (verdict, out) = rig.run(u.prog(), &other);
    assert_eq!((verdict, &out), (u.pass(), &other));
    // The same port over UDP is not the TCP service either.
    let other = from_client(&udp(50000, 8080, b"x"), 17);
    assert_eq!(rig.run(u.prog(), &other), (u.pass(), other.clone()));
}

fn mesh_tunnels_to_a_remote_backend_and_translates_the_reply_back(u: Hook) {
    private_underlay();
    let mut rig = Rig::with_published(8080, PROTO_TCP, R);
    let (verdict, out) = rig.run(u.prog(), &from_client(&tcp_with_csum(OUTSIDE, HOST, 50001, 8080), 6));
    assert_eq!(verdict, u.redirect());
    assert_eq!(rig.counter(Prog::XdpUnderlay, Reason::MeshTunneled), 1);
    let mut inner = eth(R_MAC, GW_MAC, 0x0800);
    inner.extend(ip(OUTSIDE, R, 6, true, 0, &tcp_with_csum(OUTSIDE, R, 50001, 80)));
    let sport = u16::from_be_bytes([out[34], out[35]]);
    let mut want = encapsulated(&inner, PEER, FRONT, sport);
    // Outer MACs from the kernel's FIB and neighbour table; the mesh marker.
    want[0..6].copy_from_slice(&PEER_MAC);
    want[6..12].copy_from_slice(&UL_MAC);
    want[49] = VXLAN_MESH_FWD;
    assert_eq!(out, want);
    assert!(sport >= VXLAN_SPORT_BASE);

    // The reply, tunnelled back by R's host: out to the client from the
    // published address, through the default router.
    let reply = frame(R_MAC, GW_MAC, R, OUTSIDE, 6, &tcp_with_csum(R, OUTSIDE, 80, 50001));
    let mut tunnelled = vxlan(PEER, 0x08, FRONT, &reply);
    tunnelled[14 + 20 + 8 + 7] = VXLAN_MESH_REPLY;
    let (verdict, out) = rig.run(u.prog(), &tunnelled);
    assert_eq!(verdict, u.redirect());
    let mut want = eth(ROUTER_MAC, UL_MAC, 0x0800);
    want.extend(ip(HOST, OUTSIDE, 6, true, 0, &tcp_with_csum(HOST, OUTSIDE, 8080, 50001)));
    assert_eq!(out, want);
    assert_eq!(rig.counter(Prog::XdpUnderlay, Reason::MeshReplied), 1);

    // A "reply" of no flow, or from a host the flow was not sent to: dropped.
    let stray = frame(R_MAC, GW_MAC, R, OUTSIDE, 6, &tcp_with_csum(R, OUTSIDE, 80, 50002));
    let mut t = vxlan(PEER, 0x08, FRONT, &stray);
    t[49] = VXLAN_MESH_REPLY;
    let mut t2 = tunnelled.clone();
    t2[26..30].copy_from_slice(&HOST);
    rig.table(
        u.prog(),
        Prog::XdpUnderlay,
        &[
            case("mesh reply of no flow", t, u.drop(), Out::Any, Reason::DropNoFlow),
            case("mesh reply from the wrong host", t2, u.drop(), Out::Any, Reason::DropNoFlow),
        ],
    );
}

fn mesh_caches_the_next_hop_for_a_second(u: Hook) {
    private_underlay();
    let mut rig = Rig::with_published(8080, PROTO_TCP, R);
    let pkt = |sport| from_client(&tcp_with_csum(OUTSIDE, HOST, sport, 8080), 6);
    let (verdict, out) = rig.run(u.prog(), &pkt(50001));
    assert_eq!((verdict, &out[0..6]), (u.redirect(), &PEER_MAC[..]));
    let mut hops: HashMap<_, [u8; 4], NextHop> = rig.map(MAP_NEXT_HOPS);
    let cached = hops.get(&PEER, 0).expect("the FIB's answer for PEER is cached");
    assert_eq!((cached.smac, cached.dmac), (UL_MAC, PEER_MAC));
    let now = monotonic_ns();
    // A fresh entry is used as it is (no FIB lookup)...
    let fake = [2, 0, 0, 0, 0, 0x99];
    hops.insert(PEER, NextHop { dmac: fake, checked_ns: now, ..cached }, 0).unwrap();
    let (_, out) = rig.run(u.prog(), &pkt(50002));
    assert_eq!(out[0..6], fake, "cached next hop used");
    // ...one older than NEXT_HOP_TTL_NS is looked up again.
    let mut hops: HashMap<_, [u8; 4], NextHop> = rig.map(MAP_NEXT_HOPS);
    hops.insert(PEER, NextHop { dmac: fake, checked_ns: now - NEXT_HOP_TTL_NS - 1, ..cached }, 0).unwrap();
    let (_, out) = rig.run(u.prog(), &pkt(50003));
    assert_eq!(out[0..6], PEER_MAC, "stale entry refreshed from the FIB");
}

/// A mesh flow's forward entry carries where its packets go (the backend's
/// and gateway's MACs, the next hop), so its later packets skip the
/// endpoint, network and next-hop lookups; the carried fields are read again
/// once a second old, and an entry converted from the previous layout gets
/// them on its next packet.
fn mesh_flows_carry_their_destination_and_read_it_again_after_a_second(u: Hook) {
    private_underlay();
    let mut rig = Rig::with_published(8080, PROTO_TCP, R);
    let pkt = || from_client(&tcp_with_csum(OUTSIDE, HOST, 50001, 8080), 6);
    // The inner frame's destination MAC in the tunnelled packet.
    let inner_dst = |out: &[u8]| -> [u8; 6] { out[50..56].try_into().unwrap() };
    let t0 = monotonic_ns();
    let (verdict, out) = rig.run(u.prog(), &pkt());
    assert_eq!((verdict, inner_dst(&out)), (u.redirect(), R_MAC));
    let k = ctk(OUTSIDE, HOST, 50001, 8080);
    let fwd = rig.ct(k).expect("the flow's entry");
    assert_eq!(fwd.flags, CT_F_CARRIED, "carried, a remote backend over a clear network");
    assert_eq!((fwd.mac, fwd.gw_mac, fwd.hop_smac, fwd.hop_dmac), (R_MAC, GW_MAC, UL_MAC, PEER_MAC));
    let hop: HashMap<_, [u8; 4], NextHop> = rig.map(MAP_NEXT_HOPS);
    assert_eq!(fwd.ifindex, hop.get(&PEER, 0).unwrap().ifindex, "the next hop's device");
    assert!(fwd.carried_ns >= t0 && fwd.carried_ns <= monotonic_ns());

    // R's MAC changes in the maps: the flow goes on with what it carries
    // (the endpoint map is not read), a new flow reads the maps.
    let moved = [2, 0x42, 10, 0, 0, 0x77];
    let mut eps: HashMap<_, EndpointKey, EndpointValue> = rig.map(MAP_ENDPOINTS);
    eps.insert(EndpointKey { vni: FRONT, ip: R }, ep(moved, 0, PEER), 0).unwrap();
    let (_, out) = rig.run(u.prog(), &pkt());
    assert_eq!(inner_dst(&out), R_MAC, "carried");
    let (_, out) = rig.run(u.prog(), &from_client(&tcp_with_csum(OUTSIDE, HOST, 50002, 8080), 6));
    assert_eq!(inner_dst(&out), moved, "a new flow reads the endpoint map");

    // A second later the flow reads the maps again and carries the new MAC.
    rig.set_ct(k, CtValue { carried_ns: monotonic_ns() - NEXT_HOP_TTL_NS - 1, ..fwd });
    let (_, out) = rig.run(u.prog(), &pkt());
    assert_eq!(inner_dst(&out), moved, "read again after NEXT_HOP_TTL_NS");
    let again = rig.ct(k).unwrap();
    assert_eq!((again.mac, again.new_dst, again.action), (moved, R, CT_DNAT));
    assert!(again.carried_ns >= fwd.carried_ns, "read again now");

    // An entry converted from OB_CT_V1 carries nothing: its next packet
    // reads the maps, keeps its backend, and carries from then on.
    let converted = CtValue {
        flags: 0,
        mac: [0; 6],
        gw_mac: [0; 6],
        ifindex: 0,
        hop_smac: [0; 6],
        hop_dmac: [0; 6],
        carried_ns: 0,
        ..again
    };
    rig.set_ct(k, converted);
    let (verdict, out) = rig.run(u.prog(), &pkt());
    assert_eq!((verdict, inner_dst(&out), &out[0..6]), (u.redirect(), moved, &PEER_MAC[..]));
    let now = rig.ct(k).unwrap();
    assert_eq!((now.flags, now.mac, now.hop_dmac, now.new_dst), (CT_F_CARRIED, moved, PEER_MAC, R));
    assert_eq!(rig.backend_flows(R), 2, "two flows picked: 50001 once, 50002");

    // A local backend's entry carries its veth.
    let mut rig = Rig::with_published(8080, PROTO_TCP, ME);
    let (verdict, _) = rig.run(u.prog(), &pkt());
    assert_eq!(verdict, u.redirect());
    let fwd = rig.ct(k).unwrap();
    assert_eq!((fwd.flags, fwd.mac, fwd.ifindex), (CT_F_CARRIED | CT_F_LOCAL, ME_MAC, ME_IF));
}

fn mesh_udp_keeps_a_zero_checksum_and_fixes_a_real_one(u: Hook) {
    private_underlay();
    let mut rig = Rig::with_published(5353, PROTO_UDP, ME);
    let (verdict, out) = rig.run(u.prog(), &from_client(&udp(40000, 5353, b"query"), 17));
    assert_eq!(verdict, u.redirect());
    let mut want = eth(ME_MAC, GW_MAC, 0x0800);
    want.extend(ip(OUTSIDE, ME, 17, true, 0, &udp(40000, 80, b"query")));
    assert_eq!(out, want, "zero UDP checksum stays zero");
    let mut with = udp(40001, 5353, b"query");
    let c = l4_csum(&OUTSIDE, &HOST, 17, &with);
    with[6..8].copy_from_slice(&c.to_be_bytes());
    let (_, out) = rig.run(u.prog(), &from_client(&with, 17));
    assert!(l4_csum_ok(&out[14..]), "UDP checksum updated");
    let rev = rig.ct(CtKey { src: ME, dst: OUTSIDE, sport: 80, dport: 40001, proto: PROTO_UDP, _pad: [0; 3] });
    assert_eq!(rev.map(|r| (r.action, r.new_sport)), Some((CT_SNAT_OUT, 5353)));
}

fn backend_host_remembers_the_ingress_host_and_tunnels_replies_back(u: Hook) {
    let mut rig = Rig::new();
    // ME backs the published service PEER picked it for.
    rig.mark_backend(ME);
    // A client's packet for local ME, tunnelled here by PEER with the mesh marker.
    let inner = frame(GW_MAC, ME_MAC, OUTSIDE, ME, 6, &tcp_with_csum(OUTSIDE, ME, 50003, 80));
    let mut fwd = vxlan(PEER, 0x08, FRONT, &inner);
    fwd[49] = VXLAN_MESH_FWD;
    let (verdict, out) = rig.run(u.prog(), &fwd);
    assert_eq!(verdict, u.redirect());
    assert_eq!(out[26..30], OUTSIDE, "the backend sees the client's address");
    let t = rig.ct(ctk(ME, OUTSIDE, 80, 50003)).expect("the reply's entry");
    assert_eq!((t.action, t.vtep, t.vni), (CT_TUNNEL, PEER, FRONT));
    // ME's reply goes back to PEER in VXLAN, marked, untranslated.
    let reply = frame(ME_MAC, GW_MAC, ME, OUTSIDE, 6, &tcp_with_csum(ME, OUTSIDE, 80, 50003));
    let (verdict, out) = rig.run(PROG_TC_ENDPOINT, &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(rig.counter(Prog::TcEndpoint, Reason::MeshTunneledBack), 1);
    assert_eq!(out[30..34], PEER);
    assert_eq!(out[49], VXLAN_MESH_REPLY);
    assert_eq!(out[64..], reply[14..], "the inner packet is untouched");
    // The marker does not let a peer speak for an overlay address.
    let spoof = frame(R_MAC, ME_MAC, R, ME, 6, &tcp_with_csum(R, ME, 50004, 80));
    let mut s = vxlan(PEER, 0x08, FRONT, &spoof);
    s[49] = VXLAN_MESH_FWD;
    rig.table(
        u.prog(),
        Prog::XdpUnderlay,
        &[case("mesh marker with an overlay source", s, u.drop(), Out::Any, Reason::DropSpoofed)],
    );
}

/// ICMP error `typ`/`code` from `src` to `dst` quoting `quoted` (an IPv4
/// packet; its header and 8 bytes are quoted).
fn icmp_error(src: [u8; 4], dst: [u8; 4], typ: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![typ, code, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&quoted[..28]);
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut p = eth(GW_MAC, ME_MAC, 0x0800);
    p.extend(ip(src, dst, 1, false, 0, &m));
    p
}

fn icmp_errors_about_translated_flows_are_translated_too(u: Hook) {
    private_underlay();
    let mut rig = Rig::with_published(5353, PROTO_UDP, ME);
    // The client asked HOST:5353; ME (port 80) has nothing listening.
    let (_, delivered) = rig.run(u.prog(), &from_client(&udp(40000, 5353, b"query"), 17));
    let unreachable = icmp_error(ME, OUTSIDE, 3, 3, &delivered[14..]);
    let (verdict, out) = rig.run(PROG_TC_ENDPOINT, &unreachable);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(rig.counter(Prog::TcEndpoint, Reason::IcmpTranslated), 1);
    // What the client's stack needs: from the address it sent to, quoting
    // the packet as it sent it.
    let sent = ip(OUTSIDE, HOST, 17, true, 0, &udp(40000, 5353, b"query"));
    let want = icmp_error(HOST, OUTSIDE, 3, 3, &sent);
    assert_eq!(out[14..], want[14..], "translated error, all three checksums right");

    // An error about no translated flow goes its usual way (to R's host in
    // VXLAN) untouched.
    let other = icmp_error(ME, R, 3, 3, &ip(R, ME, 17, true, 0, &udp(1, 2, b"x")));
    let (_, out) = rig.run(PROG_TC_ENDPOINT, &other);
    assert_eq!(out[64..], other[14..]);
}

// ---------------------------------------------------------------------------
// Encrypted networks: between hosts only through WireGuard
// ---------------------------------------------------------------------------

/// "front" made an encrypted network, on a host whose WireGuard device is
/// `wg_ifindex` (0: none) with its port 51820.
fn encrypted_rig(wg_ifindex: u32) -> Rig {
    let mut rig = Rig::new();
    let mut nets: HashMap<_, u32, NetworkValue> = rig.map(MAP_NETWORKS);
    let mut front = nets.get(&FRONT, 0).unwrap();
    front.flags |= NETWORK_F_ENCRYPTED;
    nets.insert(FRONT, front, 0).unwrap();
    let mut wg: aya::maps::Array<_, WgConfig> =
        aya::maps::Array::try_from(rig.ebpf().map_mut(MAP_WIREGUARD).unwrap()).unwrap();
    wg.set(0, WgConfig { ifindex: wg_ifindex, tc_ifindex: 77, xdp_ifindex: 78, port: 51820, _pad: 0 }, 0).unwrap();
    rig
}

fn an_encrypted_network_is_sealed_into_wireguard_and_never_taken_in_clear(u: Hook) {
    use Reason::*;
    let mut rig = encrypted_rig(76);
    let wg_message = |src: [u8; 4], msg: &[u8]| {
        let mut p = eth([2; 6], [4; 6], 0x0800);
        p.extend(ip(src, HOST, 17, true, 0, &udp(51820, 51820, msg)));
        p
    };
    let to_wg_port = |src: [u8; 4]| wg_message(src, &[1, 0, 0, 0, 9, 9, 9, 9]);
    // A data message: type 4, receiver index, counter, then a payload and
    // its 16-byte tag; a keepalive is the header and tag alone.
    let data = |payload: usize| [&[4u8, 0, 0, 0][..], &[7; 12], &vec![0xee; payload + 16]].concat();
    let from_r = frame(R_MAC, [0xaa; 6], R, ME, 17, &udp(1000, 2000, b"hello"));
    let to_b = frame([2, 0x42, 10, 0, 1, 9], [2, 0x42, 10, 0, 1, 5], B, BL, 17, &udp(1, 2, b"x"));
    let cases = vec![
        // The same VXLAN that a plain network would take: dropped when it
        // arrives in clear on the underlay (the WireGuard path is the only way in).
        case(
            "VXLAN of the encrypted network in clear",
            vxlan(PEER, 0x08, FRONT, &from_r),
            u.drop(),
            Out::Same,
            DropUnencrypted,
        ),
        case("a WireGuard handshake from a cluster host", to_wg_port(PEER), u.pass(), Out::Same, WireguardControl),
        case("WireGuard data from a cluster host", wg_message(PEER, &data(64)), u.pass(), Out::Same, WireguardData),
        case(
            "a WireGuard keepalive from a cluster host",
            wg_message(PEER, &data(0)),
            u.pass(),
            Out::Same,
            WireguardControl,
        ),
        case("WireGuard data from elsewhere", wg_message([192, 0, 2, 77], &data(64)), u.drop(), Out::Same, DropNotPeer),
        case("WireGuard from elsewhere", to_wg_port([192, 0, 2, 77]), u.drop(), Out::Same, DropNotPeer),
    ];
    rig.table(u.prog(), Prog::XdpUnderlay, &cases);
    // Another network of the same host is untouched.
    let (verdict, _) = rig.run(u.prog(), &vxlan(PEER, 0x08, BACK, &to_b));
    assert_eq!(verdict, u.redirect(), "the plain network's VXLAN is delivered");

    // What a container sends across hosts is the same VXLAN as ever,
    // redirected to WireGuard instead of the underlay.
    let pkt = frame(ME_MAC, R_MAC, ME, R, 17, &udp(40000, 53, b"query"));
    let (verdict, out) = rig.run(PROG_TC_ENDPOINT, &pkt);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let sport = u16::from_be_bytes([out[34], out[35]]);
    assert_eq!(hex(&out), hex(&encapsulated(&pkt, PEER, FRONT, sport)), "the VXLAN bytes are unchanged");
    assert_eq!(rig.counter(Prog::TcEndpoint, Encapsulated), 1);

    // A host without its WireGuard device sends nothing of the network in clear.
    let mut bare = encrypted_rig(0);
    let (verdict, _) = bare.run(PROG_TC_ENDPOINT, &pkt);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(bare.counter(Prog::TcEndpoint, DropNoWireguard), 1);
}

in_both_hooks!(
    decap_accepts_only_what_it_should,
    decap_truncated_at_every_byte,
    a_known_flows_packet_puts_back_its_evicted_reply_entry,
    mesh_without_backends_answers_as_a_closed_port,
    reverse_nat_of_a_remote_backends_reply,
    mesh_dnat_to_a_local_backend_and_tc_reply_from_the_published_address,
    mesh_tunnels_to_a_remote_backend_and_translates_the_reply_back,
    mesh_caches_the_next_hop_for_a_second,
    mesh_flows_carry_their_destination_and_read_it_again_after_a_second,
    mesh_udp_keeps_a_zero_checksum_and_fixes_a_real_one,
    backend_host_remembers_the_ingress_host_and_tunnels_replies_back,
    icmp_errors_about_translated_flows_are_translated_too,
    an_encrypted_network_is_sealed_into_wireguard_and_never_taken_in_clear,
);
