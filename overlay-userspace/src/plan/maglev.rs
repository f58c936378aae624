//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): each backend gets
//! a pseudo-random permutation of the table's slots from two hashes of its
//! name, and backends take turns claiming their next free preferred slot
//! until the table is full. Every backend ends with almost the same number of
//! slots, and removing one of N backends moves about 1/N of the slots, all of
//! them the removed backend's own.
//!
//! The table is built here, in userspace, and written into a flat array map;
//! the data path only indexes it with a flow hash.

use crate::state::model::fnv1a;

/// Slots per table: a prime, as Maglev needs.
pub const TABLE_SIZE: usize = 16_381;

/// The (offset, skip) of a backend's permutation, from two independent hashes
/// of its stable identity.
fn permutation(id: &str, m: usize) -> (usize, usize) {
    let h1 = fnv1a(id.as_bytes());
    let h2 = fnv1a(format!("{id}\u{0}maglev-skip").as_bytes());
    ((h1 % m as u64) as usize, (h2 % (m as u64 - 1)) as usize + 1)
}

/// Builds a table of `m` slots (prime) for `backends` (stable identities, in
/// any order: the result does not depend on it). Each slot holds an index
/// into `backends`; `None` when there are no backends.
pub fn table(backends: &[&str], m: usize) -> Option<Vec<u32>> {
    if backends.is_empty() {
        return None;
    }
    // A fixed order, so the table depends on the set, not the list.
    let mut order: Vec<usize> = (0..backends.len()).collect();
    order.sort_by(|a, b| backends[*a].cmp(backends[*b]));
    let perms: Vec<(usize, usize)> = order.iter().map(|&i| permutation(backends[i], m)).collect();
    let mut next = vec![0usize; order.len()];
    let mut entry = vec![u32::MAX; m];
    let mut filled = 0;
    'fill: loop {
        for (k, &i) in order.iter().enumerate() {
            let (offset, skip) = perms[k];
            let mut c = (offset + next[k] * skip) % m;
            while entry[c] != u32::MAX {
                next[k] += 1;
                c = (offset + next[k] * skip) % m;
            }
            entry[c] = i as u32;
            next[k] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("web.{i}")).collect()
    }

    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn every_backend_gets_its_share_within_a_few_percent() {
        for n in [2, 3, 5, 10, 33] {
            let b = names(n);
            let t = table(&refs(&b), TABLE_SIZE).unwrap();
            let mut count = vec![0usize; n];
            for &s in &t {
                count[s as usize] += 1;
            }
            let ideal = TABLE_SIZE as f64 / n as f64;
            let worst = count.iter().map(|c| (*c as f64 - ideal).abs() / ideal).fold(0.0, f64::max);
            eprintln!("maglev spread: {n} backends, worst {:.2}% from the ideal {ideal:.0} slots", worst * 100.0);
            for (i, c) in count.iter().enumerate() {
                let dev = (*c as f64 - ideal).abs() / ideal;
                assert!(dev < 0.03, "n={n}: backend {i} has {c} slots, ideal {ideal:.0} ({:.1}% off)", dev * 100.0);
            }
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth_and_only_its_own() {
        for n in [3, 5, 10, 20] {
            let b = names(n);
            let before = table(&refs(&b), TABLE_SIZE).unwrap();
            let gone = n / 2;
            let kept: Vec<String> = b.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, s)| s.clone()).collect();
            let after = table(&refs(&kept), TABLE_SIZE).unwrap();
            let name_before = |s: u32| &b[s as usize];
            let name_after = |s: u32| &kept[s as usize];
            let mut moved = 0;
            let mut moved_from_others = 0;
            for (x, y) in before.iter().zip(&after) {
                if name_before(*x) != name_after(*y) {
                    moved += 1;
                    if *x as usize != gone {
                        moved_from_others += 1;
                    }
                }
            }
            let share = moved as f64 / TABLE_SIZE as f64;
            eprintln!("maglev removal: 1 of {n} removed, {:.2}% of slots moved (1/N = {:.2}%), {moved_from_others} from others", share * 100.0, 100.0 / n as f64);
            // Maglev's promise: close to 1/N; the paper allows a little more.
            assert!(share < 1.0 / n as f64 * 1.6, "n={n}: {:.1}% of slots moved", share * 100.0);
            assert!(
                (moved_from_others as f64) < 0.02 * TABLE_SIZE as f64,
                "n={n}: {moved_from_others} slots of remaining backends moved"
            );
        }
    }

    #[test]
    fn the_table_depends_on_the_set_not_the_order() {
        let b = names(7);
        let mut r = refs(&b);
        let t1 = table(&r, TABLE_SIZE).unwrap();
        r.reverse();
        let t2 = table(&r, TABLE_SIZE).unwrap();
        let n1: Vec<&str> = t1.iter().map(|&i| b[i as usize].as_str()).collect();
        let n2: Vec<&str> = t2.iter().map(|&i| r[i as usize]).collect();
        assert_eq!(n1, n2);
        assert_eq!(table(&[], TABLE_SIZE), None);
        assert!(table(&["only"], TABLE_SIZE).unwrap().iter().all(|&i| i == 0));
    }
}
