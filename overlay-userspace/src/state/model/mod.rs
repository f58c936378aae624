//! The cluster state file (`version: 1`): serde types, validation and the
//! deterministic allocation of VNIs, addresses, MACs and interface names.
//!
//! Every host computes the same [`Cluster`] from the same file: nothing here
//! depends on the machine it runs on.
//!
//! Layout: [`spec`] (the file as written, serde), [`load`] (reading and
//! parsing), [`problem`] (typed problems, grouped when they repeat),
//! [`resolve`] (every rule and the allocation), and here the resolved
//! [`Cluster`] every host computes alike.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;

mod key;
mod load;
mod pinned;
mod problem;
mod resolve;
mod spec;

pub use key::Key;
pub use load::*;
pub use pinned::{pinned, remove_endpoints};
pub use problem::*;
pub use resolve::resolve;
pub use spec::*;

/// Default location of the state file, overridden by `$OVERLAY_BPF_STATE`.
pub const DEFAULT_STATE_FILE: &str = "/etc/overlay-bpf/cluster.yaml";
pub const FIRST_AUTO_VNI: u32 = 4096;
pub const MAX_VNI: u32 = 16_777_215;
/// Outer Ethernet is not counted in the MTU: IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;
/// State files larger than this are refused before parsing.
pub const MAX_STATE_BYTES: usize = 16 << 20;

// ---------------------------------------------------------------------------
// The resolved cluster
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub vxlan_port: u16,
    pub underlay_mtu: u32,
    pub conntrack_tcp_timeout: u32,
    pub conntrack_udp_timeout: u32,
    pub wireguard_port: u16,
    pub hosts: Vec<Host>,
    pub networks: Vec<Network>,
    pub endpoints: Vec<Endpoint>,
    pub services: Vec<Service>,
    /// What the state is worth a warning for, though it breaks no rule (a
    /// backend name that matches no endpoint yet).
    pub warnings: Vec<Problem>,
    /// What the machine could do that the state was resolved for.
    pub caps: Capabilities,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub address: Ipv4Addr,
    pub interface: Option<String>,
    /// Its WireGuard public key, once it has published one.
    pub wireguard_key: Option<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ip_range: Option<Ipv4Net>,
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub name: String,
    pub subnets: Vec<Subnet>,
    pub attachable: bool,
    pub internal: bool,
    /// What carries it between hosts, with what only that kind has.
    pub kind: NetworkKind,
}

/// A network's kind: a VXLAN overlay between the hosts, or macvlan
/// sub-interfaces on the hosts' LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkKind {
    Overlay(Overlay),
    Macvlan(Macvlan),
}

/// An overlay network's VXLAN side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    pub vni: u32,
    /// The endpoints' MTU: the underlay's less VXLAN (and WireGuard).
    pub mtu: u32,
    pub encrypted: bool,
    /// The routing mesh's network.
    pub ingress: bool,
}

/// A macvlan network's sub-interfaces: of which host device, in which mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macvlan {
    pub parent: String,
    pub mode: MacvlanMode,
    /// None: the parent's.
    pub mtu: Option<u32>,
}

