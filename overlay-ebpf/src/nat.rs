//! Address and port rewrites with checksums kept right, in TC (through the
//! kernel's checksum helpers, which also handle partial checksums).
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use overlay_common::PROTO_UDP;

/// Which end of the flow a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Src,
    Dst,
}

/// Rewrites the source or destination address and port of the IPv4 packet
/// after the Ethernet header (`ihl` its header length), fixing the IPv4 and
/// TCP/UDP checksums. A zero UDP checksum stays zero.
#[inline(always)]
pub fn rewrite(
    ctx: &TcContext,
    ihl: usize,
    proto: u8,
    end: End,
    old_ip: [u8; 4],
    new_ip: [u8; 4],
    old_port: u16,
    new_port: u16,
) -> Result<(), i64> {
    let l4 = 14 + ihl;
    let csum_off = l4 + if proto == PROTO_UDP { 6 } else { 16 };
    let mangled = if proto == PROTO_UDP { BPF_F_MARK_MANGLED_0 as u64 } else { 0 };
    let (ip_off, port_off) = match end {
        End::Src => (14 + 12, l4),
        End::Dst => (14 + 16, l4 + 2),
    };
    if old_ip != new_ip {
        let (o, n) = (u32::from_ne_bytes(old_ip) as u64, u32::from_ne_bytes(new_ip) as u64);
        ctx.l4_csum_replace(csum_off, o, n, mangled | BPF_F_PSEUDO_HDR as u64 | 4)?;
        ctx.l3_csum_replace(14 + 10, o, n, 4)?;
        ctx.store(ip_off, &new_ip, 0)?;
    }
    if old_port != new_port {
        let (o, n) = (old_port.to_be() as u64, new_port.to_be() as u64);
        ctx.l4_csum_replace(csum_off, o, n, mangled | 2)?;
        ctx.store(port_off, &new_port.to_be_bytes(), 0)?;
    }
    Ok(())
}
