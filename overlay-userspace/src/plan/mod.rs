//! What the kernel should hold, computed from the state alone: the desired
//! content of every map ([`reconcile`]), the Maglev tables ([`maglev`]), the
//! incremental path for one endpoint's change ([`delta`]) and the DNS zone
//! ([`zone`]). Pure: no I/O.

pub mod delta;
pub mod maglev;
pub mod reconcile;
pub mod zone;
