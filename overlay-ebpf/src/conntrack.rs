//! The connection table (OB_CT_V1): a flow's entries, looked up and written,
//! and the one place a reply is given back the addresses its client used.

use overlay_common::{flow, *};

use crate::{maps::OB_CT_V1, packet::Packet};

/// A copy of the entry for `k`, unless it has been idle longer than the
/// protocol's timeout; its last-seen time is refreshed when older than
/// [`flow::LAST_SEEN_RESOLUTION_NS`].
#[inline(always)]
pub fn get(k: &CtKey, cfg: &HostConfig, now: u64) -> Option<CtValue> {
    let p = OB_CT_V1.get_ptr_mut(k)?;
    // SAFETY: a map value the kernel keeps alive while the program runs
    // (RCU). Another CPU may write the entry meanwhile: the copy is of one
    // or the other, and of two last-seen updates one may be lost.
    let v = unsafe { *p };
    let timeout = if k.proto == PROTO_TCP { cfg.ct_tcp_timeout } else { cfg.ct_udp_timeout };
    if flow::idled_out(now, v.last_seen_ns, timeout) {
        return None;
    }
    if flow::touch_due(now, v.last_seen_ns) {
        // SAFETY: as above; one aligned u64 store into the live value.
        unsafe { (*p).last_seen_ns = now };
    }
    Some(CtValue { last_seen_ns: now, ..v })
}

/// The entry for `k` as a copy, with its action.
#[inline(always)]
pub fn lookup(k: &CtKey, cfg: &HostConfig, now: u64) -> Option<(CtAction, CtValue)> {
    let c = get(k, cfg, now)?;
    Some((c.action()?, c))
}

/// Writes the entry for `k` (an LRU table: a full one evicts the least
/// recently used).
#[inline(always)]
pub fn put(k: &CtKey, v: &CtValue) {
    let _ = OB_CT_V1.insert(k, v, 0);
}

/// Records a flow's pair of entries: the forward one for `k` and the one its
/// replies are translated by. A new flow writes both; a known flow's packet
/// looks the reply entry up too (which marks it used in the LRU, as a reply
/// would) and puts it back if a flood of new flows evicted it or it idled out.
/// Otherwise an evicted reply entry would leave a flow whose requests are
/// translated and whose replies are not.
#[inline(always)]
fn pair(new: bool, k: &CtKey, v: &CtValue, rk: &CtKey, r: &CtValue, cfg: &HostConfig) {
    if new {
        put(k, v);
        put(rk, r);
    } else if get(rk, cfg, v.last_seen_ns).is_none() {
        put(rk, r);
    }
}

/// Records a VIP or mesh flow of `key` sent on as `to` (to a backend): the
/// forward entry (`CtAction::Dnat` to `to`), and the entry by which its
/// replies get back the addresses `key` had (`reply`: `RevNat` at a VIP
/// client's host, `SnatOut` at the mesh's ingress host). `meta` gives both
/// entries their host, network, service and time.
#[inline(always)]
pub fn track(new: bool, key: &CtKey, to: &Tuple, reply: CtAction, meta: CtValue, cfg: &HostConfig) {
    let v = CtValue { action: CtAction::Dnat as u8, ..meta }.with_tuple(to);
    let rk = CtKey::new(&to.reversed(), key.proto);
    let r = CtValue { action: reply as u8, ..meta }.with_tuple(&key.tuple().reversed());
    pair(new, key, &v, &rk, &r, cfg);
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
