//! IPv4 headers (RFC 791): the rules every header the data path acts on must
//! meet, checked here once, and the headers it writes.

use crate::checksum;

/// A header without options; longer ones are read through their first 20 bytes.
pub const HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// Don't Fragment, in the flags byte.
pub const FLAG_DF: u8 = 0x40;
/// The TTL of every header the data path writes.
pub const TTL: u8 = 64;
/// Version 4, 20-byte header.
pub const VERSION_IHL: u8 = 0x45;

/// Field offsets.
pub mod field {
    pub const VERSION_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

pub type Header = [u8; HEADER_LEN];

/// Why a header is not one to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The version is not 4.
    Version,
    /// The header length (IHL) is under 20 bytes.
    HeaderLen,
    /// The total length is shorter than the header, or longer than the frame.
    TotalLen,
    /// A fragment (more follow, or not the first).
    Fragment,
}

#[inline(always)]
pub fn version(h: &Header) -> u8 {
    h[field::VERSION_IHL] >> 4
}

/// The header length in bytes, options included.
#[inline(always)]
pub fn header_len(h: &Header) -> usize {
    (h[field::VERSION_IHL] & 0xf) as usize * 4
}

#[inline(always)]
pub fn total_len(h: &Header) -> usize {
    crate::word(h, field::TOTAL_LEN) as usize
}

#[inline(always)]
pub fn tos(h: &Header) -> u8 {
    h[field::TOS]
}

#[inline(always)]
pub fn proto(h: &Header) -> u8 {
    h[field::PROTO]
}

#[inline(always)]
pub fn src(h: &Header) -> [u8; 4] {
    crate::addr(h, field::SRC)
}

#[inline(always)]
pub fn dst(h: &Header) -> [u8; 4] {
    crate::addr(h, field::DST)
}

#[inline(always)]
pub fn dont_fragment(h: &Header) -> bool {
    h[field::FLAGS_FRAG] & FLAG_DF != 0
}

/// More fragments follow, or this is not the first: only a whole datagram
/// or a first fragment carries the ports.
#[inline(always)]
pub fn is_fragment(h: &Header) -> bool {
    h[field::FLAGS_FRAG] & 0x3f != 0 || h[field::FLAGS_FRAG + 1] != 0
}

/// Version 4 and a header of at least 20 bytes: the rest reads as IPv4.
/// Returns the header length.
#[inline(always)]
pub fn check_header(h: &Header) -> Result<usize, Error> {
    if version(h) != 4 {
        return Err(Error::Version);
    }
    let ihl = header_len(h);
    if ihl < HEADER_LEN {
        return Err(Error::HeaderLen);
    }
    Ok(ihl)
}

/// [`check_header`], and a total length that covers the header and fits in
/// `room`, the bytes the frame holds from the header's first byte on (a
/// header claiming more is a lie no receiver accepts). Returns the total
/// length.
#[inline(always)]
pub fn check(h: &Header, room: usize) -> Result<usize, Error> {
    let ihl = check_header(h)?;
    let total = total_len(h);
    if total < ihl || total > room {
        return Err(Error::TotalLen);
    }
    Ok(total)
}

/// A TCP or UDP datagram without options, whole or a first fragment, its
/// total length within `room` and long enough for the ports: what the
/// connection table keys on and NAT rewrites.
#[inline(always)]
pub fn is_flow(h: &Header, room: usize) -> bool {
    let p = proto(h);
    h[field::VERSION_IHL] == VERSION_IHL
        && (p == PROTO_TCP || p == PROTO_UDP)
        && !is_fragment(h)
        && matches!(check(h, room), Ok(total) if total >= HEADER_LEN + 8)
}

/// Sets the source address, updating the header checksum.
#[inline(always)]
pub fn set_src(h: &mut Header, addr: [u8; 4]) {
    let c = checksum::replace([h[field::CHECKSUM], h[field::CHECKSUM + 1]], &src(h), &addr);
    h[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c);
    h[field::SRC..field::SRC + 4].copy_from_slice(&addr);
}

/// Turns a received header around to answer its sender from `from`: the
/// old source becomes the destination, TTL 64, checksum recomputed; the rest
/// (length, ID, flags, protocol) is kept.
#[inline(always)]
pub fn turn_around(h: &mut Header, from: [u8; 4]) {
    let to = src(h);
    h[field::DST..field::DST + 4].copy_from_slice(&to);
    h[field::SRC..field::SRC + 4].copy_from_slice(&from);
    h[field::TTL] = TTL;
    h[field::CHECKSUM] = 0;
    h[field::CHECKSUM + 1] = 0;
    let c = checksum::of(h, 0, HEADER_LEN);
    h[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c);
}

