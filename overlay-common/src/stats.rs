//! Packet outcomes ("reasons"), counted per program in [`crate::MAP_STATS`].
//!
//! Each program handler returns a [`Reason`]; the entry point converts it to a
//! verdict once and counts it, the way Cilium does with drop reasons.
//!
//! Every reason is declared once, in the table below: its value (its counter
//! slot, kept across releases), its name (in `status`, the metrics and
//! docs/data-path.md), what it means, and the programs that count it. The enum, the
//! names, [`REASONS`] and each program's list all come from that one line.

/// Programs that count into the stats map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    XdpUnderlay = 0,
    TcEndpoint = 1,
    TcWireguard = 2,
}

pub const PROGS: [Prog; 3] = [Prog::XdpUnderlay, Prog::TcEndpoint, Prog::TcWireguard];

impl Prog {
    pub const fn name(self) -> &'static str {
        match self {
            Prog::XdpUnderlay => crate::maps::PROG_XDP_UNDERLAY,
            Prog::TcEndpoint => crate::maps::PROG_TC_ENDPOINT,
            Prog::TcWireguard => crate::maps::PROG_TC_WIREGUARD,
        }
    }

    /// The reasons this program can count, in table order.
    pub fn reasons(self) -> impl Iterator<Item = Reason> {
        REASONS.iter().copied().filter(move |r| r.counted_by(self))
    }
}

