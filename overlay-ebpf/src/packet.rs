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
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<&mut [u8; N]> {
        let (start, end) = (self.data(), self.data_end());
        if start + off + N > end {
            return None;
        }
        // SAFETY: the check keeps the N bytes within the packet's linear
        // data, which the kernel keeps valid and writable for the whole run
        // of the program; [u8; N] has alignment 1 and no invalid values; and
        // callers never hold two views of one byte (above).
        Some(unsafe { &mut *((start + off) as *mut [u8; N]) })
    }

    /// The bytes of linear data from `off` on, `off` being inside the
    /// packet (a view at `off` was taken): for checking a length the packet
    /// claims (an IPv4 total length), never for packet arithmetic. `end` is
    /// read opaquely: otherwise the compiler takes "the total length fits"
    /// as proof that later bounds checks pass and drops them, and the
    /// verifier, which cannot follow that, refuses the reads.
    #[inline(always)]
    fn room(&self, off: usize) -> usize {
        let end = self.data_end();
        // SAFETY: a volatile read of a local.
        let end = unsafe { core::ptr::read_volatile(&end) };
        end.wrapping_sub(self.data() + off)
    }
}

/// An XDP frame, its bounds read once: the verifier keeps what a check
/// taught it about a pointer for as long as that pointer lives, and a bound
/// read again after a helper call would know nothing (the compiler may drop
/// the repeated check). Only `adjust_head` moves the bounds, and gives a new
/// `Xdp` for the moved frame.
pub struct Xdp<'a> {
    pub ctx: &'a XdpContext,
    start: usize,
    end: usize,
}

impl<'a> Xdp<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a XdpContext) -> Xdp<'a> {
        Xdp { ctx, start: ctx.data(), end: ctx.data_end() }
    }

    /// The same frame, its bounds read anew and opaquely: a barrier after
    /// which the compiler cannot lean on earlier checks (a check at a
    /// variable offset, which the verifier does not follow, would otherwise
    /// let it drop later ones at constant offsets).
    #[inline(always)]
    pub fn reread(&self) -> Xdp<'a> {
        // SAFETY: volatile reads of two fields of the program's own context.
        let (start, end) = unsafe {
            (
                core::ptr::read_volatile(&(*self.ctx.ctx).data) as usize,
                core::ptr::read_volatile(&(*self.ctx.ctx).data_end) as usize,
            )
        };
        Xdp { ctx: self.ctx, start, end }
    }

    /// Moves the frame's start by `delta` bytes (negative: grows it in
    /// front) and returns the moved frame; every earlier view is stale.
    #[inline(always)]
    pub fn adjust_head(&self, delta: i32) -> Result<Xdp<'a>, Reason> {
        // SAFETY: the helper checks the headroom and the frame; the views of
        // the old frame are not used again (callers take new ones).
        if unsafe { aya_ebpf::helpers::bpf_xdp_adjust_head(self.ctx.ctx, delta) } != 0 {
            return Err(Reason::DropResize);
        }
        Ok(Xdp::new(self.ctx))
    }
}

impl Packet for Xdp<'_> {
    #[inline(always)]
    fn data(&self) -> usize {
        self.start
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        self.end
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
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

    /// Read opaquely: checksum helpers invalidate every packet pointer, so
    /// each view is taken anew, and the compiler must not drop a check that
    /// an earlier one implies only through arithmetic the verifier does not
    /// follow (a variable header length).
    #[inline(always)]
    fn data_end(&self) -> usize {
        let end = TcContext::data_end(self);
        // SAFETY: a volatile read of a local.
        unsafe { core::ptr::read_volatile(&end) }
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
