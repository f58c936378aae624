//! The data-path mode: which hook the underlay program runs in on a host's
//! underlay device. Both run the same logic (decap, the routing mesh, the
//! answers to peers); they differ in what the kernel does around them.
//!
//! - **TC** (`tc_underlay_ingress` at TC ingress): the packet is an skb. GSO
//!   packets go through decap, the mesh and the redirect whole, partial
//!   checksums stay partial, and no device's offloads are touched.
//! - **XDP** (`xdp_underlay_ingress`): the frame before any skb exists. A
//!   frame dropped there (a flood, an injection attempt) costs least, and a
//!   NIC with native XDP hands the mesh's first packet over cheapest. But
//!   XDP cannot finish a partial checksum, so a veth underlay has TX checksum
//!   offload turned off, and an XDP program on a veth turns off GSO on its
//!   peer and copies every frame.
//!
//! `auto` picks per underlay device, by its driver ([`choose`]).

use serde::{Deserialize, Serialize};

use crate::host::{netdev, pins};

/// What the user asked for (`--datapath`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Datapath {
    /// By the underlay device's driver: XDP on NICs with native XDP, TC otherwise.
    #[default]
    Auto,
    /// The underlay program at TC ingress.
    Tc,
    /// The underlay program in XDP.
    Xdp,
}

/// The hook the underlay program runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Tc,
    Xdp,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tc => "tc",
            Mode::Xdp => "xdp",
        }
    }
}

/// A mode and the reason it was chosen, as `up` and `status` say it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Choice {
    pub mode: Mode,
    pub why: String,
}

/// Drivers whose XDP is native and leaves the device's receive offloads
/// alone: physical NICs, where XDP earns its keep dropping floods before
/// an skb exists. Not veth (XDP on it costs its peer GSO and every frame a
/// copy) and not virtio_net (its XDP needs the guest offloads, LRO and
/// GRO_HW, turned off): both move 64 KB packets in TC.
const NATIVE_XDP: &[&str] = &[
    "mlx5_core",
    "mlx4_en",
    "i40e",
    "ice",
    "ixgbe",
    "ixgbevf",
    "igb",
    "igc",
    "bnxt_en",
    "nfp",
    "ena",
    "qede",
    "gve",
    "sfc",
    "hv_netvsc",
    "atlantic",
    "mvneta",
    "mvpp2",
    "stmmac",
    "fec",
];

/// The mode for an underlay device with driver `driver` when `asked`.
pub fn choose(asked: Datapath, driver: Option<&str>) -> Choice {
    let drv = driver.unwrap_or("unknown");
    match asked {
        Datapath::Tc => Choice { mode: Mode::Tc, why: "set with --datapath tc".into() },
        Datapath::Xdp => Choice { mode: Mode::Xdp, why: "set with --datapath xdp".into() },
        Datapath::Auto if NATIVE_XDP.contains(&drv) => Choice {
            mode: Mode::Xdp,
            why: format!("auto: {drv} runs XDP natively, where floods and the mesh's first packets cost least"),
        },
        Datapath::Auto => Choice {
            mode: Mode::Tc,
            why: match drv {
                "veth" => {
                    "auto: a veth underlay (XDP there would turn off GSO on its peer and copy every frame)".into()
                }
                "virtio_net" => "auto: a virtio_net underlay (its XDP needs the receive offloads turned off)".into(),
                _ => format!("auto: {drv} is not known to run XDP natively (generic XDP is slower than TC)"),
            },
        },
    }
}

/// What `status` says of a host whose underlay runs `mode` (as its pinned
/// links show): why `auto` would pick it, or that it was set by hand.
pub fn explain(mode: Mode, driver: Option<&str>) -> Choice {
    let auto = choose(Datapath::Auto, driver);
    if auto.mode == mode {
        return auto;
    }
    Choice { mode, why: format!("set with --datapath {} (auto would pick {})", mode.name(), auto.mode.name()) }
}

/// What `up` did to the underlay that `down` (or `up` in another mode)
/// undoes: kept beside the host's lock, as JSON.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnderlayRecord {
    /// The underlay device.
    pub device: String,
    /// The mode its program runs in.
    pub mode: Option<Mode>,
    /// The device whose TX checksum offload `up` turned off (XDP on a veth).
    pub tx_checksum_off: Option<String>,
}

impl UnderlayRecord {
    fn path(pins: &pins::Pins) -> std::path::PathBuf {
        pins::HostLock::run_file(pins, "underlay")
    }

    /// The record; an empty one when there is none. A host an earlier
    /// release set up in XDP has none, yet its veth underlay had TX checksum
    /// offload turned off (every release before the TC mode did): that is
    /// recorded here, so that TC mode turns it back on.
    pub fn load(pins: &pins::Pins) -> UnderlayRecord {
        if let Some(r) = std::fs::read(Self::path(pins)).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
            return r;
        }
        let mut r = UnderlayRecord::default();
        for l in pins.links() {
            if l.kind == pins::LinkKind::Xdp
                && netdev::driver(&l.ifname).as_deref() == Some("veth")
                && netdev::tx_checksum(&l.ifname) == Some(false)
                && l.ifname != crate::host::wireguard::VETH_XDP
            {
                r.tx_checksum_off = Some(l.ifname.clone());
            }
        }
        r
    }

    pub fn save(&self, pins: &pins::Pins) {
        if let Ok(b) = serde_json::to_vec(self) {
            let _ = std::fs::write(Self::path(pins), b);
        }
    }

    pub fn remove(pins: &pins::Pins) {
        let _ = std::fs::remove_file(Self::path(pins));
    }

    /// Turns TX checksum offload back on where `up` turned it off (a
    /// device gone meanwhile has nothing to restore).
    pub fn restore_offload(&mut self) -> Result<(), (String, std::io::Error)> {
        if let Some(dev) = self.tx_checksum_off.take() {
            if netdev::ifindex(&dev).is_some() {
                netdev::set_tx_checksum(&dev, true).map_err(|e| (dev, e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_tc_on_veth_and_virtio_and_xdp_on_native_nics() {
        assert_eq!(choose(Datapath::Auto, Some("veth")).mode, Mode::Tc);
        assert_eq!(choose(Datapath::Auto, Some("virtio_net")).mode, Mode::Tc);
        assert_eq!(choose(Datapath::Auto, None).mode, Mode::Tc);
        assert_eq!(choose(Datapath::Auto, Some("bridge")).mode, Mode::Tc);
        assert_eq!(choose(Datapath::Auto, Some("mlx5_core")).mode, Mode::Xdp);
        assert_eq!(choose(Datapath::Auto, Some("ice")).mode, Mode::Xdp);
    }

    #[test]
    fn a_mode_asked_for_is_the_mode() {
        assert_eq!(
            choose(Datapath::Xdp, Some("veth")),
            Choice { mode: Mode::Xdp, why: "set with --datapath xdp".into() }
        );
        assert_eq!(choose(Datapath::Tc, Some("ice")).mode, Mode::Tc);
    }

    #[test]
    fn status_explains_a_mode_by_auto_or_by_hand() {
        assert_eq!(explain(Mode::Tc, Some("veth")), choose(Datapath::Auto, Some("veth")));
        assert_eq!(explain(Mode::Xdp, Some("veth")).why, "set with --datapath xdp (auto would pick tc)");
    }
}
