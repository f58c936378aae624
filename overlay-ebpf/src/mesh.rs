//! The routing mesh: every step of a mesh flow, in the underlay program (XDP
//! or TC) and in TC on a backend's veth.
//!
//! A client's packet to any host's address on a published port gets a backend
//! from the service's Maglev table (kept for the flow's life by the connection
//! table), its destination rewritten to the backend, and is either redirected
//! into the local backend's veth or tunnelled to the backend's host, marked
//! `VXLAN_MESH_FWD`. The client's address is never touched: the backend sees
//! it. That host remembers (`CtAction::Tunnel`) to send the replies back the
//! same way, marked `VXLAN_MESH_REPLY`; here they get the published address
//! back (`CtAction::SnatOut`, [`conntrack::translate_reply`]) and go out to
//! the client. A backend on the ingress host itself replies through TC: its
//! reply is translated there and leaves by the underlay ([`backend_reply`]),
//! as does a remote backend's reply, tunnelled back.

use aya_ebpf::programs::TcContext;
use overlay_common::*;
use overlay_wire::{eth, ipv4, nat, vxlan::Encap};

use crate::{
    conntrack,
    encap::tc_tunnel,
    fib::{next_hop, vtep_hop},
    forward::to_underlay,
    lb::{count_backend, flow_hash, now_ns, pick},
    maps::{endpoint, is_vtep, network, service, wg_config},
    packet::{Frame, Outcome, Packet},
};

/// The connection-table key of the IPv4 TCP/UDP packet at `l3`, when it is
/// a flow the table keys on ([`ipv4::is_flow`]).
#[inline(always)]
pub fn flow_key<P: Packet>(pkt: &P, l3: usize) -> Option<CtKey> {
    let ip = pkt.bytes::<{ ipv4::HEADER_LEN }>(l3)?;
    if !ipv4::is_flow(ip, pkt.room(l3)) {
        return None;
    }
    let ports = pkt.bytes::<4>(l3 + ipv4::HEADER_LEN)?;
    Some(CtKey::new(&nat::tuple(ip, ports), ipv4::proto(ip)))
}

/// A TCP/UDP packet to this host's address that is not VXLAN: a published
/// port's traffic, or `None` (not ours, the host stack gets it).
#[inline(always)]
pub fn published<P: Frame>(ctx: &P, cfg: &HostConfig) -> Option<Outcome<P::Verdict>> {
    let key = flow_key(ctx, eth::HEADER_LEN)?;
    let svc = *service(ServiceKey { addr: [0; 4], port: key.dport, proto: key.proto, _pad: 0 })?;
    if svc.flags & SERVICE_F_PUBLISHED == 0 {
        return None;
    }
    Some(balance(ctx, cfg, &key, &svc))
}

