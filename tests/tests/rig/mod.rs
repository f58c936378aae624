//! The packet fixtures' world, shared by the fixture tests and the
//! per-packet benchmarks (`cargo xtask bench`): packet builders, the maps of
//! a small cluster loaded into the real programs (`Rig`), and a private
//! underlay for XDP's FIB lookups.

#![allow(dead_code)]

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use overlay_bpf::host::loader;
use overlay_common::*;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

/// The two hooks the underlay program runs in (the data-path modes): every
/// underlay fixture runs in both (`in_both_hooks!`), with the hook's
/// program and verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    pub fn prog(self) -> &'static str {
        match self {
            Hook::Xdp => PROG_XDP_UNDERLAY,
            Hook::Tc => PROG_TC_UNDERLAY,
        }
    }
    pub fn pass(self) -> u32 {
        match self {
            Hook::Xdp => XDP_PASS,
            Hook::Tc => TC_ACT_OK,
        }
    }
    pub fn drop(self) -> u32 {
        match self {
            Hook::Xdp => XDP_DROP,
            Hook::Tc => TC_ACT_SHOT,
        }
    }
    pub fn redirect(self) -> u32 {
        match self {
            Hook::Xdp => XDP_REDIRECT,
            Hook::Tc => TC_ACT_REDIRECT,
        }
    }
}

/// `in_both_hooks!(f)`: a module `f` with the tests `f::xdp` and `f::tc`,
/// each running `f(hook)`.
#[macro_export]
macro_rules! in_both_hooks {
    ($($f:ident),+ $(,)?) => {$(
        mod $f {
            #[test]
            fn xdp() {
                super::$f($crate::rig::Hook::Xdp)
            }
            #[test]
            fn tc() {
                super::$f($crate::rig::Hook::Tc)
            }
        }
    )+};
}

/// The `struct __sk_buff` a TC test run starts from: the packet came in on
/// `lo` (ifindex 1), as an XDP test run's does. The kernel takes a few
/// fields from it (`bpf_prog_test_run_skb`).
pub fn skb_ctx(ingress_ifindex: u32) -> [u8; 192] {
    const INGRESS_IFINDEX: usize = 36;
    let mut c = [0u8; 192];
    c[INGRESS_IFINDEX..INGRESS_IFINDEX + 4].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    c
}

pub const HOST: [u8; 4] = [192, 0, 2, 1];
pub const PEER: [u8; 4] = [192, 0, 2, 2];
pub const STRANGER: [u8; 4] = [192, 0, 2, 99];
pub const FRONT: u32 = 4097;
pub const BACK: u32 = 4098;
pub const GW: [u8; 4] = [10, 0, 0, 1];
pub const GW_MAC: [u8; 6] = [2, 0x42, 10, 0, 0, 1];
pub const ME: [u8; 4] = [10, 0, 0, 3];
pub const ME_MAC: [u8; 6] = [2, 0x42, 10, 0, 0, 3];
pub const ME_IF: u32 = 1;
pub const HOST_VETH_MAC: [u8; 6] = [0xee, 0, 0, 0, 0, 1];
pub const L: [u8; 4] = [10, 0, 0, 7];
pub const L_MAC: [u8; 6] = [2, 0x42, 10, 0, 0, 7];
pub const R: [u8; 4] = [10, 0, 0, 4];
pub const R_MAC: [u8; 6] = [2, 0x42, 10, 0, 0, 4];
pub const B: [u8; 4] = [10, 0, 1, 9];
pub const BL: [u8; 4] = [10, 0, 1, 5];
pub const OUTSIDE: [u8; 4] = [198, 51, 100, 7];

// ---------------------------------------------------------------------------
// Packet building
// ---------------------------------------------------------------------------

pub fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut p = dst.to_vec();
    p.extend_from_slice(&src);
    p.extend_from_slice(&ethertype.to_be_bytes());
    p
}

/// An IPv4 header (with `options` words of NOPs) and `l4`.
pub fn ip(src: [u8; 4], dst: [u8; 4], proto: u8, df: bool, options: usize, l4: &[u8]) -> Vec<u8> {
    let ihl = 5 + options;
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, if df { 0x40 } else { 0 }, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend(std::iter::repeat_n(1u8, options * 4));
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = sport.to_be_bytes().to_vec();
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

pub fn icmp_echo() -> Vec<u8> {
    vec![8, 0, 0xf7, 0xfe, 0, 1, 0, 0]
}

/// A container's frame: from `src_mac` to `dst_mac`, IPv4 from `src` to `dst`.
pub fn frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = eth(dst_mac, src_mac, 0x0800);
    p.extend(ip(src, dst, proto, true, 0, l4));
    p
}

