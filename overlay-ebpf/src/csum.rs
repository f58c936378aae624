//! Internet checksums (RFC 1071) over small fixed buffers on the stack.

/// One's-complement sum of big-endian 16-bit words of `buf[from..to]`
/// (`to - from` even), not yet folded.
#[inline(always)]
pub fn sum_words(buf: &[u8], from: usize, to: usize) -> u32 {
    let mut sum: u32 = 0;
    let mut i = from;
    while i + 1 < to && i + 1 < buf.len() {
        sum += ((buf[i] as u32) << 8) | buf[i + 1] as u32;
        i += 2;
    }
    sum
}

/// Folds a sum to 16 bits and complements it.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// RFC 1624 incremental update of checksum `csum` (as on the wire) for the
/// 16-bit words `old` becoming `new` (equal, even lengths).
#[inline(always)]
pub fn replace(csum: [u8; 2], old: &[u8], new: &[u8]) -> [u8; 2] {
    let mut sum: u32 = (!u16::from_be_bytes(csum)) as u32;
    let mut i = 0;
    while i + 1 < old.len() && i + 1 < new.len() {
        sum += (!u16::from_be_bytes([old[i], old[i + 1]])) as u32;
        sum += u16::from_be_bytes([new[i], new[i + 1]]) as u32;
        i += 2;
    }
    fold(sum).to_be_bytes()
}
