//! The routing mesh in XDP, on the underlay device.
//!
//! A client's packet to any host's address on a published port gets a backend
//! from the service's Maglev table (kept for the flow's life by the connection
//! table), its destination rewritten to the backend, and is either redirected
//! into the local backend's veth or tunnelled to the backend's host, marked
//! `VXLAN_MESH_FWD`. The client's address is never touched: the backend sees
//! it. That host remembers (`CT_TUNNEL`) to send the replies back the same
//! way, marked `VXLAN_MESH_REPLY`; here they get the published address back
//! (`CT_SNAT_OUT`) and go out to the client.
use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams,
        xdp_action::{XDP_DROP, XDP_REDIRECT},
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use overlay_common::*;

use crate::{
    lb::{count_backend, ct_get, ct_pair, ct_put, flow_hash, now_ns, pick},
    maps::{endpoint, network, service, OB_NEXT_HOPS_V1},
    parse::ptr_at,
    vxlan::{Encap, HDR_LEN},
    xnat::{key_at, rewrite, Tuple},
};

type Verdict = (Reason, u32);

#[inline(always)]
fn drop(r: Reason) -> Verdict {
    (r, XDP_DROP)
}

/// Next hop towards `dst` as the kernel's FIB and neighbour table have it:
/// (egress ifindex, source MAC, destination MAC).
#[inline(always)]
fn next_hop(ctx: &XdpContext, src: [u8; 4], dst: [u8; 4]) -> Result<(u32, [u8; 6], [u8; 6]), Reason> {
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = 2; // AF_INET
    p.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    let ret = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, &mut p, core::mem::size_of::<FibParams>() as i32, 0) };
    match ret as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Ok((p.ifindex, p.smac, p.dmac)),
        BPF_FIB_LKUP_RET_NO_NEIGH => Err(Reason::DropNoNeigh),
        _ => Err(Reason::DropRedirect),
    }
}

/// Next hop towards cluster host `vtep`: from the cache while it is younger
/// than `NEXT_HOP_TTL_NS`, else from the FIB (and cached). A FIB lookup costs
/// about as much as the rest of the mesh path together.
#[inline(always)]
fn vtep_hop(ctx: &XdpContext, src: [u8; 4], vtep: [u8; 4], now: u64) -> Result<(u32, [u8; 6], [u8; 6]), Reason> {
    if let Some(h) = unsafe { OB_NEXT_HOPS_V1.get(vtep) } {
        if now.wrapping_sub(h.checked_ns) < NEXT_HOP_TTL_NS {
            return Ok((h.ifindex, h.smac, h.dmac));
        }
    }
    let (ifindex, smac, dmac) = next_hop(ctx, src, vtep)?;
    let _ = OB_NEXT_HOPS_V1.insert(vtep, NextHop { ifindex, smac, dmac, checked_ns: now }, 0);
    Ok((ifindex, smac, dmac))
}

/// Transmits the frame (its addresses set) out of `ifindex`.
///
/// A redirect, also back out of the device the frame came in on, rather
/// than XDP_TX: a veth underlay (hosts as containers on a bridge) flushes
/// XDP_TX frames to its peer only when the peer runs an XDP program itself,
/// and holds them until the next packet otherwise; redirected frames are
/// flushed at the end of every poll. NIC drivers with XDP implement both.
#[inline(always)]
pub fn transmit(ifindex: u32, ok: Reason) -> Verdict {
    if unsafe { bpf_redirect(ifindex, 0) } as u32 == XDP_REDIRECT {
        (ok, XDP_REDIRECT)
    } else {
        drop(Reason::DropRedirect)
    }
}

