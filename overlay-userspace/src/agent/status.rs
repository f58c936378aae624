//! `status`: what is attached, how full the maps are, and the counters.

use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs,
};
use std::{collections::BTreeMap, net::Ipv4Addr};

use overlay_common::*;
use serde::Serialize;

use crate::{
    host::kmaps::KernelMaps,
    host::pins::{LinkKind, Pins},
    plan::reconcile::service_id,
    state::model::Cluster,
};

#[derive(Debug, Serialize)]
pub struct LinkStatus {
    pub kind: LinkKind,
    pub ifname: String,
    pub link_id: Option<u32>,
    pub prog_id: Option<u32>,
    pub prog_name: Option<String>,
    /// Packets run through the program; needs `sysctl kernel.bpf_stats_enabled=1`.
    pub run_count: Option<u64>,
    pub attached: bool,
}

#[derive(Debug, Serialize)]
pub struct MapStatus {
    pub name: String,
    pub entries: usize,
    pub max_entries: u32,
}

#[derive(Debug, Serialize)]
pub struct CounterStatus {
    pub program: String,
    pub reason: String,
    pub drop: bool,
    pub packets: u64,
    pub bytes: u64,
}

/// Where a service listens on this host.
#[derive(Debug, Serialize)]
pub struct FrontendStatus {
    /// `vip`, `published` (routing mesh) or `published-host` (mode: host).
    pub kind: String,
    /// The VIP; 0.0.0.0 (every host address) for published ports.
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub target_port: u16,
}

#[derive(Debug, Serialize)]
pub struct BackendStatus {
    pub address: String,
    /// The endpoint's name, when the state file is at hand.
    pub name: Option<String>,
    /// In the Maglev tables (configured and healthy).
    pub in_rotation: bool,
    /// Packets, bytes and new flows this host sent to it.
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub service_id: u32,
    pub name: Option<String>,
    pub frontends: Vec<FrontendStatus>,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub host: String,
    pub pin_dir: String,
    pub links: Vec<LinkStatus>,
    pub maps: Vec<MapStatus>,
    pub services: Vec<ServiceStatus>,
    pub counters: Vec<CounterStatus>,
    /// The hop of encrypted networks, when this host has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireguardStatus>,
    /// The macvlan sub-interfaces this host made (macvlan networks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub macvlans: Vec<MacvlanStatus>,
    /// The hook the underlay program runs in, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datapath: Option<DatapathStatus>,
}

/// The data-path mode a host runs: the underlay device, the mode its
/// attached program shows, and why that mode.
#[derive(Debug, Serialize)]
pub struct DatapathStatus {
    pub device: String,
    pub mode: crate::host::datapath::Mode,
    pub why: String,
}

/// A macvlan sub-interface this host made, and whether it is still there.
#[derive(Debug, Serialize)]
pub struct MacvlanStatus {
    pub endpoint: String,
    pub netns: String,
    pub ifname: String,
    pub mac: String,
    pub present: bool,
}

/// The sub-interfaces `pins`'s host recorded, each looked up in its netns.
fn macvlans(pins: &Pins) -> Vec<MacvlanStatus> {
    let record = crate::host::macvlan::Record::load(std::path::Path::new(crate::host::macvlan::RECORD_DIR), pins);
    record
        .0
        .into_values()
        .map(|m| {
            let here = m.netns.exists()
                && crate::host::macvlan::existing(&m.netns, &m.ifname)
                    .ok()
                    .flatten()
                    .is_some_and(|x| x.kind.as_deref() == Some("macvlan") && x.mac == Some(m.mac));
            MacvlanStatus {
                endpoint: m.endpoint,
                netns: m.netns.display().to_string(),
                ifname: m.ifname,
                mac: m.mac.to_string(),
                present: here,
            }
        })
        .collect()
}

