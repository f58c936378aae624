//! overlay-bpf: Docker-style multi-host overlay networking with the data path
//! in eBPF. The binary (`overlay-bpf`) is a thin CLI over this library.

pub mod agent;
pub mod apply;
pub mod bpf_log;
pub mod cni;
pub mod delta;
pub mod dns;
#[cfg(feature = "docker")]
pub mod docker;
pub mod endpoint_cmd;
pub mod error;
pub mod health;
pub mod host_cmd;
pub mod kmaps;
pub mod loader;
pub mod macvlan;
pub mod maglev;
pub mod masquerade;
pub mod metrics;
pub mod model;
pub mod netdev;
pub mod network_cmd;
pub mod pins;
pub mod reconcile;
pub mod runtime;
pub mod service_cmd;
pub mod status;
pub mod store;
pub mod wireguard;