pub fn arp(oper: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let dst = if oper == 1 { [0xff; 6] } else { tha };
    let mut p = eth(dst, sha, 0x0806);
    p.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    p.extend_from_slice(&oper.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa);
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa);
    p
}

pub fn vxlan_hdr(flags: u8, vni: u32) -> Vec<u8> {
    let mut v = vec![flags, 0, 0, 0];
    v.extend_from_slice(&(vni << 8).to_be_bytes());
    v
}

/// A VXLAN packet on the underlay from `src` to this host carrying `inner`.
pub fn vxlan(src: [u8; 4], flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vxlan_hdr(flags, vni);
    payload.extend_from_slice(inner);
    let mut p = eth([0x02, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2], 0x0800);
    p.extend(ip(src, HOST, 17, true, 0, &udp(50000, 4789, &payload)));
    p
}

/// What our encapsulation must produce for `inner` (a frame already carrying
/// the destination MAC) sent to `vtep` on `vni`, given the source port used.
pub fn encapsulated(inner: &[u8], vtep: [u8; 4], vni: u32, sport: u16) -> Vec<u8> {
    let mut payload = vxlan_hdr(0x08, vni);
    payload.extend_from_slice(inner);
    let l4 = udp(sport, 4789, &payload);
    let mut outer = vec![0x45, inner_tos(inner)];
    outer.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    outer.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    outer.extend_from_slice(&HOST);
    outer.extend_from_slice(&vtep);
    let c = csum(&outer);
    outer[10..12].copy_from_slice(&c.to_be_bytes());
    let mut p = eth([0; 6], [0; 6], 0x0800);
    p.extend(outer);
    p.extend(l4);
    p
}

pub fn inner_tos(inner: &[u8]) -> u8 {
    if inner[12..14] == [0x08, 0x00] {
        inner[15]
    } else {
        0
    }
}

// ---------------------------------------------------------------------------
// The programs and their maps
// ---------------------------------------------------------------------------

pub struct Rig {
    /// The object, its maps created; a program is verified when first run.
    pub ebpf: aya::Ebpf,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn ep(mac: [u8; 6], ifindex: u32, vtep: [u8; 4]) -> EndpointValue {
    EndpointValue { mac, _pad: [0; 2], ifindex, vtep, flags: if ifindex != 0 { ENDPOINT_F_LOCAL } else { 0 } }
}

impl Rig {
    /// The object the rig opened (without pins: always from the object).
    pub fn ebpf(&mut self) -> &mut aya::Ebpf {
        &mut self.ebpf
    }

    /// Program `name`, verified by the kernel on first use (a test verifies
    /// only the programs it runs: under emulation each takes seconds).
    pub fn program(&mut self, name: &str) -> &mut aya::programs::Program {
        let p = self.ebpf.program_mut(name).unwrap_or_else(|| panic!("{name} missing from the object"));
        let loaded = match &*p {
            aya::programs::Program::Xdp(x) => x.fd().is_ok(),
            aya::programs::Program::SchedClassifier(t) => t.fd().is_ok(),
            _ => panic!("{name}: neither XDP nor TC"),
        };
        if !loaded {
            loader::verify(|| match &mut *p {
                aya::programs::Program::Xdp(x) => x.load(),
                aya::programs::Program::SchedClassifier(t) => t.load(),
                _ => unreachable!(),
            })
            .unwrap_or_else(|e| panic!("{name}: the verifier refused it: {e:?}"));
        }
        p
    }