/// This host's WireGuard device and its peers, as the kernel has them.
#[derive(Debug, Serialize)]
pub struct WireguardStatus {
    pub device: String,
    /// Data messages from cluster hosts that WireGuard did not deliver:
    /// failed authentication, replays, unknown or expired keys (the XDP
    /// program's `wireguard_data` less `tc_wireguard`'s `from_wireguard`;
    /// WireGuard itself counts none of these).
    pub rejected: u64,
    pub peers: Vec<crate::host::wireguard::PeerState>,
}

fn proto_name(p: u8) -> String {
    match p {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        n => n.to_string(),
    }
}

/// Services as the maps have them, with their backends' counters; named
/// from `cluster` when given.
fn services(
    content: &crate::plan::reconcile::MapContents,
    stats: &BTreeMap<BackendKey, BackendStats>,
    cluster: Option<&Cluster>,
) -> Vec<ServiceStatus> {
    let mut by_id: BTreeMap<u32, ServiceStatus> = BTreeMap::new();
    fn entry<'a>(m: &'a mut BTreeMap<u32, ServiceStatus>, id: u32, cluster: Option<&Cluster>) -> &'a mut ServiceStatus {
        m.entry(id).or_insert_with(|| ServiceStatus {
            service_id: id,
            name: cluster.and_then(|c| c.services.iter().find(|s| service_id(&s.name) == id).map(|s| s.name.clone())),
            frontends: Vec::new(),
            backends: Vec::new(),
        })
    }
    let endpoint_name = |ip: [u8; 4]| {
        let ip = Ipv4Addr::from(ip);
        cluster.and_then(|c| c.endpoints.iter().find(|e| e.ip == ip).map(|e| e.name.clone()))
    };
    for (k, v) in &content.services {
        let kind = if v.flags & SERVICE_F_HOST_MODE != 0 {
            "published-host"
        } else if v.flags & SERVICE_F_PUBLISHED != 0 {
            "published"
        } else {
            "vip"
        };
        entry(&mut by_id, v.service_id, cluster).frontends.push(FrontendStatus {
            kind: kind.into(),
            address: Ipv4Addr::from(k.addr).to_string(),
            port: k.port,
            protocol: proto_name(k.proto),
            target_port: v.target_port,
        });
    }
    let keys: std::collections::BTreeSet<BackendKey> = content.backends.keys().chain(stats.keys()).copied().collect();
    for k in keys {
        let st = stats.get(&k).copied().unwrap_or_default();
        entry(&mut by_id, k.service_id, cluster).backends.push(BackendStatus {
            address: Ipv4Addr::from(k.ip).to_string(),
            name: endpoint_name(k.ip),
            in_rotation: content.backends.contains_key(&k),
            packets: st.packets,
            bytes: st.bytes,
            flows: st.flows,
        });
    }
    by_id.into_values().collect()
}

