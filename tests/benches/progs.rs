//! Per-packet cost of the data path through BPF_PROG_TEST_RUN (run by
//! `cargo xtask bench`, root): the decapsulation path and a mesh packet to a
//! remote backend (service lookup, connection table, DNAT, encapsulation), in
//! both hooks of the underlay program (XDP and TC), and the endpoint's
//! encapsulation, each beside an empty program of the same type measured the
//! same way, rounds interleaved. Then the same paths with
//! 10, 1,000 and 10,000 endpoints and 1, 100 and 1,000 services in the maps.
//!
//! Prints one JSON object per measurement:
//! `{"name": ..., "unit": "ns", "samples": [...]}` (the kernel's mean per
//! packet in each round). Arguments: `--packets N` per round (default
//! 1,000,000), `--rounds N` (default 3), `--headline` (the first rows only).

#[path = "../tests/rig/mod.rs"]
mod rig;

use aya::{
    maps::HashMap,
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use overlay_common::*;
use rig::*;

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} {v}: not a number")))
        .unwrap_or(default)
}

/// The mean of the kernel's own timing of `packets` runs of `prog` on
/// `pkt`, each a fresh copy of it; panics unless every run gave `verdict`.
///
/// One run per BPF_PROG_TEST_RUN call: with `repeat` > 1 the kernel runs the
/// program again on its own output (a decapsulated or encapsulated packet
/// takes another path), so the packet is handed in anew each time. The
/// kernel times only the program (plus its timer), not the system call.
fn ns_per_packet(rig: &mut Rig, prog: &str, pkt: &[u8], packets: u32, verdict: Option<u32>) -> f64 {
    let mut out = vec![0u8; pkt.len() + 256];
    let p = rig.program(prog);
    let xdp = prog.contains("xdp");
    let ctx = skb_ctx(1);
    let mut total = 0u128;
    for _ in 0..packets {
        let mut opts = TestRunOptions { data_in: Some(pkt), data_out: Some(&mut out), repeat: 1, ..Default::default() };
        if !xdp {
            // As in the fixtures: the packet came in on lo.
            opts.ctx_in = Some(&ctx);
        }
        let r = if xdp {
            let x: &mut Xdp = (&mut *p).try_into().unwrap();
            x.test_run(opts)
        } else {
            let t: &mut SchedClassifier = (&mut *p).try_into().unwrap();
            t.test_run(opts)
        }
        .unwrap_or_else(|e| panic!("{prog}: BPF_PROG_TEST_RUN: {e}"));
        if let Some(v) = verdict {
            assert_eq!(r.return_value, v, "{prog}: the packet did not take the measured path");
        }
        total += r.duration.as_nanos();
    }
    total as f64 / packets as f64
}

/// `n` more remote endpoints on FRONT, beside the fixtures' own.
fn add_endpoints(rig: &mut Rig, n: u32) {
    let mut eps: HashMap<_, EndpointKey, EndpointValue> = rig.map(MAP_ENDPOINTS);
    for i in 0..n {
        let ip = [10, 100 + (i >> 16) as u8, (i >> 8) as u8, i as u8];
        eps.insert(EndpointKey { vni: FRONT, ip }, ep([2, 0x42, ip[1], ip[2], ip[3], 1], 0, PEER), 0).unwrap();
    }
}

/// `n` more published TCP ports (services of their own, sharing Maglev slot 0).
fn add_services(rig: &mut Rig, n: u32) {
    let mut svcs: HashMap<_, ServiceKey, ServiceValue> = rig.map(MAP_SERVICES);
    for i in 0..n {
        let key = ServiceKey { addr: [0; 4], port: 20000 + i as u16, proto: PROTO_TCP, _pad: 0 };
        svcs.insert(key, published_service(1000 + i), 0).unwrap();
    }
}

struct Path {
    name: &'static str,
    prog: &'static str,
    baseline: &'static str,
    pkt: Vec<u8>,
    verdict: u32,
}

