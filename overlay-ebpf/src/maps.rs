//! The maps, declared with BTF so bpftool prints field names, from the one
//! list in `overlay_common::for_each_map!`; the loader fills them.
use aya_ebpf::{
    btf_maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
    macros::btf_map,
};
use overlay_common::*;

macro_rules! declare {
    ($($(#[doc = $doc:literal])* $alias:ident = $name:ident : $kind:ident<$($t:ty),+>[$size:expr];)+) => {
        $($(#[doc = $doc])* #[btf_map] pub static $name: $kind<$($t),+, { ($size) as usize }> = $kind::new();)+
    };
}
overlay_common::for_each_map!(declare);

#[inline(always)]
pub fn host_config() -> Option<&'static HostConfig> {
    OB_CONFIG_V3.get(0)
}

/// This host's WireGuard devices, when it has an encrypted network.
#[inline(always)]
pub fn wg_config() -> Option<&'static WgConfig> {
    OB_WIREGUARD_V1.get(0).filter(|w| w.ifindex != 0)
}

// The lookups below read values userspace writes. SAFETY, for each: the
// kernel keeps a value alive while the program runs (RCU), the programs only
// read these maps, and userspace replaces an entry whole, so a value read
// is always one userspace wrote (at worst, one just replaced).

#[inline(always)]
pub fn endpoint(vni: u32, ip: [u8; 4]) -> Option<&'static EndpointValue> {
    // SAFETY: see above.
    unsafe { OB_ENDPOINTS_V1.get(EndpointKey { vni, ip }) }
}

#[inline(always)]
pub fn network(vni: u32) -> Option<&'static NetworkValue> {
    // SAFETY: see above.
    unsafe { OB_NETWORKS_V1.get(vni) }
}

#[inline(always)]
pub fn iface(ifindex: u32) -> Option<&'static IfaceValue> {
    // SAFETY: see above.
    unsafe { OB_IFACES_V3.get(ifindex) }
}

#[inline(always)]
pub fn is_vtep(ip: [u8; 4]) -> bool {
    // SAFETY: see above.
    unsafe { OB_VTEPS_V2.get(ip).is_some() }
}

#[inline(always)]
pub fn service(k: ServiceKey) -> Option<&'static ServiceValue> {
    // SAFETY: see above.
    unsafe { OB_SERVICES_V3.get(k) }
}

/// The overlay subnet holding `ip`, if any.
#[inline(always)]
pub fn subnet(ip: [u8; 4]) -> Option<&'static SubnetValue> {
    OB_SUBNETS_V1.get(&Key::new(32, ip))
}
