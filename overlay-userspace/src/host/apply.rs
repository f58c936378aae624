//! `up` and `down`: bring one host's kernel state to what the cluster state
//! asks for, or remove all of it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
};

use overlay_common::{CT_DEFAULT_SIZE, MAP_CT, PROG_TC_UNDERLAY};

pub use crate::host::loader::Origin;
use crate::{
    exit::{SYSTEM as EXIT_SYSTEM, USER as EXIT_USER},
    host::convert,
    host::datapath::{self, Mode, UnderlayRecord},
    host::error::{Error, Result},
    host::kmaps::KernelMaps,
    host::loader,
    host::macvlan,
    host::masquerade,
    host::netdev::{self, ContainerIf},
    host::pins::{self, LinkKind, Pins},
    host::wireguard,
    plan::reconcile::{self, Diff, HostFacts, Veth},
    state::model::Cluster,
};

/// What `up` and `down` refuse, and why.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("unknown host {name:?}; the state file defines: {known}")]
    UnknownHost { name: String, known: String },
    #[error(
        "cannot tell which host this is: no host's address is configured here and no host is named {hostname:?}; \
         pass --host NAME (one of: {known})"
    )]
    WhichHost { hostname: String, known: String },
    #[error(
        "host {host}: address {address} is not configured on any interface here; configure it, set \
         hosts[].interface, or use --netns for a host in a namespace"
    )]
    AddressNotHere { host: String, address: Ipv4Addr },
    #[error("host {host}: interface {name:?} does not exist here")]
    NoInterface { host: String, name: String },
    #[error(
        "--ct-size {want}: the connection table {path} already has {have} entries, and a table cannot be resized \
         while the data path uses it. Keep {have} (drop --ct-size or pass --ct-size {have}), or run \
         `overlay-bpf down` then `up --ct-size {want}`, which drops every tracked flow"
    )]
    CtSize { want: u32, have: u32, path: String },
    #[error(
        "endpoint {endpoint}: network namespace {path} does not exist; create it (`ip netns add NAME`) or fix `netns`"
    )]
    NoNetns { endpoint: String, path: String },
    #[error(
        "endpoint {endpoint}: the parent {parent} of macvlan network {network} does not exist on host {host}; create \
         it there, or set the network's `parent` to a device that every host with its endpoints has (`ip link` \
         lists them)"
    )]
    NoParent { endpoint: String, network: String, host: String, parent: String },
    #[error(
        "macvlan network {network}: mtu {mtu} is above the MTU {parent_mtu} of its parent {parent} on host {host}; \
         lower the network's `mtu` or drop it (the parent's is the default)"
    )]
    MacvlanMtu { network: String, mtu: u32, parent: String, parent_mtu: u32, host: String },
    #[error(
        "endpoint {endpoint}: {netns} already has an interface {ifname} ({kind}) that overlay-bpf did not make; \
         remove it or give the endpoint another `ifname`"
    )]
    IfnameTaken { endpoint: String, netns: String, ifname: String, kind: String },
    #[error("endpoint {endpoint}: its macvlan sub-interface in {netns}: {source}")]
    Macvlan {
        endpoint: String,
        netns: String,
        #[source]
        source: Box<netdev::NetdevError>,
    },
    #[error("endpoints {a} and {b} hash to the same veth name {veth}; rename one")]
    VethClash { a: String, b: String, veth: String },
    #[error("host {host} is not up: no pins at {dir} (run `overlay-bpf up`)")]
    NotUp { host: String, dir: String },
    #[error("nothing is up here (no pins under {root}); pass --host NAME")]
    NothingUp { root: String },
    #[error("several hosts are up here ({hosts}); pass --host NAME")]
    SeveralUp { hosts: String },
    #[error("turn TX checksum offload back on for {dev}, which an XDP-mode `up` turned off: {source}; run `ethtool -K {dev} tx on`")]
    OffloadRestore { dev: String, source: std::io::Error },
    #[error("turn off TX checksum offload on the veth underlay {dev}: {source}")]
    Offload {
        dev: String,
        #[source]
        source: std::io::Error,
    },
}

impl ApplyError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ApplyError::Offload { .. } => EXIT_SYSTEM,
            _ => EXIT_USER,
        }
    }
}

/// Which host of the cluster this machine (or `--netns`) is.
///
/// `--host` wins; else the host whose address is configured here; else the
/// host named like this machine.
pub fn select_host(cluster: &Cluster, explicit: Option<&str>) -> Result<usize, ApplyError> {
    let names = || cluster.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ");
    if let Some(name) = explicit {
        return cluster
            .host_index(name)
            .ok_or_else(|| ApplyError::UnknownHost { name: name.to_string(), known: names() });
    }
    let local: Vec<Ipv4Addr> = netdev::local_ipv4_addresses().into_iter().map(|(_, ip)| ip).collect();
    if let Some(i) = cluster.hosts.iter().position(|h| local.contains(&h.address)) {
        return Ok(i);
    }
    let hostname = nix::unistd::gethostname().ok().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    cluster.host_index(&hostname).ok_or_else(|| ApplyError::WhichHost { hostname: hostname.clone(), known: names() })
}

/// The underlay device of host `h`: its `interface`, else the device holding its address.
pub fn underlay_device(cluster: &Cluster, h: usize) -> Result<(String, u32), ApplyError> {
    let host = &cluster.hosts[h];
    let name = match &host.interface {
        Some(i) => i.clone(),
        None => netdev::local_ipv4_addresses()
            .into_iter()
            .find(|(_, ip)| *ip == host.address)
            .map(|(n, _)| n)
            .ok_or_else(|| ApplyError::AddressNotHere { host: host.name.clone(), address: host.address })?,
    };
    let idx = netdev::ifindex(&name)
        .ok_or_else(|| ApplyError::NoInterface { host: host.name.clone(), name: name.clone() })?;
    Ok((name, idx))
}

/// Something wrong with the host that `up` found and that lasts until
/// someone mends it: `up` prints it as a warning; the agent logs it at WARN
/// when it starts and once more when it ends, not at every apply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// What is wrong, in a few words; the same at every apply while it lasts.
    pub condition: String,
    /// The whole message, with the fix.
    pub message: String,
}

impl Warning {
    fn new(condition: impl Into<String>, message: impl Into<String>) -> Warning {
        Warning { condition: condition.into(), message: message.into() }
    }
}

