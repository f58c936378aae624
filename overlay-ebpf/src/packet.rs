//! One view of the packet a program handles, XDP frame or skb: the one
//! bounds-checked accessor that holds the packet `unsafe`, its length, and
//! the rewrite of a flow's addresses and ports, so the code above it is the
//! same for both contexts.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::{TcContext, XdpContext},
};
use overlay_common::{Reason, Tuple, PROTO_UDP};
use overlay_wire::{ipv4, nat};

/// What a handler decided: the reason to count and the program's return
/// code, or `Err` with the reason of a drop. The entry point counts it once.
pub type Outcome<A> = Result<(Reason, A), Reason>;

pub trait Packet {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// The whole packet's length (an skb's non-linear part included).
    fn len(&self) -> usize;
    /// Rewrites the IPv4 TCP/UDP packet at `l3` (header `ihl` bytes long)
    /// from flow `old` to flow `new`, its checksums kept right.
    fn rewrite(&self, l3: usize, ihl: usize, proto: u8, old: &Tuple, new: &Tuple) -> Result<(), Reason>;

    /// The `N` bytes at `off`, or `None` when the packet's linear data is
    /// shorter: one up-front check the verifier can follow.
    ///
    /// The caller holds one view of a byte range at a time (views of
    /// disjoint ranges may live together).
    ///
    /// `end` is read opaquely: otherwise the compiler drops a check that an
    /// earlier one implies only through arithmetic the verifier does not
    /// follow (a variable header length), and the verifier refuses the read.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<&mut [u8; N]> {
        let (start, end) = (self.data(), self.data_end());
        // SAFETY: a volatile read of a local.
        let end = unsafe { core::ptr::read_volatile(&end) };
        if start + off + N > end {
            return None;
        }
        // SAFETY: the check keeps the N bytes within the packet's linear
        // data, which the kernel keeps valid and writable for the whole run
        // of the program; [u8; N] has alignment 1 and no invalid values; and
        // callers never hold two views of one byte (above).
        Some(unsafe { &mut *((start + off) as *mut [u8; N]) })
    }

    /// The bytes of linear data from `off` on: for checking a length the
    /// packet claims (an IPv4 total length), never for packet arithmetic.
    /// `end` is read opaquely, or the compiler would use the comparison to
    /// drop later bounds checks the verifier needs.
    #[inline(always)]
    fn room(&self, off: usize) -> usize {
        let end = self.data_end();
        // SAFETY: a volatile read of a local.
        let end = unsafe { core::ptr::read_volatile(&end) };
        end.saturating_sub(self.data()).saturating_sub(off)
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    #[inline(always)]
    fn len(&self) -> usize {
        XdpContext::data_end(self) - XdpContext::data(self)
    }

    /// In packet memory, checksums updated incrementally: frames from the
    /// wire carry complete ones. (Flows here have 20-byte headers.)
    #[inline(always)]
    fn rewrite(&self, l3: usize, _ihl: usize, proto: u8, _old: &Tuple, new: &Tuple) -> Result<(), Reason> {
        let ip = self.bytes::<{ ipv4::HEADER_LEN }>(l3).ok_or(Reason::DropMalformed)?;
        let l4 = l3 + ipv4::HEADER_LEN;
        let ports = self.bytes::<4>(l4).ok_or(Reason::DropMalformed)?;
        let csum = self.bytes::<2>(l4 + nat::l4_checksum_offset(proto)).ok_or(Reason::DropMalformed)?;
        nat::rewrite(ip, ports, csum, proto, new);
        Ok(())
    }
}

impl Packet for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
    }

    /// Through the kernel's checksum helpers, which also handle the partial
    /// checksums of packets a local stack sends.
    #[inline(always)]
    fn rewrite(&self, l3: usize, ihl: usize, proto: u8, old: &Tuple, new: &Tuple) -> Result<(), Reason> {
        let l4 = l3 + ihl;
        let at = |ip_off: usize, port_off: usize, o: ([u8; 4], u16), n: ([u8; 4], u16)| {
            set_end(self, l3, l4, proto, ip_off, port_off, o, n).map_err(|_| Reason::DropRewrite)
        };
        at(ipv4::field::SRC, 0, (old.src, old.sport), (new.src, new.sport))?;
        at(ipv4::field::DST, 2, (old.dst, old.dport), (new.dst, new.dport))
    }
}

/// One end (source or destination address and port) of a rewrite in an skb.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn set_end(
    ctx: &TcContext,
    l3: usize,
    l4: usize,
    proto: u8,
    ip_off: usize,
    port_off: usize,
    (old_ip, old_port): ([u8; 4], u16),
    (new_ip, new_port): ([u8; 4], u16),
) -> Result<(), i64> {
    let csum_off = l4 + nat::l4_checksum_offset(proto);
    // A zero UDP checksum (none) stays zero.
    let mangled = if proto == PROTO_UDP { BPF_F_MARK_MANGLED_0 as u64 } else { 0 };
    if old_ip != new_ip {
        let (o, n) = (u32::from_ne_bytes(old_ip) as u64, u32::from_ne_bytes(new_ip) as u64);
        ctx.l4_csum_replace(csum_off, o, n, mangled | BPF_F_PSEUDO_HDR as u64 | 4)?;
        ctx.l3_csum_replace(l3 + ipv4::field::CHECKSUM, o, n, 4)?;
        ctx.store(l3 + ip_off, &new_ip, 0)?;
    }
    if old_port != new_port {
        let (o, n) = (old_port.to_be() as u64, new_port.to_be() as u64);
        ctx.l4_csum_replace(csum_off, o, n, mangled | 2)?;
        ctx.store(l4 + port_off, &new_port.to_be_bytes(), 0)?;
    }
    Ok(())
}
