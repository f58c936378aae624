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
            Prog::XdpUnderlay => &[Reason::PassNotOurs, Reason::PassVxlan, Reason::DropMalformed],
            Prog::TcEndpoint => &[Reason::PassFromEndpoint, Reason::DropMalformed],
        }
    }
}

/// Why a packet ended the way it did. Values below [`FIRST_DROP`] are not drops.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not overlay traffic: handed to the host stack untouched.
    PassNotOurs = 0,
    /// VXLAN to our port; decapsulation arrives with the overlay data path.
    PassVxlan = 1,
    /// Sent by a local endpoint; forwarding arrives with the overlay data path.
    PassFromEndpoint = 2,
    /// Too short or malformed to parse.
    DropMalformed = 16,
}

pub const FIRST_DROP: u32 = 16;
/// Slots per program in the stats map.
pub const MAX_REASONS: u32 = 32;
pub const STATS_ENTRIES: u32 = PROGS.len() as u32 * MAX_REASONS;

pub const REASONS: [Reason; 4] =
    [Reason::PassNotOurs, Reason::PassVxlan, Reason::PassFromEndpoint, Reason::DropMalformed];

impl Reason {
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotOurs => "pass_not_ours",
            Reason::PassVxlan => "pass_vxlan",
            Reason::PassFromEndpoint => "pass_from_endpoint",
            Reason::DropMalformed => "drop_malformed",
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
