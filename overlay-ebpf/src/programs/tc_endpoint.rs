//! TC ingress on an endpoint's host-side veth: everything a container sends.
//!
//! ARP requests are answered here from the maps; IPv4 must come from the
//! endpoint's own IP and MAC; it goes to a local endpoint directly, to a
//! remote one in VXLAN, to the host stack when it leaves the overlay (unless
//! the network is internal), and nowhere else.
use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
    },
    helpers::{bpf_get_hash_recalc, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer, bpf_skb_change_tail},
    macros::classifier,
    programs::TcContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};
use overlay_common::*;

use crate::{
    csum::{fold, sum_words},
    lb::{count_backend, ct_get, ct_pair, now_ns, pick},
    maps::{endpoint, host_config, iface, network, service, subnet},
    nat::{rewrite, End},
    parse::{ptr_at, ArpHdr, ARP_REQUEST, ETH_P_ARP, ETH_P_IP},
    stats::count,
    vxlan::Encap,
};

type Verdict = (Reason, i32);

const SHOT: i32 = TC_ACT_SHOT;
const IP_DF: u8 = 0x40;
/// skb->pkt_type for frames addressed to this host.
const PACKET_HOST: u32 = 0;
/// Length of the ICMP "fragmentation needed" frame: Ethernet, IPv4, ICMP,
/// and the quoted IPv4 header + 8 bytes.
const ICMP_FRAME_LEN: usize = 14 + 20 + 8 + 28;

#[classifier]
pub fn tc_endpoint_egress(ctx: TcContext) -> i32 {
    let len = ctx.len() as u64;
    let (reason, action) = handle(&ctx);
    count(Prog::TcEndpoint, reason, len);
    action
}

#[inline(always)]
fn drop(r: Reason) -> Verdict {
    (r, SHOT)
}

/// A redirect helper's result: TC_ACT_REDIRECT on success.
#[inline(always)]
fn redirected(ret: i64, ok: Reason) -> Verdict {
    if ret == TC_ACT_REDIRECT as i64 {
        (ok, TC_ACT_REDIRECT)
    } else {
        drop(Reason::DropRedirect)
    }
}

#[inline(always)]
fn handle(ctx: &TcContext) -> Verdict {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(me) = iface(ifindex) else { return drop(Reason::DropUnknownIface) };
    let (start, end) = (ctx.data(), ctx.data_end());
    let Some(eth) = ptr_at::<EthHdr>(start, end, 0) else { return drop(Reason::DropMalformed) };
    let eth = unsafe { &mut *eth };
    if eth.src_addr != me.mac {
        return drop(Reason::DropSpoofed);
    }
    match u16::from_be(eth.ether_type) {
        ETH_P_ARP => arp(me, ifindex, eth, start, end),
        ETH_P_IP => ipv4(ctx, me, ifindex, eth, start, end),
        _ => drop(Reason::DropUnsupported),
    }
}

/// The MAC behind `ip` on network `vni`: its gateway or one of its endpoints.
#[inline(always)]
fn resolve(vni: u32, ip: [u8; 4]) -> Option<[u8; 6]> {
    if let Some(s) = subnet(ip) {
        if s.vni == vni && s.gateway == ip {
            return Some(gateway_mac(ip));
        }
    }
    endpoint(vni, ip).map(|e| e.mac)
}

#[inline(always)]
fn arp(me: &IfaceValue, ifindex: u32, eth: &mut EthHdr, start: usize, end: usize) -> Verdict {
    let Some(a) = ptr_at::<ArpHdr>(start, end, EthHdr::LEN) else { return drop(Reason::DropMalformed) };
    let a = unsafe { &mut *a };
    if !a.is_eth_ipv4() {
        return drop(Reason::DropArp);
    }
    if a.sha != me.mac || a.spa != me.ip {
        return drop(Reason::DropSpoofed);
    }
    // Replies, and gratuitous ARP (sender = target), have nothing to answer;
    // nothing floods. (Requests from other hosts are answered by XDP.)
    if a.oper != ARP_REQUEST || a.tpa == a.spa {
        return drop(Reason::DropArp);
    }
    let Some(mac) = resolve(me.vni, a.tpa) else { return drop(Reason::DropArp) };
    a.answer(eth, mac);
    redirected(unsafe { bpf_redirect(ifindex, 0) }, Reason::ArpReplied)
}