pub async fn gather(host: &str, pins: &Pins, cluster: Option<&Cluster>) -> crate::error::Result<Status> {
    let maps = KernelMaps::open(pins)?;
    let content = maps.read()?;
    let mut map_status: Vec<MapStatus> = content
        .sizes(&|name| {
            crate::host::kmaps::max_entries(pins, name).unwrap_or_else(|_| crate::plan::reconcile::declared(name))
        })
        .into_iter()
        .chain(crate::host::kmaps::program_filled(pins)?)
        .map(|(name, entries, max_entries)| MapStatus { name: name.into(), entries, max_entries })
        .collect();
    map_status.push(MapStatus { name: MAP_STATS.into(), entries: STATS_ENTRIES as usize, max_entries: STATS_ENTRIES });

    let progs: Vec<_> = loaded_programs().filter_map(Result::ok).collect();
    let record = crate::host::datapath::UnderlayRecord::load(pins);
    let underlay_side = |ifname: &str| ifname == record.device || ifname == crate::host::wireguard::VETH_XDP;
    let prog_name = |kind: LinkKind, ifname: &str| match kind {
        LinkKind::Xdp => PROG_XDP_UNDERLAY.to_string(),
        _ if crate::host::wireguard::TC_DEVICES.contains(&ifname) => PROG_TC_WIREGUARD.to_string(),
        _ if underlay_side(ifname) => PROG_TC_UNDERLAY.to_string(),
        _ => PROG_TC_ENDPOINT.to_string(),
    };
    let mut links: Vec<LinkStatus> = pins
        .links()
        .into_iter()
        .map(|crate::host::pins::PinnedLinkEntry { kind, ifname, path }| {
            let info = PinnedLink::from_pin(&path).ok().and_then(|l| FdLink::from(l).info().ok());
            let prog = info.as_ref().and_then(|i| progs.iter().find(|p| p.id() == i.program_id()));
            // Pinned is not attached: a deleted device leaves its link pinned.
            let attached = info.is_some() && crate::host::loader::runs_on(&path, &ifname);
            LinkStatus {
                // The kernel keeps 15 characters of a program's name; show ours.
                prog_name: prog.map(|_| prog_name(kind, &ifname)),
                kind,
                ifname,
                link_id: info.as_ref().map(|i| i.id()),
                prog_id: info.as_ref().map(|i| i.program_id()),
                run_count: prog.map(|p| p.run_count()),
                attached,
            }
        })
        .collect();
    if !crate::host::loader::has_tcx() {
        // No TCX: the endpoints' programs are clsact filters, not pinned links.
        let handle = crate::host::netdev::connect()?;
        let wg = crate::host::wireguard::TC_DEVICES.into_iter().filter_map(crate::host::netdev::ifindex);
        let underlay = match record.mode {
            Some(crate::host::datapath::Mode::Tc) => vec![record.device.as_str(), crate::host::wireguard::VETH_XDP],
            _ => Vec::new(),
        };
        let underlay = underlay.into_iter().filter_map(crate::host::netdev::ifindex);
        for ifindex in content.ifaces.keys().copied().chain(wg).chain(underlay) {
            let Some(ifname) = crate::host::netdev::ifname(ifindex) else { continue };
            let name = prog_name(LinkKind::Tc, &ifname);
            let prog_id = crate::host::netdev::ingress_bpf_filter(&handle, ifindex, &name).await?;
            let prog = prog_id.and_then(|id| progs.iter().find(|p| p.id() == id));
            links.push(LinkStatus {
                kind: LinkKind::Tc,
                ifname,
                link_id: None,
                prog_id,
                prog_name: prog.map(|_| name.clone()),
                run_count: prog.map(|p| p.run_count()),
                attached: prog_id.is_some(),
            });
        }
    }
    // The mode is what runs on the underlay device: its attached program.
    let datapath = links.iter().find(|l| l.ifname == record.device && l.attached).map(|l| {
        let mode = match l.kind {
            LinkKind::Xdp => crate::host::datapath::Mode::Xdp,
            LinkKind::Tc => crate::host::datapath::Mode::Tc,
        };
        let why = crate::host::datapath::explain(mode, crate::host::netdev::driver(&record.device).as_deref()).why;
        DatapathStatus { device: record.device.clone(), mode, why }
    });
    let raw = maps.counters()?;
    let packets = |p: Prog, r: Reason| raw.iter().find(|(q, s, _)| *q == p && *s == r).map_or(0, |(.., c)| c.packets);
    let rejected = packets(Prog::XdpUnderlay, Reason::WireguardData)
        .saturating_sub(packets(Prog::TcWireguard, Reason::FromWireguard));
    // The underlay program's counters go by the program that runs: in the
    // TC data path, `tc_underlay_ingress` counts in the same slots.
    let tc_mode = datapath.as_ref().is_some_and(|d| d.mode == crate::host::datapath::Mode::Tc);
    let counters = raw
        .into_iter()
        .map(|(p, r, c)| CounterStatus {
            program: match p {
                Prog::XdpUnderlay if tc_mode => PROG_TC_UNDERLAY.into(),
                _ => p.name().into(),
            },
            reason: r.name().into(),
            drop: r.is_drop(),
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect();
    let services = services(&content, &maps.backend_stats()?, cluster);
    let wireguard = match crate::host::netdev::ifindex(crate::host::wireguard::DEVICE) {
        Some(_) => Some(WireguardStatus {
            device: crate::host::wireguard::DEVICE.into(),
            rejected,
            peers: crate::host::wireguard::peers().await?,
        }),
        None => None,
    };
    Ok(Status {
        datapath,
        host: host.into(),
        pin_dir: pins.dir.display().to_string(),
        links,
        maps: map_status,
        services,
        counters,
        wireguard,
        macvlans: macvlans(pins),
    })
}

pub fn print_text(s: &Status) {
    println!("host {}  (pins: {})", s.host, s.pin_dir);
    if let Some(d) = &s.datapath {
        println!("data path: {} on {} ({})", d.mode.name(), d.device, d.why);
    }
    println!("\nprograms:");
    for l in &s.links {
        println!(
            "  {:<4} {:<14} {:<22} link {:<6} prog {:<6} {}",
            l.kind,
            l.ifname,
            l.prog_name.as_deref().unwrap_or("?"),
            l.link_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            l.prog_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            if l.attached { "attached" } else { "DETACHED (re-run `overlay-bpf up`)" }
        );
    }
    println!("\nmaps:");
    for m in &s.maps {
        println!("  {:<18} {:>7} / {:<7}", m.name, m.entries, m.max_entries);
    }
    println!("\nservices (this host's frontends; packets, bytes, new flows it sent to each backend):");
    for sv in &s.services {
        println!("  {}", sv.name.clone().unwrap_or_else(|| format!("service {:#010x}", sv.service_id)));
        for f in &sv.frontends {
            println!("    {:<15} {}:{}/{} -> :{}", f.kind, f.address, f.port, f.protocol, f.target_port);
        }
        for b in &sv.backends {
            println!(
                "    backend {:<15} {:<16} {:>10} pkts {:>12} bytes {:>8} flows{}",
                b.address,
                b.name.as_deref().unwrap_or(""),
                b.packets,
                b.bytes,
                b.flows,
                if b.in_rotation { "" } else { "  (out of rotation)" }
            );
        }
    }
    if let Some(w) = &s.wireguard {
        println!(
            "\nWireGuard ({}), {} data messages rejected (authentication, replay, key), peers:",
            w.device, w.rejected
        );
        for p in &w.peers {
            let hs = p.last_handshake.map_or("no handshake yet".to_string(), |t| format!("handshake at {t}"));
            println!(
                "  {} {:<22} {hs}, {} bytes in, {} bytes out",
                p.public_key,
                p.endpoint.as_deref().unwrap_or("-"),
                p.rx_bytes,
                p.tx_bytes
            );
        }
    }
    if !s.macvlans.is_empty() {
        println!("\nmacvlan sub-interfaces:");
        for m in &s.macvlans {
            println!(
                "  {:<16} {:<6} {} in {}{}",
                m.endpoint,
                m.ifname,
                m.mac,
                m.netns,
                if m.present { "" } else { "  GONE (re-run `overlay-bpf up`)" }
            );
        }
    }
    println!("\ncounters:");
    for c in &s.counters {
        println!("  {:<22} {:<20} {:>12} pkts {:>14} bytes", c.program, c.reason, c.packets, c.bytes);
    }
}

/// docs/data-path.md's table of counter reasons, from the one table in
/// `overlay-common/src/stats.rs`: name, the programs that count it, meaning.
pub fn reasons_markdown() -> String {
    let mut s = String::from("| reason | counted by | meaning |\n|---|---|---|\n");
    for r in REASONS {
        let progs: Vec<String> =
            PROGS.iter().filter(|p| r.counted_by(**p)).map(|p| format!("`{}`", p.name())).collect();
        let doc = r.doc().split_whitespace().collect::<Vec<_>>().join(" ");
        s += &format!("| `{}` | {} | {} |\n", r.name(), progs.join(", "), doc);
    }
    s
}