/// A TCP/UDP packet to this host's address that is not VXLAN: a published
/// port's traffic, or `None` (not ours, the host stack gets it).
#[inline(always)]
pub fn published(ctx: &XdpContext, cfg: &HostConfig) -> Option<Verdict> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let key = key_at(start, end, 14)?;
    let svc = *service(ServiceKey { addr: [0; 4], port: key.dport, proto: key.proto, _pad: 0 })?;
    if svc.flags & SERVICE_F_PUBLISHED == 0 {
        return None;
    }
    let now = now_ns();
    let ct = ct_get(&key, cfg, now).map(|c| *c);
    let Some((backend, new)) = pick(&svc, ct, &key) else { return Some(drop(Reason::DropNoBackend)) };
    let Some(ep) = endpoint(svc.vni, backend).copied() else { return Some(drop(Reason::DropNoBackend)) };
    let local = ep.flags & ENDPOINT_F_LOCAL != 0;
    let (tos, ip_len) = match ptr_at::<[u8; 4]>(start, end, 14) {
        Some(p) => unsafe { ((*p)[1], u16::from_be_bytes([(*p)[2], (*p)[3]]) as usize) },
        None => return Some(drop(Reason::DropMalformed)),
    };
    // Everything that can fail before the packet is touched.
    let mut hop = (0, [0; 6], [0; 6]);
    if !local {
        if ip_len + VXLAN_ENCAP_LEN > cfg.underlay_mtu as usize {
            return Some(drop(Reason::DropTooBig));
        }
        hop = match vtep_hop(ctx, cfg.underlay_ip, ep.vtep, now) {
            Ok(h) => h,
            Err(r) => return Some(drop(r)),
        };
    }
    let v = CtValue {
        action: CT_DNAT,
        new_src: key.src,
        new_dst: backend,
        new_sport: key.sport,
        new_dport: svc.target_port,
        vtep: ep.vtep,
        vni: svc.vni,
        service_id: svc.service_id,
        last_seen_ns: now,
        ..Default::default()
    };
    // The reply, as the backend sends it: back to the published address.
    let rkey = CtKey { src: backend, dst: key.src, sport: svc.target_port, dport: key.sport, ..key };
    let r = CtValue {
        action: CT_SNAT_OUT,
        new_src: cfg.underlay_ip,
        new_sport: key.dport,
        new_dst: key.src,
        new_dport: key.sport,
        ..v
    };
    ct_pair(new, &key, &v, &rkey, &r, cfg);
    count_backend(svc.service_id, backend, ip_len as u64, new);
    let to = Tuple { src: key.src, dst: backend, sport: key.sport, dport: svc.target_port };
    if !rewrite(start, end, 14, &to) {
        return Some(drop(Reason::DropMalformed));
    }
    let gw_mac = network(svc.vni).map(|n| n.gateway_mac).unwrap_or_default();
    if local {
        let Some(eth) = ptr_at::<[u8; 12]>(start, end, 0) else { return Some(drop(Reason::DropMalformed)) };
        let eth = unsafe { &mut *eth };
        eth[0..6].copy_from_slice(&ep.mac);
        eth[6..12].copy_from_slice(&gw_mac);
        return Some(transmit(ep.ifindex, Reason::MeshLocal));
    }
    let e = Encap {
        outer_dst_mac: hop.2,
        outer_src_mac: hop.1,
        src: cfg.underlay_ip,
        vtep: ep.vtep,
        tos,
        hash: flow_hash(&key),
        port: cfg.vxlan_port,
        inner_len: ip_len,
        vni: svc.vni,
        marker: VXLAN_MESH_FWD,
        inner_dst_mac: ep.mac,
        inner_src_mac: gw_mac,
    };
    Some(encap(ctx, &e, hop.0))
}

/// Grows the frame by the VXLAN encapsulation (the inner Ethernet header
/// replaces the old one) and sends it.
#[inline(always)]
fn encap(ctx: &XdpContext, e: &Encap, ifindex: u32) -> Verdict {
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(VXLAN_ENCAP_LEN as i32)) } != 0 {
        return drop(Reason::DropRedirect);
    }
    let Some(h) = ptr_at::<[u8; HDR_LEN]>(ctx.data(), ctx.data_end(), 0) else {
        return drop(Reason::DropMalformed);
    };
    unsafe { *h = e.header() };
    transmit(ifindex, Reason::MeshTunneled)
}

/// A backend's reply tunnelled back here (`VXLAN_MESH_REPLY` from `vtep`):
/// the inner packet at `inner` gets the published address back as its source
/// and goes to the client without the outer headers.
#[inline(always)]
pub fn reply(ctx: &XdpContext, cfg: &HostConfig, inner: usize, vtep: [u8; 4]) -> Verdict {
    let (start, end) = (ctx.data(), ctx.data_end());
    let ip_off = inner + 14;
    // The inner frame must be IPv4 for the rest to read it as such.
    match ptr_at::<[u8; 14]>(start, end, inner) {
        Some(e) if unsafe { (*e)[12] == 0x08 && (*e)[13] == 0x00 } => {}
        _ => return drop(Reason::DropMalformed),
    }
    let Some(key) = key_at(start, end, ip_off) else { return drop(Reason::DropMalformed) };
    let c = match ct_get(&key, cfg, now_ns()) {
        // Only the host the flow was sent to may answer for it.
        Some(c) if c.action == CT_SNAT_OUT && c.vtep == vtep => *c,
        _ => return drop(Reason::DropNoFlow),
    };
    let hop = match next_hop(ctx, c.new_src, c.new_dst) {
        Ok(h) => h,
        Err(r) => return drop(r),
    };
    let to = Tuple { src: c.new_src, dst: c.new_dst, sport: c.new_sport, dport: c.new_dport };
    if !rewrite(start, end, ip_off, &to) {
        return drop(Reason::DropMalformed);
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, inner as i32) } != 0 {
        return drop(Reason::DropMalformed);
    }
    let Some(eth) = ptr_at::<[u8; 12]>(ctx.data(), ctx.data_end(), 0) else { return drop(Reason::DropMalformed) };
    let eth = unsafe { &mut *eth };
    eth[0..6].copy_from_slice(&hop.2);
    eth[6..12].copy_from_slice(&hop.1);
    transmit(hop.0, Reason::MeshReplied)
}

/// A client's packet tunnelled here by the ingress host `vtep`: remember to
/// send the backend's replies back through it.
#[inline(always)]
pub fn remember_ingress(cfg: &HostConfig, key: &CtKey, vtep: [u8; 4], vni: u32) {
    let rkey = CtKey { src: key.dst, dst: key.src, sport: key.dport, dport: key.sport, ..*key };
    let now = now_ns();
    if let Some(c) = ct_get(&rkey, cfg, now) {
        if c.action == CT_TUNNEL && c.vtep == vtep && c.vni == vni {
            return;
        }
    }
    let v = CtValue { action: CT_TUNNEL, vtep, vni, last_seen_ns: now, ..Default::default() };
    ct_put(&rkey, &v);
}
