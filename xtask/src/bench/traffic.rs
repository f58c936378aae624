//! The traffic rows: the same namespace topology twice, once carried by
//! overlay-bpf and once by what Docker builds (a bridge plus a kernel `vxlan`
//! device per host, static FDB, MTU 1450; the routing mesh as nftables DNAT
//! and masquerade over it), measured in turns.
//!
//! Each topology: an underlay switch, hosts n1 and n2, an outside client `cl`
//! on the underlay, container a1 on n1 (10.70.0.11) and a2 on n2
//! (10.70.0.12). a2 backs a service published on port 8080 (target 80).

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{load, median, Row};
use crate::{
    testbed::{ip, iperf3, must, Deployment, Netns, Underlay},
    util::{check_interrupt, root, step},
};

pub(super) const A1: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 11);
pub(super) const A2: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 12);
/// The labels of overlay-bpf's two topologies: the default data path (TC on
/// a veth underlay) and the XDP one.
const OURS: &str = "overlay-bpf";
const OURS_XDP: &str = "overlay-bpf xdp";
const PUBLISHED: u16 = 8080;
const TARGET: u16 = 80;

/// Docker's default MAC for a container address: 02:42 and the IPv4 address.
fn mac(a: Ipv4Addr) -> String {
    let o = a.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// One of the two topologies.
struct Topo {
    /// "overlay-bpf" or the baseline's name.
    label: &'static str,
    prefix: &'static str,
    // Field order is drop order: overlay-bpf down, then the namespaces.
    _dep: Option<Deployment>,
    containers: Vec<Netns>,
    _underlay: Underlay,
    /// Where the mesh row's client connects: the published port on n1, or
    /// (the `direct` baseline) the backend itself.
    mesh_to: SocketAddrV4,
    /// overlay-bpf's programs on both hosts: (name, program id).
    progs: Vec<(String, u64)>,
}

impl Topo {
    /// Every veth at its defaults, or (`wire_like`) set up as the XDP data
    /// path needs a veth underlay.
    fn underlay(prefix: &'static str, subnet: u8, wire_like: bool) -> (Underlay, Vec<Netns>, Ipv4Addr) {
        let n1 = Ipv4Addr::new(192, 168, subnet, 11);
        let hosts =
            [("n1", n1), ("n2", Ipv4Addr::new(192, 168, subnet, 12)), ("cl", Ipv4Addr::new(192, 168, subnet, 100))];
        let u = if wire_like { Underlay::wire_like(prefix, &hosts) } else { Underlay::new(prefix, &hosts) };
        // The connection-rate client goes through many ports.
        must(u.host("cl").cmd("sysctl").args(["-qw", "net.ipv4.ip_local_port_range=1024 65000"]));
        let containers = ["a1", "a2"].iter().map(|c| Netns::new(&format!("{prefix}-{c}"))).collect();
        (u, containers, n1)
    }

    /// overlay-bpf up on both hosts from a generated state file, in the
    /// default data path (TC on these veths), or with `xdp` in the XDP one
    /// (on an underlay set up for it).
    fn overlay(bin: &Path, prefix: &'static str, subnet: u8, xdp: bool) -> Result<Topo> {
        let (u, containers, n1_addr) = Self::underlay(prefix, subnet, xdp);
        let host = |n: &str| format!("{prefix}{n}");
        let y = format!(
            "version: 1
cluster: {{vxlan_port: 4789, underlay_mtu: 1500}}
hosts:
  - {{name: {n1}, address: 192.168.{subnet}.11}}
  - {{name: {n2}, address: 192.168.{subnet}.12}}
networks:
  - {{name: front, vni: 5001, attachable: true, subnets: [{{subnet: 10.70.0.0/24}}]}}
endpoints:
  - {{name: a1, host: {n1}, network: front, netns: {prefix}-a1, ip: {A1}}}
  - {{name: a2, host: {n2}, network: front, netns: {prefix}-a2, ip: {A2}}}
services:
  - {{name: web, network: front, ports: [{{protocol: tcp, target: {TARGET}, published: {PUBLISHED}}}], backends: [a2]}}
",
            n1 = host("n1"),
            n2 = host("n2"),
        );
        let dir = root().join("target/bench");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join(format!("{prefix}.yaml"));
        std::fs::write(&file, y)?;
        let mut dep = if xdp { Deployment::in_mode(bin, "xdp") } else { Deployment::new(bin) };
        for n in ["n1", "n2"] {
            let out = dep.up(&file, &host(n), &format!("{prefix}-{n}"));
            if !out.status.success() {
                bail!("overlay-bpf up for {}: {}", host(n), String::from_utf8_lossy(&out.stderr));
            }
        }
        let mut progs = Vec::new();
        for n in ["n1", "n2"] {
            let st = dep.cmd(&host(n), &format!("{prefix}-{n}")).args(["status", "-o", "json"]).output()?;
            let st: Value = serde_json::from_slice(&st.stdout).context("overlay-bpf status -o json")?;
            for l in st["links"].as_array().context("status links")? {
                if let (Some(id), Some(name)) = (l["prog_id"].as_u64(), l["prog_name"].as_str()) {
                    progs.push((name.to_string(), id));
                }
            }
        }
        let mesh_to = SocketAddrV4::new(n1_addr, PUBLISHED);
        let label = if xdp { OURS_XDP } else { OURS };
        Ok(Topo { label, prefix, _dep: Some(dep), containers, _underlay: u, mesh_to, progs })
    }

    /// Docker's data path, by hand: `vxlan_bridge` at MTU 1450; on n1 the mesh as nftables DNAT to a2 with
    /// masquerade, or with `ipvs` as Docker's ingress sandbox does it: an IPVS
    /// service in NAT mode, masqueraded.
    fn kernel(prefix: &'static str, subnet: u8, ipvs: bool) -> Result<Topo> {
        let (u, containers, n1_addr) = Self::underlay(prefix, subnet, false);
        vxlan_bridge(&u, &containers, subnet, 1450);
        let n1 = u.host("n1");
        must(n1.cmd("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]));
        let dnat = if ipvs {
            let vs = format!("{n1_addr}:{PUBLISHED}");
            must(n1.cmd("sysctl").args(["-qw", "net.ipv4.vs.conntrack=1"]));
            must(n1.cmd("ipvsadm").args(["-A", "-t", &vs, "-s", "rr"]));
            must(n1.cmd("ipvsadm").args(["-a", "-t", &vs, "-r", &format!("{A2}:{TARGET}"), "-m"]));
            String::new()
        } else {
            format!(
                "  chain pre {{ type nat hook prerouting priority dstnat; policy accept; tcp dport {PUBLISHED} dnat to {A2}:{TARGET}; }}\n"
            )
        };
        let rules = format!(
            "table ip obbench {{
{dnat}  chain post {{ type nat hook postrouting priority srcnat; policy accept; oifname \"kbr\" masquerade; }}
}}"
        );
        let mut nft = n1.cmd("nft").args(["-f", "-"]).stdin(Stdio::piped()).spawn().context("nft")?;
        std::io::Write::write_all(nft.stdin.as_mut().context("nft stdin")?, rules.as_bytes())?;
        if !nft.wait()?.success() {
            bail!("nft -f: the baseline's DNAT rules were refused");
        }
        let label = if ipvs { "IPVS" } else { "kernel vxlan+bridge" };
        let mesh_to = SocketAddrV4::new(n1_addr, PUBLISHED);
        Ok(Topo { label, prefix, _dep: None, containers, _underlay: u, mesh_to, progs: Vec::new() })
    }

    /// The limit of the rig: the same containers with no overlay and no NAT,
    /// each a veth straight into the underlay's bridge (one L2, MTU 1500,
    /// veth's defaults), and the client reaching the backend's own address
    /// and port over an on-link route.
    ///
    /// With `finished_csum`, the containers and the client send finished
    /// checksums (`ethtool -K eth0 tx off`): a veth otherwise never computes
    /// a TCP or UDP checksum at all (the receiver trusts the "partial" mark),
    /// which no path through XDP can do (XDP cannot finish a partial
    /// checksum, so a veth underlay under XDP runs with TX checksum offload
    /// off, see docs/data-path.md). This is the limit for any XDP data path on this rig.
    fn direct(prefix: &'static str, subnet: u8, finished_csum: bool) -> Result<Topo> {
        let (u, containers, _) = Self::underlay(prefix, subnet, false);
        for (i, (c, cip)) in containers.iter().zip([A1, A2]).enumerate() {
            let port = format!("d{i}");
            ip(&[
                "link",
                "add",
                &port,
                "netns",
                &u.switch.name,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &c.name,
            ]);
            u.switch.ip(&["link", "set", &port, "master", "br0", "up"]);
            c.ip(&["link", "set", "eth0", "address", &mac(cip), "up"]);
            c.ip(&["addr", "add", &format!("{cip}/24"), "dev", "eth0"]);
            c.ip(&["route", "add", &format!("192.168.{subnet}.0/24"), "dev", "eth0"]);
            c.ip(&["link", "set", "lo", "up"]);
        }
        u.host("cl").ip(&["route", "add", "10.70.0.0/24", "dev", "eth0"]);
        let label = match finished_csum {
            true => {
                for c in &containers {
                    must(c.cmd("ethtool").args(["-K", "eth0", "tx", "off"]));
                }
                // (The underlay's hosts, the client among them, send
                // finished checksums in both copies: see `Underlay`.)
                "direct, checksums finished"
            }
            false => "direct",
        };
        let mesh_to = SocketAddrV4::new(A2, TARGET);
        Ok(Topo { label, prefix, _dep: None, containers, _underlay: u, mesh_to, progs: Vec::new() })
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn container(&self, name: &str) -> &Netns {
        &self.containers[if name == "a1" { 0 } else { 1 }]
    }

    /// One ping each way: neighbours resolved, the path proven.
    fn check(&self) -> Result<()> {
        for (from, to) in [("a1", A2), ("a2", A1)] {
            let out = self.container(from).run("ping", &["-c", "1", "-W", "3", &to.to_string()]);
            if !out.status.success() {
                bail!("{}: {from} cannot ping {to}: the topology is broken", self.label);
            }
        }
        Ok(())
    }
}

/// Docker's overlay by hand on hosts n1 and n2 of `u`: per host a bridge
/// `kbr` holding a kernel vxlan device `kvx` (VNI 5001, port 4789, no
/// learning, static FDB to the other host) and a veth to its container
/// (a1 on n1, a2 on n2), container MTU `mtu`.
pub(super) fn vxlan_bridge(u: &Underlay, containers: &[Netns], subnet: u8, mtu: u16) {
    let addr = |i: usize| Ipv4Addr::new(192, 168, subnet, 11 + i as u8).to_string();
    let mtu = mtu.to_string();
    for (i, (c, cip)) in containers.iter().zip([A1, A2]).enumerate() {
        let h = u.host(["n1", "n2"][i]);
        let (local, remote, remote_c) = (addr(i), addr(1 - i), [A1, A2][1 - i]);
        h.ip(&["link", "add", "kvx", "type", "vxlan", "id", "5001", "dstport", "4789"]);
        h.ip(&["link", "set", "kvx", "type", "vxlan", "local", &local, "dev", "eth0", "nolearning"]);
        h.ip(&["link", "add", "kbr", "type", "bridge"]);
        h.ip(&["link", "set", "kvx", "master", "kbr", "up"]);
        ip(&["link", "add", "kcv", "netns", &h.name, "type", "veth", "peer", "name", "eth0", "netns", &c.name]);
        h.ip(&["link", "set", "kcv", "mtu", &mtu, "master", "kbr", "up"]);
        h.ip(&["addr", "add", &format!("10.70.0.{}/24", 201 + i), "dev", "kbr"]);
        h.ip(&["link", "set", "kbr", "up"]);
        must(h.cmd("bridge").args(["fdb", "append", "00:00:00:00:00:00", "dev", "kvx", "dst", &remote]));
        must(h.cmd("bridge").args(["fdb", "add", &mac(remote_c), "dev", "kvx", "dst", &remote, "self", "permanent"]));
        c.ip(&["link", "set", "eth0", "address", &mac(cip), "mtu", &mtu, "up"]);
        c.ip(&["addr", "add", &format!("{cip}/24"), "dev", "eth0"]);
        c.ip(&["link", "set", "lo", "up"]);
    }
}

/// iperf3, one TCP stream a1 -> a2 for `secs` (after a 1 s omitted
/// warm-up): received bits per second.
fn iperf(t: &Topo, secs: f64) -> Result<f64> {
    iperf3(t.container("a2"), t.container("a1"), &A2.to_string(), secs, &["-O", "1"]).map_err(anyhow::Error::msg)
}

/// Run time the kernel accounted to our programs (kernel.bpf_stats_enabled),
/// by program name: (run_time_ns, run_cnt).
fn prog_stats(t: &Topo) -> Result<Vec<(String, u64, u64)>> {
    let mut out: Vec<(String, u64, u64)> = Vec::new();
    for (name, id) in &t.progs {
        let p = Command::new("bpftool").args(["-j", "prog", "show", "id", &id.to_string()]).output()?;
        let p: Value = serde_json::from_slice(&p.stdout).context("bpftool -j prog show")?;
        let (ns, cnt) = (p["run_time_ns"].as_u64().unwrap_or(0), p["run_cnt"].as_u64().unwrap_or(0));
        match out.iter_mut().find(|(n, ..)| n == name) {
            Some(e) => {
                e.1 += ns;
                e.2 += cnt;
            }
            None => out.push((name.clone(), ns, cnt)),
        }
    }
    Ok(out)
}

/// kernel.bpf_stats_enabled on while alive, back to what it was on drop.
struct BpfStats(String);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";
    fn enable() -> Result<BpfStats> {
        let was = std::fs::read_to_string(Self::PATH).context(Self::PATH)?.trim().to_string();
        std::fs::write(Self::PATH, "1").context(Self::PATH)?;
        Ok(BpfStats(was))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

/// A traffic row: the measurement, its unit, and whether the baseline is the
/// mesh's (nftables DNAT) or the overlay's.
struct Case {
    name: &'static str,
    unit: &'static str,
    mesh: bool,
    run: fn(&Topo, f64) -> Result<f64>,
}

const CASES: [Case; 4] = [
    Case { name: "overlay_tcp_throughput", unit: "Gbit/s", mesh: false, run: |t, s| Ok(iperf(t, s)? / 1e9) },
    Case {
        name: "overlay_udp_pps_small",
        unit: "kpps",
        mesh: false,
        run: |t, s| Ok(load::udp_pps(&t.ns("a1"), &t.ns("a2"), A2, s)? / 1e3),
    },
    Case {
        name: "overlay_tcp_rr",
        unit: "k/s",
        mesh: false,
        run: |t, s| Ok(load::tcp_rr(&t.ns("a1"), &t.ns("a2"), A2, s)? / 1e3),
    },
    Case {
        name: "mesh_tcp_conn_rate",
        unit: "k/s",
        mesh: true,
        run: |t, s| Ok(load::tcp_conn_rate(&t.ns("cl"), &[t.ns("a2")], TARGET, t.mesh_to, 2, s)? / 1e3),
    },
];

/// IPVS, where the kernel has it (built in, or a module modprobe loads).
pub(super) fn has_ipvs() -> bool {
    let proc = Path::new("/proc/net/ip_vs");
    if !proc.exists() {
        let _ = Command::new("modprobe").arg("ip_vs").stderr(Stdio::null()).status();
    }
    proc.exists()
}

/// The topologies, every case `rounds` times, in turns (the order rotates
/// each round), with the kernel's per-program run time read around
/// overlay-bpf's: overlay-bpf, the kernel's path, and `direct` (the rig's
/// limit: every row also as `<row>_vs_direct`). Where the kernel has IPVS,
/// the mesh case also runs against a topology with IPVS in place of the
/// nftables DNAT.
pub fn traffic(bin: &Path, rounds: u32, secs: f64, perf: bool) -> Result<Vec<Row>> {
    let t0 = Instant::now();
    step("bench: traffic rows; identical namespace topologies (obbo: overlay-bpf, obbk: kernel vxlan+bridge)");
    let mut topos = vec![Topo::overlay(bin, "obbo", 211, false)?, Topo::overlay(bin, "obbx", 214, true)?];
    step("bench: overlay-bpf in both data paths: TC (obbo, the default here) and XDP (obbx, its veths set up for XDP)");
    topos.push(Topo::kernel("obbk", 212, false)?);
    if has_ipvs() {
        step("bench: this kernel has IPVS: the mesh row also runs against IPVS (obbv), as Docker's mesh");
        topos.push(Topo::kernel("obbv", 213, true)?);
    } else {
        step("bench: no IPVS in this kernel (no /proc/net/ip_vs): the mesh baseline is nftables DNAT only");
    }
    step("bench: and the rig's limit (obbd): the containers on one L2 with no overlay, the client straight to the backend");
    topos.push(Topo::direct("obbd", 218, false)?);
    step("bench: and the same with finished checksums (obbc), the limit for a path through XDP");
    topos.push(Topo::direct("obbc", 219, true)?);
    for t in &topos {
        t.check()?;
    }
    let _stats = BpfStats::enable()?;
    let mut rows = Vec::new();
    for case in &CASES {
        // The IPVS topology only serves the mesh.
        let ts: Vec<&Topo> = topos.iter().filter(|t| case.mesh || t.label != "IPVS").collect();
        if perf {
            for t in &ts {
                super::profile(&format!("{} {}", case.name, t.label), secs, || (case.run)(t, secs).map(|_| ()))?;
            }
        }
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); ts.len()];
        let mut per_prog: Vec<(String, Vec<f64>)> = Vec::new();
        for r in 0..rounds as usize {
            check_interrupt()?;
            for k in 0..ts.len() {
                let i = (k + r) % ts.len();
                let t = ts[i];
                let before = if t.progs.is_empty() { None } else { Some(prog_stats(t)?) };
                let v = (case.run)(t, secs).with_context(|| format!("{} over {}", case.name, t.label))?;
                println!("  {:<24} round {} {:<20} {v:>10.3} {}", case.name, r + 1, t.label, case.unit);
                samples[i].push(v);
                let Some(before) = before else { continue };
                for (name, ns, cnt) in prog_stats(t)? {
                    let name = if t.label == OURS_XDP { format!("{name}.xdp") } else { name };
                    let (ns0, cnt0) =
                        before.iter().find(|(n, ..)| *n == name).map(|(_, a, b)| (*a, *b)).unwrap_or((0, 0));
                    if cnt > cnt0 {
                        let per = (ns - ns0) as f64 / (cnt - cnt0) as f64;
                        match per_prog.iter_mut().find(|(n, _)| *n == name) {
                            Some(e) => e.1.push(per),
                            None => per_prog.push((name, vec![per])),
                        }
                    }
                }
            }
        }
        // ts[0] and ts[1] are overlay-bpf, in TC and in XDP; the XDP rows
        // are named with `.xdp`.
        for (o, i, t) in [0, 1].into_iter().flat_map(|o| ts.iter().enumerate().skip(2).map(move |(i, t)| (o, i, t))) {
            let (name, base) = match (case.mesh, t.label) {
                (_, "direct") => (format!("{}_vs_direct", case.name), "direct"),
                (_, "direct, checksums finished") => {
                    (format!("{}_vs_direct_csum", case.name), "direct, checksums finished")
                }
                (true, "IPVS") => (format!("{}_vs_ipvs", case.name), "IPVS"),
                (true, _) => (case.name.to_string(), "nftables DNAT"),
                (false, l) => (case.name.to_string(), l),
            };
            let name = if o == 1 { format!("{name}.xdp") } else { name };
            println!("  {name}: {:.3} vs {:.3} {}", median(&samples[o]), median(&samples[i]), case.unit);
            let baseline = Some((base.to_string(), samples[i].clone()));
            rows.push(Row { name, unit: case.unit, ours: samples[o].clone(), baseline });
        }
        for (prog, v) in per_prog {
            rows.push(Row {
                name: format!("{}.bpf_ns_per_run.{prog}", case.name),
                unit: "ns",
                ours: v,
                baseline: None,
            });
        }
    }
    step(&format!("bench: traffic rows done ({:.1}s)", t0.elapsed().as_secs_f64()));
    Ok(rows)
}
