//! Every edit a user or a runtime can make to the state: networks,
//! endpoints, services and hosts created, changed and removed. The CLI, the
//! Docker plugin and the CNI plugin all edit through these.

pub mod endpoint;
pub mod host;
pub mod network;
pub mod runtime;
pub mod service;
