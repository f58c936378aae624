//! Bounds-checked access to packet bytes, shared by XDP and TC.

/// A pointer to a `T` at `off` bytes into the packet, or `None` when the
/// packet is too short. One up-front check the verifier can follow.
#[inline(always)]
pub fn ptr_at<T>(start: usize, end: usize, off: usize) -> Option<*mut T> {
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

/// The total length `tot_len` of the IPv4 packet at `off`, when the packet
/// fits in the frame; `None` when it claims more bytes than there are.
///
/// Two things keep every verifier able to follow the code around it. Older
/// verifiers (6.1, 6.12) lose a value's bounds through a byte swap and refuse
/// it in packet arithmetic: the length is bounded to what a linear XDP frame
/// can hold and masked (a no-op after the check, kept by the opaque reload).
/// And `end` is read back opaquely, or the compiler would conclude from this
/// check that later bounds checks always pass and drop them.
#[inline(always)]
pub fn ipv4_len(start: usize, end: usize, off: usize, tot_len: [u8; 2]) -> Option<usize> {
    const MAX: usize = 0x3fff;
    let total = u16::from_be_bytes(tot_len) as usize;
    if total > MAX {
        return None;
    }
    let total = unsafe { core::ptr::read_volatile(&total) } & MAX;
    if start + off + total > unsafe { core::ptr::read_volatile(&end) } {
        return None;
    }
    Some(total)
}

/// ARP for Ethernet/IPv4 (RFC 826), as it follows the Ethernet header.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ArpHdr {
    pub htype: [u8; 2],
    pub ptype: [u8; 2],
    pub hlen: u8,
    pub plen: u8,
    pub oper: [u8; 2],
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

pub const ARP_REQUEST: [u8; 2] = [0, 1];
pub const ARP_REPLY: [u8; 2] = [0, 2];
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;

impl ArpHdr {
    /// Ethernet hardware, IPv4 protocol addresses.
    #[inline(always)]
    pub fn is_eth_ipv4(&self) -> bool {
        self.htype == [0, 1] && self.ptype == [0x08, 0x00] && self.hlen == 6 && self.plen == 4
    }

    /// Turns this request, in place, into the reply "target is at `mac`",
    /// addressed to the requester by `eth`, the frame's Ethernet header.
    #[inline(always)]
    pub fn answer(&mut self, eth: &mut network_types::eth::EthHdr, mac: [u8; 6]) {
        let target = self.tpa;
        eth.dst_addr = self.sha;
        eth.src_addr = mac;
        self.oper = ARP_REPLY;
        self.tha = self.sha;
        self.tpa = self.spa;
        self.sha = mac;
        self.spa = target;
    }
}
