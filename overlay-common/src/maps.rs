//! BPF map names, keys and values.
//!
//! Map names carry a version suffix (`_V1`): when the layout of a key or value
//! changes, bump it, so a new loader never reuses an old pinned map with an
//! incompatible layout. Addresses are stored as `[u8; 4]` in network order
//! (bpftool prints them as four decimal bytes); ports and other numbers are in
//! host order unless a field says otherwise.

pub use overlay_wire::nat::Tuple;

use crate::stats::{MAX_REASONS, STATS_ENTRIES};

/// Every map, once: the name userspace knows it by, its name in the object
/// and in bpffs (which carries its layout version), its kind, key and value,
/// and its size. The eBPF crate declares its maps from this list, userspace
/// takes their names, order and sizes from it ([`ALL_MAPS`], [`MAP_SIZES`]):
/// a new map is one line here plus the code that uses it.
///
/// `for_each_map!(m)` calls macro `m` with the whole list.
#[macro_export]
macro_rules! for_each_map {
    ($m:ident) => {
        $m! {
            /// Single-entry array holding the host's own data-path settings.
            MAP_CONFIG = OB_CONFIG_V3: Array<HostConfig>[1];
            /// (VNI, IPv4) -> endpoint, for every endpoint in the cluster.
            MAP_ENDPOINTS = OB_ENDPOINTS_V1: HashMap<EndpointKey, EndpointValue>[MAX_ENDPOINTS];
            /// VNI -> network settings, for every network in the cluster.
            MAP_NETWORKS = OB_NETWORKS_V1: HashMap<u32, NetworkValue>[MAX_NETWORKS];
            /// Longest-prefix match of overlay subnets -> VNI.
            MAP_SUBNETS = OB_SUBNETS_V1: LpmTrie<[u8; 4], SubnetValue>[MAX_SUBNETS];
            /// Host-side veth ifindex -> the local endpoint behind it.
            MAP_IFACES = OB_IFACES_V3: HashMap<u32, IfaceValue>[MAX_IFACES];
            /// The cluster's hosts' underlay IPv4 addresses (VXLAN tunnel end
            /// points): a set, every value [`PRESENT`].
            MAP_VTEPS = OB_VTEPS_V2: HashMap<[u8; 4], u8>[MAX_VTEPS];
            /// (address, port, protocol) -> service; VIPs and published ports.
            MAP_SERVICES = OB_SERVICES_V3: HashMap<ServiceKey, ServiceValue>[MAX_SERVICES];
            /// Maglev tables: MAX_LB_SLOTS tables of MAGLEV_SIZE backend
            /// addresses, flattened (slot * MAGLEV_SIZE + index); 0.0.0.0 = no backend.
            MAP_MAGLEV = OB_MAGLEV_V1: Array<[u8; 4]>[MAX_LB_SLOTS * MAGLEV_SIZE];
            /// The (service, backend address) pairs whose backend is in the
            /// service's tables: a set, every value [`PRESENT`].
            MAP_BACKENDS = OB_BACKENDS_V2: HashMap<BackendKey, u8>[MAX_BACKENDS];
            /// Per-CPU (service, backend) -> packets, bytes, new flows.
            MAP_BACKEND_STATS = OB_BACKEND_STATS_V1: PerCpuHashMap<BackendKey, BackendStats>[MAX_BACKENDS];
            /// LRU connection table of translated flows, keyed by the packet as
            /// seen (sized by `up --ct-size` when created).
            MAP_CT = OB_CT_V2: LruHashMap<CtKey, CtValue>[CT_DEFAULT_SIZE];
            /// Per-CPU packet/byte counters indexed by `counter_index`.
            MAP_STATS = OB_STATS_V3: PerCpuArray<Counter>[STATS_ENTRIES];
            /// LRU cache, written by XDP: cluster host's underlay address -> the
            /// next hop (egress device, MACs) the kernel's FIB gave, re-checked
            /// every NEXT_HOP_TTL_NS.
            MAP_NEXT_HOPS = OB_NEXT_HOPS_V1: LruHashMap<[u8; 4], NextHop>[MAX_VTEPS];
            /// Data-path debug logs through aya-log: 1 on, 0 off (`up
            /// --bpf-log`). Read only on the rare paths that log.
            MAP_LOG = OB_LOG_V1: Array<u32>[1];
            /// Encrypted networks: this host's WireGuard devices and port
            /// (all 0 without an encrypted network). A map of its own, so the
            /// settings maps of earlier builds keep their layout.
            MAP_WIREGUARD = OB_WIREGUARD_V1: Array<WgConfig>[1];
            /// Per-CPU counters of `tc_wireguard`, indexed by reason (the
            /// other programs' are in OB_STATS).
            MAP_WG_STATS = OB_WG_STATS_V1: PerCpuArray<Counter>[MAX_REASONS];
        }
    };
}