/// Removes the TC-mode underlay program's clsact filter from `ifname`, if
/// it is there (kernels without TCX); whether it was.
async fn remove_tc_underlay_filter(handle: &rtnetlink::Handle, ifname: &str) -> Result<bool> {
    let Some(ifindex) = netdev::ifindex(ifname) else { return Ok(false) };
    if netdev::ingress_bpf_filter(handle, ifindex, PROG_TC_UNDERLAY).await?.is_none() {
        return Ok(false);
    }
    loader::detach_tc_filter(ifname)?;
    Ok(true)
}

/// The warning for a veth underlay whose peer would break the data path,
/// with the command that mends it; `None` when the peer is ready. A peer in
/// a namespace with no name here cannot be read: the warning then says what
/// to set on it.
pub fn veth_peer_warning(underlay: &str, peer: &netdev::VethPeer) -> Option<Warning> {
    let condition = format!("the veth peer of underlay {underlay} is not set up for XDP");
    let Some(st) = &peer.state else {
        return Some(Warning::new(
            condition,
            format!(
                "the underlay {underlay} is a veth whose peer (ifindex {}) lives in a network namespace with no \
             name here ({:?}), so its settings cannot be checked. On that end run `ethtool -K <peer> gro on tx off`: \
             without GRO it drops what this host's XDP sends back out (the routing mesh to other hosts' backends), \
             and with TX checksum offload it passes on partial checksums that XDP cannot finish",
                peer.ifindex, peer.netns
            ),
        ));
    };
    let needs = st.needs();
    if needs.is_empty() {
        return None;
    }
    let mut why = Vec::new();
    if !st.gro && !st.xdp {
        why.push("with GRO off it drops every frame this host's XDP sends back out (the routing mesh's hand-off to other hosts)");
    }
    if st.tx_checksum {
        why.push("with TX checksum offload on it passes on partial checksums from the hosts and clients behind it, which XDP cannot finish (their TCP SYNs reach backends with bad checksums and are dropped)");
    }
    Some(Warning::new(
        condition,
        format!(
            "the underlay {underlay} is a veth whose peer {} keeps veth's defaults: {}. Fix: `{}`",
            st.ifname,
            why.join("; and "),
            peer.netns.command(&format!("ethtool -K {} {}", st.ifname, needs.join(" ")))
        ),
    ))
}

/// What `up` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct UpReport {
    pub host: String,
    pub underlay: String,
    pub veths_created: Vec<String>,
    pub veths_removed: Vec<String>,
    /// macvlan sub-interfaces, as `ifname@netns`.
    pub macvlans_created: Vec<String>,
    pub macvlans_removed: Vec<String>,
    /// The sub-interfaces this run made (undone if it fails).
    #[serde(skip)]
    pub made: Vec<macvlan::Made>,
    pub links_attached: Vec<String>,
    /// Links whose program another build's replaced, in one step.
    pub links_replaced: Vec<String>,
    pub links_removed: Vec<String>,
    pub entries_written: usize,
    pub entries_deleted: usize,
    /// Pinned maps of another layout version, removed once no program of
    /// this build uses them.
    pub maps_retired: Vec<String>,
    /// Entries of older layouts' program-filled maps carried into this
    /// build's (both passes).
    pub entries_carried: usize,
    /// Whether the programs were verified now or opened from their pins.
    pub programs: loader::Origin,
    /// Nothing done: the host holds a newer store revision than this state.
    pub stale: bool,
    /// What is wrong with the host and lasts until someone mends it.
    pub warnings: Vec<Warning>,
    /// The data-path mode the underlay runs, and why.
    pub datapath: Option<datapath::Choice>,
}

impl UpReport {
    fn note_link(&mut self, a: loader::Attach, name: String) {
        match a {
            loader::Attach::Kept => {}
            loader::Attach::Attached => self.links_attached.push(name),
            loader::Attach::Replaced => self.links_replaced.push(name),
        }
    }

    pub fn changed(&self) -> bool {
        !(self.veths_created.is_empty()
            && self.veths_removed.is_empty()
            && self.macvlans_created.is_empty()
            && self.macvlans_removed.is_empty()
            && self.links_attached.is_empty()
            && self.links_replaced.is_empty()
            && self.maps_retired.is_empty()
            && self.links_removed.is_empty()
            && self.entries_written == 0
            && self.entries_deleted == 0)
    }
}

/// How `up` applies, besides the state file.
#[derive(Debug, Default, Clone)]
pub struct UpOptions {
    /// Backends (endpoints) the health checks took out: they stay endpoints
    /// but leave every Maglev table.
    pub unhealthy: BTreeSet<String>,
    /// Entries of the connection table (`--ct-size`); `None`: the pinned
    /// table's size, or `CT_DEFAULT_SIZE` for a new one.
    pub ct_size: Option<u32>,
    /// The programs' debug logs on (`--bpf-log`) or off.
    pub bpf_log: bool,
    /// The store revision the cluster was read at (etcd). An apply older
    /// than the one the host holds is skipped: an agent whose watch has not
    /// yet brought a container a CNI ADD just made would otherwise remove
    /// its veth.
    pub revision: Option<i64>,
    /// The data-path mode asked for (`--datapath`).
    pub datapath: datapath::Datapath,
}

/// The size of each map `up` fills: a pinned map keeps its own (a live map
/// cannot grow); one created now gets twice what the state needs, rounded up
/// to a power of two, and at least its declared default. The Maglev array
/// keeps its declared size (the programs bound its slots).
pub fn map_sizes(pins: &Pins, desired: &reconcile::MapContents) -> BTreeMap<&'static str, u32> {
    desired
        .needs()
        .into_iter()
        .map(|(name, need)| {
            let size = match crate::host::kmaps::max_entries(pins, name) {
                Ok(have) => have,
                Err(_) if name == overlay_common::MAP_MAGLEV || name == overlay_common::MAP_CONFIG => {
                    reconcile::declared(name)
                }
                Err(_) => reconcile::declared(name).max(need.saturating_mul(2).next_power_of_two()),
            };
            (name, size)
        })
        .collect()
}