/// A header the data path writes: no options, ID 0 (RFC 6864: atomic
/// datagrams), TTL 64, its checksum computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    pub tos: u8,
    pub total_len: u16,
    pub dont_fragment: bool,
}

impl Repr {
    /// Writes the header at `at` of `buf`.
    #[inline(always)]
    pub fn emit_at<const N: usize>(&self, buf: &mut [u8; N], at: usize) {
        buf[at] = VERSION_IHL;
        buf[at + field::TOS] = self.tos;
        buf[at + 2..at + 4].copy_from_slice(&self.total_len.to_be_bytes());
        buf[at + 4] = 0;
        buf[at + 5] = 0;
        buf[at + field::FLAGS_FRAG] = if self.dont_fragment { FLAG_DF } else { 0 };
        buf[at + 7] = 0;
        buf[at + field::TTL] = TTL;
        buf[at + field::PROTO] = self.proto;
        buf[at + 10] = 0;
        buf[at + 11] = 0;
        buf[at + 12..at + 16].copy_from_slice(&self.src);
        buf[at + 16..at + 20].copy_from_slice(&self.dst);
        let c = checksum::of(buf, at, at + HEADER_LEN);
        buf[at + 10..at + 12].copy_from_slice(&c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 192.168.0.1 -> 192.168.0.199, UDP, 115 bytes, DF.
    const H: Header = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
        0x00, 0xc7,
    ];

    #[test]
    fn reads_the_fields() {
        assert_eq!((version(&H), header_len(&H), total_len(&H), proto(&H)), (4, 20, 115, PROTO_UDP));
        assert_eq!((src(&H), dst(&H)), ([192, 168, 0, 1], [192, 168, 0, 199]));
        assert!(dont_fragment(&H) && !is_fragment(&H));
    }

    #[test]
    fn the_rules() {
        assert_eq!(check(&H, 115), Ok(115));
        assert_eq!(check(&H, 114), Err(Error::TotalLen), "longer than the frame");
        let mut h = H;
        h[0] = 0x65;
        assert_eq!(check(&h, 200), Err(Error::Version));
        h[0] = 0x44;
        assert_eq!(check_header(&h), Err(Error::HeaderLen));
        h[0] = 0x46;
        assert_eq!(check_header(&h), Ok(24), "options");
        let mut h = H;
        h[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(check(&h, 200), Err(Error::TotalLen), "shorter than the header");
    }

    #[test]
    fn flows_are_whole_tcp_or_udp_without_options() {
        assert!(is_flow(&H, 115));
        assert!(!is_flow(&H, 100), "total beyond the frame");
        let mut h = H;
        h[6] = 0x20; // more fragments
        assert!(!is_flow(&h, 115) && is_fragment(&h));
        let mut h = H;
        h[7] = 1; // offset 8
        assert!(!is_flow(&h, 115));
        let mut h = H;
        h[9] = PROTO_ICMP;
        assert!(!is_flow(&h, 115));
        let mut h = H;
        h[0] = 0x46;
        assert!(!is_flow(&h, 115), "options");
        let mut h = H;
        h[2..4].copy_from_slice(&27u16.to_be_bytes());
        assert!(!is_flow(&h, 115), "no room for the ports");
    }

    #[test]
    fn writes_headers_with_right_checksums() {
        let mut b = [0u8; 22];
        let r = Repr {
            src: [192, 168, 0, 1],
            dst: [192, 168, 0, 199],
            proto: PROTO_UDP,
            tos: 0,
            total_len: 115,
            dont_fragment: true,
        };
        r.emit_at(&mut b, 2);
        assert_eq!(b[2..], H);
        let mut h = H;
        set_src(&mut h, [10, 1, 2, 3]);
        assert_eq!(checksum::fold(checksum::sum_words(&h, 0, 20)), 0);
        assert_eq!(src(&h), [10, 1, 2, 3]);
        let mut h = H;
        h[8] = 3;
        turn_around(&mut h, [192, 168, 0, 199]);
        assert_eq!((src(&h), dst(&h), h[8]), ([192, 168, 0, 199], [192, 168, 0, 1], 64));
        assert_eq!(checksum::fold(checksum::sum_words(&h, 0, 20)), 0);
    }
}
