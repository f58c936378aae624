//! Bounds-checked access to packet bytes, shared by XDP and TC.

/// A pointer to a `T` at `off` bytes into the packet, or `None` when the
/// packet is too short. One up-front check the verifier can follow.
#[inline(always)]
pub fn ptr_at<T>(start: usize, end: usize, off: usize) -> Option<*const T> {
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}
