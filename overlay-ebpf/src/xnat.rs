//! Address and port rewrites on packet memory (XDP), checksums updated
//! incrementally (RFC 1624). Packets from the wire carry full checksums.
use overlay_common::*;

use crate::{
    csum::replace,
    parse::{ipv4_len, ptr_at},
};

/// A flow's addresses and ports as they should read after a rewrite.
#[derive(Clone, Copy)]
pub struct Tuple {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
}

/// The IPv4 TCP/UDP packet at `off` (IHL 5, its total length within the
/// frame and long enough for the ports) as a connection-table key, or `None`
/// when it is not one.
#[inline(always)]
pub fn key_at(start: usize, end: usize, off: usize) -> Option<CtKey> {
    let ip = unsafe { &*ptr_at::<[u8; 20]>(start, end, off)? };
    let proto = ip[9];
    if ip[0] != 0x45 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    // Only a first fragment carries the ports.
    if ip[6] & 0x3f != 0 || ip[7] != 0 {
        return None;
    }
    let l4 = unsafe { &*ptr_at::<[u8; 4]>(start, end, off + 20)? };
    if ipv4_len(start, end, off, [ip[2], ip[3]])? < 28 {
        return None;
    }
    let mut k = CtKey { proto, ..Default::default() };
    k.src.copy_from_slice(&ip[12..16]);
    k.dst.copy_from_slice(&ip[16..20]);
    k.sport = u16::from_be_bytes([l4[0], l4[1]]);
    k.dport = u16::from_be_bytes([l4[2], l4[3]]);
    Some(k)
}

/// Rewrites the IPv4 TCP/UDP packet at `off` (IHL 5, checked by
/// [`key_at`]) to `new`, fixing the IPv4 and L4 checksums; a zero UDP
/// checksum stays zero. `false`: too short.
#[inline(always)]
pub fn rewrite(start: usize, end: usize, off: usize, new: &Tuple) -> bool {
    let Some(ip) = ptr_at::<[u8; 20]>(start, end, off) else { return false };
    let ip = unsafe { &mut *ip };
    let proto = ip[9];
    let Some(l4) = ptr_at::<[u8; 8]>(start, end, off + 20) else { return false };
    let l4 = unsafe { &mut *l4 };
    let mut old = [0u8; 12];
    old[0..8].copy_from_slice(&ip[12..20]);
    old[8..12].copy_from_slice(&l4[0..4]);
    let mut n = [0u8; 12];
    n[0..4].copy_from_slice(&new.src);
    n[4..8].copy_from_slice(&new.dst);
    n[8..10].copy_from_slice(&new.sport.to_be_bytes());
    n[10..12].copy_from_slice(&new.dport.to_be_bytes());
    let ipc = replace([ip[10], ip[11]], &old[0..8], &n[0..8]);
    ip[10..12].copy_from_slice(&ipc);
    ip[12..20].copy_from_slice(&n[0..8]);
    // The L4 checksum covers the addresses (pseudo-header) and the ports.
    if proto == PROTO_TCP {
        let Some(t) = ptr_at::<[u8; 18]>(start, end, off + 20) else { return false };
        let t = unsafe { &mut *t };
        let c = replace([t[16], t[17]], &old, &n);
        t[16..18].copy_from_slice(&c);
    } else if l4[6..8] != [0, 0] {
        let mut c = replace([l4[6], l4[7]], &old, &n);
        if c == [0, 0] {
            c = [0xff, 0xff];
        }
        l4[6..8].copy_from_slice(&c);
    }
    l4[0..4].copy_from_slice(&n[8..12]);
    true
}
