//! One host's kernel: the programs ([`loader`]), their maps ([`kmaps`]) and
//! pins ([`pins`]), devices ([`netdev`], [`macvlan`], [`wireguard`]), nftables
//! ([`masquerade`]), the programs' log ([`bpf_log`]), and `up`/`down`
//! ([`apply`]), which bring it to a plan.

pub mod apply;
pub mod bpf_log;
pub mod convert;
pub mod datapath;
pub mod error;
pub mod kmaps;
pub mod loader;
pub mod macvlan;
pub mod masquerade;
pub mod netdev;
pub mod pins;
pub mod wireguard;

use crate::state::model::Capabilities;

/// What this machine's kernel can do, for the model's rules (asked once per
/// process).
pub fn capabilities() -> Capabilities {
    Capabilities { encryption: wireguard::kernel_support() }
}
