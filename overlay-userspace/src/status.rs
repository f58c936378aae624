//! `status`: what is attached, how full the maps are, and the counters.

use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs,
};
use overlay_common::{MAP_STATS, PROG_TC_ENDPOINT, PROG_XDP_UNDERLAY, STATS_ENTRIES};
use serde::Serialize;

use crate::{kmaps::KernelMaps, pins::Pins};

#[derive(Debug, Serialize)]
pub struct LinkStatus {
    pub kind: String,
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

#[derive(Debug, Serialize)]
pub struct Status {
    pub host: String,
    pub pin_dir: String,
    pub links: Vec<LinkStatus>,
    pub maps: Vec<MapStatus>,
    pub counters: Vec<CounterStatus>,
}

pub fn gather(host: &str, pins: &Pins) -> anyhow::Result<Status> {
    let maps = KernelMaps::open(pins)?;
    let content = maps.read()?;
    let mut map_status: Vec<MapStatus> = content
        .sizes()
        .into_iter()
        .map(|(name, entries, max_entries)| MapStatus { name: name.into(), entries, max_entries })
        .collect();
    map_status.push(MapStatus { name: MAP_STATS.into(), entries: STATS_ENTRIES as usize, max_entries: STATS_ENTRIES });

    let progs: Vec<_> = loaded_programs().filter_map(Result::ok).collect();
    let links = pins
        .links()
        .into_iter()
        .map(|(kind, ifname, path)| {
            let info = PinnedLink::from_pin(&path).ok().and_then(|l| FdLink::from(l).info().ok());
            let prog = info.as_ref().and_then(|i| progs.iter().find(|p| p.id() == i.program_id()));
            LinkStatus {
                kind: kind.clone(),
                ifname,
                link_id: info.as_ref().map(|i| i.id()),
                prog_id: info.as_ref().map(|i| i.program_id()),
                // The kernel keeps 15 characters of a program's name; show ours.
                prog_name: prog.map(|_| match kind.as_str() {
                    "xdp" => PROG_XDP_UNDERLAY.to_string(),
                    _ => PROG_TC_ENDPOINT.to_string(),
                }),
                run_count: prog.map(|p| p.run_count()),
                attached: info.is_some(),
            }
        })
        .collect();
    let counters = maps
        .counters()?
        .into_iter()
        .map(|(p, r, c)| CounterStatus {
            program: p.name().into(),
            reason: r.name().into(),
            drop: r.is_drop(),
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect();
    Ok(Status { host: host.into(), pin_dir: pins.dir.display().to_string(), links, maps: map_status, counters })
}

pub fn print_text(s: &Status) {
    println!("host {}  (pins: {})", s.host, s.pin_dir);
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
    println!("\ncounters:");
    for c in &s.counters {
        println!("  {:<22} {:<20} {:>12} pkts {:>14} bytes", c.program, c.reason, c.packets, c.bytes);
    }
}
