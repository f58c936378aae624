//! ICMP (RFC 792) messages the data path writes or translates: "fragmentation
//! needed" for PMTU discovery (RFC 1191), "port unreachable" for a UDP
//! datagram to a service with no backend, and errors quoting a translated
//! flow.

use crate::{checksum, eth, ipv4, nat::Tuple};

pub const HEADER_LEN: usize = 8;
pub const DEST_UNREACHABLE: u8 = 3;
/// Code of [`DEST_UNREACHABLE`]: no one listens on the port.
pub const PORT_UNREACHABLE: u8 = 3;
/// Code of [`DEST_UNREACHABLE`]: fragmentation needed and DF set.
pub const FRAG_NEEDED: u8 = 4;
pub const TIME_EXCEEDED: u8 = 11;
/// What an ICMP error quotes of the packet that caused it, at least: its
/// IPv4 header (without options) and 8 bytes.
pub const QUOTE_LEN: usize = ipv4::HEADER_LEN + 8;
/// A "destination unreachable" frame: Ethernet, IPv4, ICMP, the quote.
pub const UNREACHABLE_FRAME_LEN: usize = eth::HEADER_LEN + ipv4::HEADER_LEN + HEADER_LEN + QUOTE_LEN;
pub const FRAG_NEEDED_FRAME_LEN: usize = UNREACHABLE_FRAME_LEN;
/// An error's header, the quoted IPv4 header and the quoted ports: what
/// [`quoted_flow`] reads and [`rewrite_quoted_dst`] changes.
pub const ERROR_LEN: usize = HEADER_LEN + ipv4::HEADER_LEN + 4;

pub type Error = [u8; ERROR_LEN];

/// "Fragmentation needed" to `to` (MAC `to_mac`) from `from` (MAC
/// `from_mac`), giving `mtu` and quoting `quote`: TOS 0xc0 (network
/// control), no DF, every checksum computed.
#[inline(always)]
pub fn frag_needed(
    to_mac: [u8; 6],
    from_mac: [u8; 6],
    from: [u8; 4],
    to: [u8; 4],
    mtu: u16,
    quote: &[u8; QUOTE_LEN],
) -> [u8; UNREACHABLE_FRAME_LEN] {
    let mut r = [0u8; UNREACHABLE_FRAME_LEN];
    emit_unreachable(&mut r, FRAG_NEEDED, mtu, to_mac, from_mac, from, to, quote);
    r
}

/// Writes "port unreachable" to `to` from `from`, the address the quoted
/// datagram was sent to, quoting it, into `r` (which may be the packet: the
/// quote is a copy): what a host with no socket on the port answers.
#[inline(always)]
pub fn emit_port_unreachable(
    r: &mut [u8; UNREACHABLE_FRAME_LEN],
    to_mac: [u8; 6],
    from_mac: [u8; 6],
    from: [u8; 4],
    to: [u8; 4],
    quote: &[u8; QUOTE_LEN],
) {
    emit_unreachable(r, PORT_UNREACHABLE, 0, to_mac, from_mac, from, to, quote)
}

/// "Destination unreachable" with `code` (and, for [`FRAG_NEEDED`], the
/// next hop's MTU), framed and addressed as [`frag_needed`] says.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_unreachable(
    r: &mut [u8; UNREACHABLE_FRAME_LEN],
    code: u8,
    mtu: u16,
    to_mac: [u8; 6],
    from_mac: [u8; 6],
    from: [u8; 4],
    to: [u8; 4],
    quote: &[u8; QUOTE_LEN],
) {
    eth::emit_at(r, 0, to_mac, from_mac, eth::ETHERTYPE_IPV4);
    let ip = ipv4::Repr {
        src: from,
        dst: to,
        proto: ipv4::PROTO_ICMP,
        tos: 0xc0,
        total_len: (UNREACHABLE_FRAME_LEN - eth::HEADER_LEN) as u16,
        dont_fragment: false,
    };
    ip.emit_at(r, eth::HEADER_LEN);
    let icmp = eth::HEADER_LEN + ipv4::HEADER_LEN;
    r[icmp] = DEST_UNREACHABLE;
    r[icmp + 1] = code;
    r[icmp + 2] = 0;
    r[icmp + 3] = 0;
    r[icmp + 4] = 0;
    r[icmp + 5] = 0;
    r[icmp + 6..icmp + 8].copy_from_slice(&mtu.to_be_bytes());
    r[icmp + HEADER_LEN..].copy_from_slice(quote);
    let c = checksum::of(r, icmp, UNREACHABLE_FRAME_LEN);
    r[icmp + 2..icmp + 4].copy_from_slice(&c);
}

/// The TCP/UDP flow an error (destination unreachable, time exceeded)
/// quotes, as its packet was sent, and its protocol; `None` for other
/// messages and quotes with IPv4 options.
#[inline(always)]
pub fn quoted_flow(m: &Error) -> Option<(Tuple, u8)> {
    let q = HEADER_LEN;
    let proto = m[q + ipv4::field::PROTO];
    if (m[0] != DEST_UNREACHABLE && m[0] != TIME_EXCEEDED)
        || m[q] != ipv4::VERSION_IHL
        || (proto != ipv4::PROTO_TCP && proto != ipv4::PROTO_UDP)
    {
        return None;
    }
    let p = q + ipv4::HEADER_LEN;
    let t = Tuple {
        src: crate::addr(m, q + ipv4::field::SRC),
        dst: crate::addr(m, q + ipv4::field::DST),
        sport: crate::word(m, p),
        dport: crate::word(m, p + 2),
    };
    Some((t, proto))
}

