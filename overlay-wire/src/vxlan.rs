//! VXLAN (RFC 7348) between cluster hosts: the header, and the 64 bytes an
//! encapsulation puts in front of an inner IPv4 packet (outer Ethernet, IPv4,
//! UDP, VXLAN, inner Ethernet).

use crate::{eth, ipv4, udp};

pub const HEADER_LEN: usize = 8;
pub const UDP_LEN: usize = udp::HEADER_LEN;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14): what an
/// encapsulation adds to the inner IPv4 packet besides the outer Ethernet
/// header, and what the underlay MTU must hold on top of the inner packet.
pub const ENCAP_LEN: usize = ipv4::HEADER_LEN + UDP_LEN + HEADER_LEN + eth::HEADER_LEN;
/// The whole header an encapsulation pushes: outer Ethernet + [`ENCAP_LEN`].
pub const PUSH_LEN: usize = eth::HEADER_LEN + ENCAP_LEN;
/// Flags byte with the I (valid VNI) bit.
pub const FLAG_I: u8 = 0x08;
/// Outer UDP source ports are 49152 + 14 bits of the inner flow's hash.
pub const SPORT_BASE: u16 = 49152;
/// The last (reserved) byte of the VXLAN header marks routing-mesh traffic
/// between overlay-bpf hosts: a client's packet for a backend on the
/// receiving host, whose replies must be tunnelled back to the sender ...
pub const MESH_FWD: u8 = 0x01;
/// ... and such a reply, for the receiver (the ingress host) to send on to
/// the client. A kernel VXLAN device ignores the byte (RFC 7348: reserved).
pub const MESH_REPLY: u8 = 0x02;

pub type Header = [u8; HEADER_LEN];

#[inline(always)]
pub fn has_vni(h: &Header) -> bool {
    h[0] & FLAG_I != 0
}

#[inline(always)]
pub fn vni(h: &Header) -> u32 {
    (h[4] as u32) << 16 | (h[5] as u32) << 8 | h[6] as u32
}

/// The mesh marker ([`MESH_FWD`], [`MESH_REPLY`]) or 0.
#[inline(always)]
pub fn marker(h: &Header) -> u8 {
    h[7]
}

/// The outer UDP source port for an inner flow's hash: ECMP entropy, stable
/// per flow.
#[inline(always)]
pub fn source_port(hash: u32) -> u16 {
    SPORT_BASE | ((hash ^ (hash >> 16)) as u16 & 0x3fff)
}

/// What goes into one encapsulation header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap {
    /// Outer Ethernet addresses (zero when the kernel fills them in).
    pub outer_dst_mac: [u8; 6],
    pub outer_src_mac: [u8; 6],
    pub src: [u8; 4],
    pub vtep: [u8; 4],
    pub tos: u8,
    /// Hash of the inner flow: the UDP source port's entropy.
    pub hash: u32,
    pub port: u16,
    /// Length of the inner IPv4 packet.
    pub inner_len: usize,
    pub vni: u32,
    /// [`MESH_FWD`], [`MESH_REPLY`], or 0.
    pub marker: u8,
    pub inner_dst_mac: [u8; 6],
    pub inner_src_mac: [u8; 6],
}

impl Encap {
    /// Outer IPv4 with DF, ID 0 (RFC 6864 atomic datagrams), TTL 64 and its
    /// checksum; UDP checksum 0; VXLAN I flag + VNI (+ mesh marker).
    #[inline(always)]
    pub fn header(&self) -> [u8; PUSH_LEN] {
        // GSO super-packets may overflow 16 bits; the kernel rewrites the
        // lengths of every segment it cuts.
        let ip_len = (self.inner_len + ENCAP_LEN).min(0xffff) as u16;
        let mut h = [0u8; PUSH_LEN];
        eth::emit_at(&mut h, 0, self.outer_dst_mac, self.outer_src_mac, eth::ETHERTYPE_IPV4);
        let ip = ipv4::Repr {
            src: self.src,
            dst: self.vtep,
            proto: ipv4::PROTO_UDP,
            tos: self.tos,
            total_len: ip_len,
            dont_fragment: true,
        };
        ip.emit_at(&mut h, 14);
        udp::emit_at(&mut h, 34, source_port(self.hash), self.port, ip_len - ipv4::HEADER_LEN as u16);
        h[42] = FLAG_I;
        h[46..49].copy_from_slice(&self.vni.to_be_bytes()[1..4]);
        h[49] = self.marker;
        eth::emit_at(&mut h, 50, self.inner_dst_mac, self.inner_src_mac, eth::ETHERTYPE_IPV4);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sizes_the_mtu_rules_use() {
        assert_eq!((ENCAP_LEN, PUSH_LEN), (50, 64));
    }

    #[test]
    fn reads_the_header() {
        let h: Header = [0x08, 0, 0, 0, 0x00, 0x13, 0x89, MESH_REPLY];
        assert!(has_vni(&h));
        assert_eq!((vni(&h), marker(&h)), (5001, MESH_REPLY));
        assert!(!has_vni(&[0, 0, 0, 0, 0, 0x13, 0x89, 0]));
    }

    /// The encapsulation of an 84-byte ping on VNI 4097 from 192.168.1.1 to
    /// 192.168.1.2, byte for byte.
    #[test]
    fn an_encapsulation_header() {
        let e = Encap {
            outer_dst_mac: [0xb2; 6],
            outer_src_mac: [0xb1; 6],
            src: [192, 168, 1, 1],
            vtep: [192, 168, 1, 2],
            tos: 0,
            hash: 0x1234_5678,
            port: 4789,
            inner_len: 84,
            vni: 4097,
            marker: 0,
            inner_dst_mac: [0x02, 0x42, 10, 0, 0, 3],
            inner_src_mac: [0x02, 0x42, 10, 0, 0, 2],
        };
        #[rustfmt::skip]
        let want: [u8; PUSH_LEN] = [
            0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb1, 0xb1, 0xb1, 0xb1, 0xb1, 0xb1, 0x08, 0x00,
            // IPv4: 134 bytes, DF, TTL 64, UDP, checksum b7 13
            0x45, 0x00, 0x00, 0x86, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb7, 0x13,
            192, 168, 1, 1, 192, 168, 1, 2,
            // UDP: 49152 | ((0x5678 ^ 0x1234) & 0x3fff) = 0xc44c -> 4789, 114 bytes, no checksum
            0xc4, 0x4c, 0x12, 0xb5, 0x00, 0x72, 0x00, 0x00,
            // VXLAN: I, VNI 4097
            0x08, 0x00, 0x00, 0x00, 0x00, 0x10, 0x01, 0x00,
            0x02, 0x42, 10, 0, 0, 3, 0x02, 0x42, 10, 0, 0, 2, 0x08, 0x00,
        ];
        assert_eq!(e.header(), want);
        assert_eq!(crate::checksum::fold(crate::checksum::sum_words(&want, 14, 34)), 0);
    }
}