#[inline(always)]
fn ipv4(ctx: &TcContext, me: &IfaceValue, ifindex: u32, eth: &mut EthHdr, start: usize, end: usize) -> Verdict {
    let Some(ip) = ptr_at::<Ipv4Hdr>(start, end, EthHdr::LEN) else { return drop(Reason::DropMalformed) };
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != 4 || ip.vihl & 0xf < 5 {
        return drop(Reason::DropMalformed);
    }
    // A total length beyond the frame (or shorter than the header) is a lie
    // no receiver would accept. (The skb's length: data_end only bounds its
    // linear part.) GSO super-packets carry a total length per segment.
    let total = u16::from_be_bytes(ip.tot_len) as usize;
    let gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    if total < ((ip.vihl & 0xf) as usize) * 4 || (!gso && total > ctx.len() as usize - EthHdr::LEN) {
        return drop(Reason::DropMalformed);
    }
    if ip.src_addr != me.ip {
        return drop(Reason::DropSpoofed);
    }
    let dst = ip.dst_addr;
    if ip.proto == PROTO_ICMP && ip.vihl & 0xf == 5 {
        if let Some(v) = icmp_error(ctx, me) {
            return v;
        }
    }
    if ip.proto == PROTO_TCP || ip.proto == PROTO_UDP {
        let ihl = ((ip.vihl & 0xf) as usize) * 4;
        if let Some(v) = translate(ctx, me, ifindex, ihl, ip.proto, ip.src_addr, dst) {
            return v;
        }
    }
    if let Some(ep) = endpoint(me.vni, dst) {
        if ep.flags & ENDPOINT_F_VIP != 0 {
            // A VIP leads nowhere but through its service ports (translate).
            return drop(Reason::DropNoBackend);
        }
        // Also for frames sent to the gateway's MAC (another subnet of the network).
        eth.dst_addr = ep.mac;
        if let Some(v) = too_big(ctx, me, ifindex, ep) {
            return v;
        }
        return forward(ctx, me, ep);
    }
    if let Some(s) = subnet(dst) {
        // Inside an overlay network but no endpoint of ours: isolation.
        return drop(if s.vni == me.vni { Reason::DropNoEndpoint } else { Reason::DropCrossNetwork });
    }
    // Outside every overlay network: the host routes and masquerades it.
    match network(me.vni) {
        Some(n) if n.flags & NETWORK_F_INTERNAL == 0 => {
            // Addressed to the gateway's MAC, the frame entered the veth as
            // "for another host", which the IP stack would discard.
            eth.dst_addr = me.host_mac;
            if ctx.change_type(PACKET_HOST).is_err() {
                return drop(Reason::DropRedirect);
            }
            (Reason::PassToHost, TC_ACT_OK)
        }
        _ => drop(Reason::DropInternal),
    }
}

/// A packet for remote endpoint `ep` that would not fit the underlay once
/// encapsulated: answered with ICMP "fragmentation needed" when DF is set
/// (quoting the packet as the sender sent it), dropped otherwise.
#[inline(always)]
fn too_big(ctx: &TcContext, me: &IfaceValue, ifindex: u32, ep: &EndpointValue) -> Option<Verdict> {
    // GSO super-packets are cut to the route MTU the kernel gave the sender.
    if ep.flags & ENDPOINT_F_LOCAL != 0 || unsafe { (*ctx.skb.skb).gso_size } != 0 {
        return None;
    }
    let Some(cfg) = host_config() else { return Some(drop(Reason::DropRedirect)) };
    let inner = ctx.len() as usize - EthHdr::LEN;
    if inner + VXLAN_ENCAP_LEN <= cfg.underlay_mtu as usize {
        return None;
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx.data(), ctx.data_end(), EthHdr::LEN) else {
        return Some(drop(Reason::DropMalformed));
    };
    let ip = unsafe { &*ip };
    if ip.frags[0] & IP_DF != 0 && ip.vihl & 0xf == 5 {
        return Some(frag_needed(ctx, me, ifindex, cfg));
    }
    Some(drop(Reason::DropTooBig))
}