impl Network {
    /// The subnet holding `ip`, if any.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.subnet.contains(&ip))
    }

    pub fn overlay(&self) -> Option<&Overlay> {
        match &self.kind {
            NetworkKind::Overlay(o) => Some(o),
            NetworkKind::Macvlan(_) => None,
        }
    }

    pub fn macvlan(&self) -> Option<&Macvlan> {
        match &self.kind {
            NetworkKind::Macvlan(m) => Some(m),
            NetworkKind::Overlay(_) => None,
        }
    }

    /// The VXLAN network identifier; a macvlan network has none.
    pub fn vni(&self) -> Option<u32> {
        self.overlay().map(|o| o.vni)
    }

    /// Between hosts only through WireGuard (never a macvlan network).
    pub fn encrypted(&self) -> bool {
        self.overlay().is_some_and(|o| o.encrypted)
    }

    /// The routing mesh's network (never a macvlan network).
    pub fn ingress(&self) -> bool {
        self.overlay().is_some_and(|o| o.ingress)
    }

    /// The endpoints' MTU; None: a macvlan network's parent's.
    pub fn mtu(&self) -> Option<u32> {
        match &self.kind {
            NetworkKind::Overlay(o) => Some(o.mtu),
            NetworkKind::Macvlan(m) => m.mtu,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub name: String,
    /// What identifies the endpoint on its host and in health reports: its
    /// name for the first endpoint of that name in the state, `name@network`
    /// for a later one (names are unique per network, so a container on two
    /// networks has one endpoint on each). Its host-side veth is named from it.
    pub key: String,
    /// More names on its network (`aliases:`).
    pub aliases: Vec<String>,
    /// Index into [`Cluster::hosts`].
    pub host: usize,
    /// Index into [`Cluster::networks`].
    pub network: usize,
    /// Path of the network namespace file.
    pub netns: PathBuf,
    pub ifname: String,
    pub ip: Ipv4Addr,
    /// Prefix length of the subnet holding `ip`.
    pub prefix_len: u8,
    /// Gateway of the subnet holding `ip`.
    pub gateway: Ipv4Addr,
    pub mac: Mac,
    /// This interface carries its netns's default route: the first endpoint
    /// of the netns on a non-internal network, else its first endpoint.
    pub default_route: bool,
    /// Which runtime made it (`None`: the file or the CLI).
    pub runtime: Option<Runtime>,
    /// Docker's EndpointID, for endpoints the Docker plugin made.
    pub endpoint_id: Option<String>,
}

impl Endpoint {
    /// The host-side veth's name: from Docker's EndpointID where there is
    /// one (the endpoint is renamed after its container once Docker says
    /// which), else from the key.
    pub fn veth(&self) -> String {
        host_veth_name(self.endpoint_id.as_deref().unwrap_or(&self.key))
    }

    /// Docker makes the container's end and moves it into the container:
    /// `up` only adopts the host end, when there is one.
    pub fn docker(&self) -> bool {
        self.runtime == Some(Runtime::Docker)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub network: usize,
    pub endpoint_mode: EndpointMode,
    pub vip: Option<Ipv4Addr>,
    pub ports: Vec<PortSpec>,
    /// Indexes into [`Cluster::endpoints`].
    pub backends: Vec<usize>,
}

impl Cluster {
    pub fn host_index(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }
    pub fn network_index(&self, name: &str) -> Option<usize> {
        self.networks.iter().position(|n| n.name == name)
    }
    /// Endpoints that run on host `h`.
    pub fn local_endpoints(&self, h: usize) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(move |e| e.host == h)
    }
}

/// The resolved MTU of a network: its `mtu`, else the underlay's minus VXLAN.
pub fn network_mtu(spec: &NetworkSpec, underlay_mtu: u32) -> u32 {
    match spec.driver {
        // The parent's, which only its host knows.
        Driver::Macvlan => spec.mtu.unwrap_or(0),
        Driver::Overlay => spec.mtu.unwrap_or(underlay_mtu.saturating_sub(overhead(spec))),
    }
}

/// What the underlay carries around an endpoint's packet of network `spec`:
/// VXLAN, and WireGuard's own headers for an encrypted network.
pub fn overhead(spec: &NetworkSpec) -> u32 {
    VXLAN_OVERHEAD + if spec.encrypted { overlay_common::WIREGUARD_OVERHEAD as u32 } else { 0 }
}

/// Network namespace path for a `netns:` value.
pub fn netns_path(netns: &str) -> PathBuf {
    if netns.starts_with('/') {
        PathBuf::from(netns)
    } else {
        Path::new("/run/netns").join(netns)
    }
}

/// The first usable address of a subnet: the default gateway (Docker's too).
pub fn first_usable(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// 64-bit FNV-1a: the stable hash behind address allocation and names.
/// The host-side veth name of an endpoint: `ob` + 8 hex digits of a hash of
/// its name, so it is stable across runs and fits IFNAMSIZ.
pub fn host_veth_name(endpoint: &str) -> String {
    format!("ob{:08x}", fnv1a(endpoint.as_bytes()) as u32)
}

/// True for names [`host_veth_name`] produces.
pub fn is_host_veth_name(name: &str) -> bool {
    name.len() == 10 && name.starts_with("ob") && name[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;