    pub fn new() -> Rig {
        assert!(is_root(), "the kernel tests need root (run `sudo -E cargo xtask test`)");
        let mut ebpf = loader::open_unverified(CT_DEFAULT_SIZE)
            .expect("load the embedded eBPF object (built by `cargo xtask build`)");
        let e = &mut ebpf;
        let mut cfg: Array<_, HostConfig> = Array::try_from(e.map_mut(MAP_CONFIG).unwrap()).unwrap();
        cfg.set(
            0,
            HostConfig {
                underlay_ip: HOST,
                underlay_ifindex: 1,
                vxlan_port: 4789,
                underlay_mtu: 1500,
                ct_tcp_timeout: 300,
                ct_udp_timeout: 60,
            },
            0,
        )
        .unwrap();
        let mut vteps: HashMap<_, [u8; 4], u8> = HashMap::try_from(e.map_mut(MAP_VTEPS).unwrap()).unwrap();
        vteps.insert(HOST, PRESENT, 0).unwrap();
        vteps.insert(PEER, PRESENT, 0).unwrap();
        let mut nets: HashMap<_, u32, NetworkValue> = HashMap::try_from(e.map_mut(MAP_NETWORKS).unwrap()).unwrap();
        nets.insert(FRONT, NetworkValue { gateway: GW, gateway_mac: GW_MAC, mtu: 1450, flags: NETWORK_F_LOCAL }, 0)
            .unwrap();
        nets.insert(
            BACK,
            NetworkValue {
                gateway: [10, 0, 1, 1],
                gateway_mac: [2, 0x42, 10, 0, 1, 1],
                mtu: 1450,
                flags: NETWORK_F_LOCAL,
            },
            0,
        )
        .unwrap();
        let mut subnets: LpmTrie<_, [u8; 4], SubnetValue> = LpmTrie::try_from(e.map_mut(MAP_SUBNETS).unwrap()).unwrap();
        subnets.insert(&Key::new(24, [10, 0, 0, 0]), SubnetValue { vni: FRONT, gateway: GW }, 0).unwrap();
        subnets.insert(&Key::new(24, [10, 0, 1, 0]), SubnetValue { vni: BACK, gateway: [10, 0, 1, 1] }, 0).unwrap();
        let mut eps: HashMap<_, EndpointKey, EndpointValue> =
            HashMap::try_from(e.map_mut(MAP_ENDPOINTS).unwrap()).unwrap();
        eps.insert(EndpointKey { vni: FRONT, ip: ME }, ep(ME_MAC, ME_IF, HOST), 0).unwrap();
        eps.insert(EndpointKey { vni: FRONT, ip: L }, ep(L_MAC, 42, HOST), 0).unwrap();
        eps.insert(EndpointKey { vni: FRONT, ip: R }, ep(R_MAC, 0, PEER), 0).unwrap();
        eps.insert(EndpointKey { vni: BACK, ip: B }, ep([2, 0x42, 10, 0, 1, 9], 0, PEER), 0).unwrap();
        eps.insert(EndpointKey { vni: BACK, ip: BL }, ep([2, 0x42, 10, 0, 1, 5], 43, HOST), 0).unwrap();
        let mut ifaces: HashMap<_, u32, IfaceValue> = HashMap::try_from(e.map_mut(MAP_IFACES).unwrap()).unwrap();
        ifaces
            .insert(ME_IF, IfaceValue { vni: FRONT, ip: ME, mac: ME_MAC, host_mac: HOST_VETH_MAC, flags: 0 }, 0)
            .unwrap();
        Rig { ebpf }
    }

    pub fn map<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        HashMap::try_from(self.ebpf().map_mut(name).unwrap()).unwrap()
    }

    pub fn counter(&mut self, p: Prog, r: Reason) -> u64 {
        let stats: PerCpuArray<_, Counter> = PerCpuArray::try_from(self.ebpf().map(MAP_STATS).unwrap()).unwrap();
        stats.get(&counter_index(p, r), 0).unwrap().iter().map(|c| c.packets).sum()
    }

    /// Runs `pkt` through `prog`; returns (verdict, output bytes).
    pub fn run(&mut self, prog: &str, pkt: &[u8]) -> (u32, Vec<u8>) {
        self.try_run(prog, pkt)
            .unwrap_or_else(|e| panic!("{prog}: BPF_PROG_TEST_RUN failed on {} bytes: {e}", pkt.len()))
    }