/// The size to load the connection table with. A pinned table is reused as it
/// is (the programs attached now share it), so asking for another size is
/// refused rather than silently ignored: a table cannot be resized in place.
/// A table of a new layout version takes the size of the older one it
/// replaces, unless asked otherwise.
pub fn ct_size(pins: &Pins, asked: Option<u32>) -> Result<u32, ApplyError> {
    let size = |name: &str| crate::host::kmaps::max_entries(pins, name).ok();
    match (size(MAP_CT), asked) {
        (Some(have), Some(want)) if have != want => {
            Err(ApplyError::CtSize { want, have, path: pins.map(MAP_CT).display().to_string() })
        }
        (Some(have), _) => Ok(have),
        (None, Some(want)) => Ok(want),
        (None, None) => Ok(pins.other_version_of(MAP_CT).and_then(|older| size(&older)).unwrap_or(CT_DEFAULT_SIZE)),
    }
}

/// Applies the state of host `h`. On failure, undoes what this run created
/// (veths, and the pins if there were none before), so nothing is left
/// half-applied.
pub async fn up(
    cluster: &Cluster,
    h: usize,
    pins: &Pins,
    opts: &UpOptions,
    progress: &dyn Fn(&str),
) -> Result<UpReport> {
    let _lock = pins::HostLock::acquire(pins).await?;
    let held = if pins.exists() { pins::HostLock::applied_revision(pins) } else { 0 };
    if opts.revision.is_some_and(|r| r < held) {
        progress(&format!("skipped: the host holds store revision {held}, newer than this state's"));
        return Ok(UpReport { host: cluster.hosts[h].name.clone(), stale: true, ..Default::default() });
    }
    let host = &cluster.hosts[h];
    let (underlay, underlay_ifindex) = underlay_device(cluster, h)?;
    // What the state is worth a warning for (a backend that matches no
    // endpoint yet) lasts as long as the state does.
    let mut warnings: Vec<Warning> =
        cluster.warnings.iter().map(|p| Warning::new(p.to_string(), p.to_string())).collect();
    // A CNI container that went without its DEL leaves its endpoint with no
    // netns: skipped (not an error that would stop the host's every apply)
    // until the runtime's DEL or GC removes it.
    let local: Vec<_> = cluster
        .local_endpoints(h)
        .filter(|e| {
            let gone = e.runtime == Some(crate::state::model::Runtime::Cni) && !e.netns.exists();
            if gone {
                warnings.push(Warning::new(
                    format!("endpoint {}: its netns {} is gone", e.name, e.netns.display()),
                    format!(
                        "endpoint {}: its netns {} is gone (a container that went without its CNI DEL); skipped \
                         until the runtime's DEL or GC removes it (`overlay-bpf endpoint rm {}` does too)",
                        e.name,
                        e.netns.display(),
                        e.name
                    ),
                ));
            }
            !gone
        })
        .collect();
    // Endpoints of macvlan networks get a sub-interface of their parent and
    // nothing else (no veth, no program, no map entry). Docker's get theirs
    // from the plugin at Join, which Docker moves into the container.
    let (local, subs): (Vec<_>, Vec<_>) =
        local.into_iter().partition(|e| cluster.networks[e.network].macvlan().is_none());
    let subs: Vec<_> = subs.into_iter().filter(|e| !e.docker()).collect();
    // Everything the user could have got wrong, before touching the kernel.
    let mut record = macvlan::Record::load(Path::new(macvlan::RECORD_DIR), pins);
    let parents = macvlan_parents(cluster, h, &subs, &record)?;
    let mut names: BTreeMap<String, &str> = BTreeMap::new();
    for e in &local {
        if !e.netns.exists() && !e.docker() {
            return Err(ApplyError::NoNetns { endpoint: e.name.clone(), path: e.netns.display().to_string() }.into());
        }
        let v = e.veth();
        if let Some(other) = names.insert(v.clone(), &e.key) {
            return Err(ApplyError::VethClash { a: other.to_string(), b: e.key.clone(), veth: v.clone() }.into());
        }
    }
    let placeholder = HostFacts {
        underlay_ifindex,
        veths: local
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.clone(), Veth { ifindex: i as u32 + 1, mac: [0; 6] }))
            .collect(),
        ..Default::default()
    };
    let sizes = map_sizes(pins, &reconcile::desired(cluster, h, &placeholder));
    KernelMaps::check_capacity(&reconcile::desired(cluster, h, &placeholder), &sizes)?;
    pins::ensure_bpffs(&pins.dir)?;
    let ct_entries = ct_size(pins, opts.ct_size)?;

    let fresh = !pins.exists();
    let mut report = UpReport { host: host.name.clone(), underlay: underlay.clone(), warnings, ..Default::default() };
    let result = async {
        // Before the veths: an endpoint moved from a macvlan network to an
        // overlay in place gets its veth where its sub-interface was.
        prune_macvlans(pins, &mut record, &subs, &mut report, progress)?;
        up_inner(
            cluster,
            h,
            pins,
            &underlay,
            underlay_ifindex,
            &local,
            opts,
            (ct_entries, &sizes),
            &mut report,
            progress,
        )
        .await?;
        sync_macvlans(cluster, pins, &mut record, &subs, &parents, &mut report, progress).await
    }
    .await;
    if let Err(e) = result {
        progress("failed: undoing what this run created");
        if let Ok(handle) = netdev::connect() {
            for v in &report.veths_created {
                let _ = netdev::delete_link(&handle, v).await;
            }
        }
        if !report.made.is_empty() {
            for m in &report.made {
                let _ = macvlan::remove(m);
                record.0.remove(&(m.netns.clone(), m.ifname.clone()));
            }
            let _ = save_record(&record, pins);
        }
        if fresh {
            let _ = pins.remove_all();
        } else {
            for l in &report.links_attached {
                let _ = std::fs::remove_file(pins.links_dir().join(l));
            }
        }
        return Err(e);
    }
    if let Some(r) = opts.revision.filter(|r| *r > held) {
        pins::HostLock::set_applied_revision(pins, r);
    }
    Ok(report)
}

/// One apply's steps after the checks, in order, on what they share: the
/// cluster and this host in it, the pins, the underlay device, the local
/// veth endpoints, a netlink handle. Each step records what it did in the
/// report, which is also what `up` undoes on failure (veths created, links
/// attached).
struct Steps<'a> {
    cluster: &'a Cluster,
    h: usize,
    pins: &'a Pins,
    underlay: &'a str,
    underlay_ifindex: u32,
    local: &'a [&'a crate::state::model::Endpoint],
    handle: rtnetlink::Handle,
    progress: &'a dyn Fn(&str),
}

