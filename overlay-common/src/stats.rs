//! Packet outcomes ("reasons"), counted per program in [`crate::MAP_STATS`].
//!
//! Each program handler returns a [`Reason`]; the entry point converts it to a
//! verdict once and counts it, the way Cilium does with drop reasons.

/// Programs that count into the stats map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    XdpUnderlay = 0,
    TcEndpoint = 1,
}

pub const PROGS: [Prog; 2] = [Prog::XdpUnderlay, Prog::TcEndpoint];

impl Prog {
    pub const fn name(self) -> &'static str {
        match self {
            Prog::XdpUnderlay => crate::maps::PROG_XDP_UNDERLAY,
            Prog::TcEndpoint => crate::maps::PROG_TC_ENDPOINT,
        }
    }

    /// The reasons this program can count.
    pub const fn reasons(self) -> &'static [Reason] {
        match self {
            Prog::XdpUnderlay => &[
                Reason::PassNotOurs,
                Reason::Decapsulated,
                Reason::ArpReplied,
                Reason::MeshLocal,
                Reason::MeshTunneled,
                Reason::MeshReplied,
                Reason::DropMalformed,
                Reason::DropUnknownVtep,
                Reason::DropBadVxlan,
                Reason::DropUnknownVni,
                Reason::DropNotLocal,
                Reason::DropSpoofed,
                Reason::DropUnsupported,
                Reason::DropArp,
                Reason::DropRedirect,
                Reason::DropTooBig,
                Reason::DropNoBackend,
                Reason::DropNoNeigh,
                Reason::DropNoFlow,
            ],
            Prog::TcEndpoint => &[
                Reason::Encapsulated,
                Reason::DeliveredLocal,
                Reason::PassToHost,
                Reason::ArpReplied,
                Reason::IcmpFragNeeded,
                Reason::MeshReplied,
                Reason::MeshTunneledBack,
                Reason::IcmpTranslated,
                Reason::DropMalformed,
                Reason::DropSpoofed,
                Reason::DropCrossNetwork,
                Reason::DropNoEndpoint,
                Reason::DropInternal,
                Reason::DropArp,
                Reason::DropUnsupported,
                Reason::DropTooBig,
                Reason::DropRedirect,
                Reason::DropUnknownIface,
                Reason::DropNoBackend,
            ],
        }
    }
}

/// Why a packet ended the way it did. Values below [`FIRST_DROP`] are not drops.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not overlay traffic: handed to the host stack untouched.
    PassNotOurs = 0,
    /// From a container to an address outside every overlay network: handed
    /// to the host stack, which routes and masquerades it.
    PassToHost = 1,
    /// Wrapped in VXLAN and sent to the destination's host.
    Encapsulated = 2,
    /// VXLAN unwrapped and delivered to a local container.
    Decapsulated = 3,
    /// Delivered to a container on the same host, without encapsulation.
    DeliveredLocal = 4,
    /// An ARP request answered from the maps.
    ArpReplied = 5,
    /// Too big to encapsulate with DF set: answered with ICMP "fragmentation needed".
    IcmpFragNeeded = 6,
    /// To a published port, translated and delivered to a backend on this host.
    MeshLocal = 7,
    /// To a published port, translated and tunnelled to the backend's host.
    MeshTunneled = 8,
    /// A mesh reply, translated back to the published address, sent to the client.
    MeshReplied = 9,
    /// A mesh backend's reply, tunnelled back to the host the request came in on.
    MeshTunneledBack = 10,
    /// An ICMP error about a translated flow, translated too.
    IcmpTranslated = 11,
    /// Too short or malformed to parse.
    DropMalformed = 16,
    /// VXLAN from an address that is not a cluster host.
    DropUnknownVtep = 17,
    /// VXLAN without the I flag.
    DropBadVxlan = 18,
    /// VXLAN for a VNI with no endpoint on this host.
    DropUnknownVni = 19,
    /// VXLAN whose inner destination is not a local endpoint of that VNI.
    DropNotLocal = 20,
    /// A source address or MAC that does not belong to the sender.
    DropSpoofed = 21,
    /// Addressed to another overlay network.
    DropCrossNetwork = 22,
    /// Addressed to an unused address of the sender's own network.
    DropNoEndpoint = 23,
    /// Leaving an `internal: true` network.
    DropInternal = 24,
    /// An ARP packet that is not a request we can answer.
    DropArp = 25,
    /// Neither IPv4 nor ARP.
    DropUnsupported = 26,
    /// Too big to encapsulate, DF clear.
    DropTooBig = 27,
    /// A kernel helper refused to encapsulate or redirect.
    DropRedirect = 28,
    /// Arrived on a veth the maps do not know.
    DropUnknownIface = 29,
    /// For a service with no healthy backend.
    DropNoBackend = 30,
    /// No resolved neighbour (MAC) for the next hop of an XDP transmit.
    DropNoNeigh = 31,
    /// A mesh packet of a flow the connection table does not know.
    DropNoFlow = 32,
}