macro_rules! names {
    ($($(#[doc = $doc:literal])* $alias:ident = $name:ident : $kind:ident<$($t:ty),+>[$size:expr];)+) => {
        $($(#[doc = $doc])* pub const $alias: &str = stringify!($name);)+
        /// Every map, in the order `status` shows them.
        pub const ALL_MAPS: &[&str] = &[$(stringify!($name)),+];
        /// Every map's declared size (entries), by name.
        pub const MAP_SIZES: &[(&str, u32)] = &[$((stringify!($name), $size)),+];
    };
}
for_each_map!(names);

/// aya-log's ring buffer of log records, declared by aya-log-ebpf; pinned
/// beside the maps above so that programs loaded by different `up` runs log
/// into one buffer, which the agent reads.
pub const MAP_LOG_RING: &str = "AYA_LOGS";

/// How long XDP trusts a cached next hop before asking the FIB again: a
/// neighbour's new MAC is picked up within this time.
pub const NEXT_HOP_TTL_NS: u64 = 1_000_000_000;

pub const MAX_ENDPOINTS: u32 = 65_536;
pub const MAX_NETWORKS: u32 = 4_096;
pub const MAX_SUBNETS: u32 = 4_096;
pub const MAX_IFACES: u32 = 16_384;
pub const MAX_VTEPS: u32 = 4_096;
pub const MAX_SERVICES: u32 = 16_384;
/// Slots of a Maglev table: a prime.
pub const MAGLEV_SIZE: u32 = 16_381;
/// Maglev tables (one per VIP service, one more per service published in
/// host mode): 256 x 16381 x 4 bytes = 16.8 MB per host.
pub const MAX_LB_SLOTS: u32 = 256;
pub const MAX_BACKENDS: u32 = 65_536;
/// Default size of the connection table (entries; LRU beyond). `up --ct-size`
/// picks another, within `CT_MIN_SIZE..=CT_MAX_SIZE`.
pub const CT_DEFAULT_SIZE: u32 = 262_144;
/// Below this the kernel's LRU, which keeps up to 128 free entries per CPU
/// aside, evicts erratically.
pub const CT_MIN_SIZE: u32 = 1_024;
/// 16M entries: about 2 GB of kernel memory.
pub const CT_MAX_SIZE: u32 = 16_777_216;

/// The MAC a network's gateway answers ARP with: 02:42 + its IPv4 address,
/// the way Docker derives MACs.
#[inline(always)]
pub const fn gateway_mac(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0x42, ip[0], ip[1], ip[2], ip[3]]
}

pub use overlay_wire::vxlan::{
    ENCAP_LEN as VXLAN_ENCAP_LEN, FLAG_I as VXLAN_FLAG_I, MESH_FWD as VXLAN_MESH_FWD, MESH_REPLY as VXLAN_MESH_REPLY,
    SPORT_BASE as VXLAN_SPORT_BASE,
};

/// What WireGuard adds around a packet it encrypts over IPv4: outer IPv4
/// (20) and UDP (8) headers, its data header (16) and the AEAD tag (16).
pub const WIREGUARD_OVERHEAD: usize = 60;

/// Program names as they appear in the object file and in bpftool.
pub const PROG_XDP_UNDERLAY: &str = "xdp_underlay_ingress";
pub const PROG_TC_ENDPOINT: &str = "tc_endpoint_egress";
pub const PROG_TC_WIREGUARD: &str = "tc_wireguard";
pub const PROG_TC_UNDERLAY: &str = "tc_underlay_ingress";
/// Empty programs in the same object: the baseline of the per-packet benchmarks.
pub const PROG_BENCH_EMPTY_XDP: &str = "bench_empty_xdp";
pub const PROG_BENCH_EMPTY_TC: &str = "bench_empty_tc";

/// The host's own settings (key 0 of [`MAP_CONFIG`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// This host's underlay (data-path) address.
    pub underlay_ip: [u8; 4],
    /// ifindex of the underlay device the XDP program is attached to.
    pub underlay_ifindex: u32,
    /// UDP destination port of VXLAN traffic.
    pub vxlan_port: u16,
    /// MTU of the underlay links.
    pub underlay_mtu: u16,
    /// Idle time after which a connection-table entry no longer pins its
    /// flow's backend, per protocol, in seconds (V2; V3 drops `host_id`,
    /// which nothing read).
    pub ct_tcp_timeout: u32,
    pub ct_udp_timeout: u32,
}

/// Encrypted networks (key 0 of [`MAP_WIREGUARD`]): the WireGuard device
/// (0: none on this host), its UDP port, and the veth pair beside it:
/// decrypted VXLAN leaves TC through `tc_ifindex` and arrives at the XDP
/// program on its peer `xdp_ifindex`; XDP sends what it encapsulates for an
/// encrypted network out of `xdp_ifindex`, and TC takes it on to WireGuard.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WgConfig {
    pub ifindex: u32,
    pub tc_ifindex: u32,
    pub xdp_ifindex: u32,
    pub port: u16,
    pub _pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    pub vni: u32,
    pub ip: [u8; 4],
}

/// The endpoint is on this host; `ifindex` is its host-side veth.
pub const ENDPOINT_F_LOCAL: u32 = 1;
/// Not an endpoint but a service VIP: answered in ARP (MAC 02:42 + VIP) so
/// clients send to it; only its TCP/UDP ports lead anywhere.
pub const ENDPOINT_F_VIP: u32 = 2;
/// The endpoint backs a service: its replies may need translating back
/// (connection table); other endpoints' packets skip that lookup.
pub const ENDPOINT_F_BACKEND: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointValue {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Host-side veth ifindex when local, 0 when remote.
    pub ifindex: u32,
    /// Underlay address of the host running the endpoint.
    pub vtep: [u8; 4],
    /// `ENDPOINT_F_*` bits.
    pub flags: u32,
}

/// `internal: true`: traffic never leaves the overlay.
pub const NETWORK_F_INTERNAL: u32 = 1;
// 2 was the routing-mesh network's bit, which no program read: free.
/// At least one endpoint of this network runs on this host.
pub const NETWORK_F_LOCAL: u32 = 4;
/// `encrypted: true`: between hosts only through WireGuard.
pub const NETWORK_F_ENCRYPTED: u32 = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkValue {
    /// Gateway address of the network's first subnet.
    pub gateway: [u8; 4],
    /// MAC answered for gateway ARP requests.
    pub gateway_mac: [u8; 6],
    /// MTU of the network's endpoints.
    pub mtu: u16,
    /// `NETWORK_F_*` bits.
    pub flags: u32,
}

/// Key of the subnet LPM trie: the prefix length, then the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubnetValue {
    pub vni: u32,
    pub gateway: [u8; 4],
}