#[allow(clippy::too_many_arguments)]
async fn up_inner(
    cluster: &Cluster,
    h: usize,
    pins: &Pins,
    underlay: &str,
    underlay_ifindex: u32,
    local: &[&crate::state::model::Endpoint],
    opts: &UpOptions,
    (ct_entries, sizes): (u32, &BTreeMap<&'static str, u32>),
    report: &mut UpReport,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let mut loaded = load_programs(pins, !local.is_empty(), ct_entries, sizes, report, progress)?;
    let s = Steps { cluster, h, pins, underlay, underlay_ifindex, local, handle: netdev::connect()?, progress };
    let mut facts = HostFacts { underlay_ifindex, unhealthy: opts.unhealthy.clone(), ..Default::default() };
    facts.veths = s.plumb_endpoints(report).await?;
    let wireguard = encrypted_hop(cluster, h, &s.handle, report, progress).await?;
    // Make before break: the maps are whole before any program of this
    // build runs on them (a map of a new layout version starts empty).
    let deleted_ifaces = s.fill_maps(&facts, wireguard.as_ref(), opts.bpf_log, report)?;
    s.carry_entries(report)?;
    s.attach_endpoints(&mut loaded, &facts.veths, report).await?;
    let choice = datapath::choose(opts.datapath, netdev::driver(underlay).as_deref());
    s.attach_underlay(&mut loaded, choice.mode, report).await?;
    if let Some(dev) = &wireguard {
        s.attach_encrypted(&mut loaded, dev, choice.mode, report).await?;
    }
    s.retire_other_versions(report)?;
    s.route_and_masquerade().await?;
    s.prune(&facts, wireguard.is_some(), choice.mode, &deleted_ifaces, report).await?;
    report.datapath = Some(choice);
    Ok(())
}

/// Loads this build's programs, from their pins when an earlier `up`
/// verified them.
fn load_programs(
    pins: &Pins,
    has_local: bool,
    ct_entries: u32,
    sizes: &BTreeMap<&'static str, u32>,
    report: &mut UpReport,
    progress: &dyn Fn(&str),
) -> Result<loader::Loaded> {
    pins.create_dirs()?;
    progress("loading the eBPF programs");
    let loaded = loader::load(Some(pins), ct_entries, sizes)?;
    report.programs = loaded.origin;
    if loaded.origin == loader::Origin::Pinned {
        progress("this build's programs are pinned (verified by an earlier up): reusing them");
    }
    if has_local && !loader::has_tcx() {
        progress(&format!(
            "this kernel has no TCX links (6.6+): endpoint programs attach as clsact ingress filters \
             (priority {}), which last as long as their veth and are not pinned; `tc filter show dev <veth> ingress` \
             lists them",
            loader::TC_FILTER_PRIORITY
        ));
    }
    Ok(loaded)
}

impl Steps<'_> {
    /// Each local endpoint's veth (made here, or Docker's), its container
    /// end configured, and its host route: the veths as the maps need them,
    /// by endpoint key.
    async fn plumb_endpoints(&self, report: &mut UpReport) -> Result<BTreeMap<String, Veth>> {
        let (local, handle) = (self.local, &self.handle);
        let mut veths = BTreeMap::new();
        for (i, e) in local.iter().enumerate() {
            let net = &self.cluster.networks[e.network];
            let overlay = net.overlay().expect("partitioned above: an overlay network");
            let c = ContainerIf {
                netns: e.netns.clone(),
                ifname: e.ifname.clone(),
                mac: e.mac,
                mtu: overlay.mtu,
                ip: e.ip,
                prefix_len: e.prefix_len,
                gateway: e.gateway,
                default_route: e.default_route,
            };
            let v = e.veth();
            if e.docker() {
                // Docker's container: the plugin made the veth at Join and
                // Docker moved its other end in. Not joined yet, or left:
                // nothing here.
                if netdev::ifindex(&v).is_none() {
                    continue;
                }
            }
            (self.progress)(&format!(
                "endpoint {}/{}: {} ({}/{} in {}) <-> {v}",
                i + 1,
                local.len(),
                e.name,
                e.ip,
                e.prefix_len,
                e.netns.display()
            ));
            if !e.docker() {
                if netdev::create_veth(handle, &v, &c).await? {
                    report.veths_created.push(v.clone());
                }
                netdev::configure_container(&c)?;
            }
            let idx = netdev::set_host_end(handle, &v).await?;
            let mac = netdev::link_mac(&v).ok_or_else(|| netdev::NetdevError::NoSuchInterface(v.clone()))?;
            netdev::host_route(handle, idx, e.ip, e.mac, overlay.mtu).await?;
            veths.insert(e.key.clone(), Veth { ifindex: idx, mac });
        }
        Ok(veths)
    }

    /// The TC program on the host end of each plumbed endpoint's veth.
    async fn attach_endpoints(
        &self,
        loaded: &mut loader::Loaded,
        veths: &BTreeMap<String, Veth>,
        report: &mut UpReport,
    ) -> Result<()> {
        for e in self.local.iter().filter(|e| veths.contains_key(&e.key)) {
            let veth = &veths[&e.key];
            self.attach_tc(loaded, &e.veth(), veth.ifindex, overlay_common::PROG_TC_ENDPOINT, report).await?;
        }
        Ok(())
    }

    /// The programs on the WireGuard device and the veth pair beside it.
    async fn attach_encrypted(
        &self,
        loaded: &mut loader::Loaded,
        dev: &wireguard::Devices,
        mode: Mode,
        report: &mut UpReport,
    ) -> Result<()> {
        for (ifname, ifindex) in wireguard::TC_DEVICES.into_iter().zip([dev.wg, dev.tc]) {
            self.attach_tc(loaded, ifname, ifindex, overlay_common::PROG_TC_WIREGUARD, report).await?;
        }
        // Decrypted VXLAN meets the underlay program, in the underlay's hook.
        match mode {
            Mode::Tc => self.attach_tc(loaded, wireguard::VETH_XDP, dev.xdp, PROG_TC_UNDERLAY, report).await?,
            Mode::Xdp => report
                .note_link(loaded.ensure_xdp(self.pins, wireguard::VETH_XDP)?, format!("xdp@{}", wireguard::VETH_XDP)),
        }
        Ok(())
    }

    /// TC program `prog` on the ingress of `ifname`: a TCX link, or before
    /// TCX (6.6) a clsact filter made first.
    async fn attach_tc(
        &self,
        loaded: &mut loader::Loaded,
        ifname: &str,
        ifindex: u32,
        prog: &'static str,
        report: &mut UpReport,
    ) -> Result<()> {
        let filter = match loader::has_tcx() {
            true => None,
            false => netdev::ingress_bpf_filter(&self.handle, ifindex, prog).await?,
        };
        report.note_link(loaded.ensure_tc(self.pins, ifname, prog, filter)?, format!("tc@{ifname}"));
        Ok(())
    }

    /// The underlay program on the underlay device, in the hook of `mode`.
    /// In XDP, a veth underlay is made to finish its checksums first (and
    /// that is recorded, for TC mode and `down` to undo), and its peer is
    /// checked. In TC nothing of the device is changed.
    async fn attach_underlay(&self, loaded: &mut loader::Loaded, mode: Mode, report: &mut UpReport) -> Result<()> {
        let underlay = self.underlay;
        let mut record = UnderlayRecord::load(self.pins);
        if mode == Mode::Tc {
            self.attach_tc(loaded, underlay, self.underlay_ifindex, PROG_TC_UNDERLAY, report).await?;
            record.restore_offload().map_err(|(dev, source)| ApplyError::OffloadRestore { dev, source })?;
            record.mode = Some(Mode::Tc);
            record.device = underlay.to_string();
            record.save(self.pins);
            return Ok(());
        }
        if netdev::driver(underlay).as_deref() == Some("veth") {
            // A veth underlay would carry partial checksums to the other
            // hosts, whose XDP redirect cannot finish them: finish them
            // here, like a NIC.
            if netdev::tx_checksum(underlay) == Some(true) {
                netdev::set_tx_checksum(underlay, false)
                    .map_err(|source| ApplyError::Offload { dev: underlay.to_string(), source })?;
                record.tx_checksum_off = Some(underlay.to_string());
            }
            // The other end must take what XDP sends and hand over finished
            // checksums; a veth left at its defaults does neither, silently.
            let peer = netdev::veth_peer(self.underlay_ifindex);
            report.warnings.extend(peer.and_then(|p| veth_peer_warning(underlay, &p)));
        }
        record.mode = Some(Mode::Xdp);
        record.device = underlay.to_string();
        record.save(self.pins);
        report.note_link(loaded.ensure_xdp(self.pins, underlay)?, format!("xdp@{underlay}"));
        Ok(())
    }

    /// The maps made to hold what the cluster wants on this host, by the
    /// difference to what they hold; returns the veths' entries deleted.
    fn fill_maps(
        &self,
        facts: &HostFacts,
        wireguard: Option<&wireguard::Devices>,
        bpf_log: bool,
        report: &mut UpReport,
    ) -> Result<Vec<u32>> {
        let mut maps = KernelMaps::open(self.pins)?;
        maps.set_wireguard(wireguard.map_or(overlay_common::WgConfig::default(), |d| overlay_common::WgConfig {
            ifindex: d.wg,
            tc_ifindex: d.tc,
            xdp_ifindex: d.xdp,
            port: self.cluster.wireguard_port,
            _pad: 0,
        }))?;
        let current = maps.read()?;
        let mut desired = reconcile::desired(self.cluster, self.h, facts);
        reconcile::keep_backend_flags(&mut desired, &current);
        let diff = Diff::between(&desired, &current);
        (report.entries_written, report.entries_deleted) = diff.counts();
        (self.progress)(&format!(
            "maps: {} entries to write, {} to delete",
            report.entries_written, report.entries_deleted
        ));
        maps.apply(&diff)?;
        maps.set_bpf_log(bpf_log)?;
        Ok(diff.ifaces.delete)
    }

    /// The entries of the program-filled maps another layout version left,
    /// converted into this build's ([`convert::CONVERSIONS`]).
    fn carry_entries(&self, report: &mut UpReport) -> Result<()> {
        for (from, n) in convert::carry_other_versions(self.pins, convert::CONVERSIONS)? {
            (self.progress)(&format!("{from}: {n} entries carried into this build's layout"));
            report.entries_carried += n;
        }
        Ok(())
    }

    /// Every link runs this build's programs now: the maps another layout
    /// version left go. The ones `up` fills were filled anew; the entries of
    /// the ones the programs fill are carried once more (the flows the old
    /// programs started since the first pass), where a conversion is
    /// written; the next-hop cache and the counters start anew.
    fn retire_other_versions(&self, report: &mut UpReport) -> Result<()> {
        self.carry_entries(report)?;
        for name in self.pins.other_versions() {
            (self.progress)(&format!("retiring {name}: a map of another layout version than this build's"));
            let path = self.pins.map(&name);
            std::fs::remove_file(&path).map_err(Error::io(format!("remove {}", path.display())))?;
            report.maps_retired.push(name);
        }
        Ok(())
    }

    /// Leaving the overlay: routed by this host and masqueraded behind it,
    /// for the non-internal networks with an endpoint here; forwarding for
    /// the mesh; the gateways' addresses and the resolv.confs.
    async fn route_and_masquerade(&self) -> Result<()> {
        let cluster = self.cluster;
        let mut egress: Vec<ipnet::Ipv4Net> = self
            .local
            .iter()
            .map(|e| &cluster.networks[e.network])
            .filter(|n| !n.internal)
            .flat_map(|n| n.subnets.iter().map(|s| s.subnet))
            .collect();
        egress.sort();
        egress.dedup();
        // Forwarding: for traffic leaving the overlay, and for the routing
        // mesh (the XDP FIB lookup refuses devices that do not forward).
        let publishes = cluster.services.iter().any(|s| s.ports.iter().any(|p| p.published.is_some()));
        if !egress.is_empty() || publishes {
            netdev::enable_ip_forward()
                .map_err(Error::io("turn on IPv4 forwarding (/proc/sys/net/ipv4/ip_forward)"))?;
        }
        if publishes {
            let me = cluster.hosts[self.h].address;
            let peers: Vec<Ipv4Addr> = cluster.hosts.iter().map(|x| x.address).filter(|a| *a != me).collect();
            netdev::prime_neighbours(&self.handle, self.underlay, self.underlay_ifindex, &peers).await?;
        }
        masquerade::apply(&egress)?;
        // The gateways of this host's networks are its own: the resolver
        // answers there. Named namespaces of the file's endpoints get it in
        // their resolv.conf (runtimes write their containers' own).
        netdev::sync_gateway_addresses(&self.handle, &crate::plan::zone::Zone::served(cluster, self.h)).await?;
        sync_resolv_confs(self.pins, self.local)
    }

    /// What an earlier state had and this one does not: links, then veths,
    /// then the WireGuard device.
    async fn prune(
        &self,
        facts: &HostFacts,
        wireguard: bool,
        mode: Mode,
        deleted_ifaces: &[u32],
        report: &mut UpReport,
    ) -> Result<()> {
        let handle = &self.handle;
        let mut wanted_tc: Vec<String> =
            self.local.iter().filter(|e| facts.veths.contains_key(&e.key)).map(|e| e.veth()).collect();
        let mut underlay_side = vec![self.underlay.to_string()];
        if wireguard {
            wanted_tc.extend(wireguard::TC_DEVICES.map(String::from));
            underlay_side.push(wireguard::VETH_XDP.to_string());
        }
        let wanted_xdp = match mode {
            Mode::Xdp => underlay_side,
            Mode::Tc => {
                wanted_tc.extend(underlay_side);
                Vec::new()
            }
        };
        if mode == Mode::Xdp && !loader::has_tcx() {
            // Before TCX the TC program is a filter, not a pinned link.
            if remove_tc_underlay_filter(handle, self.underlay).await? {
                report.links_removed.push(format!("tc@{}", self.underlay));
            }
        }
        for stray in self.pins.stray_links() {
            std::fs::remove_file(&stray).map_err(Error::io(format!("remove {}", stray.display())))?;
            report.links_removed.push(stray.file_name().unwrap_or_default().to_string_lossy().into_owned());
        }
        for l in self.pins.links() {
            let keep = match l.kind {
                LinkKind::Tc => wanted_tc.contains(&l.ifname),
                LinkKind::Xdp => wanted_xdp.contains(&l.ifname),
            };
            if !keep {
                std::fs::remove_file(&l.path).map_err(Error::io(format!("remove {}", l.path.display())))?;
                report.links_removed.push(l.to_string());
                if l.kind == LinkKind::Tc
                    && netdev::is_host_veth_name(&l.ifname)
                    && netdev::delete_link(handle, &l.ifname).await?
                {
                    report.veths_removed.push(l.ifname);
                }
            }
        }
        for &ifindex in deleted_ifaces {
            if let Some(name) = netdev::ifname(ifindex) {
                if netdev::is_host_veth_name(&name)
                    && !wanted_tc.contains(&name)
                    && netdev::delete_link(handle, &name).await?
                {
                    report.veths_removed.push(name);
                }
            }
        }
        if !wireguard && wireguard::remove(handle).await? {
            (self.progress)("no encrypted network any more: WireGuard device removed");
            report.veths_removed.push(wireguard::DEVICE.to_string());
        }
        Ok(())
    }
}

