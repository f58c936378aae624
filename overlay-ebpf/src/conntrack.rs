//! The connection table (OB_CT_V2): a flow's entries, looked up and written,
//! and the one place a reply is given back the addresses its client used.

use overlay_common::{flow, *};

use crate::{maps::OB_CT_V2, packet::Packet};

/// The live entry for `k`, unless it has been idle longer than the
/// protocol's timeout; its last-seen time is refreshed when older than
/// [`flow::LAST_SEEN_RESOLUTION_NS`]. A reference, not a copy: an entry is
/// 80 bytes and the programs' stack 512. Read it before writing `k`'s entry
/// again (the write replaces the element).
#[inline(always)]
pub fn get(k: &CtKey, cfg: &HostConfig, now: u64) -> Option<&'static CtValue> {
    let p = OB_CT_V2.get_ptr_mut(k)?;
    // SAFETY: a map value the kernel keeps alive while the program runs
    // (RCU). Programs replace an entry whole (`put`) and write in place only
    // its last-seen time, so another CPU's write changes no field read here
    // but that one; of two last-seen updates one may be lost.
    let v = unsafe { &mut *p };
    let timeout = if k.proto == PROTO_TCP { cfg.ct_tcp_timeout } else { cfg.ct_udp_timeout };
    if flow::idled_out(now, v.last_seen_ns, timeout) {
        return None;
    }
    if flow::touch_due(now, v.last_seen_ns) {
        // One aligned u64 store into the live value.
        v.last_seen_ns = now;
    }
    Some(v)
}

/// The entry for `k`, with its action.
#[inline(always)]
pub fn lookup(k: &CtKey, cfg: &HostConfig, now: u64) -> Option<(CtAction, &'static CtValue)> {
    let c = get(k, cfg, now)?;
    Some((c.action()?, c))
}

/// Writes the entry for `k` (an LRU table: a full one evicts the least
/// recently used).
#[inline(always)]
pub fn put(k: &CtKey, v: &CtValue) {
    let _ = OB_CT_V2.insert(k, v, 0);
}

/// Records a VIP or mesh flow of `key` sent on as `to` (to a backend): the
/// forward entry (`CtAction::Dnat` to `to`), and the entry by which its
/// replies get back the addresses `key` had (`reply`: `RevNat` at a VIP
/// client's host, `SnatOut` at the mesh's ingress host). `entry` gives both
/// their host, network, service, time and carried fields; it is written in
/// place, one entry after the other, and left as the reply entry.
///
/// A new flow writes both entries. A known flow's packet looks the reply
/// entry up too (which marks it used in the LRU, as a reply would) and puts
/// it back if a flood of new flows evicted it or it idled out. Otherwise an
/// evicted reply entry would leave a flow whose requests are translated and
/// whose replies are not.
#[inline(always)]
pub fn track(new: bool, key: &CtKey, to: &Tuple, reply: CtAction, entry: &mut CtValue, cfg: &HostConfig) {
    let rk = CtKey::new(&to.reversed(), key.proto);
    if new {
        entry.action = CtAction::Dnat as u8;
        entry.set_tuple(to);
        put(key, entry);
    } else if get(&rk, cfg, entry.last_seen_ns).is_some() {
        return;
    }
    entry.action = reply as u8;
    entry.set_tuple(&key.tuple().reversed());
    put(&rk, entry);
}

/// Gives a reply of a translated flow, the packet of `key` at `l3`, the
/// addresses and ports its `RevNat` or `SnatOut` entry `c` holds: the
/// VIP's or the published address the client used. Every reply translation
/// is this one: a VIP reply from a remote backend (XDP, on decap) or a local
/// one (TC), a mesh reply tunnelled back to the ingress host (XDP) or from a
/// backend on the ingress host itself (TC).
#[inline(always)]
pub fn translate_reply<P: Packet>(pkt: &P, l3: usize, ihl: usize, key: &CtKey, c: &CtValue) -> Result<(), Reason> {
    pkt.rewrite(l3, ihl, key.proto, &key.tuple(), &c.tuple())
}
