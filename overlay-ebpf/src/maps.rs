//! The maps, declared with BTF so bpftool prints field names. Names and sizes
//! come from `overlay_common::maps`; the loader fills them.
use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, PerCpuArray},
    macros::btf_map,
};
use overlay_common::*;

#[btf_map]
pub static OB_CONFIG_V1: Array<HostConfig, 1> = Array::new();

#[btf_map]
pub static OB_ENDPOINTS_V1: HashMap<EndpointKey, EndpointValue, { MAX_ENDPOINTS as usize }> = HashMap::new();

#[btf_map]
pub static OB_NETWORKS_V1: HashMap<u32, NetworkValue, { MAX_NETWORKS as usize }> = HashMap::new();

#[btf_map]
pub static OB_SUBNETS_V1: LpmTrie<[u8; 4], SubnetValue, { MAX_SUBNETS as usize }> = LpmTrie::new();

#[btf_map]
pub static OB_IFACES_V1: HashMap<u32, IfaceValue, { MAX_IFACES as usize }> = HashMap::new();

#[btf_map]
pub static OB_VTEPS_V1: HashMap<[u8; 4], VtepValue, { MAX_VTEPS as usize }> = HashMap::new();

#[btf_map]
pub static OB_SERVICES_V1: HashMap<ServiceKey, ServiceValue, { MAX_SERVICES as usize }> = HashMap::new();

#[btf_map]
pub static OB_STATS_V1: PerCpuArray<Counter, { STATS_ENTRIES as usize }> = PerCpuArray::new();

#[inline(always)]
pub fn host_config() -> Option<&'static HostConfig> {
    OB_CONFIG_V1.get(0)
}