/// A macvlan parent on this host: its ifindex and MTU.
#[derive(Debug, Clone, Copy)]
pub struct Parent {
    pub ifindex: u32,
    pub mtu: u32,
}

/// The parents of `subs` (this host's macvlan endpoints), checked before
/// anything is touched: each exists here, takes the network's MTU, and each
/// endpoint's interface name is free in its netns, or already what `up`
/// would make there, or made by this host (`record`: replaced when its
/// parent or mode changed), or a veth of ours that this apply removes.
fn macvlan_parents(
    cluster: &Cluster,
    h: usize,
    subs: &[&crate::state::model::Endpoint],
    record: &macvlan::Record,
) -> Result<BTreeMap<String, Parent>> {
    let host = &cluster.hosts[h].name;
    let mut parents = BTreeMap::new();
    for e in subs {
        let net = &cluster.networks[e.network];
        let mv = net.macvlan().expect("a macvlan network");
        if !e.netns.exists() {
            return Err(ApplyError::NoNetns { endpoint: e.name.clone(), path: e.netns.display().to_string() }.into());
        }
        let no_parent = || ApplyError::NoParent {
            endpoint: e.name.clone(),
            network: net.name.clone(),
            host: host.clone(),
            parent: mv.parent.clone(),
        };
        let ifindex = netdev::ifindex(&mv.parent).ok_or_else(no_parent)?;
        let mtu = netdev::link_mtu(ifindex).ok_or_else(no_parent)?;
        if let Some(want) = mv.mtu.filter(|&want| want > mtu) {
            return Err(ApplyError::MacvlanMtu {
                network: net.name.clone(),
                mtu: want,
                parent: mv.parent.clone(),
                parent_mtu: mtu,
                host: host.clone(),
            }
            .into());
        }
        if let Some(x) = macvlan::existing(&e.netns, &e.ifname)? {
            let ours_veth = x.kind.as_deref() == Some("veth")
                && x.link.and_then(netdev::ifname).is_some_and(|n| netdev::is_host_veth_name(&n));
            let recorded = record.0.contains_key(&(e.netns.clone(), e.ifname.clone()));
            let as_wanted = x.is(ifindex, macvlan::kernel_mode(mv.mode));
            if !(ours_veth || recorded || as_wanted) {
                return Err(ApplyError::IfnameTaken {
                    endpoint: e.name.clone(),
                    netns: e.netns.display().to_string(),
                    ifname: e.ifname.clone(),
                    kind: x.kind.unwrap_or_else(|| "a device".into()),
                }
                .into());
            }
        }
        parents.insert(mv.parent.clone(), Parent { ifindex, mtu });
    }
    Ok(parents)
}