/// Flows the connection table or a service VIP translates: replies get their
/// source back to the VIP; packets to a VIP get a backend picked by Maglev
/// (kept for the flow's life by the connection table) as their destination.
/// `None`: not a translated flow.
#[inline(always)]
fn translate(
    ctx: &TcContext,
    me: &IfaceValue,
    ifindex: u32,
    ihl: usize,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
) -> Option<Verdict> {
    let Some(ports) = ptr_at::<[u8; 4]>(ctx.data(), ctx.data_end(), EthHdr::LEN + ihl) else {
        return Some(drop(Reason::DropMalformed));
    };
    let p = unsafe { *ports };
    let (sport, dport) = (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]]));
    let cfg = host_config()?;
    // Only a backend's packets can be replies to translate back; anyone
    // else's need the connection table only when addressed to a service.
    let svc_key = ServiceKey { addr: dst, port: dport, proto, _pad: 0 };
    let early = if me.flags & ENDPOINT_F_BACKEND == 0 { Some(service(svc_key)?) } else { None };
    let now = now_ns();
    let key = CtKey { src, dst, sport, dport, proto, _pad: [0; 3] };
    let ct = ct_get(&key, cfg, now).map(|c| *c);
    if let Some(c) = ct {
        if c.action == CT_REVNAT {
            if rewrite(ctx, ihl, proto, End::Src, src, c.new_src, sport, c.new_sport).is_err()
                || rewrite(ctx, ihl, proto, End::Dst, dst, c.new_dst, dport, c.new_dport).is_err()
            {
                return Some(drop(Reason::DropRedirect));
            }
            return Some(route_to(ctx, me, c.new_dst));
        }
        if c.action == CT_SNAT_OUT {
            // A local backend's reply to a routing-mesh client: from the
            // published address, straight out of the underlay.
            if rewrite(ctx, ihl, proto, End::Src, src, c.new_src, sport, c.new_sport).is_err() {
                return Some(drop(Reason::DropRedirect));
            }
            return Some(to_underlay(cfg, Reason::MeshReplied));
        }
        if c.action == CT_TUNNEL {
            // A backend's reply to a routing-mesh client that came in through
            // another host: back through that host, which translates it.
            let gw_mac = network(c.vni).map(|n| n.gateway_mac).unwrap_or_default();
            return Some(tunnel(ctx, c.vtep, c.vni, VXLAN_MESH_REPLY, gw_mac, me.mac, Reason::MeshTunneledBack));
        }
    }
    let svc = match early {
        Some(s) => s,
        None => service(svc_key)?,
    };
    if svc.vni != me.vni {
        return Some(drop(Reason::DropCrossNetwork));
    }
    let Some((backend, new)) = pick(&svc, ct, &key) else { return Some(drop(Reason::DropNoBackend)) };
    let Some(ep) = endpoint(me.vni, backend) else { return Some(drop(Reason::DropNoBackend)) };
    if let Some(v) = too_big(ctx, me, ifindex, ep) {
        return Some(v);
    }
    // Hairpin: a backend calling its own VIP and picked itself sees the VIP
    // as the source, or it would drop a packet "from itself".
    let new_src = if backend == src { dst } else { src };
    let v = CtValue {
        action: CT_DNAT,
        new_src,
        new_dst: backend,
        new_sport: sport,
        new_dport: svc.target_port,
        vni: svc.vni,
        service_id: svc.service_id,
        last_seen_ns: now,
        ..Default::default()
    };
    let rkey = CtKey { src: backend, dst: new_src, sport: svc.target_port, dport: sport, proto, _pad: [0; 3] };
    let r = CtValue { action: CT_REVNAT, new_src: dst, new_sport: dport, new_dst: src, new_dport: sport, ..v };
    ct_pair(new, &key, &v, &rkey, &r, cfg);
    count_backend(svc.service_id, backend, ctx.len() as u64, new);
    if rewrite(ctx, ihl, proto, End::Dst, dst, backend, dport, svc.target_port).is_err()
        || rewrite(ctx, ihl, proto, End::Src, src, new_src, sport, sport).is_err()
    {
        return Some(drop(Reason::DropRedirect));
    }
    Some(route_to(ctx, me, backend))
}

