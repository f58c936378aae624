//! Ethernet II headers.

pub const HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// Field offsets.
pub mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
}

pub type Header = [u8; HEADER_LEN];

#[inline(always)]
pub fn dst(h: &Header) -> [u8; 6] {
    [h[0], h[1], h[2], h[3], h[4], h[5]]
}

#[inline(always)]
pub fn src(h: &Header) -> [u8; 6] {
    [h[6], h[7], h[8], h[9], h[10], h[11]]
}

#[inline(always)]
pub fn ethertype(h: &Header) -> u16 {
    crate::word(h, field::ETHERTYPE)
}

#[inline(always)]
pub fn set_dst(h: &mut Header, mac: [u8; 6]) {
    h[field::DST..field::DST + 6].copy_from_slice(&mac);
}

#[inline(always)]
pub fn set_src(h: &mut Header, mac: [u8; 6]) {
    h[field::SRC..field::SRC + 6].copy_from_slice(&mac);
}

/// Writes a header (to `dst` from `src`, of `ethertype`) at `at` of `buf`.
#[inline(always)]
pub fn emit_at<const N: usize>(buf: &mut [u8; N], at: usize, dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    buf[at..at + 6].copy_from_slice(&dst);
    buf[at + 6..at + 12].copy_from_slice(&src);
    buf[at + 12..at + 14].copy_from_slice(&ethertype.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_fields() {
        let mut h: Header = [0x02, 0x42, 10, 0, 0, 2, 0xaa, 0, 0, 0, 0, 1, 0x08, 0x06];
        assert_eq!(
            (dst(&h), src(&h), ethertype(&h)),
            ([0x02, 0x42, 10, 0, 0, 2], [0xaa, 0, 0, 0, 0, 1], ETHERTYPE_ARP)
        );
        set_dst(&mut h, [1; 6]);
        set_src(&mut h, [2; 6]);
        assert_eq!(h, [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x06]);
        let mut b = [0u8; 16];
        emit_at(&mut b, 2, [3; 6], [4; 6], ETHERTYPE_IPV4);
        assert_eq!(b, [0, 0, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 0x08, 0x00]);
    }
}
