//! TCP (RFC 9293): what the data path reads of a segment's header, and the
//! reset it answers a connection attempt with when a service has no backend
//! (RFC 9293 3.10.7.1: a segment to a port with no one behind it).

use crate::{checksum, eth, ipv4};

/// A header without options.
pub const HEADER_LEN: usize = 20;
/// The fixed part of a header: ports, sequence and acknowledgment numbers,
/// data offset and flags.
pub const FIXED_LEN: usize = 14;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// Byte offsets within a header.
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
}

pub type Fixed = [u8; FIXED_LEN];

/// The header's length, options included, from its data offset.
#[inline(always)]
pub fn header_len(seg: &Fixed) -> usize {
    usize::from(seg[field::DATA_OFFSET] >> 4) * 4
}

/// A reset frame: Ethernet, IPv4 and a TCP header without options.
pub const RESET_FRAME_LEN: usize = eth::HEADER_LEN + ipv4::HEADER_LEN + HEADER_LEN;

/// The sequence number, acknowledgment number and flags of the reset that
/// answers a segment with `flags`, `seq` and `ack`, carrying `payload` bytes;
/// `None` for a reset (never answered).
#[inline(always)]
pub fn reset_numbers(seq: u32, ack: u32, flags: u8, payload: u32) -> Option<(u32, u32, u8)> {
    if flags & RST != 0 {
        return None;
    }
    if flags & ACK != 0 {
        // "<SEQ=SEG.ACK><CTL=RST>"
        return Some((ack, 0, RST));
    }
    // "<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>": SYN and FIN count one each.
    let len = payload + (flags & SYN != 0) as u32 + (flags & FIN != 0) as u32;
    Some((0, seq.wrapping_add(len), RST | ACK))
}

/// The numbers of the reset that answers a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

/// The reset answering the segment whose IPv4 header is `ip` and whose TCP
/// header starts with `seg`; `None` when the segment is a reset, or its
/// lengths do not add up.
#[inline(always)]
pub fn answer(ip: &ipv4::Header, seg: &Fixed) -> Option<Reset> {
    let doff = ((seg[field::DATA_OFFSET] >> 4) as usize) * 4;
    let payload = ipv4::total_len(ip).checked_sub(ipv4::header_len(ip) + doff)?;
    let seq = u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]);
    let ack = u32::from_be_bytes([seg[8], seg[9], seg[10], seg[11]]);
    let (seq, ack, flags) = reset_numbers(seq, ack, seg[field::FLAGS], payload as u32)?;
    Some(Reset { seq, ack, flags })
}