/// This host's macvlan sub-interfaces as `subs` want them: made where
/// missing (or remade where the parent or mode changed), configured like
/// an overlay endpoint's interface, and recorded.
#[allow(clippy::too_many_arguments)]
async fn sync_macvlans(
    cluster: &Cluster,
    pins: &Pins,
    record: &mut macvlan::Record,
    subs: &[&crate::state::model::Endpoint],
    parents: &BTreeMap<String, Parent>,
    report: &mut UpReport,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let handle = if subs.is_empty() { None } else { Some(netdev::connect()?) };
    for (i, e) in subs.iter().enumerate() {
        let handle = handle.as_ref().expect("connected");
        let net = &cluster.networks[e.network];
        let mv = net.macvlan().expect("a macvlan network");
        let parent = parents[&mv.parent];
        let mode = macvlan::kernel_mode(mv.mode);
        let mac = macvlan::mac(mv, e.mac);
        let c = ContainerIf {
            netns: e.netns.clone(),
            ifname: e.ifname.clone(),
            mac,
            mtu: mv.mtu.unwrap_or(parent.mtu),
            ip: e.ip,
            prefix_len: e.prefix_len,
            gateway: e.gateway,
            default_route: macvlan::default_route(net, e.default_route),
        };
        let key = (e.netns.clone(), e.ifname.clone());
        let made = macvlan::Made { endpoint: e.key.clone(), netns: e.netns.clone(), ifname: e.ifname.clone(), mac };
        let named = |source| ApplyError::Macvlan {
            endpoint: e.name.clone(),
            netns: e.netns.display().to_string(),
            source: Box::new(source),
        };
        let existing = macvlan::existing(&e.netns, &e.ifname).map_err(named)?;
        if !existing.as_ref().is_some_and(|x| x.is(parent.ifindex, mode)) {
            if let Some(x) = existing {
                // Ours with another parent or mode (checked before anything
                // was touched), or a veth of ours this apply removed.
                progress(&format!("endpoint {}: replacing its {} {}", e.name, x.kind.unwrap_or_default(), e.ifname));
                let name = e.ifname.clone();
                netdev::in_netns(&e.netns, move |h| async move { netdev::delete_link(&h, &name).await })
                    .map_err(named)?;
            }
            progress(&format!(
                "endpoint {}/{}: {} ({}/{} in {}): {}, a macvlan of {} ({})",
                i + 1,
                subs.len(),
                e.name,
                e.ip,
                e.prefix_len,
                e.netns.display(),
                e.ifname,
                mv.parent,
                mv.mode.name()
            ));
            macvlan::create(handle, parent.ifindex, mode, &c).await.map_err(named)?;
            report.macvlans_created.push(format!("{}@{}", e.ifname, e.netns.display()));
            report.made.push(made.clone());
        }
        if record.0.get(&key) != Some(&made) {
            record.insert(made);
            save_record(record, pins)?;
        }
        netdev::configure_container(&c).map_err(named)?;
    }
    Ok(())
}