/// The local endpoint behind a host-side veth (V2: adds `host_mac`; V3: adds
/// `flags`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceValue {
    pub vni: u32,
    /// The endpoint's own address and MAC: the only ones it may send from.
    pub ip: [u8; 4],
    pub mac: [u8; 6],
    /// MAC of the host-side veth: traffic leaving the overlay is addressed to
    /// it so the host stack routes it.
    pub host_mac: [u8; 6],
    /// `ENDPOINT_F_*` bits of the endpoint (`ENDPOINT_F_BACKEND` matters here).
    pub flags: u32,
}

/// The value of the set-like maps ([`MAP_VTEPS`], [`MAP_BACKENDS`]): the
/// programs ask only whether a key is there, and a BPF hash map needs a value.
/// (Their V1 values held a host index and flags that nothing read.)
pub const PRESENT: u8 = 1;

pub use overlay_wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The VIP, or 0.0.0.0 for a published port on every host address.
    pub addr: [u8; 4],
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// A published port (routing mesh) rather than a VIP.
pub const SERVICE_F_PUBLISHED: u32 = 1;
/// Published with `mode: host`: only local backends answer.
pub const SERVICE_F_HOST_MODE: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Stable id of the service (a hash of its name).
    pub service_id: u32,
    pub vni: u32,
    /// The backends' port.
    pub target_port: u16,
    pub _pad: u16,
    /// `SERVICE_F_*` bits.
    pub flags: u32,
    /// Which Maglev table picks this entry's backends (V2; V3 drops
    /// `backend_count`, which nothing read).
    pub lb_slot: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    pub service_id: u32,
    pub ip: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
}

