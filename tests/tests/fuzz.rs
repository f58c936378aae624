//! Packet fuzzing through the real programs (BPF_PROG_TEST_RUN): valid
//! packets of every kind the programs handle, mutated the ways hostile or
//! broken senders do (truncation at every offset, bad IHL and lengths, IP
//! options, fragments, VLAN tags, IPv6, VXLAN flags and VNIs 0 and 16777215,
//! inner packets for other networks, ARP oddities, forged sources), from a
//! seeded generator. Every packet is checked against the invariants the data
//! path promises:
//!
//! - the verdict is one the program may give, and exactly one counter moved;
//! - nothing reaches an endpoint of a VNI other than the one it came in on;
//! - VXLAN from an address that is not a cluster host is never decapsulated;
//! - a container's packet with another source MAC or IP goes nowhere;
//! - every packet sent on is well formed: IPv4 header checksums and lengths,
//!   UDP lengths, and L4 checksums that were right on the way in stay right.
//!
//! `OB_FUZZ_PACKETS` (default 100,000 per program) and `OB_FUZZ_SEED` (default
//! fixed) set the run; `cargo xtask fuzz` runs millions with a new seed. A
//! failure prints the seed, the packet number and the packet.

mod rig;

use overlay_common::*;
use rig::*;
use testbed::Rng;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const BL_MAC: [u8; 6] = [2, 0x42, 10, 0, 1, 5];
const B_MAC: [u8; 6] = [2, 0x42, 10, 0, 1, 9];
const VXLAN_PORT: u16 = 4789;

/// Local endpoints by MAC: (VNI, address).
fn local_by_mac(mac: &[u8]) -> Option<(u32, [u8; 4])> {
    match mac {
        m if m == ME_MAC => Some((FRONT, ME)),
        m if m == L_MAC => Some((FRONT, L)),
        m if m == BL_MAC => Some((BACK, BL)),
        _ => None,
    }
}

fn in_back(ip: &[u8]) -> bool {
    ip[0..3] == [10, 0, 1]
}

// ---------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------

/// Valid wire packets for XDP on the underlay.
fn xdp_template(r: &mut Rng) -> Vec<u8> {
    let sport = 40000 + r.below(1000) as u16;
    match r.below(9) {
        0 => vxlan(PEER, 0x08, FRONT, &frame(R_MAC, ME_MAC, R, ME, 6, &tcp_with_csum(R, ME, sport, 80))),
        1 => vxlan(PEER, 0x08, FRONT, &frame(R_MAC, L_MAC, R, L, 17, &udp(sport, 53, b"hello"))),
        2 => {
            let a = arp(1, R_MAC, R, [0; 6], ME);
            let mut inner = eth([0xff; 6], R_MAC, 0x0806);
            inner.extend(a);
            vxlan(PEER, 0x08, FRONT, &inner)
        }
        3 => from_client(&tcp_with_csum(OUTSIDE, HOST, sport, 8080), 6),
        4 => from_client(&udp(sport, 8080, b"x"), 17),
        5 => {
            let mut p =
                vxlan(PEER, 0x08, FRONT, &frame(R_MAC, GW_MAC, R, OUTSIDE, 6, &tcp_with_csum(R, OUTSIDE, 80, sport)));
            p[49] = VXLAN_MESH_REPLY;
            p
        }
        6 => vxlan(PEER, 0x08, BACK, &frame(B_MAC, BL_MAC, B, BL, 17, &udp(sport, 53, b"back"))),
        7 => {
            let mut p = vxlan(
                PEER,
                0x08,
                FRONT,
                &frame(GW_MAC, ME_MAC, OUTSIDE, ME, 6, &tcp_with_csum(OUTSIDE, ME, sport, 80)),
            );
            p[49] = VXLAN_MESH_FWD;
            p
        }
        _ => vxlan(PEER, 0x08, FRONT, &frame(R_MAC, ME_MAC, R, ME, 1, &icmp_echo())),
    }
}