/// Removes the sub-interfaces this host recorded that none of `subs` (this
/// host's macvlan endpoints) wants any more.
fn prune_macvlans(
    pins: &Pins,
    record: &mut macvlan::Record,
    subs: &[&crate::state::model::Endpoint],
    report: &mut UpReport,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let wanted: BTreeSet<_> = subs.iter().map(|e| (e.netns.clone(), e.ifname.clone())).collect();
    let gone: Vec<macvlan::Made> =
        record.0.values().filter(|m| !wanted.contains(&(m.netns.clone(), m.ifname.clone()))).cloned().collect();
    for m in gone {
        if macvlan::remove(&m)? {
            progress(&format!("endpoint {}: its macvlan {} in {} removed", m.endpoint, m.ifname, m.netns.display()));
            report.macvlans_removed.push(format!("{}@{}", m.ifname, m.netns.display()));
        }
        record.0.remove(&(m.netns.clone(), m.ifname.clone()));
        save_record(record, pins)?;
    }
    Ok(())
}

/// Writes host `pins`'s record of sub-interfaces ([`macvlan::RECORD_DIR`]).
fn save_record(record: &macvlan::Record, pins: &Pins) -> Result<()> {
    let dir = Path::new(macvlan::RECORD_DIR);
    record.save(dir, pins).map_err(Error::io(format!("write {}", macvlan::Record::path(dir, pins).display())))
}

/// The hop between hosts of encrypted networks (see [`wireguard`]): when
/// the cluster has one, this host's WireGuard device with its key and its
/// peers (the other hosts that published a key), and the veth pair beside it
/// (their programs: [`Steps::attach_encrypted`]).
async fn encrypted_hop(
    cluster: &Cluster,
    h: usize,
    handle: &rtnetlink::Handle,
    report: &mut UpReport,
    progress: &dyn Fn(&str),
) -> Result<Option<wireguard::Devices>> {
    if !cluster.networks.iter().any(|n| n.encrypted()) {
        return Ok(None);
    }
    let me = &cluster.hosts[h];
    let (kp, made) = wireguard::load_or_create(&me.name)?;
    if made {
        progress(&format!(
            "made this host's WireGuard key pair (private key in {}, root only)",
            wireguard::key_file(&me.name).display()
        ));
    }
    if me.wireguard_key != Some(kp.public.0) {
        report.warnings.push(Warning::new(
            format!("the state does not hold host {}'s WireGuard public key {}", me.name, kp.public),
            format!(
                "the state does not hold this host's WireGuard public key {}: the other hosts cannot reach it on \
                 encrypted networks until it does (`overlay-bpf host key --host {}` puts it there; the agent \
                 publishes it by itself)",
                kp.public, me.name
            ),
        ));
    }
    let mut peers = Vec::new();
    for (i, x) in cluster.hosts.iter().enumerate().filter(|(i, _)| *i != h) {
        match x.wireguard_key {
            Some(k) => peers.push(wireguard::Peer { public: wireguard::Key(k), address: x.address }),
            None => report.warnings.push(Warning::new(
                format!("host {} has published no WireGuard key", x.name),
                format!(
                    "host {} (hosts[{i}]) has published no WireGuard key: encrypted networks do not reach it until it \
                     does",
                    x.name
                ),
            )),
        }
    }
    let fresh = wireguard::TC_DEVICES.map(|d| (d, netdev::ifindex(d).is_none()));
    let dev = wireguard::ensure(handle, &kp, cluster.wireguard_port, cluster.underlay_mtu, &peers).await;
    // Made by this run: undone with the rest if it fails.
    report
        .veths_created
        .extend(fresh.iter().filter(|(d, new)| *new && netdev::ifindex(d).is_some()).map(|(d, _)| d.to_string()));
    let dev = dev?;
    progress(&format!(
        "WireGuard: {} on UDP port {}, {} peers",
        wireguard::DEVICE,
        cluster.wireguard_port,
        peers.len()
    ));
    Ok(Some(dev))
}

/// Where `ip netns exec NAME` finds a namespace's own resolv.conf.
const NETNS_ETC: &str = "/etc/netns";

/// The first line of the resolv.conf files this host's `up` writes.
fn resolv_conf_marker(pins: &Pins) -> String {
    format!("# overlay-bpf {}: the resolver of this namespace's networks", pins.dir.display())
}

