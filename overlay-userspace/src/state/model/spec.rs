//! The state file as written: serde types, as docs/state-file.md
//! names them. Defaults Docker would pick are filled in by [`super::resolve`].

use std::{collections::BTreeMap, fmt, net::Ipv4Addr, str::FromStr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// What a stored object holds beyond the fields this release knows.
pub type Unknown = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    #[serde(default)]
    pub cluster: ClusterSpec,
    #[serde(default)]
    pub hosts: Vec<HostSpec>,
    #[serde(default)]
    pub networks: Vec<NetworkSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
}

impl State {
    /// A state with nothing in it yet (`version: 1`): what a missing file or
    /// an empty store starts from.
    pub fn empty() -> State {
        State {
            version: 1,
            cluster: Default::default(),
            hosts: vec![],
            networks: vec![],
            endpoints: vec![],
            services: vec![],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterSpec {
    #[serde(default = "default_vxlan_port")]
    pub vxlan_port: u16,
    #[serde(default = "default_underlay_mtu")]
    pub underlay_mtu: u32,
    /// Seconds an idle TCP flow keeps its backend (not IPVS's
    /// 900 s, which cuts idle connections).
    #[serde(default = "default_ct_tcp_timeout")]
    pub conntrack_tcp_timeout: u32,
    /// Seconds an idle UDP flow keeps its backend.
    #[serde(default = "default_ct_udp_timeout")]
    pub conntrack_udp_timeout: u32,
    /// UDP port of WireGuard between hosts, for encrypted networks.
    #[serde(default = "default_wireguard_port", skip_serializing_if = "is_default_wireguard_port")]
    pub wireguard_port: u16,
    /// Fields this release does not know, written by a newer one: kept, so
    /// that rewriting the object does not drop them. A state file may have
    /// none (see [`super::load::parse_state`]).
    #[serde(flatten)]
    pub unknown: Unknown,
}

fn default_wireguard_port() -> u16 {
    51820
}
fn is_default_wireguard_port(p: &u16) -> bool {
    *p == default_wireguard_port()
}

fn default_ct_tcp_timeout() -> u32 {
    432_000
}
fn default_ct_udp_timeout() -> u32 {
    300
}

fn default_vxlan_port() -> u16 {
    4789
}
fn default_underlay_mtu() -> u32 {
    1500
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            vxlan_port: default_vxlan_port(),
            underlay_mtu: default_underlay_mtu(),
            conntrack_tcp_timeout: default_ct_tcp_timeout(),
            conntrack_udp_timeout: default_ct_udp_timeout(),
            wireguard_port: default_wireguard_port(),
            unknown: Unknown::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostSpec {
    pub name: String,
    pub address: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The host's WireGuard public key (base64), which encrypted networks
    /// need: `overlay-bpf host key` prints it and
    /// puts it here; the agent publishes its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_key: Option<String>,
    /// Fields this release does not know, written by a newer one: kept, so
    /// that rewriting the object does not drop them. A state file may have
    /// none (see [`super::load::parse_state`]).
    #[serde(flatten)]
    pub unknown: Unknown,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How a network's endpoints reach each other across hosts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// VXLAN between the hosts, with the eBPF data path.
    #[default]
    Overlay,
    /// A macvlan sub-interface of the host's `parent` device in each
    /// endpoint's netns: the containers sit on the underlay's own L2.
    Macvlan,
}

fn is_overlay(d: &Driver) -> bool {
    *d == Driver::Overlay
}

/// The kernel's macvlan modes (`ip link add ... type macvlan mode M`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    /// Sub-interfaces of one parent reach each other inside the host.
    #[default]
    Bridge,
    /// Sub-interfaces of one parent never reach each other.
    Private,
    /// Traffic between sub-interfaces goes out to the switch and back.
    Vepa,
    /// The one sub-interface takes over the parent.
    Passthru,
}

impl MacvlanMode {
    /// As written in the state and by `-o macvlan_mode=`.
    pub fn name(self) -> &'static str {
        match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Passthru => "passthru",
        }
    }

    pub const ALL: [MacvlanMode; 4] =
        [MacvlanMode::Bridge, MacvlanMode::Private, MacvlanMode::Vepa, MacvlanMode::Passthru];

    /// The mode `name` names (`-o macvlan_mode=`), if any.
    pub fn parse(name: &str) -> Option<MacvlanMode> {
        MacvlanMode::ALL.into_iter().find(|m| m.name() == name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NetworkSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "is_overlay")]
    pub driver: Driver,
    /// macvlan: the host device the sub-interfaces hang off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// macvlan: the mode (default bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvlan_mode: Option<MacvlanMode>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ingress: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(default)]
    pub subnets: Vec<SubnetSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub attachable: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub encrypted: bool,
    /// Set by the runtime plugins: the runtime that created the network
    /// (`docker network create`). Such a network goes from the store when the
    /// last host's runtime stops using it; others stay until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// Set by the runtime plugins: the hosts whose runtime has the network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
    /// Fields this release does not know, written by a newer one: kept, so
    /// that rewriting the object does not drop them. A state file may have
    /// none (see [`super::load::parse_state`]).
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubnetSpec {
    pub subnet: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Net>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointSpec {
    pub name: String,
    pub host: String,
    pub network: String,
    pub netns: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    /// More names for this endpoint on its network (Docker: --network-alias);
    /// a service's backends may name an alias, which stands for every
    /// endpoint carrying it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Set by the runtime plugins: which runtime made the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// Set by the runtime plugins: the runtime's id for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Set by the Docker plugin: Docker's id for this attachment (its
    /// EndpointID), by which Docker's later calls name it. The host-side
    /// veth is named from it, so it keeps its name when the endpoint is
    /// renamed after the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    /// This endpoint's host-mode published ports (`docker run -p P:T`): open
    /// on its host's address only, to it only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<EndpointPort>,
    /// Fields this release does not know, written by a newer one: kept, so
    /// that rewriting the object does not drop them. A state file may have
    /// none (see [`super::load::parse_state`]).
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Which runtime plugin made an endpoint.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Cni,
}

/// One port an endpoint publishes on its host (`docker run -p`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointPort {
    pub published: u16,
    pub target: u16,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
}

fn default_protocol() -> Protocol {
    Protocol::Tcp
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => overlay_common::PROTO_TCP,
            Protocol::Udp => overlay_common::PROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub target: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
    #[serde(default)]
    pub mode: PublishMode,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub network: String,
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub backends: Vec<String>,
    /// Fields this release does not know, written by a newer one: kept, so
    /// that rewriting the object does not drop them. A state file may have
    /// none (see [`super::load::parse_state`]).
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// A MAC address written `02:42:0a:00:00:03`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Docker's default: 02:42 followed by the IPv4 address.
    pub fn from_ipv4(ip: Ipv4Addr) -> Mac {
        let o = ip.octets();
        Mac([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("invalid MAC address {s:?}: expected six hex bytes like 02:42:0a:00:00:03"));
        }
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(format!("invalid MAC address {s:?}: expected six hex bytes like 02:42:0a:00:00:03"));
            }
            *o =
                u8::from_str_radix(p, 16).map_err(|_| format!("invalid MAC address {s:?}: {p:?} is not a hex byte"))?;
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