    pub fn try_run(&mut self, prog: &str, pkt: &[u8]) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        let mut out = vec![0u8; pkt.len() + 256];
        let p = self.program(prog);
        let ctx = skb_ctx(1);
        let mut opts = TestRunOptions { data_in: Some(pkt), data_out: Some(&mut out), ..Default::default() };
        if prog == PROG_TC_UNDERLAY {
            opts.ctx_in = Some(&ctx);
        }
        let r = if prog == PROG_XDP_UNDERLAY {
            let x: &mut Xdp = p.try_into().unwrap();
            x.test_run(opts)
        } else {
            let t: &mut SchedClassifier = p.try_into().unwrap();
            t.test_run(opts)
        }?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    /// Runs every case; each must give its verdict, its output (when given)
    /// and bump its counter by exactly one. Every case runs even when an
    /// earlier one fails, and the failure lists them all. Returns the
    /// outputs.
    pub fn table(&mut self, prog: &str, p: Prog, cases: &[Case]) -> Vec<Vec<u8>> {
        let mut outs = Vec::new();
        let mut wrong = Vec::new();
        for c in cases {
            let before = self.counter(p, c.reason);
            let (verdict, out) = match self.try_run(prog, &c.pkt) {
                Ok(r) => r,
                Err(e) => {
                    wrong.push(format!("{}: BPF_PROG_TEST_RUN failed on {} bytes: {e:?}", c.what, c.pkt.len()));
                    outs.push(Vec::new());
                    continue;
                }
            };
            if verdict != c.verdict {
                wrong.push(format!("{}: verdict {verdict}, not {} (counter {:?})", c.what, c.verdict, c.reason));
            }
            match &c.out {
                Out::Same if out != c.pkt => wrong.push(format!("{}: must leave the packet unchanged", c.what)),
                Out::Exactly(want) if out != *want => {
                    wrong.push(format!("{}: output bytes\n{}\nnot\n{}", c.what, hex(&out), hex(want)))
                }
                _ => {}
            }
            let after = self.counter(p, c.reason);
            if after != before + 1 {
                wrong.push(format!("{}: counter {} went {before} -> {after}, not up by one", c.what, c.reason.name()));
            }
            outs.push(out);
        }
        assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
        outs
    }
}

pub fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

pub enum Out {
    Same,
    Exactly(Vec<u8>),
    Any,
}

pub struct Case {
    what: String,
    pkt: Vec<u8>,
    verdict: u32,
    out: Out,
    reason: Reason,
}

pub fn case(what: &str, pkt: Vec<u8>, verdict: u32, out: Out, reason: Reason) -> Case {
    Case { what: what.to_string(), pkt, verdict, out, reason }
}

pub const VIP: [u8; 4] = [10, 0, 0, 2];
pub const SVC: u32 = 7;

/// The TCP/UDP checksum over the IPv4 pseudo-header and segment `l4`: the
/// value to write for a segment whose checksum field is zero, 0 for one
/// whose checksum is right.
pub fn l4_csum(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = [src, dst].concat();
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(l4);
    csum(&pseudo)
}

/// TCP/UDP checksum of the IPv4 packet `ip` verifies.
pub fn l4_csum_ok(ip: &[u8]) -> bool {
    let ihl = (ip[0] & 0xf) as usize * 4;
    l4_csum(&ip[12..16], &ip[16..20], ip[9], &ip[ihl..]) == 0
}

