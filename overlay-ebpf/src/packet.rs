//! One view of the packet a program handles, XDP frame or skb: the one
//! bounds-checked accessor that holds the packet `unsafe`, its length, and
//! the rewrite of a flow's addresses and ports, so the code above it is the
//! same for both contexts.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        xdp_action::{XDP_PASS, XDP_REDIRECT},
        BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_REDIRECT,
    },
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::{TcContext, XdpContext},
};
use overlay_common::{Reason, Tuple, PROTO_UDP, VXLAN_ENCAP_LEN};
use overlay_wire::{eth, ipv4, nat, vxlan};

use crate::log;

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

/// A packet the underlay program handles, in either hook: what differs
/// between XDP and TC when a frame loses or gains its VXLAN headers and
/// leaves. Decapsulation, the routing mesh and the answers to peers are
/// written once over this (`decap`, `mesh`, `arp`), and each hook's entry
/// point maps the verdicts.
pub trait Frame: Packet + Sized {
    /// The hook's return code.
    type Verdict: Copy;
    /// Not ours: on to the host stack.
    const PASS: Self::Verdict;

    /// The device the packet came in on.
    fn ingress_ifindex(&self) -> u32;
    /// The context pointer, for helpers that take either kind.
    fn raw(&self) -> *mut core::ffi::c_void;
    /// The size of the segments a GSO packet stands for, 0 for one packet.
    fn gso_size(&self) -> u32;
    /// The same packet, its bounds read anew (see [`Xdp::reread`]).
    fn reread(&self) -> Self;
    /// Removes the outer headers: the frame then starts at `inner` (the
    /// inner Ethernet header). Every earlier view is stale.
    fn strip(&self, inner: usize) -> Result<Self, Reason>;
    /// Grows the frame in front by the VXLAN encapsulation and writes `e`'s
    /// headers (the inner Ethernet header replaces the old one).
    fn push(&self, e: &vxlan::Encap) -> Result<Self, Reason>;
    /// Sends the frame, its addresses set, out of device `ifindex`.
    fn send(&self, ifindex: u32, ok: Reason) -> Outcome<Self::Verdict>;
    /// Delivers the frame to the container behind the host-side veth `ifindex`.
    fn deliver(&self, ifindex: u32, ok: Reason) -> Outcome<Self::Verdict>;
    /// Logs (when logging is on) a FIB lookup towards `dst` that gave `ret`.
    fn fib_failed(&self, dst: [u8; 4], ret: i64);
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

impl<'a> Frame for Xdp<'a> {
    type Verdict = u32;
    const PASS: u32 = XDP_PASS;

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: reads the program's own context.
        unsafe { (*self.ctx.ctx).ingress_ifindex }
    }

    #[inline(always)]
    fn raw(&self) -> *mut core::ffi::c_void {
        self.ctx.ctx as *mut _
    }

    #[inline(always)]
    fn gso_size(&self) -> u32 {
        0
    }

    #[inline(always)]
    fn reread(&self) -> Self {
        Xdp::reread(self)
    }

    #[inline(always)]
    fn strip(&self, inner: usize) -> Result<Self, Reason> {
        self.adjust_head(inner as i32)
    }

    #[inline(always)]
    fn push(&self, e: &vxlan::Encap) -> Result<Self, Reason> {
        let ctx = self.adjust_head(-(VXLAN_ENCAP_LEN as i32))?;
        let h = ctx.bytes::<{ vxlan::PUSH_LEN }>(0).ok_or(Reason::DropMalformed)?;
        *h = e.header();
        Ok(ctx)
    }

    /// A redirect, also back out of the device the frame came in on, rather
    /// than XDP_TX: a veth underlay (hosts as containers on a bridge)
    /// flushes XDP_TX frames to its peer only when the peer runs an XDP
    /// program itself, and holds them until the next packet otherwise;
    /// redirected frames are flushed at the end of every poll. NIC drivers
    /// with XDP implement both.
    #[inline(always)]
    fn send(&self, ifindex: u32, ok: Reason) -> Outcome<u32> {
        // SAFETY: a helper taking plain integers.
        let ret = unsafe { bpf_redirect(ifindex, 0) };
        if ret as u32 == XDP_REDIRECT {
            Ok((ok, XDP_REDIRECT))
        } else {
            crate::log_rare!(log::xdp_redirect_failed, self.ctx.ctx, ifindex, ret);
            Err(Reason::DropRedirect)
        }
    }

    /// Out of the host-side veth, which hands it to its peer.
    #[inline(always)]
    fn deliver(&self, ifindex: u32, ok: Reason) -> Outcome<u32> {
        self.send(ifindex, ok)
    }

    #[inline(always)]
    fn fib_failed(&self, dst: [u8; 4], ret: i64) {
        crate::log_rare!(log::fib_failed, self.ctx.ctx, dst, ret);
    }
}