#[inline(always)]
fn balance<P: Frame>(ctx: &P, cfg: &HostConfig, key: &CtKey, svc: &ServiceValue) -> Outcome<P::Verdict> {
    let now = now_ns();
    let ct = conntrack::get(key, cfg, now);
    // No backend: answered by the entry point (`reject`).
    let (backend, new) = pick(svc, ct, key).ok_or(Reason::RejectNoBackend)?;
    let ip = ctx.bytes::<{ ipv4::HEADER_LEN }>(eth::HEADER_LEN).ok_or(Reason::DropMalformed)?;
    let (tos, ip_len) = (ipv4::tos(ip), ipv4::total_len(ip));
    // An established flow's entry carries where its packets go; a new flow,
    // or one whose carried fields are due to be read again, reads them from
    // the endpoint, network and next-hop maps (or the FIB).
    let (mut d, carried) = match ct {
        Some(c) if !new && c.carried_at(now) => (*c, true),
        _ => (destination(ctx, cfg, svc, backend, now)?, false),
    };
    let local = d.flags & CT_F_LOCAL != 0;
    // Everything that can fail before the packet is touched.
    if !local {
        let room = cfg.underlay_mtu as usize - if d.flags & CT_F_ENCRYPTED != 0 { WIREGUARD_OVERHEAD } else { 0 };
        if segment_len(ctx, ip_len, key.proto) + VXLAN_ENCAP_LEN > room {
            return Err(Reason::DropTooBig);
        }
    }
    let to = Tuple { dst: backend, dport: svc.target_port, ..key.tuple() };
    (d.vni, d.service_id, d.last_seen_ns) = (svc.vni, svc.service_id, now);
    if !new && !carried {
        // Read again: the forward entry carries the fresh fields from now.
        d.action = CtAction::Dnat as u8;
        d.set_tuple(&to);
        conntrack::put(key, &d);
    }
    // (Leaves `d` as the reply entry; its carried fields stay.)
    conntrack::track(new, key, &to, CtAction::SnatOut, &mut d, cfg);
    count_backend(svc.service_id, backend, ip_len as u64, new);
    ctx.rewrite(eth::HEADER_LEN, ipv4::HEADER_LEN, key.proto, &key.tuple(), &to)?;
    if local {
        let e = ctx.bytes::<{ eth::HEADER_LEN }>(0).ok_or(Reason::DropMalformed)?;
        eth::set_dst(e, d.mac);
        eth::set_src(e, d.gw_mac);
        return ctx.deliver(d.ifindex, Reason::MeshLocal);
    }
    let e = Encap {
        outer_dst_mac: d.hop_dmac,
        outer_src_mac: d.hop_smac,
        src: cfg.underlay_ip,
        vtep: d.vtep,
        tos,
        hash: flow_hash(key),
        port: cfg.vxlan_port,
        inner_len: ip_len,
        vni: svc.vni,
        marker: VXLAN_MESH_FWD,
        inner_dst_mac: d.mac,
        inner_src_mac: d.gw_mac,
    };
    ctx.push(&e)?.send(d.ifindex, Reason::MeshTunneled)
}

/// Where a mesh flow's packets to `backend` go, read from the endpoint,
/// network and next-hop maps: the fields a forward entry carries
/// ([`CT_F_CARRIED`]), as of `now`.
#[inline(always)]
fn destination<P: Frame>(
    ctx: &P,
    cfg: &HostConfig,
    svc: &ServiceValue,
    backend: [u8; 4],
    now: u64,
) -> Result<CtValue, Reason> {
    let ep = *endpoint(svc.vni, backend).ok_or(Reason::DropNoBackend)?;
    let net = network(svc.vni);
    let mut d = CtValue {
        flags: CT_F_CARRIED,
        vtep: ep.vtep,
        mac: ep.mac,
        gw_mac: net.map(|n| n.gateway_mac).unwrap_or_default(),
        ifindex: ep.ifindex,
        carried_ns: now,
        ..Default::default()
    };
    if ep.flags & ENDPOINT_F_LOCAL != 0 {
        d.flags |= CT_F_LOCAL;
    } else if net.is_some_and(|n| n.flags & NETWORK_F_ENCRYPTED != 0) {
        // To WireGuard, through the veth (`tc_wireguard`): no link layer on
        // the way, so no addresses to resolve.
        d.flags |= CT_F_ENCRYPTED;
        d.ifindex = wg_config().ok_or(Reason::DropNoWireguard)?.xdp_ifindex;
    } else {
        let hop = vtep_hop(ctx, cfg.underlay_ip, ep.vtep, now)?;
        (d.ifindex, d.hop_smac, d.hop_dmac) = (hop.ifindex, hop.smac, hop.dmac);
    }
    Ok(d)
}

/// The length of the IPv4 packets at the frame's start as they will leave:
/// `ip_len`, or for a GSO packet (TC), one segment's.
#[inline(always)]
fn segment_len<P: Frame>(ctx: &P, ip_len: usize, proto: u8) -> usize {
    let seg = ctx.gso_size() as usize;
    if seg == 0 {
        return ip_len;
    }
    let l4 = eth::HEADER_LEN + ipv4::HEADER_LEN;
    let l4_len = match proto {
        PROTO_TCP => ctx.bytes::<{ overlay_wire::tcp::FIXED_LEN }>(l4).map_or(0, |t| overlay_wire::tcp::header_len(t)),
        _ => overlay_wire::udp::HEADER_LEN,
    };
    ipv4::HEADER_LEN + l4_len + seg
}