/// A flow as a packet shows it (addresses and ports as on the wire).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CtKey {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// What a connection-table entry does to the packets of its flow.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtAction {
    /// Forward packet of a VIP or mesh flow: rewrite to the backend, deliver.
    Dnat = 1,
    /// Reply at the client's host: rewrite the source back to the VIP.
    RevNat = 2,
    /// Reply at a mesh backend's host: tunnel it back to the ingress host (`vtep`).
    Tunnel = 3,
    /// Reply at the ingress host: source back to the host address and
    /// published port, out of the underlay to the client.
    SnatOut = 4,
}

impl CtAction {
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Option<CtAction> {
        match v {
            1 => Some(CtAction::Dnat),
            2 => Some(CtAction::RevNat),
            3 => Some(CtAction::Tunnel),
            4 => Some(CtAction::SnatOut),
            _ => None,
        }
    }
}

pub const CT_DNAT: u8 = CtAction::Dnat as u8;
pub const CT_REVNAT: u8 = CtAction::RevNat as u8;
pub const CT_TUNNEL: u8 = CtAction::Tunnel as u8;
pub const CT_SNAT_OUT: u8 = CtAction::SnatOut as u8;

impl CtKey {
    /// The key of a packet of flow `t`.
    #[inline(always)]
    pub fn new(t: &Tuple, proto: u8) -> CtKey {
        CtKey { src: t.src, dst: t.dst, sport: t.sport, dport: t.dport, proto, _pad: [0; 3] }
    }

    #[inline(always)]
    pub fn tuple(&self) -> Tuple {
        Tuple { src: self.src, dst: self.dst, sport: self.sport, dport: self.dport }
    }

    /// The key of the flow's packets in the other direction.
    #[inline(always)]
    pub fn reversed(&self) -> CtKey {
        CtKey::new(&self.tuple().reversed(), self.proto)
    }
}

impl CtValue {
    /// `None` for an entry no program writes.
    #[inline(always)]
    pub fn action(&self) -> Option<CtAction> {
        CtAction::from_u8(self.action)
    }

    /// What the entry rewrites its packets to.
    #[inline(always)]
    pub fn tuple(&self) -> Tuple {
        Tuple { src: self.new_src, dst: self.new_dst, sport: self.new_sport, dport: self.new_dport }
    }

    /// Sets what the entry rewrites its packets to.
    #[inline(always)]
    pub fn with_tuple(mut self, t: &Tuple) -> CtValue {
        self.set_tuple(t);
        self
    }

    /// Sets what the entry rewrites its packets to, in place.
    #[inline(always)]
    pub fn set_tuple(&mut self, t: &Tuple) {
        (self.new_src, self.new_dst, self.new_sport, self.new_dport) = (t.src, t.dst, t.sport, t.dport);
    }

    /// Whether the carried fields may be used at `now`: set, and read from
    /// their maps less than `NEXT_HOP_TTL_NS` ago.
    #[inline(always)]
    pub fn carried_at(&self, now: u64) -> bool {
        self.flags & CT_F_CARRIED != 0 && now.wrapping_sub(self.carried_ns) < NEXT_HOP_TTL_NS
    }
}

/// A next hop as `bpf_fib_lookup` gave it, and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub checked_ns: u64,
}

/// A connection-table entry. A forward entry at the routing mesh's ingress
/// host also carries what sending its packets needs ([`CT_F_CARRIED`]): the
/// backend's and the gateway's MACs, the local backend's veth or the next
/// hop towards its host. The mesh re-reads those from their maps (and the
/// FIB) once they are `NEXT_HOP_TTL_NS` old, so a changed neighbour or
/// endpoint reaches a long flow within that time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// `CT_*`.
    pub action: u8,
    /// `CT_F_*`.
    pub flags: u8,
    pub _pad: [u8; 2],
    pub new_src: [u8; 4],
    pub new_dst: [u8; 4],
    pub new_sport: u16,
    pub new_dport: u16,
    /// The host to tunnel to (`CT_DNAT` to a remote backend, `CT_TUNNEL`).
    pub vtep: [u8; 4],
    pub vni: u32,
    pub service_id: u32,
    pub _pad2: u32,
    pub last_seen_ns: u64,
    /// Carried: the backend's MAC (the inner destination).
    pub mac: [u8; 6],
    /// Carried: the network's gateway MAC (the inner source).
    pub gw_mac: [u8; 6],
    /// Carried: the local backend's host-side veth ([`CT_F_LOCAL`]), else
    /// the device towards the backend's host.
    pub ifindex: u32,
    /// Carried: the next hop's Ethernet addresses towards the backend's host.
    pub hop_smac: [u8; 6],
    pub hop_dmac: [u8; 6],
    pub _pad3: u32,
    /// When the carried fields were read from their maps.
    pub carried_ns: u64,
}