fn paths() -> Vec<Path> {
    // A VXLAN packet from the peer for the local endpoint L.
    let decap = vxlan(PEER, 0x08, FRONT, &frame(R_MAC, L_MAC, R, L, 17, &udp(1000, 2000, &[0u8; 64])));
    // A client's TCP segment to the published port, balanced to R on the peer.
    let mesh = from_client(&tcp_with_csum(OUTSIDE, HOST, 50001, 8080), 6);
    // What ME sends to R: encapsulated to the peer.
    let encap = frame(ME_MAC, R_MAC, ME, R, 17, &udp(40000, 53, &[0u8; 64]));
    vec![
        Path {
            name: "xdp_underlay_decap_ns",
            prog: PROG_XDP_UNDERLAY,
            baseline: PROG_BENCH_EMPTY_XDP,
            pkt: decap.clone(),
            verdict: XDP_REDIRECT,
        },
        Path {
            name: "xdp_mesh_lb_ns",
            prog: PROG_XDP_UNDERLAY,
            baseline: PROG_BENCH_EMPTY_XDP,
            pkt: mesh.clone(),
            verdict: XDP_REDIRECT,
        },
        Path {
            name: "tc_underlay_decap_ns",
            prog: PROG_TC_UNDERLAY,
            baseline: PROG_BENCH_EMPTY_TC,
            pkt: decap.clone(),
            verdict: TC_ACT_REDIRECT,
        },
        Path {
            name: "tc_mesh_lb_ns",
            prog: PROG_TC_UNDERLAY,
            baseline: PROG_BENCH_EMPTY_TC,
            pkt: mesh.clone(),
            verdict: TC_ACT_REDIRECT,
        },
        Path {
            name: "tc_endpoint_encap_ns",
            prog: PROG_TC_ENDPOINT,
            baseline: PROG_BENCH_EMPTY_TC,
            pkt: encap,
            verdict: TC_ACT_REDIRECT,
        },
    ]
}

fn emit(name: &str, samples: &[f64]) {
    println!("{{\"name\": \"{name}\", \"unit\": \"ns\", \"samples\": {samples:?}}}");
}

fn main() {
    // `cargo bench` passes --bench; only our flags matter.
    let packets = arg("--packets", 1_000_000);
    let rounds = arg("--rounds", 3);
    // An underlay with neighbours for the mesh's FIB lookup, in a namespace
    // of this process's own (it goes away with the process).
    private_underlay();

    // The headline rows: the fixtures' small cluster.
    let mut rig = Rig::with_published(8080, PROTO_TCP, R);
    for p in paths() {
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            base.push(ns_per_packet(&mut rig, p.baseline, &p.pkt, packets, None));
            ours.push(ns_per_packet(&mut rig, p.prog, &p.pkt, packets, Some(p.verdict)));
        }
        emit(p.name, &ours);
        emit(&format!("{}.baseline", p.name), &base);
    }

    // How the per-packet cost grows with the maps' size (`--headline`: not).
    if std::env::args().any(|a| a == "--headline") {
        return;
    }
    for (what, sizes) in [("endpoints", [10u32, 1_000, 10_000]), ("services", [1, 100, 1_000])] {
        for n in sizes {
            let mut rig = Rig::with_published(8080, PROTO_TCP, R);
            match what {
                "endpoints" => add_endpoints(&mut rig, n),
                _ => add_services(&mut rig, n.saturating_sub(1)),
            }
            for p in paths() {
                if what == "services" && !p.name.contains("mesh_lb") {
                    continue;
                }
                let samples: Vec<f64> =
                    (0..rounds).map(|_| ns_per_packet(&mut rig, p.prog, &p.pkt, packets, Some(p.verdict))).collect();
                emit(&format!("{}_{n}_{what}", p.name), &samples);
            }
        }
    }
}
