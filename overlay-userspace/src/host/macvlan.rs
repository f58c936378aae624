//! macvlan networks' sub-interfaces: one per endpoint, a macvlan device of
//! the network's `parent` made directly inside the endpoint's netns.
//!
//! A sub-interface has no host-side end to find it by (an overlay endpoint
//! has its veth), so a host keeps a record of the ones it made, next to its
//! lock (a tmpfs, like the namespaces it names): `up` removes what the record
//! has and the state no longer wants, `down` removes them all.

use std::{
    collections::BTreeMap,
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use futures::TryStreamExt;
use rtnetlink::{
    packet_route::link::{InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkInfo, MacVlanMode},
    Handle, LinkMacVlan, LinkUnspec,
};
use serde::{Deserialize, Serialize};

use crate::{
    host::netdev::{self, ContainerIf, NetdevError},
    host::pins::Pins,
    state::model::{Mac, MacvlanMode},
};

/// Where hosts keep their records.
pub const RECORD_DIR: &str = "/run/overlay-bpf/macvlan";

pub fn kernel_mode(m: MacvlanMode) -> MacVlanMode {
    match m {
        MacvlanMode::Bridge => MacVlanMode::Bridge,
        MacvlanMode::Private => MacVlanMode::Private,
        MacvlanMode::Vepa => MacVlanMode::Vepa,
        MacvlanMode::Passthru => MacVlanMode::Passthrough,
    }
}

/// The MAC an endpoint's sub-interface has on this host: `mac`, the
/// endpoint's, except in passthru mode, where it keeps its parent's (see
/// [`create_link`]).
pub fn mac(m: &crate::state::model::Macvlan, mac: Mac) -> Mac {
    match m.mode {
        MacvlanMode::Passthru => netdev::link_mac(&m.parent).map(Mac).unwrap_or(mac),
        _ => mac,
    }
}

/// The MTU `net`'s interfaces get on this host: the network's, or for a
/// macvlan network without one its parent's (None: no such parent here).
pub fn mtu(net: &crate::state::model::Network) -> Option<u32> {
    use crate::state::model::NetworkKind;
    match &net.kind {
        NetworkKind::Macvlan(m) => m.mtu.or_else(|| netdev::ifindex(&m.parent).and_then(netdev::link_mtu)),
        NetworkKind::Overlay(o) => Some(o.mtu),
    }
}

/// Whether an endpoint of `net` whose netns route goes through it
/// (`default_route`) gets that route: not on an internal macvlan network,
/// whose gateway is no router of ours.
pub fn default_route(net: &crate::state::model::Network, default_route: bool) -> bool {
    default_route && !(net.macvlan().is_some() && net.internal)
}

/// One sub-interface a host made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Made {
    pub endpoint: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub mac: Mac,
}

/// The sub-interfaces host `pins` made, by (netns, ifname).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Record(pub BTreeMap<(PathBuf, String), Made>);

impl Record {
    /// The record of host `pins` in `dir` ([`RECORD_DIR`]).
    pub fn path(dir: &Path, pins: &Pins) -> PathBuf {
        dir.join(format!("{}.json", pins.flat_name()))
    }

    /// The record; empty when there is none (or it cannot be read: a
    /// sub-interface it named dies with its netns anyway).
    pub fn load(dir: &Path, pins: &Pins) -> Record {
        let made: Vec<Made> = std::fs::read(Record::path(dir, pins))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Record(made.into_iter().map(|m| ((m.netns.clone(), m.ifname.clone()), m)).collect())
    }

    /// Written whole to a temporary file and renamed: never half a record.
    /// An empty record is no file.
    pub fn save(&self, dir: &Path, pins: &Pins) -> std::io::Result<()> {
        let path = Record::path(dir, pins);
        if self.0.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("tmp");
        let made: Vec<&Made> = self.0.values().collect();
        std::fs::write(&tmp, serde_json::to_vec_pretty(&made).expect("serializable"))?;
        std::fs::rename(&tmp, &path)
    }

    pub fn insert(&mut self, m: Made) {
        self.0.insert((m.netns.clone(), m.ifname.clone()), m);
    }
}

/// An interface of that name already in the netns.
#[derive(Debug, Clone, PartialEq)]
pub struct Existing {
    /// `macvlan`, `veth`, ... (None: a device without a kind, e.g. physical).
    pub kind: Option<String>,
    pub mode: Option<MacVlanMode>,
    /// Its lower device's ifindex (in the parent's namespace).
    pub link: Option<u32>,
    pub mac: Option<Mac>,
}