/// A backend's reply tunnelled back here (`VXLAN_MESH_REPLY` from `vtep`):
/// the inner packet at `inner` gets the published address back as its source
/// and goes to the client without the outer headers.
#[inline(always)]
pub fn reply<P: Frame>(ctx: &P, cfg: &HostConfig, inner: usize, vtep: [u8; 4]) -> Outcome<P::Verdict> {
    let l3 = inner + eth::HEADER_LEN;
    // The inner frame must be IPv4 for the rest to read it as such.
    let ie = ctx.bytes::<{ eth::HEADER_LEN }>(inner).ok_or(Reason::DropMalformed)?;
    if eth::ethertype(ie) != eth::ETHERTYPE_IPV4 {
        return Err(Reason::DropMalformed);
    }
    let key = flow_key(ctx, l3).ok_or(Reason::DropMalformed)?;
    let c = match conntrack::lookup(&key, cfg, now_ns()) {
        // Only the host the flow was sent to may answer for it.
        Some((CtAction::SnatOut, c)) if c.vtep == vtep => c,
        _ => return Err(Reason::DropNoFlow),
    };
    let hop = next_hop(ctx, c.new_src, c.new_dst)?;
    conntrack::translate_reply(ctx, l3, ipv4::HEADER_LEN, &key, c)?;
    let ctx = ctx.strip(inner)?;
    let e = ctx.bytes::<{ eth::HEADER_LEN }>(0).ok_or(Reason::DropMalformed)?;
    eth::set_dst(e, hop.dmac);
    eth::set_src(e, hop.smac);
    ctx.send(hop.ifindex, Reason::MeshReplied)
}

/// A client's packet tunnelled here by the ingress host `vtep`: remember to
/// send the backend's replies back through it. False when `vtep` is no
/// cluster host: a flow already remembered from it proves it is, a new one
/// asks the VTEP set.
#[inline(always)]
pub fn remember_ingress(cfg: &HostConfig, key: &CtKey, vtep: [u8; 4], vni: u32) -> bool {
    let rkey = key.reversed();
    let now = now_ns();
    if let Some(c) = conntrack::get(&rkey, cfg, now) {
        if c.action() == Some(CtAction::Tunnel) && c.vtep == vtep && c.vni == vni {
            return true;
        }
    }
    if !is_vtep(vtep) {
        return false;
    }
    let v = CtValue { action: CtAction::Tunnel as u8, vtep, vni, last_seen_ns: now, ..Default::default() };
    conntrack::put(&rkey, &v);
    true
}

/// A backend's reply to a routing-mesh client, in TC on the backend's veth
/// (endpoint `me`), by its flow's connection-table entry `c` (`action`):
/// - `SnatOut`: the client came in through this host: the reply gets the
///   published address back and goes straight out of the underlay;
/// - `Tunnel`: it came in through another host (`c.vtep`): the reply goes
///   back through that host, which translates it ([`reply`]).
#[inline(always)]
pub fn backend_reply(
    ctx: &TcContext,
    cfg: &HostConfig,
    me: &IfaceValue,
    ihl: usize,
    key: &CtKey,
    action: CtAction,
    c: &CtValue,
) -> Outcome<i32> {
    if action == CtAction::SnatOut {
        conntrack::translate_reply(ctx, eth::HEADER_LEN, ihl, key, c)?;
        return to_underlay(ctx, cfg, Reason::MeshReplied);
    }
    let gw_mac = network(c.vni).map(|n| n.gateway_mac).unwrap_or_default();
    tc_tunnel(ctx, c.vtep, c.vni, VXLAN_MESH_REPLY, gw_mac, me.mac, Reason::MeshTunneledBack)
}
