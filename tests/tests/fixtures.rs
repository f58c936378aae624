//! Packet fixtures through the real programs with BPF_PROG_TEST_RUN: each
//! case is {description, input packet, expected verdict, counter bumped}, and
//! the output bytes must equal the input (the programs forward nothing yet).

use aya::{
    maps::{Array, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use overlay_bpf::loader;
use overlay_common::*;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;

const HOST: [u8; 4] = [192, 0, 2, 1];
const PEER: [u8; 4] = [192, 0, 2, 2];

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn eth(ethertype: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    p.extend_from_slice(&ethertype.to_be_bytes());
    p
}

/// Ethernet + IPv4 (with `options` words of options) + `l4`.
fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, options: usize, l4: &[u8]) -> Vec<u8> {
    let ihl = 5 + options;
    let mut ip = vec![0x40 | ihl as u8, 0];
    ip.extend_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend(std::iter::repeat_n(1u8, options * 4)); // NOP options
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut p = eth(0x0800);
    p.extend_from_slice(&ip);
    p.extend_from_slice(l4);
    p
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0];
    v.extend_from_slice(&(vni << 8).to_be_bytes());
    v.extend_from_slice(inner);
    v
}

fn arp() -> Vec<u8> {
    let mut p = eth(0x0806);
    p.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 10, 0, 0, 3, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
    p
}

struct Rig {
    loaded: loader::Loaded,
}

impl Rig {
    fn new() -> Rig {
        assert!(is_root(), "the kernel tests need root (run `sudo -E cargo xtask test`)");
        let mut loaded = loader::load(None).expect("load the embedded eBPF object (built by `cargo xtask build`)");
        let ebpf = loaded.ebpf_mut();
        let mut cfg: Array<_, HostConfig> = Array::try_from(ebpf.map_mut(MAP_CONFIG).unwrap()).unwrap();
        cfg.set(
            0,
            HostConfig { underlay_ip: HOST, underlay_ifindex: 1, vxlan_port: 4789, underlay_mtu: 1500, host_id: 0 },
            0,
        )
        .unwrap();
        Rig { loaded }
    }

    fn counter(&mut self, p: Prog, r: Reason) -> u64 {
        let stats: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(self.loaded.ebpf_mut().map(MAP_STATS).unwrap()).unwrap();
        stats.get(&counter_index(p, r), 0).unwrap().iter().map(|c| c.packets).sum()
    }