pub const FIRST_DROP: u32 = 16;
/// Slots per program in the stats map.
pub const MAX_REASONS: u32 = 64;
pub const STATS_ENTRIES: u32 = PROGS.len() as u32 * MAX_REASONS;

pub const REASONS: [Reason; 29] = [
    Reason::PassNotOurs,
    Reason::PassToHost,
    Reason::Encapsulated,
    Reason::Decapsulated,
    Reason::DeliveredLocal,
    Reason::ArpReplied,
    Reason::IcmpFragNeeded,
    Reason::MeshLocal,
    Reason::MeshTunneled,
    Reason::MeshReplied,
    Reason::MeshTunneledBack,
    Reason::IcmpTranslated,
    Reason::DropMalformed,
    Reason::DropUnknownVtep,
    Reason::DropBadVxlan,
    Reason::DropUnknownVni,
    Reason::DropNotLocal,
    Reason::DropSpoofed,
    Reason::DropCrossNetwork,
    Reason::DropNoEndpoint,
    Reason::DropInternal,
    Reason::DropArp,
    Reason::DropUnsupported,
    Reason::DropTooBig,
    Reason::DropRedirect,
    Reason::DropUnknownIface,
    Reason::DropNoBackend,
    Reason::DropNoNeigh,
    Reason::DropNoFlow,
];

impl Reason {
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotOurs => "pass_not_ours",
            Reason::PassToHost => "pass_to_host",
            Reason::Encapsulated => "encapsulated",
            Reason::Decapsulated => "decapsulated",
            Reason::DeliveredLocal => "delivered_local",
            Reason::ArpReplied => "arp_replied",
            Reason::IcmpFragNeeded => "icmp_frag_needed",
            Reason::MeshLocal => "mesh_local",
            Reason::MeshTunneled => "mesh_tunneled",
            Reason::MeshReplied => "mesh_replied",
            Reason::MeshTunneledBack => "mesh_tunneled_back",
            Reason::IcmpTranslated => "icmp_translated",
            Reason::DropMalformed => "drop_malformed",
            Reason::DropUnknownVtep => "drop_unknown_vtep",
            Reason::DropBadVxlan => "drop_bad_vxlan",
            Reason::DropUnknownVni => "drop_unknown_vni",
            Reason::DropNotLocal => "drop_not_local",
            Reason::DropSpoofed => "drop_spoofed",
            Reason::DropCrossNetwork => "drop_cross_network",
            Reason::DropNoEndpoint => "drop_no_endpoint",
            Reason::DropInternal => "drop_internal",
            Reason::DropArp => "drop_arp",
            Reason::DropUnsupported => "drop_unsupported",
            Reason::DropTooBig => "drop_too_big",
            Reason::DropRedirect => "drop_redirect",
            Reason::DropUnknownIface => "drop_unknown_iface",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::DropNoNeigh => "drop_no_neigh",
            Reason::DropNoFlow => "drop_no_flow",
        }
    }

    pub const fn is_drop(self) -> bool {
        self as u32 >= FIRST_DROP
    }

    pub fn from_u32(v: u32) -> Option<Reason> {
        REASONS.iter().copied().find(|r| *r as u32 == v)
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
            assert_eq!(a.is_drop(), a.name().starts_with("drop_"));
            for b in &REASONS[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
        assert_eq!(counter_index(Prog::TcEndpoint, Reason::PassNotOurs), MAX_REASONS);
        for p in PROGS {
            for r in p.reasons() {
                assert!(REASONS.contains(r));
            }
        }
    }
}
