//! The pure arithmetic of flows, shared by the programs and tested on the
//! host: the flow hash every host computes alike, where it lands in a Maglev
//! table, and when a connection-table entry has idled out or is due a new
//! last-seen time. The programs do the map lookups around these.

use crate::{CtKey, MAGLEV_SIZE, MAX_LB_SLOTS};

/// murmur3's 32-bit finaliser.
#[inline(always)]
pub fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// A hash of the flow: the same on every host, so every host picks alike.
#[inline(always)]
pub fn flow_hash(k: &CtKey) -> u32 {
    let a = u32::from_be_bytes(k.src);
    let b = u32::from_be_bytes(k.dst);
    let c = ((k.sport as u32) << 16) | k.dport as u32;
    fmix(fmix(fmix(a ^ 0x9e37_79b9) ^ b) ^ c ^ ((k.proto as u32) << 24))
}

/// The index into OB_MAGLEV of table `slot`'s entry for flow hash `h`;
/// `None` for a slot past the tables.
#[inline(always)]
pub fn maglev_index(slot: u32, h: u32) -> Option<u32> {
    (slot < MAX_LB_SLOTS).then(|| slot * MAGLEV_SIZE + h % MAGLEV_SIZE)
}

/// How stale an entry's last-seen time may get before a packet writes it: a
/// flow's packets write their entry once a second, not each one.
pub const LAST_SEEN_RESOLUTION_NS: u64 = 1_000_000_000;

/// Whether an entry last seen at `last_seen` (ns, the programs' monotonic
/// clock) has been idle longer than `timeout_s` seconds at `now`. Wrapping:
/// a time from before a clock wrap reads as long ago.
#[inline(always)]
pub fn idled_out(now: u64, last_seen: u64, timeout_s: u32) -> bool {
    now.wrapping_sub(last_seen) > timeout_s as u64 * 1_000_000_000
}

/// Whether a packet at `now` writes the entry's last-seen time.
#[inline(always)]
pub fn touch_due(now: u64, last_seen: u64) -> bool {
    now.wrapping_sub(last_seen) > LAST_SEEN_RESOLUTION_NS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTO_TCP;

    #[test]
    fn fmix_is_murmur3s_finaliser() {
        // murmur3_32 of the empty input with seed 1 is fmix(1): 0x514e28b7.
        assert_eq!(fmix(1), 0x514e_28b7);
        assert_eq!(fmix(0), 0);
    }

    fn key(sport: u16) -> CtKey {
        CtKey { src: [203, 0, 113, 7], dst: [10, 0, 0, 100], sport, dport: 80, proto: PROTO_TCP, _pad: [0; 3] }
    }

    #[test]
    fn the_flow_hash_is_a_function_of_the_whole_tuple() {
        let k = key(40000);
        assert_eq!(flow_hash(&k), flow_hash(&key(40000)), "every host computes the same");
        let changed = [
            CtKey { sport: 40001, ..k },
            CtKey { dport: 81, ..k },
            CtKey { src: [203, 0, 113, 8], ..k },
            CtKey { dst: [10, 0, 0, 101], ..k },
            CtKey { proto: 17, ..k },
            // Ports swapped: another flow.
            CtKey { sport: 80, dport: 40000, ..k },
        ];
        for c in changed {
            assert_ne!(flow_hash(&c), flow_hash(&k), "{c:?}");
        }
    }

    #[test]
    fn source_ports_spread_over_a_maglev_table() {
        // 16,384 client ports into 8 buckets of the table: none far from
        // its share (2048), as Maglev's evenness needs.
        let mut buckets = [0u32; 8];
        for p in 0..16_384u16 {
            let i = maglev_index(0, flow_hash(&key(40000u16.wrapping_add(p)))).unwrap();
            buckets[(i * 8 / MAGLEV_SIZE) as usize] += 1;
        }
        for b in buckets {
            assert!((1800..2300).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn a_slot_picks_within_its_own_table() {
        assert_eq!(maglev_index(0, 0), Some(0));
        assert_eq!(maglev_index(0, MAGLEV_SIZE + 5), Some(5));
        assert_eq!(maglev_index(2, 7), Some(2 * MAGLEV_SIZE + 7));
        assert_eq!(
            maglev_index(MAX_LB_SLOTS - 1, u32::MAX),
            Some((MAX_LB_SLOTS - 1) * MAGLEV_SIZE + u32::MAX % MAGLEV_SIZE)
        );
        assert_eq!(maglev_index(MAX_LB_SLOTS, 0), None);
    }

    #[test]
    fn entries_idle_out_after_their_timeout_and_are_touched_once_a_second() {
        let s = 1_000_000_000u64;
        let seen = 100 * s;
        assert!(!idled_out(seen + 60 * s, seen, 60), "at the timeout: still live");
        assert!(idled_out(seen + 60 * s + 1, seen, 60));
        // A last-seen time from before a wrap of the clock reads as long ago.
        assert!(!idled_out(5, u64::MAX - 5, 60), "11 ns across the wrap");
        assert!(idled_out(seen, seen + 1, 60), "a time in the future reads as long ago");
        assert!(!touch_due(seen + s, seen), "exactly a second: not yet");
        assert!(touch_due(seen + s + 1, seen));
        assert!(!touch_due(seen, seen));
    }
}