/// Rewrites the destination address and port of the quoted packet, keeping
/// the quoted header's checksum and the ICMP checksum (no pseudo-header)
/// right. The quoted L4 checksum is left alone: the quote may be cut short.
#[inline(always)]
pub fn rewrite_quoted_dst(m: &mut Error, addr: [u8; 4], port: u16) {
    let q = HEADER_LEN;
    let (qc, qdst, qdport) = (q + ipv4::field::CHECKSUM, q + ipv4::field::DST, q + ipv4::HEADER_LEN + 2);
    let old_qc = [m[qc], m[qc + 1]];
    let new_qc = checksum::replace(old_qc, &m[qdst..qdst + 4], &addr);
    let mut old = [0u8; 8];
    old[0..4].copy_from_slice(&m[qdst..qdst + 4]);
    old[4..6].copy_from_slice(&old_qc);
    old[6..8].copy_from_slice(&m[qdport..qdport + 2]);
    let mut new = [0u8; 8];
    new[0..4].copy_from_slice(&addr);
    new[4..6].copy_from_slice(&new_qc);
    new[6..8].copy_from_slice(&port.to_be_bytes());
    let c = checksum::replace([m[2], m[3]], &old, &new);
    m[2..4].copy_from_slice(&c);
    m[qdst..qdst + 4].copy_from_slice(&addr);
    m[qc..qc + 2].copy_from_slice(&new_qc);
    m[qdport..qdport + 2].copy_from_slice(&port.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{fold, sum_words};

    const QUOTE: [u8; QUOTE_LEN] =
        [0x45, 0, 0x05, 0xdc, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 3, 0x9c, 0x40, 0, 80, 0, 0, 0, 1];

    #[test]
    fn frag_needed_frame() {
        let f = frag_needed([0xaa; 6], [0x02, 0x42, 10, 0, 0, 1], [10, 0, 0, 1], [10, 0, 0, 2], 1450, &QUOTE);
        assert_eq!(f.len(), 70);
        assert_eq!(f[0..14], [0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0x02, 0x42, 10, 0, 0, 1, 0x08, 0x00]);
        // IPv4: TOS c0, 56 bytes, no DF, TTL 64, ICMP, from the gateway.
        assert_eq!(f[14..24], [0x45, 0xc0, 0, 56, 0, 0, 0, 0, 64, 1]);
        assert_eq!((&f[26..30], &f[30..34]), (&[10u8, 0, 0, 1][..], &[10u8, 0, 0, 2][..]));
        assert_eq!(fold(sum_words(&f, 14, 34)), 0);
        // ICMP 3/4, MTU 1450 (05aa), the quote.
        assert_eq!(f[34..42], [3, 4, f[36], f[37], 0, 0, 0x05, 0xaa]);
        assert_eq!(f[42..], QUOTE);
        assert_eq!(fold(sum_words(&f, 34, 70)), 0);
    }

    #[test]
    fn port_unreachable_frame() {
        let mut f = [0x55u8; UNREACHABLE_FRAME_LEN];
        emit_port_unreachable(&mut f, [0xaa; 6], [0xbb; 6], [10, 0, 0, 3], [10, 0, 0, 2], &QUOTE);
        assert_eq!(f[14..24], [0x45, 0xc0, 0, 56, 0, 0, 0, 0, 64, 1]);
        assert_eq!((&f[26..30], &f[30..34]), (&[10u8, 0, 0, 3][..], &[10u8, 0, 0, 2][..]));
        // ICMP 3/3, nothing where frag-needed has its MTU, the quote.
        assert_eq!(f[34..42], [3, 3, f[36], f[37], 0, 0, 0, 0]);
        assert_eq!(f[42..], QUOTE);
        assert_eq!(fold(sum_words(&f, 34, 70)), 0);
        assert_eq!(fold(sum_words(&f, 14, 34)), 0);
    }

    /// A port unreachable from backend 10.10.0.21 about the client's packet
    /// to it, translated to quote the VIP 10.10.0.100:8080 instead.
    #[test]
    fn an_error_quoting_a_translated_flow() {
        let mut m: Error = [0; ERROR_LEN];
        m[0] = DEST_UNREACHABLE;
        m[1] = 3;
        let mut quoted_ip: ipv4::Header = [0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 10, 0, 5, 10, 10, 0, 21];
        let c = checksum::of(&quoted_ip, 0, 20);
        quoted_ip[10..12].copy_from_slice(&c);
        m[8..28].copy_from_slice(&quoted_ip);
        m[28..32].copy_from_slice(&[0xc3, 0x50, 0, 80]);
        // The ICMP checksum over what this buffer holds (the rest of the quote is zero).
        let c = checksum::of(&m, 0, ERROR_LEN);
        m[2..4].copy_from_slice(&c);

        let (t, proto) = quoted_flow(&m).unwrap();
        assert_eq!(proto, ipv4::PROTO_UDP);
        assert_eq!(t, Tuple { src: [10, 10, 0, 5], dst: [10, 10, 0, 21], sport: 50000, dport: 80 });
        rewrite_quoted_dst(&mut m, [10, 10, 0, 100], 8080);
        let (t, _) = quoted_flow(&m).unwrap();
        assert_eq!((t.dst, t.dport), ([10, 10, 0, 100], 8080));
        assert_eq!(fold(sum_words(&m, 8, 28)), 0, "quoted header checksum");
        assert_eq!(fold(sum_words(&m, 0, ERROR_LEN)), 0, "ICMP checksum");

        m[0] = 8; // echo request: not an error
        assert_eq!(quoted_flow(&m), None);
    }
}