/// [`CtValue::flags`]: the carried fields are set.
pub const CT_F_CARRIED: u8 = 1;
/// [`CtValue::flags`]: the backend is on this host.
pub const CT_F_LOCAL: u8 = 2;
/// [`CtValue::flags`]: the backend's network is encrypted (its packets go
/// through WireGuard, `ifindex`).
pub const CT_F_ENCRYPTED: u8 = 4;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), made of integers and byte arrays,
    // with explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for HostConfig {}
    unsafe impl aya::Pod for WgConfig {}
    unsafe impl aya::Pod for EndpointKey {}
    unsafe impl aya::Pod for EndpointValue {}
    unsafe impl aya::Pod for NetworkValue {}
    unsafe impl aya::Pod for SubnetValue {}
    unsafe impl aya::Pod for IfaceValue {}
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for BackendKey {}
    unsafe impl aya::Pod for BackendStats {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for NextHop {}
    unsafe impl aya::Pod for crate::stats::Counter {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<HostConfig>(), 20);
        assert_eq!(size_of::<WgConfig>(), 16);
        assert_eq!(size_of::<EndpointKey>(), 8);
        assert_eq!(size_of::<EndpointValue>(), 20);
        assert_eq!(size_of::<NetworkValue>(), 16);
        assert_eq!(size_of::<SubnetValue>(), 8);
        assert_eq!(size_of::<IfaceValue>(), 24);
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(size_of::<ServiceValue>(), 20);
        assert_eq!(size_of::<BackendKey>(), 8);
        assert_eq!(size_of::<BackendStats>(), 24);
        assert_eq!(size_of::<CtKey>(), 16);
        assert_eq!(size_of::<CtValue>(), 80);
        assert_eq!(size_of::<NextHop>(), 24);
        assert_eq!(size_of::<crate::stats::Counter>(), 16);
    }

    #[test]
    fn a_flows_key_reversed_and_its_entries_tuple() {
        let k = CtKey { src: [1, 1, 1, 1], dst: [2, 2, 2, 2], sport: 1000, dport: 80, proto: PROTO_TCP, _pad: [0; 3] };
        let r = k.reversed();
        assert_eq!(r, CtKey { src: [2, 2, 2, 2], dst: [1, 1, 1, 1], sport: 80, dport: 1000, ..k });
        assert_eq!(r.reversed(), k);
        assert_eq!(CtKey::new(&k.tuple(), PROTO_TCP), k);
        let v = CtValue { action: CT_REVNAT, ..Default::default() }.with_tuple(&r.tuple());
        assert_eq!((v.action(), v.tuple()), (Some(CtAction::RevNat), r.tuple()));
        for a in [CtAction::Dnat, CtAction::RevNat, CtAction::Tunnel, CtAction::SnatOut] {
            assert_eq!(CtAction::from_u8(a as u8), Some(a));
        }
        assert_eq!(CtAction::from_u8(0), None);
    }

    #[test]
    fn carried_fields_are_used_while_younger_than_the_next_hop_ttl() {
        let t = 5_000_000_000;
        let c = CtValue { flags: CT_F_CARRIED | CT_F_LOCAL, carried_ns: t, ..Default::default() };
        assert!(c.carried_at(t));
        assert!(c.carried_at(t + NEXT_HOP_TTL_NS - 1));
        assert!(!c.carried_at(t + NEXT_HOP_TTL_NS), "re-read after the TTL");
        assert!(!CtValue { flags: CT_F_LOCAL, ..c }.carried_at(t), "not carried: a converted or reply entry");
    }
}