/// An ICMP error (unreachable, time exceeded) a backend sends about a
/// translated flow: it quotes the packet as the backend got it, addressed to
/// the backend. The caller knows the flow by the VIP or the published
/// address, so the error's source and the quoted destination become that,
/// or the caller's stack would match it to no socket. `None`: not such an
/// error.
#[inline(always)]
fn icmp_error(ctx: &TcContext, me: &IfaceValue) -> Option<Verdict> {
    // ICMP header (8), the quoted IPv4 header (20) and ports (4).
    const OFF: usize = EthHdr::LEN + 20;
    let b = ctx.load::<[u8; 32]>(OFF).ok()?;
    let q = OFF + 8;
    if (b[0] != 3 && b[0] != 11) || b[8] != 0x45 || (b[17] != PROTO_TCP && b[17] != PROTO_UDP) {
        return None;
    }
    let (mut qsrc, mut qdst) = ([0u8; 4], [0u8; 4]);
    qsrc.copy_from_slice(&b[20..24]);
    qdst.copy_from_slice(&b[24..28]);
    if qdst != me.ip {
        return None;
    }
    let (qsport, qdport) = ([b[28], b[29]], [b[30], b[31]]);
    let key = CtKey {
        src: qdst,
        dst: qsrc,
        sport: u16::from_be_bytes(qdport),
        dport: u16::from_be_bytes(qsport),
        proto: b[17],
        _pad: [0; 3],
    };
    let cfg = host_config()?;
    let c = *ct_get(&key, cfg, now_ns())?;
    if c.action != CT_REVNAT && c.action != CT_SNAT_OUT {
        return None;
    }
    let (addr, port) = (c.new_src, c.new_sport.to_be_bytes());
    let fail = Some(drop(Reason::DropRedirect));
    // The quoted header's checksum, then the ICMP checksum over every
    // quoted change (no pseudo-header), then the outer source.
    let old_qc = [b[18], b[19]];
    let new_qc = crate::csum::replace(old_qc, &qdst, &addr);
    let icmp_csum = OFF + 2;
    let as32 = |x: [u8; 4]| u32::from_ne_bytes(x) as u64;
    let as16 = |x: [u8; 2]| u16::from_ne_bytes(x) as u64;
    if ctx.l4_csum_replace(icmp_csum, as32(qdst), as32(addr), 4).is_err()
        || ctx.l4_csum_replace(icmp_csum, as16(old_qc), as16(new_qc), 2).is_err()
        || ctx.l4_csum_replace(icmp_csum, as16(qdport), as16(port), 2).is_err()
        || ctx.store(q + 16, &addr, 0).is_err()
        || ctx.store(q + 10, &new_qc, 0).is_err()
        || ctx.store(q + 22, &port, 0).is_err()
        || ctx.l3_csum_replace(EthHdr::LEN + 10, as32(me.ip), as32(addr), 4).is_err()
        || ctx.store(EthHdr::LEN + 12, &addr, 0).is_err()
    {
        return fail;
    }
    if c.action == CT_SNAT_OUT {
        return Some(to_underlay(cfg, Reason::IcmpTranslated));
    }
    let Some(ep) = endpoint(me.vni, c.new_dst) else { return Some(drop(Reason::DropNoBackend)) };
    let Some(eth) = ptr_at::<EthHdr>(ctx.data(), ctx.data_end(), 0) else { return Some(drop(Reason::DropMalformed)) };
    unsafe { (*eth).dst_addr = ep.mac };
    let v = forward(ctx, me, ep);
    Some(if v.1 == TC_ACT_REDIRECT { (Reason::IcmpTranslated, v.1) } else { v })
}

/// Sends the (rewritten) packet to endpoint `ip` of the sender's network.
#[inline(always)]
fn route_to(ctx: &TcContext, me: &IfaceValue, ip: [u8; 4]) -> Verdict {
    let Some(ep) = endpoint(me.vni, ip) else { return drop(Reason::DropNoBackend) };
    let Some(eth) = ptr_at::<EthHdr>(ctx.data(), ctx.data_end(), 0) else { return drop(Reason::DropMalformed) };
    unsafe { (*eth).dst_addr = ep.mac };
    forward(ctx, me, ep)
}

/// IPv4 to endpoint `ep` of the sender's network: straight into a local
/// container, or encapsulated to the remote one's host. The frame's
/// destination MAC is already `ep.mac`.
#[inline(always)]
fn forward(ctx: &TcContext, me: &IfaceValue, ep: &EndpointValue) -> Verdict {
    if ep.flags & ENDPOINT_F_LOCAL != 0 {
        return redirected(unsafe { bpf_redirect_peer(ep.ifindex, 0) }, Reason::DeliveredLocal);
    }
    encap(ctx, me, ep)
}

/// Pushes outer Ethernet/IPv4/UDP/VXLAN and sends it to `ep`'s host through
/// the underlay, the kernel resolving the next hop and its MAC.
#[inline(always)]
fn encap(ctx: &TcContext, me: &IfaceValue, ep: &EndpointValue) -> Verdict {
    tunnel(ctx, ep.vtep, me.vni, 0, ep.mac, me.mac, Reason::Encapsulated)
}

