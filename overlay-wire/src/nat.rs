//! Address and port rewrites of TCP/UDP over IPv4 with the checksums kept
//! right by incremental update (RFC 1624), for packets whose checksums are
//! complete (XDP's). The skb path does the same through the kernel's
//! checksum helpers, which also handle partial checksums.

use crate::{checksum, ipv4};

/// A flow's addresses and ports (ports in host order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tuple {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
}

impl Tuple {
    /// The other direction of the flow.
    #[inline(always)]
    pub fn reversed(&self) -> Tuple {
        Tuple { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport }
    }

    /// The addresses then the ports, as they stand in the packet: what the
    /// L4 checksum covers of them.
    #[inline(always)]
    fn bytes(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&self.src);
        b[4..8].copy_from_slice(&self.dst);
        b[8..10].copy_from_slice(&self.sport.to_be_bytes());
        b[10..12].copy_from_slice(&self.dport.to_be_bytes());
        b
    }
}

/// Where the checksum is in a TCP or UDP header.
#[inline(always)]
pub fn l4_checksum_offset(proto: u8) -> usize {
    if proto == ipv4::PROTO_UDP {
        6
    } else {
        16
    }
}

/// The flow of the packet whose IPv4 header is `ip` and whose L4 header
/// starts with `ports`.
#[inline(always)]
pub fn tuple(ip: &ipv4::Header, ports: &[u8; 4]) -> Tuple {
    Tuple {
        src: ipv4::src(ip),
        dst: ipv4::dst(ip),
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
    }
}

/// Rewrites the packet to `new`: addresses in `ip`, ports in `ports`, the
/// IPv4 checksum, and the L4 checksum `l4_csum` (of protocol `proto`), which
/// covers both through the pseudo-header. A zero UDP checksum (none) stays
/// zero, and a UDP checksum that comes out zero is sent as ffff.
#[inline(always)]
pub fn rewrite(ip: &mut ipv4::Header, ports: &mut [u8; 4], l4_csum: &mut [u8; 2], proto: u8, new: &Tuple) {
    let (old, n) = (tuple(ip, ports).bytes(), new.bytes());
    let f = ipv4::field::CHECKSUM;
    let c = checksum::replace([ip[f], ip[f + 1]], &old[0..8], &n[0..8]);
    ip[f..f + 2].copy_from_slice(&c);
    ip[ipv4::field::SRC..ipv4::field::SRC + 8].copy_from_slice(&n[0..8]);
    if proto == ipv4::PROTO_TCP {
        *l4_csum = checksum::replace(*l4_csum, &old, &n);
    } else if *l4_csum != [0, 0] {
        let c = checksum::replace(*l4_csum, &old, &n);
        *l4_csum = if c == [0, 0] { [0xff, 0xff] } else { c };
    }
    ports.copy_from_slice(&n[8..12]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{fold, sum_words};

    /// The TCP checksum of `seg` (header and payload) between `src` and `dst`.
    fn tcp_ok(src: [u8; 4], dst: [u8; 4], seg: &[u8]) -> bool {
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&src);
        pseudo[4..8].copy_from_slice(&dst);
        pseudo[9] = ipv4::PROTO_TCP;
        pseudo[10..12].copy_from_slice(&(seg.len() as u16).to_be_bytes());
        fold(sum_words(&pseudo, 0, 12) + sum_words(seg, 0, seg.len())) == 0
    }

    /// A SYN from 192.168.200.100:40000 to 192.168.200.11:8080 (a published
    /// port) DNATed to backend 10.10.0.21:80: both checksums stay right.
    #[test]
    fn dnat_of_a_tcp_syn() {
        let mut ip: ipv4::Header = [0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 168, 200, 100, 192, 168, 200, 11];
        let c = checksum::of(&ip, 0, 20);
        ip[10..12].copy_from_slice(&c);
        #[rustfmt::skip]
        let mut tcp = [0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0];
        let mut pseudo = [0u8; 12];
        pseudo[0..8].copy_from_slice(&ip[12..20]);
        pseudo[9] = 6;
        pseudo[11] = 20;
        let c = fold(sum_words(&pseudo, 0, 12) + sum_words(&tcp, 0, 20)).to_be_bytes();
        tcp[16..18].copy_from_slice(&c);
        assert!(tcp_ok(ipv4::src(&ip), ipv4::dst(&ip), &tcp));

        let before = tuple(&ip, &[tcp[0], tcp[1], tcp[2], tcp[3]]);
        assert_eq!(before, Tuple { src: [192, 168, 200, 100], dst: [192, 168, 200, 11], sport: 40000, dport: 8080 });
        let new = Tuple { dst: [10, 10, 0, 21], dport: 80, ..before };
        let (mut ports, mut csum) = ([tcp[0], tcp[1], tcp[2], tcp[3]], [tcp[16], tcp[17]]);
        rewrite(&mut ip, &mut ports, &mut csum, ipv4::PROTO_TCP, &new);
        tcp[0..4].copy_from_slice(&ports);
        tcp[16..18].copy_from_slice(&csum);
        assert_eq!(tuple(&ip, &ports), new);
        assert_eq!(fold(sum_words(&ip, 0, 20)), 0, "IPv4 checksum");
        assert!(tcp_ok([192, 168, 200, 100], [10, 10, 0, 21], &tcp), "TCP checksum");
        assert_eq!(new.reversed().reversed(), new);
        assert_eq!(new.reversed().sport, 80);
    }

    #[test]
    fn a_udp_datagram_without_checksum_keeps_none() {
        let mut ip: ipv4::Header = [0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2];
        let (mut ports, mut csum) = ([0, 53, 0, 53], [0, 0]);
        let new = Tuple { src: [3, 3, 3, 3], dst: [2, 2, 2, 2], sport: 53, dport: 5353 };
        rewrite(&mut ip, &mut ports, &mut csum, ipv4::PROTO_UDP, &new);
        assert_eq!((csum, ports), ([0, 0], [0, 53, 0x14, 0xe9]));
        assert_eq!(l4_checksum_offset(ipv4::PROTO_UDP), 6);
        assert_eq!(l4_checksum_offset(ipv4::PROTO_TCP), 16);
    }
}
