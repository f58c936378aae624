//! The 64 bytes an encapsulation puts in front of the inner IPv4 packet:
//! outer Ethernet, IPv4, UDP, VXLAN and the inner Ethernet header. TC and XDP
//! build it the same way.
use overlay_common::*;

use crate::{
    csum::{fold, sum_words},
    parse::ETH_P_IP,
};

pub const HDR_LEN: usize = 14 + VXLAN_ENCAP_LEN;
const IP_DF: u8 = 0x40;

/// What goes into one encapsulation header.
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
    /// `VXLAN_MESH_*`, or 0.
    pub marker: u8,
    pub inner_dst_mac: [u8; 6],
    pub inner_src_mac: [u8; 6],
}

impl Encap {
    /// Outer IPv4 with DF, ID 0 (RFC 6864 atomic datagrams), TTL 64 and its
    /// checksum; UDP checksum 0; VXLAN I flag + VNI (+ mesh marker).
    #[inline(always)]
    pub fn header(&self) -> [u8; HDR_LEN] {
        // GSO super-packets may overflow 16 bits; the kernel rewrites the
        // lengths of every segment it cuts.
        let ip_len = (self.inner_len + VXLAN_ENCAP_LEN).min(0xffff) as u16;
        let udp_len = ip_len - 20;
        let sport = VXLAN_SPORT_BASE | ((self.hash ^ (self.hash >> 16)) as u16 & 0x3fff);
        let mut h = [0u8; HDR_LEN];
        h[0..6].copy_from_slice(&self.outer_dst_mac);
        h[6..12].copy_from_slice(&self.outer_src_mac);
        h[12] = 0x08;
        h[14] = 0x45;
        h[15] = self.tos;
        h[16..18].copy_from_slice(&ip_len.to_be_bytes());
        h[20] = IP_DF;
        h[22] = 64;
        h[23] = PROTO_UDP;
        h[26..30].copy_from_slice(&self.src);
        h[30..34].copy_from_slice(&self.vtep);
        let c = fold(sum_words(&h, 14, 34));
        h[24..26].copy_from_slice(&c.to_be_bytes());
        h[34..36].copy_from_slice(&sport.to_be_bytes());
        h[36..38].copy_from_slice(&self.port.to_be_bytes());
        h[38..40].copy_from_slice(&udp_len.to_be_bytes());
        h[42] = VXLAN_FLAG_I;
        let vni = self.vni.to_be_bytes();
        h[46..49].copy_from_slice(&vni[1..4]);
        h[49] = self.marker;
        h[50..56].copy_from_slice(&self.inner_dst_mac);
        h[56..62].copy_from_slice(&self.inner_src_mac);
        h[62..64].copy_from_slice(&ETH_P_IP.to_be_bytes());
        h
    }
}
