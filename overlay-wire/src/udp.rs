//! UDP (RFC 768): the 8-byte header, as the data path reads it (VXLAN's
//! destination port, WireGuard's, a datagram's length) and writes it (an
//! encapsulation's outer header, an answer sent back where it came from).

pub const HEADER_LEN: usize = 8;

pub type Header = [u8; HEADER_LEN];

/// Field offsets in the header.
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

#[inline(always)]
pub fn src_port(h: &Header) -> u16 {
    crate::word(h, field::SRC_PORT)
}

#[inline(always)]
pub fn dst_port(h: &Header) -> u16 {
    crate::word(h, field::DST_PORT)
}

/// The datagram's length, header included.
#[inline(always)]
pub fn length(h: &Header) -> u16 {
    crate::word(h, field::LENGTH)
}

#[inline(always)]
pub fn checksum(h: &Header) -> u16 {
    crate::word(h, field::CHECKSUM)
}

#[inline(always)]
pub fn set_dst_port(h: &mut Header, port: u16) {
    h[field::DST_PORT..field::DST_PORT + 2].copy_from_slice(&port.to_be_bytes());
}

/// No checksum (0), as RFC 7348 has VXLAN over IPv4 send it.
#[inline(always)]
pub fn clear_checksum(h: &mut Header) {
    h[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&[0, 0]);
}

/// Writes a header with no checksum at `at` of `buf`: ports and the
/// datagram's length (`len`, header included).
#[inline(always)]
pub fn emit_at<const N: usize>(buf: &mut [u8; N], at: usize, src_port: u16, dst_port: u16, len: u16) {
    buf[at + field::SRC_PORT..at + field::SRC_PORT + 2].copy_from_slice(&src_port.to_be_bytes());
    buf[at + field::DST_PORT..at + field::DST_PORT + 2].copy_from_slice(&dst_port.to_be_bytes());
    buf[at + field::LENGTH..at + field::LENGTH + 2].copy_from_slice(&len.to_be_bytes());
    buf[at + field::CHECKSUM..at + field::CHECKSUM + 2].copy_from_slice(&[0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 49153 -> 4789 (VXLAN), 58 bytes, checksum 0xbeef.
    const H: Header = [0xc0, 0x01, 0x12, 0xb5, 0x00, 0x3a, 0xbe, 0xef];

    #[test]
    fn reads_the_fields() {
        assert_eq!((src_port(&H), dst_port(&H), length(&H), checksum(&H)), (49153, 4789, 58, 0xbeef));
    }

    #[test]
    fn turns_a_header_around_for_an_answer() {
        let mut h = H;
        set_dst_port(&mut h, 8472);
        clear_checksum(&mut h);
        assert_eq!(h, [0xc0, 0x01, 0x21, 0x18, 0x00, 0x3a, 0, 0]);
    }

    #[test]
    fn emits_a_header_at_an_offset() {
        let mut b = [0xffu8; 12];
        emit_at(&mut b, 2, 49153, 4789, 58);
        assert_eq!(b, [0xff, 0xff, 0xc0, 0x01, 0x12, 0xb5, 0x00, 0x3a, 0, 0, 0xff, 0xff]);
    }
}
