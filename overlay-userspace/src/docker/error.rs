//! What the Docker plugin refuses: one variant per rule that only Docker's
//! calls can break (Docker's IPAM, its option spellings, its call order).
//! Every rule the state has too (option values, overlaps, encryption, the
//! model's rules) comes from the state layer's own typed errors, so Docker,
//! the CLI and CNI users read the same words for the same rule.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A Docker-only rule, broken by what Docker asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("a request overlay-bpf cannot read: {0}")]
    Unreadable(String),
    #[error("pool {0:?} is not one of overlay-bpf's")]
    NotOurPool(String),
    #[error("overlay-bpf networks are IPv4 only: drop --ipv6")]
    Ipv6,
    #[error(
        "give the network its subnet: docker network create -d overlay-bpf --ipam-driver overlay-bpf \
         --subnet 10.0.9.0/24 NAME (every host must use the same one)"
    )]
    NoSubnet,
    #[error("{flag} {value}: not an IPv4 subnet")]
    NotIpv4Subnet { flag: &'static str, value: String },
    #[error("address {0:?} is not IPv4")]
    NotIpv4Address(String),
    #[error("--gateway {asked}: the store's network of {pool} has gateway {stored}; use it or leave --gateway out")]
    OtherGateway { asked: Ipv4Addr, pool: Ipv4Net, stored: Ipv4Addr },
    #[error("no network of {0} to allocate from")]
    NoNetworkOf(Ipv4Net),
    #[error("the store gave no address")]
    NoAddress,
    #[error("the network has no IPv4 pool; give it --subnet")]
    NoPool,
    #[error(
        "the network's addresses come from Docker's default IPAM, which allocates on each host alone and would \
         hand out the same address on two hosts: add --ipam-driver overlay-bpf"
    )]
    DefaultIpam,
    #[error("one --subnet per overlay-bpf network from Docker")]
    SubnetsMany,
    #[error("-o parent={parent}: no such device on host {host}; name a device every host has (`ip link`)")]
    NoParent { parent: String, host: String },
    #[error(
        "-o macvlan_mode=passthru: Docker would set the container's MAC on the parent device itself; use bridge \
         (the default), private or vepa, or passthru through the state file or CNI"
    )]
    PassthruFromDocker,
    #[error("the endpoint has no IPv4 address from overlay-bpf's IPAM (--ipam-driver overlay-bpf)")]
    NoEndpointAddress,
    #[error("MAC address {value:?}: {why}")]
    BadMac { value: String, why: String },
    #[error("no address {0} was handed out here by overlay-bpf's IPAM")]
    NotHandedOut(Ipv4Addr),
    #[error("{ip} is reserved on network {network} (aux address {aux}); give the container another --ip")]
    Reserved { ip: Ipv4Addr, network: String, aux: String },
    #[error("endpoint {0} is not in the overlay-bpf store")]
    NoEndpoint(String),
    #[error("network {0} is not in the store")]
    NoNetwork(String),
    #[error("the {0} left the store meanwhile")]
    Gone(&'static str),
    #[error("names {name} and {name}.{host} are both taken on {network}")]
    NamesTaken { name: String, host: String, network: String },
    #[error("-p: {0}")]
    BadPortMap(String),
    #[error("-p with IP protocol {0}: only tcp and udp publish")]
    PortProtocol(u8),
    #[error("-p with a range of host ports: publish each port on its own")]
    PortRange,
    #[error("-p {0}: give the host port (-p HOST:{0})")]
    NoHostPort(u16),
    #[error("Docker's network has no name")]
    Unnamed,
    #[error("the agent is stopping")]
    AgentStopping,
    #[error("the agent did not apply the change within {0} s")]
    AgentSlow(u64),
    #[error("the agent could not apply the change: {0}")]
    NotApplied(String),
    #[error("Docker's API: {0}")]
    DockerApi(String),
}

/// What a plugin call fails with: a Docker-only rule, or what the state,
/// the store and the host fail with for every front end.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Overlay(#[from] crate::error::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::state::error::Error> for Error {
    fn from(e: crate::state::error::Error) -> Error {
        Error::Overlay(e.into())
    }
}

/// The state layer's own errors, through its sum type.
macro_rules! through_state {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::from(crate::state::error::Error::from(e))
            }
        }
    )*};
}
through_state!(
    crate::state::model::StateError,
    crate::state::ops::network::NetworkError,
    crate::state::store::StoreError
);

/// The host layer's, through the library's sum type.
macro_rules! through_overlay {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Overlay(e.into())
            }
        }
    )*};
}
through_overlay!(crate::host::netdev::NetdevError, crate::host::apply::ApplyError);