/// Valid frames a container (ME, on ME_IF) sends.
fn tc_template(r: &mut Rng) -> Vec<u8> {
    let sport = 40000 + r.below(1000) as u16;
    match r.below(8) {
        0 => frame(ME_MAC, R_MAC, ME, R, 6, &tcp_with_csum(ME, R, sport, 80)),
        1 => frame(ME_MAC, L_MAC, ME, L, 17, &udp(sport, 53, b"local")),
        2 => frame(ME_MAC, GW_MAC, ME, VIP, 6, &tcp_with_csum(ME, VIP, sport, 80)),
        3 => {
            let mut p = eth([0xff; 6], ME_MAC, 0x0806);
            p.extend(arp(1, ME_MAC, ME, [0; 6], if r.chance(2) { R } else { GW }));
            p
        }
        4 => frame(ME_MAC, GW_MAC, ME, OUTSIDE, 6, &tcp_with_csum(ME, OUTSIDE, sport, 443)),
        5 => frame(ME_MAC, B_MAC, ME, B, 17, &udp(sport, 53, b"other network")),
        6 => frame(ME_MAC, R_MAC, ME, R, 1, &icmp_echo()),
        _ => frame(ME_MAC, R_MAC, ME, R, 17, &udp(sport, 9000, &vec![0x55; r.below(1500)])),
    }
}

/// Offset of the IPv4 header a mutation aims at: the inner one of a VXLAN
/// packet half of the time.
fn ip_offset(p: &[u8], r: &mut Rng) -> usize {
    if p.len() >= 14 + 20 + 8 + 8 + 14 + 20 && p[23] == 17 && r.chance(2) {
        14 + 20 + 8 + 8 + 14
    } else {
        14
    }
}