/// `/etc/netns/<name>/resolv.conf` naming the gateway (the resolver) for
/// each named netns of `local`'s file endpoints: the endpoint that carries
/// the netns's default route gives it. A file someone else wrote is left
/// alone; ours for a netns that has no endpoint here any more goes.
fn sync_resolv_confs(pins: &Pins, local: &[&crate::state::model::Endpoint]) -> Result<()> {
    let marker = resolv_conf_marker(pins);
    let mut want: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    for e in local.iter().filter(|e| e.runtime.is_none() && e.default_route) {
        if e.netns.parent() == Some(Path::new("/run/netns")) {
            if let Some(name) = e.netns.file_name().and_then(|n| n.to_str()) {
                want.insert(name.to_string(), e.gateway);
            }
        }
    }
    let ours = |path: &Path| std::fs::read_to_string(path).is_ok_and(|t| t.starts_with(&marker));
    for (name, gw) in &want {
        let dir = Path::new(NETNS_ETC).join(name);
        let path = dir.join("resolv.conf");
        if path.exists() && !ours(&path) {
            continue;
        }
        let text = format!("{marker}\nnameserver {gw}\noptions ndots:0\n");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(&text) {
            std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
            std::fs::write(&path, text).map_err(Error::io(format!("write {}", path.display())))?;
        }
    }
    let Ok(rd) = std::fs::read_dir(NETNS_ETC) else { return Ok(()) };
    for d in rd.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        let path = d.path().join("resolv.conf");
        if !want.contains_key(&name) && ours(&path) {
            std::fs::remove_file(&path).map_err(Error::io(format!("remove {}", path.display())))?;
            // The directory too, when the file was all it held.
            let _ = std::fs::remove_dir(d.path());
        }
    }
    Ok(())
}

/// What `down` removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct DownReport {
    pub links_removed: Vec<String>,
    pub veths_removed: Vec<String>,
    /// macvlan sub-interfaces, as `ifname@netns`.
    pub macvlans_removed: Vec<String>,
    pub pin_dir_removed: bool,
}

/// Detaches everything `up` attached, removes its veths and its pins.
pub async fn down(pins: &Pins) -> Result<DownReport> {
    let _lock = pins::HostLock::acquire(pins).await?;
    pins::HostLock::clear_applied_revision(pins);
    let mut report = DownReport::default();
    let mut veths: Vec<String> = Vec::new();
    if let Ok(maps) = KernelMaps::open(pins) {
        if let Ok(current) = maps.read() {
            veths.extend(
                current.ifaces.keys().filter_map(|i| netdev::ifname(*i)).filter(|n| netdev::is_host_veth_name(n)),
            );
        }
    }
    for l in pins.links() {
        if l.kind == LinkKind::Tc && netdev::is_host_veth_name(&l.ifname) && !veths.contains(&l.ifname) {
            veths.push(l.ifname.clone());
        }
        std::fs::remove_file(&l.path).map_err(Error::io(format!("remove {}", l.path.display())))?;
        report.links_removed.push(l.to_string());
    }
    for stray in pins.stray_links() {
        std::fs::remove_file(&stray).map_err(Error::io(format!("remove {}", stray.display())))?;
        report.links_removed.push(stray.file_name().unwrap_or_default().to_string_lossy().into_owned());
    }
    masquerade::remove()?;
    sync_resolv_confs(pins, &[])?;
    let handle = netdev::connect()?;
    // What `up` did to the underlay device itself.
    let mut underlay = UnderlayRecord::load(pins);
    if underlay.mode == Some(Mode::Tc)
        && !loader::has_tcx()
        && remove_tc_underlay_filter(&handle, &underlay.device).await?
    {
        report.links_removed.push(format!("tc@{}", underlay.device));
    }
    underlay.restore_offload().map_err(|(dev, source)| ApplyError::OffloadRestore { dev, source })?;
    UnderlayRecord::remove(pins);
    netdev::sync_gateway_addresses(&handle, &BTreeSet::new()).await?;
    for v in veths {
        if netdev::delete_link(&handle, &v).await? {
            report.veths_removed.push(v);
        }
    }
    if wireguard::remove(&handle).await? {
        report.veths_removed.push(wireguard::DEVICE.to_string());
    }
    let mut record = macvlan::Record::load(Path::new(macvlan::RECORD_DIR), pins);
    for m in std::mem::take(&mut record.0).into_values() {
        if macvlan::remove(&m)? {
            report.macvlans_removed.push(format!("{}@{}", m.ifname, m.netns.display()));
        }
    }
    save_record(&record, pins)?;
    if pins.dir.exists() {
        pins.remove_all()?;
        report.pin_dir_removed = true;
    }
    // Drop the per-host root if this was its last host.
    if let Some(parent) = pins.dir.parent() {
        if parent == Path::new(pins::DEFAULT_PIN_ROOT) {
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netdev::{PeerNetns, PeerState, VethPeer};

    fn peer(netns: PeerNetns, gro: bool, tx_checksum: bool, xdp: bool) -> VethPeer {
        VethPeer { ifindex: 7, netns, state: Some(PeerState { ifname: "p0".into(), gro, tx_checksum, xdp }) }
    }

    #[test]
    fn a_veth_peer_at_its_defaults_gets_the_exact_fix() {
        let w =
            veth_peer_warning("eth0", &peer(PeerNetns::Named("lab-sw".into()), false, true, false)).unwrap().message;
        assert!(w.contains("`ip netns exec lab-sw ethtool -K p0 gro on tx off`"), "{w}");
        assert!(w.contains("GRO off") && w.contains("partial checksums"), "{w}");
        let w = veth_peer_warning("eth0", &peer(PeerNetns::Init, true, true, false)).unwrap().message;
        assert!(w.contains("`nsenter --net=/proc/1/ns/net ethtool -K p0 tx off`"), "{w}");
        assert!(!w.contains("GRO off"), "{w}");
        // An XDP program of its own gives the peer NAPI, as GRO does.
        let w = veth_peer_warning("eth0", &peer(PeerNetns::Here, false, true, true)).unwrap().message;
        assert!(w.contains("`ethtool -K p0 tx off`"), "{w}");
    }

    #[test]
    fn a_ready_veth_peer_gets_no_warning_and_an_unreadable_one_is_named() {
        assert_eq!(veth_peer_warning("eth0", &peer(PeerNetns::Here, true, false, false)), None);
        assert_eq!(veth_peer_warning("eth0", &peer(PeerNetns::Here, false, false, true)), None);
        let w = veth_peer_warning("eth0", &VethPeer { ifindex: 9, netns: PeerNetns::Unnamed(3), state: None })
            .unwrap()
            .message;
        assert!(w.contains("ifindex 9") && w.contains("ethtool -K <peer> gro on tx off"), "{w}");
    }
}
