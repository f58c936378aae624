//! The cluster's state: what it is ([`model`], a pure function of the state
//! and the machine's [`model::Capabilities`]), where it lives ([`store`]: a
//! file or etcd), and every edit a user or a runtime makes to it ([`ops`]).
//! Nothing here touches the kernel.

pub mod error;
pub mod model;
pub mod ops;
pub mod store;