/// What `ifname` in the netns at `netns` is, if it exists.
pub fn existing(netns: &Path, ifname: &str) -> Result<Option<Existing>, NetdevError> {
    let name = ifname.to_string();
    netdev::in_netns(netns, move |h| async move {
        let Some(idx) = netdev::ifindex(&name) else { return Ok(None) };
        let mut links = h.link().get().match_index(idx).execute();
        let Some(m) =
            links.try_next().await.map_err(|source| NetdevError::Netlink { what: format!("read {name}"), source })?
        else {
            return Ok(None);
        };
        let mut e = Existing { kind: None, mode: None, link: None, mac: None };
        for a in m.attributes {
            match a {
                LinkAttribute::Link(i) => e.link = Some(i),
                LinkAttribute::Address(a) if a.len() == 6 => e.mac = Some(Mac([a[0], a[1], a[2], a[3], a[4], a[5]])),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(InfoKind::MacVlan) => e.kind = Some("macvlan".into()),
                            LinkInfo::Kind(k) => e.kind = Some(k.to_string()),
                            LinkInfo::Data(InfoData::MacVlan(d)) => {
                                e.mode = d.into_iter().find_map(|x| match x {
                                    InfoMacVlan::Mode(m) => Some(m),
                                    _ => None,
                                })
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Some(e))
    })
}

impl Existing {
    /// A sub-interface of `parent` in `mode`: what `ensure` would make.
    pub fn is(&self, parent: u32, mode: MacVlanMode) -> bool {
        self.kind.as_deref() == Some("macvlan") && self.link == Some(parent) && self.mode == Some(mode)
    }
}

/// Creates `c.ifname` in `c.netns`: a macvlan sub-interface of device
/// `parent` (of this namespace), in `mode`, with `c`'s MAC and MTU.
pub async fn create(handle: &Handle, parent: u32, mode: MacVlanMode, c: &ContainerIf) -> Result<(), NetdevError> {
    create_link(handle, &c.ifname, parent, mode, c.mac, c.mtu, Some(&c.netns)).await
}

/// Creates sub-interface `name` of device `parent` (of this namespace), in
/// `mode`, with `mac` and `mtu`: inside the netns at `netns`, or here (the
/// Docker plugin's, which Docker moves into its container).
pub async fn create_link(
    handle: &Handle,
    name: &str,
    parent: u32,
    mode: MacVlanMode,
    mac: Mac,
    mtu: u32,
    netns: Option<&Path>,
) -> Result<(), NetdevError> {
    let ns = match netns {
        Some(p) => Some(File::open(p).map_err(|source| NetdevError::Netns { path: p.display().to_string(), source })?),
        None => None,
    };
    let what = |step: &str| {
        format!(
            "{step} macvlan {name} of {}{}",
            netdev::ifname(parent).unwrap_or_else(|| format!("ifindex {parent}")),
            netns.map(|p| format!(" in {}", p.display())).unwrap_or_default()
        )
    };
    // Made here under a name of its own, then moved and renamed in one
    // step, as Docker does: a kernel before 6.6 or so refuses (EEXIST) to
    // make a sub-interface directly in another namespace under a name its
    // parent's namespace uses (eth0 of eth0).
    let temp = match netns {
        Some(p) => {
            format!("obm{:08x}", crate::state::model::fnv1a(format!("{}/{name}", p.display()).as_bytes()) as u32)
        }
        None => name.to_string(),
    };
    let mut b = LinkMacVlan::new(&temp, parent, mode).mtu(mtu);
    // A passthru sub-interface takes its parent's MAC; setting another
    // would change the parent's own.
    if mode != MacVlanMode::Passthrough {
        b = b.address(mac.0.to_vec());
    }
    // A leftover of a run that died between the two steps.
    if temp != name {
        netdev::delete_link(handle, &temp).await?;
    }
    handle
        .link()
        .add(b.build())
        .execute()
        .await
        .map_err(|source| NetdevError::Netlink { what: what("create"), source })?;
    let Some(f) = ns else { return Ok(()) };
    let idx = netdev::ifindex(&temp).ok_or_else(|| NetdevError::NoSuchInterface(temp.clone()))?;
    let moved = LinkUnspec::new_with_index(idx).setns_by_fd(f.as_raw_fd()).name(name).build();
    if let Err(source) = handle.link().set(moved).execute().await {
        let _ = netdev::delete_link(handle, &temp).await;
        return Err(NetdevError::Netlink { what: what("move"), source });
    }
    Ok(())
}

/// Deletes `m`'s sub-interface if it is still there and still the one
/// recorded (a macvlan with its MAC): a netns of the same name made anew
/// may hold someone else's. True when it was deleted.
pub fn remove(m: &Made) -> Result<bool, NetdevError> {
    if !m.netns.exists() {
        return Ok(false);
    }
    match existing(&m.netns, &m.ifname)? {
        Some(e) if e.kind.as_deref() == Some("macvlan") && e.mac == Some(m.mac) => {}
        _ => return Ok(false),
    }
    let name = m.ifname.clone();
    netdev::in_netns(&m.netns, move |h| async move { netdev::delete_link(&h, &name).await })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_keeps_one_entry_per_interface_survives_a_reload_and_goes_when_empty() {
        let dir = std::env::temp_dir().join(format!("ob-macvlan-record-{}", std::process::id()));
        let pins = Pins::new("/sys/fs/bpf/overlay-bpf/n1");
        let made = |ifname: &str, last: u8| Made {
            endpoint: "web".into(),
            netns: "/run/netns/web".into(),
            ifname: ifname.into(),
            mac: Mac([2, 0, 0, 0, 0, last]),
        };
        let mut r = Record::default();
        r.insert(made("eth0", 1));
        r.insert(made("eth0", 2));
        r.insert(made("eth1", 3));
        assert_eq!(r.0.len(), 2, "one entry per (netns, ifname), the latest");
        r.save(&dir, &pins).unwrap();
        assert_eq!(Record::path(&dir, &pins), dir.join("sys%fs%bpf%overlay-bpf%n1.json"));
        let back = Record::load(&dir, &pins);
        assert_eq!(back, r);
        assert_eq!(back.0[&(PathBuf::from("/run/netns/web"), "eth0".to_string())].mac, Mac([2, 0, 0, 0, 0, 2]));
        Record::default().save(&dir, &pins).unwrap();
        assert!(!Record::path(&dir, &pins).exists(), "an empty record is no file");
        assert_eq!(Record::load(&dir, &pins), Record::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