/// `bpf_skb_adjust_room`'s answer to encapsulating an skb marked as
/// encapsulated already.
const EALREADY: i64 = -114;

/// What the redirect helper `ret` (to `ifindex`) means in TC.
#[inline(always)]
pub fn tc_redirected(ctx: &TcContext, ifindex: u32, ret: i64, ok: Reason) -> Outcome<i32> {
    if ret == TC_ACT_REDIRECT as i64 {
        Ok((ok, TC_ACT_REDIRECT))
    } else {
        crate::log_rare!(log::tc_redirect_failed, ctx.skb.skb, ifindex, ret);
        Err(Reason::DropRedirect)
    }
}

impl Frame for TcContext {
    type Verdict = i32;
    const PASS: i32 = TC_ACT_OK;

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: reads a field of the program's own skb.
        unsafe { (*self.skb.skb).ingress_ifindex }
    }

    #[inline(always)]
    fn raw(&self) -> *mut core::ffi::c_void {
        self.skb.skb as *mut _
    }

    #[inline(always)]
    fn gso_size(&self) -> u32 {
        // SAFETY: reads a field of the program's own skb.
        unsafe { (*self.skb.skb).gso_size }
    }

    #[inline(always)]
    fn reread(&self) -> Self {
        TcContext::new(self.skb.skb)
    }

    /// `bpf_skb_adjust_room` takes out what lies between the outer Ethernet
    /// header and the inner packet, and the inner Ethernet header is written
    /// over the outer one. The segment size of a GSO packet stays
    /// (`FIXED_GSO`): its segments keep their size. A checksum a NIC
    /// vouched for is reset (the inner packet's is not vouched for); a
    /// partial one keeps its offsets, which the helper moves with the data.
    #[inline(always)]
    fn strip(&self, inner: usize) -> Result<Self, Reason> {
        let ie = *self.bytes::<{ eth::HEADER_LEN }>(inner).ok_or(Reason::DropMalformed)?;
        // From after the outer Ethernet header to the inner packet.
        self.adjust_room(-(inner as i32), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO as u64)
            .map_err(|_| Reason::DropResize)?;
        let ctx = self.reread();
        let e = ctx.bytes::<{ eth::HEADER_LEN }>(0).ok_or(Reason::DropResize)?;
        *e = ie;
        Ok(ctx)
    }

    /// The inner MAC header is the inner Ethernet header alone: GSO then
    /// takes UDP + VXLAN as the tunnel header and cuts the inner TCP
    /// correctly.
    #[inline(always)]
    fn push(&self, e: &vxlan::Encap) -> Result<Self, Reason> {
        let h = e.header();
        let flags = (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
            | (eth::HEADER_LEN as u64) << 56;
        match self.adjust_room(VXLAN_ENCAP_LEN as i32, BPF_ADJ_ROOM_MAC, flags) {
            Ok(()) => {}
            // The skb still says "encapsulated": it was decapsulated here in
            // TC (which leaves that mark) and a container forwards it on. One
            // packet needs no tunnel offsets: pushed without the marks.
            Err(EALREADY) if Frame::gso_size(self) == 0 => {
                self.adjust_room(VXLAN_ENCAP_LEN as i32, BPF_ADJ_ROOM_MAC, 0).map_err(|_| Reason::DropResize)?
            }
            Err(_) => return Err(Reason::DropResize),
        }
        self.store(0, &h, 0).map_err(|_| Reason::DropRewrite)?;
        Ok(self.reread())
    }

    #[inline(always)]
    fn send(&self, ifindex: u32, ok: Reason) -> Outcome<i32> {
        // SAFETY: a helper taking plain integers.
        tc_redirected(self, ifindex, unsafe { bpf_redirect(ifindex, 0) }, ok)
    }

    /// Straight into the container's side (`bpf_redirect_peer`, from an
    /// ingress hook): no second pass through the host-side veth.
    #[inline(always)]
    fn deliver(&self, ifindex: u32, ok: Reason) -> Outcome<i32> {
        // SAFETY: a helper taking plain integers.
        tc_redirected(self, ifindex, unsafe { bpf_redirect_peer(ifindex, 0) }, ok)
    }

    #[inline(always)]
    fn fib_failed(&self, dst: [u8; 4], ret: i64) {
        crate::log_rare!(log::tc_fib_failed, self.skb.skb, dst, ret);
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

    /// The skb's length, of which the linear data may be only the headers;
    /// for a GSO packet, unbounded (its IPv4 total length is a segment's).
    #[inline(always)]
    fn room(&self, off: usize) -> usize {
        if Frame::gso_size(self) != 0 {
            return usize::MAX;
        }
        Packet::len(self).wrapping_sub(off)
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