pub fn tcp_with_csum(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut t = tcp(sport, dport);
    let c = l4_csum(&src, &dst, 6, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

impl Rig {
    pub fn with_vip(backend: [u8; 4], vni: u32) -> Rig {
        let mut rig = Rig::new();
        let mut svcs: HashMap<_, ServiceKey, ServiceValue> = rig.map(MAP_SERVICES);
        let v = ServiceValue { service_id: SVC, vni, target_port: 8080, lb_slot: 0, ..Default::default() };
        svcs.insert(ServiceKey { addr: VIP, port: 80, proto: PROTO_TCP, _pad: 0 }, v, 0).unwrap();
        rig.set_maglev(backend);
        rig
    }

    pub fn set_maglev(&mut self, backend: [u8; 4]) {
        let mut t: Array<_, [u8; 4]> = Array::try_from(self.ebpf().map_mut(MAP_MAGLEV).unwrap()).unwrap();
        for i in 0..MAGLEV_SIZE {
            t.set(i, backend, 0).unwrap();
        }
        if backend != [0; 4] {
            let mut b: HashMap<_, BackendKey, u8> = self.map(MAP_BACKENDS);
            b.insert(BackendKey { service_id: SVC, ip: backend }, PRESENT, 0).unwrap();
            self.mark_backend(backend);
        }
    }

    /// Flags endpoint `ip` as a service backend, as `up` does for every
    /// configured backend (its replies get the connection-table lookup).
    pub fn mark_backend(&mut self, ip: [u8; 4]) {
        let mut eps: HashMap<_, EndpointKey, EndpointValue> = self.map(MAP_ENDPOINTS);
        for vni in [FRONT, BACK] {
            let k = EndpointKey { vni, ip };
            if let Ok(mut v) = eps.get(&k, 0) {
                v.flags |= ENDPOINT_F_BACKEND;
                eps.insert(k, v, 0).unwrap();
            }
        }
        if ip == ME {
            let mut ifaces: HashMap<_, u32, IfaceValue> = self.map(MAP_IFACES);
            let mut v = ifaces.get(&ME_IF, 0).unwrap();
            v.flags |= ENDPOINT_F_BACKEND;
            ifaces.insert(ME_IF, v, 0).unwrap();
        }
    }

    pub fn ct(&mut self, k: CtKey) -> Option<CtValue> {
        let ct: HashMap<_, CtKey, CtValue> = HashMap::try_from(self.ebpf().map(MAP_CT).unwrap()).unwrap();
        ct.get(&k, 0).ok()
    }

    /// Writes a connection-table entry.
    pub fn set_ct(&mut self, k: CtKey, v: CtValue) {
        let mut ct: HashMap<_, CtKey, CtValue> = self.map(MAP_CT);
        ct.insert(k, v, 0).unwrap();
    }

    /// Removes a connection-table entry, as an LRU eviction would.
    pub fn evict(&mut self, k: CtKey) {
        let mut ct: HashMap<_, CtKey, CtValue> = self.map(MAP_CT);
        ct.remove(&k).expect("the entry to evict");
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: the programs' clock
/// (`bpf_ktime_get_coarse_ns`, the same timekeeper's last tick), so a time
/// read here before a run is never after the one the program reads.
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) }, 0);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

pub fn ctk(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> CtKey {
    CtKey { src, dst, sport, dport, proto: PROTO_TCP, _pad: [0; 3] }
}

pub const UL_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
pub const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0b];
pub const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0c];
pub const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// Moves the calling test thread into a network namespace of its own with
/// an underlay the XDP FIB lookups can use: HOST/24 on a veth, PEER
/// and a default router with permanent neighbour entries, forwarding on.
/// BPF_PROG_TEST_RUN runs XDP against this namespace's loopback device; the
/// namespace goes away with the thread.
pub fn private_underlay() {
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare(CLONE_NEWNET)");
    let ip = |args: &str| {
        let o = std::process::Command::new("ip").args(args.split(' ')).output().unwrap();
        assert!(o.status.success(), "ip {args}: {}", String::from_utf8_lossy(&o.stderr));
    };
    ip("link set lo up");
    // (No dummy driver in this kernel: a veth pair, both ends here.)
    ip("link add ul0 address 02:00:00:00:00:0a type veth peer name ul1");
    ip("link set ul1 up");
    ip("link set ul0 up");
    ip("addr add 192.0.2.1/24 dev ul0");
    ip("neigh add 192.0.2.2 lladdr 02:00:00:00:00:0b dev ul0 nud permanent");
    ip("neigh add 192.0.2.254 lladdr 02:00:00:00:00:0c dev ul0 nud permanent");
    ip("route add default via 192.0.2.254");
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
}

impl Rig {
    /// Publishes `port`/`proto` on every host address for service SVC
    /// (target 80), all flows to `backend`.
    pub fn with_published(port: u16, proto: u8, backend: [u8; 4]) -> Rig {
        let mut rig = Rig::new();
        let mut svcs: HashMap<_, ServiceKey, ServiceValue> = rig.map(MAP_SERVICES);
        svcs.insert(ServiceKey { addr: [0; 4], port, proto, _pad: 0 }, published_service(SVC), 0).unwrap();
        rig.set_maglev(backend);
        rig
    }

    pub fn backend_flows(&mut self, ip: [u8; 4]) -> u64 {
        let m: aya::maps::PerCpuHashMap<_, BackendKey, BackendStats> =
            aya::maps::PerCpuHashMap::try_from(self.ebpf().map(MAP_BACKEND_STATS).unwrap()).unwrap();
        m.get(&BackendKey { service_id: SVC, ip }, 0).map(|v| v.iter().map(|s| s.flows).sum()).unwrap_or(0)
    }
}

/// A service published on every host address (target port 80, one backend,
/// Maglev slot 0).
pub fn published_service(service_id: u32) -> ServiceValue {
    ServiceValue {
        service_id,
        vni: FRONT,
        target_port: 80,
        flags: SERVICE_F_PUBLISHED,
        lb_slot: 0,
        ..Default::default()
    }
}

/// A client's packet on the wire, to this host's address.
pub fn from_client(l4: &[u8], proto: u8) -> Vec<u8> {
    let mut p = eth(HOST_MAC, [2, 0, 0, 0, 0, 0x99], 0x0800);
    p.extend(ip(OUTSIDE, HOST, proto, true, 0, l4));
    p
}
