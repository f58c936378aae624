//! The maps, declared with BTF so bpftool prints field names. Names and sizes
//! come from `overlay_common::maps`; the loader fills them.
use aya_ebpf::{
    btf_maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
    macros::btf_map,
};
use overlay_common::*;

#[btf_map]
pub static OB_CONFIG_V2: Array<HostConfig, 1> = Array::new();

#[btf_map]
pub static OB_ENDPOINTS_V1: HashMap<EndpointKey, EndpointValue, { MAX_ENDPOINTS as usize }> = HashMap::new();

#[btf_map]
pub static OB_NETWORKS_V1: HashMap<u32, NetworkValue, { MAX_NETWORKS as usize }> = HashMap::new();

#[btf_map]
pub static OB_SUBNETS_V1: LpmTrie<[u8; 4], SubnetValue, { MAX_SUBNETS as usize }> = LpmTrie::new();

#[btf_map]
pub static OB_IFACES_V3: HashMap<u32, IfaceValue, { MAX_IFACES as usize }> = HashMap::new();

#[btf_map]
pub static OB_VTEPS_V1: HashMap<[u8; 4], VtepValue, { MAX_VTEPS as usize }> = HashMap::new();

#[btf_map]
pub static OB_SERVICES_V2: HashMap<ServiceKey, ServiceValue, { MAX_SERVICES as usize }> = HashMap::new();

#[btf_map]
pub static OB_MAGLEV_V1: Array<[u8; 4], { (MAX_LB_SLOTS * MAGLEV_SIZE) as usize }> = Array::new();

#[btf_map]
pub static OB_BACKENDS_V1: HashMap<BackendKey, BackendValue, { MAX_BACKENDS as usize }> = HashMap::new();

#[btf_map]
pub static OB_BACKEND_STATS_V1: PerCpuHashMap<BackendKey, BackendStats, { MAX_BACKENDS as usize }> =
    PerCpuHashMap::new();

#[btf_map]
pub static OB_CT_V1: LruHashMap<CtKey, CtValue, { CT_DEFAULT_SIZE as usize }> = LruHashMap::new();

#[btf_map]
pub static OB_NEXT_HOPS_V1: LruHashMap<[u8; 4], NextHop, { MAX_VTEPS as usize }> = LruHashMap::new();

#[btf_map]
pub static OB_STATS_V3: PerCpuArray<Counter, { STATS_ENTRIES as usize }> = PerCpuArray::new();

#[inline(always)]
pub fn host_config() -> Option<&'static HostConfig> {
    OB_CONFIG_V2.get(0)
}

#[inline(always)]
pub fn endpoint(vni: u32, ip: [u8; 4]) -> Option<&'static EndpointValue> {
    // SAFETY: values are only read; userspace replaces entries whole.
    unsafe { OB_ENDPOINTS_V1.get(EndpointKey { vni, ip }) }
}

#[inline(always)]
pub fn network(vni: u32) -> Option<&'static NetworkValue> {
    unsafe { OB_NETWORKS_V1.get(vni) }
}

#[inline(always)]
pub fn iface(ifindex: u32) -> Option<&'static IfaceValue> {
    unsafe { OB_IFACES_V3.get(ifindex) }
}

#[inline(always)]
pub fn is_vtep(ip: [u8; 4]) -> bool {
    unsafe { OB_VTEPS_V1.get(ip).is_some() }
}

#[inline(always)]
pub fn service(k: ServiceKey) -> Option<&'static ServiceValue> {
    unsafe { OB_SERVICES_V2.get(k) }
}

/// The overlay subnet holding `ip`, if any.
#[inline(always)]
pub fn subnet(ip: [u8; 4]) -> Option<&'static SubnetValue> {
    OB_SUBNETS_V1.get(&Key::new(32, ip))
}