/// Wraps the frame in VXLAN (VNI `vni`, mesh `marker`) to host `vtep`.
#[inline(always)]
fn tunnel(
    ctx: &TcContext,
    vtep: [u8; 4],
    vni: u32,
    marker: u8,
    inner_dst_mac: [u8; 6],
    inner_src_mac: [u8; 6],
    ok: Reason,
) -> Verdict {
    let Some(cfg) = host_config() else { return drop(Reason::DropRedirect) };
    let tos = match ptr_at::<Ipv4Hdr>(ctx.data(), ctx.data_end(), EthHdr::LEN) {
        Some(ip) => unsafe { (*ip).tos },
        None => return drop(Reason::DropMalformed),
    };
    let e = Encap {
        // Outer Ethernet addresses: filled in by bpf_redirect_neigh.
        outer_dst_mac: [0; 6],
        outer_src_mac: [0; 6],
        src: cfg.underlay_ip,
        vtep,
        tos,
        // The inner flow's hash gives the source port: ECMP entropy, stable per flow.
        hash: unsafe { bpf_get_hash_recalc(ctx.skb.skb) },
        port: cfg.vxlan_port,
        inner_len: ctx.len() as usize - EthHdr::LEN,
        vni,
        marker,
        inner_dst_mac,
        inner_src_mac,
    };
    let h = e.header();
    // The inner MAC header is the inner Ethernet header alone: GSO then takes
    // UDP + VXLAN as the tunnel header and cuts the inner TCP correctly.
    let flags = (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
        | (EthHdr::LEN as u64) << 56;
    if ctx.adjust_room(VXLAN_ENCAP_LEN as i32, BPF_ADJ_ROOM_MAC, flags).is_err() {
        return drop(Reason::DropRedirect);
    }
    if ctx.store(0, &h, 0).is_err() {
        return drop(Reason::DropRedirect);
    }
    to_underlay(cfg, ok)
}

/// Sends the frame out of the underlay device, the kernel resolving the next
/// hop for its destination address and filling in the MACs.
#[inline(always)]
fn to_underlay(cfg: &HostConfig, ok: Reason) -> Verdict {
    redirected(unsafe { bpf_redirect_neigh(cfg.underlay_ifindex, core::ptr::null_mut(), 0, 0) }, ok)
}

/// Answers a too-big packet with DF set with ICMP "fragmentation needed"
/// carrying the MTU usable through the overlay, from the network's gateway,
/// so the sender's PMTU discovery works instead of a black hole.
#[inline(always)]
fn frag_needed(ctx: &TcContext, me: &IfaceValue, ifindex: u32, cfg: &HostConfig) -> Verdict {
    let Ok(quote) = ctx.load::<[u8; 28]>(EthHdr::LEN) else { return drop(Reason::DropMalformed) };
    let (gw, gw_mac) = match network(me.vni) {
        Some(n) => (n.gateway, n.gateway_mac),
        None => return drop(Reason::DropTooBig),
    };
    let mtu = cfg.underlay_mtu.saturating_sub(VXLAN_ENCAP_LEN as u16);
    let mut r = [0u8; ICMP_FRAME_LEN];
    r[0..6].copy_from_slice(&me.mac);
    r[6..12].copy_from_slice(&gw_mac);
    r[12] = 0x08;
    r[14] = 0x45;
    r[15] = 0xc0;
    r[16..18].copy_from_slice(&((ICMP_FRAME_LEN - 14) as u16).to_be_bytes());
    r[22] = 64;
    r[23] = PROTO_ICMP;
    r[26..30].copy_from_slice(&gw);
    r[30..34].copy_from_slice(&me.ip);
    let c = fold(sum_words(&r, 14, 34));
    r[24..26].copy_from_slice(&c.to_be_bytes());
    r[34] = 3; // destination unreachable
    r[35] = 4; // fragmentation needed and DF set
    r[40..42].copy_from_slice(&mtu.to_be_bytes());
    r[42..70].copy_from_slice(&quote);
    let c = fold(sum_words(&r, 34, ICMP_FRAME_LEN));
    r[36..38].copy_from_slice(&c.to_be_bytes());
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, ICMP_FRAME_LEN as u32, 0) } != 0 {
        return drop(Reason::DropTooBig);
    }
    if ctx.store(0, &r, 0).is_err() {
        return drop(Reason::DropTooBig);
    }
    redirected(unsafe { bpf_redirect(ifindex, 0) }, Reason::IcmpFragNeeded)
}