fn mutate(p: &mut Vec<u8>, r: &mut Rng, tc: bool) {
    for _ in 0..1 + r.below(3) {
        let o = ip_offset(p, r);
        match r.below(16) {
            0 => p.truncate(14 + r.below(p.len().saturating_sub(14) + 1)),
            1 if !p.is_empty() => {
                let i = r.below(p.len());
                p[i] = r.byte();
            }
            // IHL anywhere from 0 to 15.
            2 if p.len() > o => p[o] = 0x40 | (r.byte() & 0xf),
            // IPv4 total length.
            3 if p.len() > o + 3 => {
                p[o + 2] = r.byte();
                p[o + 3] = r.byte();
            }
            // IP options: grow the header (IHL 6..15) with option bytes.
            4 if p.len() > o + 20 => {
                let words = 1 + r.below(10);
                p[o] = 0x40 | (5 + words) as u8;
                let opts: Vec<u8> = (0..words * 4).map(|_| if r.chance(2) { 1 } else { r.byte() }).collect();
                p.splice(o + 20..o + 20, opts);
            }
            // Fragments: MF, an offset, or both.
            5 if p.len() > o + 7 => {
                p[o + 6] = [0x20, 0x00, 0x21, 0x40 | 0x20][r.below(4)] | (r.byte() & 0x1f);
                p[o + 7] = r.byte();
            }
            // An 802.1Q tag (or QinQ) after the MACs.
            6 if p.len() >= 14 => {
                let tpid = if r.chance(2) { [0x81, 0x00] } else { [0x88, 0xa8] };
                p.splice(12..12, [tpid[0], tpid[1], r.byte() & 0x0f, r.byte()]);
            }
            // IPv6 ethertype (and a version 6 nibble).
            7 if p.len() > 14 => {
                p[12] = 0x86;
                p[13] = 0xdd;
                p[14] = 0x60;
            }
            // VXLAN flags and VNI.
            8 if p.len() >= 50 && !tc => {
                p[42] = [0x00, 0x08, 0x0c, 0xff, r.byte()][r.below(5)];
                let vni: u32 = [0, 0x00ff_ffff, FRONT, BACK, 4242, r.next_u64() as u32 & 0xff_ffff][r.below(6)];
                p[46..49].copy_from_slice(&vni.to_be_bytes()[1..4]);
            }
            // Outer source: a stranger or anyone.
            9 if p.len() >= 30 && !tc => {
                let s: [u8; 4] = if r.chance(2) { STRANGER } else { (r.next_u64() as u32).to_be_bytes() };
                p[26..30].copy_from_slice(&s);
            }
            // Inner or TC destination: another network, a local endpoint, anyone.
            10 if p.len() >= o + 20 => {
                let d = [B, BL, L, ME, R, VIP, GW, (r.next_u64() as u32).to_be_bytes()][r.below(8)];
                p[o + 16..o + 20].copy_from_slice(&d);
                if o > 14 && r.chance(2) {
                    p[o - 14..o - 8].copy_from_slice(&[B_MAC, BL_MAC, L_MAC, ME_MAC][r.below(4)]);
                }
            }
            // Source MAC and IP: another endpoint's, or random.
            11 if p.len() >= o + 20 => {
                if r.chance(2) {
                    let m = [R_MAC, L_MAC, B_MAC, [r.byte(); 6]][r.below(4)];
                    p[o - 8..o - 2].copy_from_slice(&m);
                } else {
                    let s = [R, L, B, OUTSIDE, (r.next_u64() as u32).to_be_bytes()][r.below(5)];
                    p[o + 12..o + 16].copy_from_slice(&s);
                }
            }
            // ARP oddities: opcode, hardware/protocol lengths, addresses.
            12 if p.len() >= 14 + 28 && p[12..14] == [0x08, 0x06] => {
                let a = 14;
                match r.below(4) {
                    0 => p[a + 7] = r.byte(),
                    1 => p[a + 4] = r.byte(),
                    2 => p[a + 5] = r.byte(),
                    _ => p[a + 24..a + 28].copy_from_slice(&[B, ME, VIP, [255; 4]][r.below(4)]),
                }
            }
            // UDP destination port of the outer header.
            13 if p.len() >= 38 && !tc => {
                let port = [VXLAN_PORT, 4790, 8080, r.next_u64() as u16][r.below(4)];
                p[36..38].copy_from_slice(&port.to_be_bytes());
            }
            // Trailing garbage (Ethernet padding, or a lie in the lengths).
            14 => p.extend((0..r.below(64)).map(|_| r.byte())),
            _ => {
                if p.len() > 14 {
                    let cut = 14 + r.below(p.len() - 14);
                    p.truncate(cut.max(14));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Invariants
// ---------------------------------------------------------------------------

/// A well-formed IPv4 packet at `ip` (up to the end of the frame): header
/// checksum, IHL and a total length that fits the frame.
fn ipv4_ok(ip: &[u8]) -> Result<(), String> {
    ipv4_shape_ok(ip)?;
    if csum(&ip[..(ip[0] & 0xf) as usize * 4]) != 0 {
        return Err("IPv4 header checksum".into());
    }
    Ok(())
}

/// A packet we sent on as `out` from `input`: its shape is always right, and
/// its header checksum is right when it was on the way in (a sender's broken
/// checksum is the receiver's to reject).
fn forwarded_ok(input: &[u8], out: &[u8]) -> Result<(), String> {
    ipv4_shape_ok(out)?;
    if ipv4_ok(input).is_ok() {
        ipv4_ok(out)?;
    }
    Ok(())
}

/// IHL and total length fit the frame (checksum not looked at). Bytes after
/// the total length are padding, which receivers trim.
fn ipv4_shape_ok(ip: &[u8]) -> Result<(), String> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err("not IPv4".into());
    }
    let ihl = (ip[0] & 0xf) as usize * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ihl < 20 || total < ihl || total > ip.len() {
        return Err(format!("IHL {ihl}, total length {total} in a {}-byte packet", ip.len()));
    }
    Ok(())
}

/// The inner IPv4 packet of an input frame (after VXLAN when it is one) and
/// whether its L4 checksum was right.
fn l4_was_ok(ip: &[u8]) -> bool {
    if ipv4_ok(ip).is_err() {
        return false;
    }
    let l4 = (ip[0] & 0xf) as usize * 4;
    // UDP with checksum 0 has none to keep right.
    let checksummed = match ip[9] {
        6 => true,
        17 => ip.len() >= l4 + 8 && ip[l4 + 6..l4 + 8] != [0, 0],
        _ => false,
    };
    checksummed && ip.len() >= l4 + 8 && l4_csum_ok(ip)
}

/// An input that is VXLAN to this host's port, as the XDP program sees it:
/// (outer source, VNI, mesh marker, inner frame).
fn as_vxlan(p: &[u8]) -> Option<([u8; 4], u32, u8, &[u8])> {
    if p.len() < 34 || p[12..14] != [0x08, 0x00] || p[14] >> 4 != 4 || p[23] != 17 || p[30..34] != HOST {
        return None;
    }
    let u = 14 + (p[14] & 0xf) as usize * 4;
    if p[14] & 0xf < 5 || p.len() < u + 16 || u16::from_be_bytes([p[u + 2], p[u + 3]]) != VXLAN_PORT {
        return None;
    }
    let src = [p[26], p[27], p[28], p[29]];
    Some((src, u32::from_be_bytes([0, p[u + 12], p[u + 13], p[u + 14]]), p[u + 15], &p[u + 16..]))
}

/// An output that is VXLAN: checks the outer headers; returns (VNI, inner frame).
fn check_vxlan_out(out: &[u8]) -> Result<(u32, &[u8]), String> {
    ipv4_ok(&out[14..])?;
    if out[14] != 0x45 || out[23] != 17 {
        return Err("outer header is not IPv4/UDP without options".into());
    }
    let udp_len = u16::from_be_bytes([out[38], out[39]]) as usize;
    if udp_len + 20 != u16::from_be_bytes([out[16], out[17]]) as usize {
        return Err(format!("UDP length {udp_len} in a {}-byte frame", out.len()));
    }
    let dst = [out[30], out[31], out[32], out[33]];
    if dst != PEER && dst != HOST {
        return Err(format!("VXLAN to {dst:?}, not a cluster host"));
    }
    if out[42] & 0x08 == 0 {
        return Err("VXLAN without the I flag".into());
    }
    Ok((u32::from_be_bytes([0, out[46], out[47], out[48]]), &out[50..]))
}

fn check_xdp(input: &[u8], verdict: u32, out: &[u8]) -> Result<(), String> {
    match verdict {
        XDP_DROP => return Ok(()),
        XDP_PASS => {
            // Passed to the stack untouched, and never VXLAN from a stranger
            // (the stack has no vxlan device for our port).
            return if out != input {
                Err("XDP_PASS with a changed packet".into())
            } else if as_vxlan(input).is_some() {
                Err("VXLAN to our port passed to the stack".into())
            } else {
                Ok(())
            };
        }
        XDP_REDIRECT => {}
        v => return Err(format!("verdict {v}")),
    }
    if out.len() < 34 || out[12..14] != [0x08, 0x00] && out[12..14] != [0x08, 0x06] {
        return Err("redirected something that is not IPv4 or ARP".into());
    }
    if let Some((src, vni, marker, inner)) = as_vxlan(input) {
        if src != PEER && src != HOST {
            return Err(format!("VXLAN from non-cluster address {src:?} was forwarded"));
        }
        if out.len() >= 50 && out[12..14] == [0x08, 0x00] && out[23] == 17 && out[36..38] == VXLAN_PORT.to_be_bytes() {
            // An ARP reply sent back in VXLAN.
            let (ovni, _) = check_vxlan_out(out)?;
            if ovni != vni {
                return Err(format!("ARP answered on VNI {ovni}, asked on {vni}"));
            }
            return Ok(());
        }
        if marker == VXLAN_MESH_REPLY {
            // Out to the client from the published address.
            return forwarded_ok(inner.get(14..).unwrap_or_default(), &out[14..]);
        }
        // Decapsulated: to a local endpoint of the packet's own VNI.
        let Some((evni, eip)) = local_by_mac(&out[0..6]) else {
            return Err(format!("delivered to MAC {:02x?}, no local endpoint", &out[0..6]));
        };
        if evni != vni {
            return Err(format!("VNI {vni} delivered to an endpoint of VNI {evni}"));
        }
        // The inner packet as it came (its checksums are the sender's and
        // the receiver's business), but never with a length that lies.
        forwarded_ok(inner.get(14..).unwrap_or_default(), &out[14..])?;
        if out[30..34] != eip {
            return Err("delivered to a MAC whose endpoint has another address".into());
        }
        if inner.len() >= 34 && l4_was_ok(&inner[14..]) && !l4_csum_ok(&out[14..]) {
            return Err("L4 checksum broken on the way".into());
        }
        return Ok(());
    }
    // Not VXLAN to us: a mesh client's packet, tunnelled to the backend's host.
    let (vni, inner) = check_vxlan_out(out)?;
    if vni != FRONT || inner.len() < 34 {
        return Err(format!("mesh tunnelled on VNI {vni}"));
    }
    forwarded_ok(&input[14..], &inner[14..])?;
    if inner[30..34] != R {
        return Err("mesh packet not for the service's backend".into());
    }
    if l4_was_ok(&input[14..]) && !l4_csum_ok(&inner[14..]) {
        return Err("mesh L4 checksum broken".into());
    }
    Ok(())
}

fn check_tc(input: &[u8], verdict: u32, out: &[u8]) -> Result<(), String> {
    let forged_mac = input.len() < 12 || input[6..12] != ME_MAC;
    let forged_ip = input.len() >= 34 && input[12..14] == [0x08, 0x00] && input[26..30] != ME;
    let forged_arp =
        input.len() >= 42 && input[12..14] == [0x08, 0x06] && (input[22..28] != ME_MAC || input[28..32] != ME);
    match verdict {
        TC_ACT_SHOT => return Ok(()),
        TC_ACT_OK | TC_ACT_REDIRECT => {}
        v => return Err(format!("verdict {v}")),
    }
    if forged_mac || forged_ip || forged_arp {
        return Err("a forged source was let through".into());
    }
    if verdict == TC_ACT_OK {
        // Leaves the overlay through the host: never to an overlay address.
        if out.len() < 34 || out[12..14] != [0x08, 0x00] {
            return Err("passed to the host: not IPv4".into());
        }
        let overlay = out[30..33] == [10, 0, 0] || out[30..33] == [10, 0, 1];
        // Except the container's own gateway (the host's): ICMP, and DNS
        // (UDP/TCP port 53) for the resolver.
        let ihl = usize::from(out[14] & 0x0f) * 4;
        let dns = matches!(out[23], 6 | 17) && out.len() >= 14 + ihl + 4 && out[14 + ihl + 2..14 + ihl + 4] == [0, 53];
        let to_gateway = out[30..34] == [10, 0, 0, 1] && (out[23] == 1 || dns);
        return if overlay && !to_gateway { Err("overlay address passed to the host".into()) } else { Ok(()) };
    }
    if out.len() < 14 {
        return Err("redirected a runt".into());
    }
    // ARP answers and ICMP errors (from the gateway) go back to the
    // container itself; so does what it sends to its own address.
    if out[0..6] == ME_MAC {
        return match out[12..14] {
            [0x08, 0x06] => Ok(()),
            _ if out.len() >= 34 && out[26..30] == GW => ipv4_ok(&out[14..]),
            _ => forwarded_ok(&input[14..], &out[14..]),
        };
    }
    if out.len() >= 50 && out[12..14] == [0x08, 0x00] && out[23] == 17 && out[36..38] == VXLAN_PORT.to_be_bytes() {
        let (vni, inner) = check_vxlan_out(out)?;
        if vni != FRONT {
            return Err(format!("ME (VNI {FRONT}) sent into VNI {vni}"));
        }
        if inner.len() < 34 || in_back(&inner[30..34]) || inner[0..6] == B_MAC {
            return Err("encapsulated towards another network".into());
        }
        forwarded_ok(&input[14..], &inner[14..])?;
        if l4_was_ok(&input[14..]) && !l4_csum_ok(&inner[14..]) {
            return Err("L4 checksum broken in encapsulation".into());
        }
        return Ok(());
    }
    // Delivered to a local endpoint: of ME's network only.
    match local_by_mac(&out[0..6]) {
        Some((FRONT, ip)) => {
            forwarded_ok(&input[14..], &out[14..])?;
            if out[30..34] != ip {
                return Err("delivered to a MAC whose endpoint has another address".into());
            }
            Ok(())
        }
        Some((vni, _)) => Err(format!("delivered into VNI {vni}")),
        None => Err(format!("redirected to MAC {:02x?}", &out[0..6])),
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

fn total(rig: &mut Rig, p: Prog) -> u64 {
    p.reasons().map(|r| rig.counter(p, r)).sum()
}

fn fuzz(prog: &str, p: Prog, salt: u64) {
    private_underlay();
    let mut rig = Rig::with_vip(R, FRONT);
    let mut svcs: aya::maps::HashMap<_, ServiceKey, ServiceValue> = rig.map(MAP_SERVICES);
    svcs.insert(ServiceKey { addr: [0; 4], port: 8080, proto: PROTO_TCP, _pad: 0 }, published_service(SVC), 0).unwrap();
    let packets = env("OB_FUZZ_PACKETS", 100_000);
    let seed = env("OB_FUZZ_SEED", 0x0b_f022) ^ salt;
    let mut r = Rng(seed | 1);
    let tc = p == Prog::TcEndpoint;
    // The underlay program at TC ingress answers in TC verdicts; checked as
    // the XDP one is, by meaning.
    let underlay_tc = prog == PROG_TC_UNDERLAY;
    let (mut runs, mut refused, mut sent_on) = (0u64, 0u64, 0u64);
    let mut verdicts = std::collections::BTreeMap::new();
    let before = total(&mut rig, p);
    for n in 0..packets {
        let mut pkt = if tc { tc_template(&mut r) } else { xdp_template(&mut r) };
        if !r.chance(8) {
            mutate(&mut pkt, &mut r, tc);
        }
        let counted = total_if(n, &mut rig, p);
        let (verdict, out) = match rig.try_run(prog, &pkt) {
            Ok(v) => v,
            // The kernel refuses some frames before any program runs: shorter
            // than an Ethernet header, and (skb test runs) IPv4 or IPv6 whose
            // header does not fit. Anything else is a failure.
            Err(e) => {
                let ethertype = if pkt.len() >= 14 { [pkt[12], pkt[13]] } else { [0, 0] };
                let cut_short = pkt.len() < 14
                    || (ethertype == [0x08, 0x00] && ipv4_shape_ok(&pkt[14..]).is_err())
                    || ethertype == [0x86, 0xdd];
                assert!(cut_short, "seed {seed:#x} packet {n}: test run refused: {e}\n{}", hex(&pkt));
                refused += 1;
                continue;
            }
        };
        runs += 1;
        let verdict = match (underlay_tc, verdict) {
            (true, TC_ACT_OK) => XDP_PASS,
            (true, TC_ACT_SHOT) => XDP_DROP,
            (true, TC_ACT_REDIRECT) => XDP_REDIRECT,
            (true, v) => panic!("seed {seed:#x} packet {n}: TC verdict {v}\n{}", hex(&pkt)),
            (false, v) => v,
        };
        *verdicts.entry(verdict).or_insert(0u64) += 1;
        if (tc && verdict != TC_ACT_SHOT) || (!tc && verdict != XDP_DROP) {
            sent_on += 1;
        }
        let check = if tc { check_tc(&pkt, verdict, &out) } else { check_xdp(&pkt, verdict, &out) };
        if let Err(why) = check {
            panic!("seed {seed:#x} packet {n}: {why}\nin:  {}\nout: {}", hex(&pkt), hex(&out));
        }
        if let Some(c) = counted {
            let now = total(&mut rig, p);
            assert_eq!(now, c + 1, "seed {seed:#x} packet {n}: {} counters moved\n{}", now - c, hex(&pkt));
        }
    }
    assert_eq!(total(&mut rig, p) - before, runs, "the counters account for every packet run");
    eprintln!(
        "{prog}: seed {seed:#x}: {packets} packets, {runs} run, {refused} refused by the kernel, \
         {sent_on} sent on, verdicts {verdicts:?}"
    );
    assert!(sent_on > packets / 20, "the generator must also make packets that pass every check");
}

/// The counter total before packet `n`, for one packet in 16 (every
/// packet's total is checked at the end; these find the one that was off).
fn total_if(n: u64, rig: &mut Rig, p: Prog) -> Option<u64> {
    n.is_multiple_of(16).then(|| total(rig, p))
}

#[test]
fn fuzz_xdp_underlay() {
    fuzz(PROG_XDP_UNDERLAY, Prog::XdpUnderlay, 1);
}

#[test]
fn fuzz_tc_underlay() {
    fuzz(PROG_TC_UNDERLAY, Prog::XdpUnderlay, 3);
}

#[test]
fn fuzz_tc_endpoint() {
    fuzz(PROG_TC_ENDPOINT, Prog::TcEndpoint, 2);
}
