//! Service VIPs in TC, for what containers send: a packet to a VIP gets a
//! backend picked by Maglev (kept for the flow's life by the connection
//! table) as its destination; the connection table's replies get translated
//! back, or tunnelled back to the mesh's ingress host.

use aya_ebpf::programs::TcContext;
use overlay_common::*;
use overlay_wire::{eth, ipv4, nat};

use crate::{
    conntrack,
    forward::route_to,
    icmp::too_big,
    lb::{count_backend, now_ns, pick},
    maps::{endpoint, host_config, service},
    mesh,
    packet::{Outcome, Packet},
};

/// Flows the connection table or a service VIP translates, from endpoint
/// `me` on veth `ifindex`: the TCP/UDP packet whose IPv4 header (`ihl`
/// bytes) follows the Ethernet header. `None`: not a translated flow.
#[inline(always)]
pub fn translate(ctx: &TcContext, me: &IfaceValue, ifindex: u32, ihl: usize, proto: u8) -> Option<Outcome<i32>> {
    const L3: usize = eth::HEADER_LEN;
    let (Some(ip), Some(ports)) = (ctx.bytes::<{ ipv4::HEADER_LEN }>(L3), ctx.bytes::<4>(L3 + ihl)) else {
        return Some(Err(Reason::DropMalformed));
    };
    let key = CtKey::new(&nat::tuple(ip, ports), proto);
    let cfg = host_config()?;
    // Only a backend's packets can be replies to translate back; anyone
    // else's need the connection table only when addressed to a service.
    let svc_key = ServiceKey { addr: key.dst, port: key.dport, proto, _pad: 0 };
    let early = if me.flags & ENDPOINT_F_BACKEND == 0 { Some(service(svc_key)?) } else { None };
    let now = now_ns();
    let ct = conntrack::get(&key, cfg, now);
    if let Some(c) = ct {
        match c.action() {
            Some(CtAction::RevNat) => {
                // A VIP reply from a local backend to its client.
                return Some(
                    conntrack::translate_reply(ctx, L3, ihl, &key, c).and_then(|()| route_to(ctx, me, c.new_dst)),
                );
            }
            Some(action @ (CtAction::SnatOut | CtAction::Tunnel)) => {
                return Some(mesh::backend_reply(ctx, cfg, me, ihl, &key, action, c));
            }
            Some(CtAction::Dnat) | None => {}
        }
    }
    let svc = match early {
        Some(s) => s,
        None => service(svc_key)?,
    };
    Some(balance(ctx, me, ifindex, ihl, cfg, &key, svc, ct, now))
}

/// A packet to a VIP: a backend, the flow recorded, the packet rewritten
/// and sent to it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn balance(
    ctx: &TcContext,
    me: &IfaceValue,
    ifindex: u32,
    ihl: usize,
    cfg: &HostConfig,
    key: &CtKey,
    svc: &ServiceValue,
    ct: Option<&CtValue>,
    now: u64,
) -> Outcome<i32> {
    if svc.vni != me.vni {
        return Err(Reason::DropCrossNetwork);
    }
    // No backend: answered by the entry point (`reject`).
    let (backend, new) = pick(svc, ct, key).ok_or(Reason::RejectNoBackend)?;
    let ep = endpoint(me.vni, backend).ok_or(Reason::DropNoBackend)?;
    if let Some(v) = too_big(ctx, me, ifindex, ep) {
        return v;
    }
    // Hairpin: a backend calling its own VIP and picked itself sees the VIP
    // as the source, or it would drop a packet "from itself".
    let src = if backend == key.src { key.dst } else { key.src };
    let to = Tuple { src, dst: backend, sport: key.sport, dport: svc.target_port };
    let mut entry = CtValue { vni: svc.vni, service_id: svc.service_id, last_seen_ns: now, ..Default::default() };
    conntrack::track(new, key, &to, CtAction::RevNat, &mut entry, cfg);
    count_backend(svc.service_id, backend, Packet::len(ctx) as u64, new);
    ctx.rewrite(eth::HEADER_LEN, ihl, key.proto, &key.tuple(), &to)?;
    route_to(ctx, me, backend)
}
