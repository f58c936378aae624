//! Tasks that end with their owner.

/// A spawned task, aborted when this is dropped: a server or a loop that
/// lives exactly as long as what started it.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