    /// Runs `pkt` through `prog`; returns (verdict, output bytes).
    fn run(&mut self, prog: &str, pkt: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; pkt.len() + 256];
        let p = self.loaded.ebpf_mut().program_mut(prog).unwrap();
        let opts = TestRunOptions { data_in: Some(pkt), data_out: Some(&mut out), ..Default::default() };
        let r = if prog == PROG_XDP_UNDERLAY {
            let x: &mut Xdp = p.try_into().unwrap();
            x.test_run(opts)
        } else {
            let t: &mut SchedClassifier = p.try_into().unwrap();
            t.test_run(opts)
        }
        .unwrap_or_else(|e| panic!("{prog}: BPF_PROG_TEST_RUN failed: {e}"));
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

struct Case {
    what: &'static str,
    pkt: Vec<u8>,
    verdict: u32,
    reason: Reason,
}

#[test]
fn xdp_underlay_classifies_and_counts_every_packet() {
    let inner = ipv4([10, 0, 0, 3], [10, 0, 0, 4], 1, 0, &[8, 0, 0, 0, 0, 1, 0, 1]);
    let full = |dport, dst| ipv4(PEER, dst, 17, 0, &udp(50000, dport, &vxlan(4097, &inner)));
    let mut cases = vec![
        Case { what: "ARP", pkt: arp(), verdict: XDP_PASS, reason: Reason::PassNotOurs },
        Case {
            what: "IPv6 ethertype",
            pkt: {
                let mut p = eth(0x86dd);
                p.extend([0x60; 40]);
                p
            },
            verdict: XDP_PASS,
            reason: Reason::PassNotOurs,
        },
        Case {
            what: "TCP to the host",
            pkt: ipv4(PEER, HOST, 6, 0, &[0; 20]),
            verdict: XDP_PASS,
            reason: Reason::PassNotOurs,
        },
        Case {
            what: "UDP to another port",
            pkt: ipv4(PEER, HOST, 17, 0, &udp(1, 53, b"dns")),
            verdict: XDP_PASS,
            reason: Reason::PassNotOurs,
        },
        Case {
            what: "VXLAN port, another address",
            pkt: full(4789, [192, 0, 2, 9]),
            verdict: XDP_PASS,
            reason: Reason::PassNotOurs,
        },
        Case { what: "VXLAN to us", pkt: full(4789, HOST), verdict: XDP_PASS, reason: Reason::PassVxlan },
        Case {
            what: "VXLAN to us, IP options",
            pkt: ipv4(PEER, HOST, 17, 2, &udp(50000, 4789, &vxlan(4097, &inner))),
            verdict: XDP_PASS,
            reason: Reason::PassVxlan,
        },
        Case {
            what: "VXLAN header cut short",
            pkt: ipv4(PEER, HOST, 17, 0, &udp(50000, 4789, &[0x08, 0, 0])),
            verdict: XDP_DROP,
            reason: Reason::DropMalformed,
        },
        Case {
            what: "VXLAN, no header at all",
            pkt: ipv4(PEER, HOST, 17, 0, &udp(50000, 4789, &[])),
            verdict: XDP_DROP,
            reason: Reason::DropMalformed,
        },
    ];
    // Truncated at every byte between the end of Ethernet and the VXLAN header:
    // cut inside IPv4 or UDP it is not ours to judge (the stack drops it);
    // cut inside VXLAN it is ours and malformed.
    let whole = full(4789, HOST);
    for cut in 14..(14 + 20 + 8 + 8) {
        let (verdict, reason) =
            if cut < 14 + 20 + 8 { (XDP_PASS, Reason::PassNotOurs) } else { (XDP_DROP, Reason::DropMalformed) };
        cases.push(Case { what: "truncated", pkt: whole[..cut].to_vec(), verdict, reason });
    }
    let mut rig = Rig::new();
    for c in &cases {
        let before = rig.counter(Prog::XdpUnderlay, c.reason);
        let (verdict, out) = rig.run(PROG_XDP_UNDERLAY, &c.pkt);
        assert_eq!(verdict, c.verdict, "{} ({} bytes): verdict", c.what, c.pkt.len());
        if verdict == XDP_PASS {
            assert_eq!(out, c.pkt, "{}: the packet must pass unchanged", c.what);
        }
        assert_eq!(rig.counter(Prog::XdpUnderlay, c.reason), before + 1, "{}: counter {}", c.what, c.reason.name());
    }
    // Every packet is accounted for, exactly once.
    let total: u64 = Prog::XdpUnderlay.reasons().iter().map(|r| rig.counter(Prog::XdpUnderlay, *r)).sum();
    assert_eq!(total, cases.len() as u64);
}

#[test]
fn tc_endpoint_passes_and_counts_what_containers_send() {
    let mut rig = Rig::new();
    let pkts = [
        arp(),
        ipv4([10, 0, 0, 3], [10, 0, 0, 4], 17, 0, &udp(1000, 2000, b"hi")),
        ipv4([10, 0, 0, 3], [8, 8, 8, 8], 6, 0, &[0; 20]),
    ];
    for p in &pkts {
        let (verdict, out) = rig.run(PROG_TC_ENDPOINT, p);
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(&out, p);
    }
    assert_eq!(rig.counter(Prog::TcEndpoint, Reason::PassFromEndpoint), pkts.len() as u64);
    assert_eq!(rig.counter(Prog::XdpUnderlay, Reason::PassNotOurs), 0, "counters are per program");
}