/// Writes reset `a` to the segment (`ip`, `seg`) into `r`, from the address
/// and port the segment was sent to, framed from `from_mac` to `to_mac`.
/// `r` may be the packet itself: `ip` and `seg` are copies.
#[inline(always)]
pub fn emit_reset(
    r: &mut [u8; RESET_FRAME_LEN],
    to_mac: [u8; 6],
    from_mac: [u8; 6],
    ip: &ipv4::Header,
    seg: &Fixed,
    a: &Reset,
) {
    eth::emit_at(r, 0, to_mac, from_mac, eth::ETHERTYPE_IPV4);
    let (from, to) = (ipv4::dst(ip), ipv4::src(ip));
    ipv4::Repr {
        src: from,
        dst: to,
        proto: ipv4::PROTO_TCP,
        tos: 0,
        total_len: (ipv4::HEADER_LEN + HEADER_LEN) as u16,
        dont_fragment: true,
    }
    .emit_at(r, eth::HEADER_LEN);
    let t = eth::HEADER_LEN + ipv4::HEADER_LEN;
    // The ports turned around.
    r[t] = seg[field::DST_PORT];
    r[t + 1] = seg[field::DST_PORT + 1];
    r[t + 2] = seg[field::SRC_PORT];
    r[t + 3] = seg[field::SRC_PORT + 1];
    r[t + field::SEQ..t + field::SEQ + 4].copy_from_slice(&a.seq.to_be_bytes());
    r[t + field::ACK..t + field::ACK + 4].copy_from_slice(&a.ack.to_be_bytes());
    r[t + field::DATA_OFFSET] = ((HEADER_LEN / 4) as u8) << 4;
    r[t + field::FLAGS] = a.flags;
    // Window 0, checksum (below), no urgent pointer.
    for b in &mut r[t + field::WINDOW..t + HEADER_LEN] {
        *b = 0;
    }
    let mut pseudo = checksum::sum_words(&from, 0, 4) + checksum::sum_words(&to, 0, 4);
    pseudo += ipv4::PROTO_TCP as u32 + HEADER_LEN as u32;
    let c = checksum::fold(pseudo + checksum::sum_words(r, t, t + HEADER_LEN));
    r[t + field::CHECKSUM..t + field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
}

/// [`answer`] and [`emit_reset`] into a frame of its own.
#[inline(always)]
pub fn reset(to_mac: [u8; 6], from_mac: [u8; 6], ip: &ipv4::Header, seg: &Fixed) -> Option<[u8; RESET_FRAME_LEN]> {
    let a = answer(ip, seg)?;
    let mut r = [0u8; RESET_FRAME_LEN];
    emit_reset(&mut r, to_mac, from_mac, ip, seg, &a);
    Some(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_len_reads_the_data_offset() {
        let mut seg: Fixed = [0; FIXED_LEN];
        seg[field::DATA_OFFSET] = 0x50;
        assert_eq!(header_len(&seg), 20);
        seg[field::DATA_OFFSET] = 0x80; // 12 bytes of options (timestamps)
        assert_eq!(header_len(&seg), 32);
        seg[field::DATA_OFFSET] = 0xf0;
        assert_eq!(header_len(&seg), 60);
    }

    use super::*;
    use crate::checksum::{fold, sum_words};

    /// 192.168.200.100:40000 -> 192.168.200.11:8080, a SYN with seq 1000.
    fn syn() -> (ipv4::Header, Fixed) {
        let mut ip = [0u8; 20];
        ipv4::Repr {
            src: [192, 168, 200, 100],
            dst: [192, 168, 200, 11],
            proto: ipv4::PROTO_TCP,
            tos: 0,
            total_len: 60,
            dont_fragment: true,
        }
        .emit_at(&mut ip, 0);
        // 40 bytes of TCP: a header with 20 bytes of options, no payload.
        let tcp: Fixed = [0x9c, 0x40, 0x1f, 0x90, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0xa0, SYN];
        (ip, tcp)
    }

    #[test]
    fn a_syn_gets_rst_ack_of_its_sequence_plus_one() {
        let (ip, tcp) = syn();
        let r = reset([0xaa; 6], [0xbb; 6], &ip, &tcp).unwrap();
        assert_eq!(r.len(), 54);
        assert_eq!(r[0..14], [0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0x08, 0x00]);
        // IPv4: 40 bytes, DF, TTL 64, TCP, from the address the SYN went to.
        assert_eq!(r[14..24], [0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6]);
        assert_eq!((&r[26..30], &r[30..34]), (&[192u8, 168, 200, 11][..], &[192u8, 168, 200, 100][..]));
        assert_eq!(fold(sum_words(&r, 14, 34)), 0);
        // TCP: 8080 -> 40000, seq 0, ack 1001, offset 5, RST|ACK, window 0.
        assert_eq!(r[34..48], [0x1f, 0x90, 0x9c, 0x40, 0, 0, 0, 0, 0, 0, 0x03, 0xe9, 0x50, RST | ACK]);
        assert_eq!(r[48..50], [0, 0]);
        assert_eq!(r[52..54], [0, 0]);
        // The checksum over the pseudo-header and the header is right.
        let pseudo = sum_words(&r, 26, 34) + 6 + 20;
        assert_eq!(fold(pseudo + sum_words(&r, 34, 54)), 0);
        // Written over a packet's own bytes, as the data path does, alike.
        let mut in_place = [0x55u8; RESET_FRAME_LEN];
        emit_reset(&mut in_place, [0xaa; 6], [0xbb; 6], &ip, &tcp, &answer(&ip, &tcp).unwrap());
        assert_eq!(in_place, r);
    }

    #[test]
    fn the_numbers_follow_rfc_9293() {
        // A segment with ACK: the reset takes its acknowledgment number.
        assert_eq!(reset_numbers(5, 77, ACK | 0x08, 100), Some((77, 0, RST)));
        // Without ACK: SYN, FIN and the payload each advance the ack.
        assert_eq!(reset_numbers(u32::MAX, 0, SYN, 0), Some((0, 0, RST | ACK)), "wraps");
        assert_eq!(reset_numbers(10, 0, SYN | FIN, 3), Some((0, 15, RST | ACK)));
        assert_eq!(reset_numbers(10, 0, 0, 0), Some((0, 10, RST | ACK)));
        // A reset is never answered.
        assert_eq!(reset_numbers(1, 2, RST, 0), None);
        assert_eq!(reset_numbers(1, 2, RST | ACK, 0), None);
    }

    #[test]
    fn a_segment_whose_lengths_do_not_add_up_is_not_answered() {
        let (mut ip, tcp) = syn();
        ip[2..4].copy_from_slice(&39u16.to_be_bytes());
        assert_eq!(reset([0; 6], [0; 6], &ip, &tcp), None, "total length shorter than the headers");
    }
}