macro_rules! reasons {
    ($($(#[doc = $doc:literal])+ $variant:ident = $value:literal, $name:literal, [$($prog:ident),+];)+) => {
        /// Why a packet ended the way it did. Values below [`FIRST_DROP`] are not
        /// drops; from there on, `drop_*` and `reject_*` (dropped and answered) are.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $($(#[doc = $doc])+ $variant = $value,)+
        }

        /// Every reason, in table order.
        pub const REASONS: &[Reason] = &[$(Reason::$variant,)+];

        impl Reason {
            /// The name `status`, the metrics and docs/data-path.md use.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)+
                }
            }

            /// What it means (the table's doc comment).
            pub const fn doc(self) -> &'static str {
                match self {
                    $(Reason::$variant => concat!($($doc),+),)+
                }
            }

            /// Whether program `p` counts this reason.
            pub const fn counted_by(self, p: Prog) -> bool {
                match self {
                    $(Reason::$variant => false $(|| p as u32 == Prog::$prog as u32)+,)+
                }
            }

            pub const fn from_u32(v: u32) -> Option<Reason> {
                match v {
                    $($value => Some(Reason::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    /// Not overlay traffic: handed to the host stack untouched.
    PassNotOurs = 0, "pass_not_ours", [XdpUnderlay];
    /// From a container to an address outside every overlay network: handed
    /// to the host stack, which routes and masquerades it.
    PassToHost = 1, "pass_to_host", [TcEndpoint];
    /// Wrapped in VXLAN and sent to the destination's host.
    Encapsulated = 2, "encapsulated", [TcEndpoint];
    /// VXLAN unwrapped and delivered to a local container.
    Decapsulated = 3, "decapsulated", [XdpUnderlay];
    /// Delivered to a container on the same host, without encapsulation.
    DeliveredLocal = 4, "delivered_local", [TcEndpoint];
    /// An ARP request answered from the maps.
    ArpReplied = 5, "arp_replied", [XdpUnderlay, TcEndpoint];
    /// Too big to encapsulate with DF set: answered with ICMP "fragmentation needed".
    IcmpFragNeeded = 6, "icmp_frag_needed", [TcEndpoint];
    /// To a published port, translated and delivered to a backend on this host.
    MeshLocal = 7, "mesh_local", [XdpUnderlay];
    /// To a published port, translated and tunnelled to the backend's host.
    MeshTunneled = 8, "mesh_tunneled", [XdpUnderlay];
    /// A mesh reply, translated back to the published address, sent to the client.
    MeshReplied = 9, "mesh_replied", [XdpUnderlay, TcEndpoint];
    /// A mesh backend's reply, tunnelled back to the host the request came in on.
    MeshTunneledBack = 10, "mesh_tunneled_back", [TcEndpoint];
    /// An ICMP error about a translated flow, translated too.
    IcmpTranslated = 11, "icmp_translated", [TcEndpoint];
    /// VXLAN of an encrypted network handed to WireGuard, to be encrypted
    /// to the destination's host.
    ToWireguard = 12, "to_wireguard", [TcWireguard];
    /// VXLAN decrypted by WireGuard, handed to the XDP program.
    FromWireguard = 13, "from_wireguard", [TcWireguard];
    /// A WireGuard data message with a payload from a cluster host, handed
    /// to WireGuard to authenticate and decrypt. What WireGuard rejects
    /// (failed authentication, replays, unknown keys) never reaches
    /// `from_wireguard`: `status` shows the difference as `rejected`.
    WireguardData = 14, "wireguard_data", [XdpUnderlay];
    /// A WireGuard handshake, cookie or keepalive from a cluster host,
    /// handed to WireGuard.
    WireguardControl = 15, "wireguard_control", [XdpUnderlay];
    /// Too short or malformed to parse.
    DropMalformed = 16, "drop_malformed", [XdpUnderlay, TcEndpoint, TcWireguard];
    /// VXLAN from an address that is not a cluster host.
    DropUnknownVtep = 17, "drop_unknown_vtep", [XdpUnderlay];
    /// VXLAN without the I flag.
    DropBadVxlan = 18, "drop_bad_vxlan", [XdpUnderlay];
    /// VXLAN for a VNI with no endpoint on this host.
    DropUnknownVni = 19, "drop_unknown_vni", [XdpUnderlay];
    /// VXLAN whose inner destination is not a local endpoint of that VNI.
    DropNotLocal = 20, "drop_not_local", [XdpUnderlay];
    /// A source address or MAC that does not belong to the sender.
    DropSpoofed = 21, "drop_spoofed", [XdpUnderlay, TcEndpoint];
    /// Addressed to another overlay network.
    DropCrossNetwork = 22, "drop_cross_network", [TcEndpoint];
    /// Addressed to an unused address of the sender's own network.
    DropNoEndpoint = 23, "drop_no_endpoint", [TcEndpoint];
    /// Leaving an `internal: true` network.
    DropInternal = 24, "drop_internal", [TcEndpoint];
    /// An ARP packet that is not a request we can answer.
    DropArp = 25, "drop_arp", [XdpUnderlay, TcEndpoint];
    /// Neither IPv4 nor ARP.
    DropUnsupported = 26, "drop_unsupported", [XdpUnderlay, TcEndpoint];
    /// Too big to encapsulate, DF clear (or the ICMP answer could not be built).
    DropTooBig = 27, "drop_too_big", [XdpUnderlay, TcEndpoint];
    /// The kernel refused the redirect itself (the target device is gone or down).
    DropRedirect = 28, "drop_redirect", [XdpUnderlay, TcEndpoint, TcWireguard];
    /// Arrived on a veth the maps do not know.
    DropUnknownIface = 29, "drop_unknown_iface", [TcEndpoint];
    /// For a service with no backend that could not be answered (a TCP
    /// reset, which is never answered, or a UDP datagram with IPv4 options),
    /// or for a backend the maps do not hold yet (a packet racing an apply).
    DropNoBackend = 30, "drop_no_backend", [XdpUnderlay, TcEndpoint];
    /// No resolved neighbour (MAC) for the next hop of an XDP transmit.
    DropNoNeigh = 31, "drop_no_neigh", [XdpUnderlay];
    /// A mesh packet of a flow the connection table does not know.
    DropNoFlow = 32, "drop_no_flow", [XdpUnderlay];
    /// The host's settings are not in the maps yet (a packet racing `up`).
    DropNoConfig = 33, "drop_no_config", [TcEndpoint];
    /// The kernel refused to rewrite the packet (a checksum or store helper).
    DropRewrite = 34, "drop_rewrite", [TcEndpoint];
    /// The kernel refused to mark the packet as addressed to this host.
    DropChangeType = 35, "drop_change_type", [TcEndpoint];
    /// The FIB has no usable route to the next hop (no route, a blackhole or
    /// prohibit route, forwarding off on the device).
    DropFib = 36, "drop_fib", [XdpUnderlay];
    /// The kernel refused to grow or shrink the packet (push or pop the
    /// encapsulation, cut it to an ICMP answer).
    DropResize = 37, "drop_resize", [XdpUnderlay, TcEndpoint, TcWireguard];
    /// VXLAN of an encrypted network that did not come through WireGuard
    /// (plaintext on the underlay): not authenticated.
    DropUnencrypted = 38, "drop_unencrypted", [XdpUnderlay];
    /// To the WireGuard port from an address that is not a cluster host.
    DropNotPeer = 39, "drop_not_peer", [XdpUnderlay];
    /// For an encrypted network on a host without its WireGuard device.
    DropNoWireguard = 40, "drop_no_wireguard", [XdpUnderlay, TcEndpoint, TcWireguard];
    /// For a service with no backend (none configured matches an endpoint,
    /// or every one fails its health checks): dropped and answered as a host
    /// with no listener answers, TCP with a reset, UDP with ICMP port
    /// unreachable, from the VIP or published address the client asked.
    RejectNoBackend = 41, "reject_no_backend", [XdpUnderlay, TcEndpoint];
}

pub const FIRST_DROP: u32 = 16;
/// Slots per program in the stats map.
pub const MAX_REASONS: u32 = 64;
/// The programs counted in the stats map; `tc_wireguard` counts in a map of
/// its own (`MAP_WG_STATS`), so the stats map keeps its layout.
pub const STATS_ENTRIES: u32 = 2 * MAX_REASONS;

impl Reason {
    pub const fn is_drop(self) -> bool {
        self as u32 >= FIRST_DROP
    }
}

/// Index of a (program, reason) counter in the stats map.
#[inline(always)]
pub const fn counter_index(prog: Prog, reason: Reason) -> u32 {
    prog as u32 * MAX_REASONS + reason as u32
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_their_slots_and_names_are_unique() {
        for (i, a) in REASONS.iter().enumerate() {
            assert!((*a as u32) < MAX_REASONS);
            assert_eq!(Reason::from_u32(*a as u32), Some(*a));
            let dropped = a.name().starts_with("drop_") || a.name().starts_with("reject_");
            assert_eq!(a.is_drop(), dropped, "{}", a.name());
            assert!(PROGS.iter().any(|p| a.counted_by(*p)), "{} is counted by no program", a.name());
            assert!(!a.doc().is_empty());
            for b in &REASONS[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
        assert_eq!(counter_index(Prog::TcEndpoint, Reason::PassNotOurs), MAX_REASONS);
        assert!(Prog::XdpUnderlay.reasons().any(|r| r == Reason::DropFib));
        assert!(!Prog::TcEndpoint.reasons().any(|r| r == Reason::DropFib));
    }
}
