//! ARP for Ethernet/IPv4 (RFC 826), as it follows the Ethernet header.

use crate::eth;

pub const LEN: usize = 28;
pub const REQUEST: u16 = 1;
pub const REPLY: u16 = 2;

/// Field offsets.
pub mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

pub type Packet = [u8; LEN];

/// Ethernet hardware addresses, IPv4 protocol addresses.
#[inline(always)]
pub fn is_eth_ipv4(a: &Packet) -> bool {
    a[field::HTYPE..field::HTYPE + 2] == [0, 1]
        && a[field::PTYPE..field::PTYPE + 2] == [0x08, 0x00]
        && a[field::HLEN] == 6
        && a[field::PLEN] == 4
}

#[inline(always)]
pub fn oper(a: &Packet) -> u16 {
    crate::word(a, field::OPER)
}

/// Sender hardware address.
#[inline(always)]
pub fn sha(a: &Packet) -> [u8; 6] {
    [a[8], a[9], a[10], a[11], a[12], a[13]]
}

/// Sender protocol address.
#[inline(always)]
pub fn spa(a: &Packet) -> [u8; 4] {
    crate::addr(a, field::SPA)
}

/// Target protocol address.
#[inline(always)]
pub fn tpa(a: &Packet) -> [u8; 4] {
    crate::addr(a, field::TPA)
}

/// Turns request `a`, in place, into the reply "target is at `mac`",
/// addressed to the requester by `eth_hdr`, the frame's Ethernet header.
#[inline(always)]
pub fn answer(eth_hdr: &mut eth::Header, a: &mut Packet, mac: [u8; 6]) {
    let (target, requester, requester_ip) = (tpa(a), sha(a), spa(a));
    eth::set_dst(eth_hdr, requester);
    eth::set_src(eth_hdr, mac);
    a[field::OPER..field::OPER + 2].copy_from_slice(&REPLY.to_be_bytes());
    a[field::THA..field::THA + 6].copy_from_slice(&requester);
    a[field::TPA..field::TPA + 4].copy_from_slice(&requester_ip);
    a[field::SHA..field::SHA + 6].copy_from_slice(&mac);
    a[field::SPA..field::SPA + 4].copy_from_slice(&target);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_answered() {
        // 10.0.0.3 (aa:..:03) asks who has 10.0.0.1.
        let mut e: eth::Header = [0xff; 14];
        e[6..12].copy_from_slice(&[0xaa, 0, 0, 0, 0, 3]);
        e[12..14].copy_from_slice(&[0x08, 0x06]);
        #[rustfmt::skip]
        let mut a: Packet = [
            0, 1, 0x08, 0x00, 6, 4, 0, 1,
            0xaa, 0, 0, 0, 0, 3, 10, 0, 0, 3,
            0, 0, 0, 0, 0, 0, 10, 0, 0, 1,
        ];
        assert!(is_eth_ipv4(&a) && oper(&a) == REQUEST);
        assert_eq!((spa(&a), tpa(&a)), ([10, 0, 0, 3], [10, 0, 0, 1]));
        let mac = [0x02, 0x42, 10, 0, 0, 1];
        answer(&mut e, &mut a, mac);
        #[rustfmt::skip]
        let want: Packet = [
            0, 1, 0x08, 0x00, 6, 4, 0, 2,
            0x02, 0x42, 10, 0, 0, 1, 10, 0, 0, 1,
            0xaa, 0, 0, 0, 0, 3, 10, 0, 0, 3,
        ];
        assert_eq!(a, want);
        assert_eq!(e[..12], [0xaa, 0, 0, 0, 0, 3, 0x02, 0x42, 10, 0, 0, 1]);
        let mut not_ipv4 = a;
        not_ipv4[3] = 0xdd;
        assert!(!is_eth_ipv4(&not_ipv4));
    }
}
