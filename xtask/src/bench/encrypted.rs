//! The encrypted rows, run by `cargo xtask bench --vm` inside a VM of a Debian
//! kernel (WireGuard and ESP are modules there; this machine's kernel has
//! neither): TCP throughput between containers on two hosts over an
//! overlay-bpf network with `encrypted: true` (WireGuard between the hosts)
//! against Docker's encrypted overlay, built by hand as libnetwork builds it:
//! the traffic rows' kernel vxlan and bridge, plus IPsec ESP in transport
//! mode for the VXLAN datagrams between the two hosts, AES-GCM
//! (`rfc4106(gcm(aes))`, 128-bit key, 64-bit ICV), one SA per direction and
//! an outbound policy for UDP to port 4789, containers at MTU 1424 (1500, less
//! 50 for VXLAN and 26 for ESP, as libnetwork computes it). The same
//! overlay-bpf cluster's plain network gives the price of encrypting.
//!
//! Each topology is checked before it is measured: a ping each way, and
//! afterwards the proof that the traffic was encrypted (the ESP SA's packet
//! count, overlay-bpf's `to_wireguard` counter).

use std::{net::Ipv4Addr, path::Path, process::Command, time::Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{
    median,
    traffic::{vxlan_bridge, A1, A2},
    Row,
};
use crate::{
    testbed::{iperf3, must, Deployment, KeyDir, Netns, Underlay},
    util::{check_interrupt, step},
};

/// libnetwork's container MTU on an encrypted overlay: 1500, less 50 (VXLAN)
/// and 26 (ESP: SPI, sequence, IV, pad length, next header, 8-byte ICV),
/// rounded down to a multiple of 4.
const DOCKER_ESP_MTU: u16 = 1400;
/// overlay-bpf's plain network beside the encrypted one.
const PLAIN_A1: Ipv4Addr = Ipv4Addr::new(10, 73, 0, 11);
const PLAIN_A2: Ipv4Addr = Ipv4Addr::new(10, 73, 0, 12);

fn hosts(prefix: &str, subnet: u8) -> (Underlay, [Ipv4Addr; 2]) {
    let addrs = [Ipv4Addr::new(192, 168, subnet, 11), Ipv4Addr::new(192, 168, subnet, 12)];
    let u = Underlay::new(prefix, &[("n1", addrs[0]), ("n2", addrs[1])]);
    for port in ["p0", "p1"] {
        must(u.switch.cmd("ethtool").args(["-K", port, "gro", "off"]));
    }
    (u, addrs)
}

/// overlay-bpf: network `secret` (encrypted) and `plain`, an endpoint of
/// each on each host.
struct Ours {
    // Field order is drop order: overlay-bpf down, then the namespaces.
    dep: Deployment,
    /// s1, s2 (secret), c1, c2 (plain).
    containers: Vec<Netns>,
    _underlay: Underlay,
    _keys: KeyDir,
    prefix: &'static str,
}

impl Ours {
    fn new(bin: &Path, prefix: &'static str, subnet: u8) -> Result<Ours> {
        let (u, addrs) = hosts(prefix, subnet);
        let containers = ["s1", "s2", "c1", "c2"].iter().map(|c| Netns::new(&format!("{prefix}-{c}"))).collect();
        let keys = KeyDir::new(prefix);
        let mut y = String::from("version: 1\ncluster: {vxlan_port: 4789, underlay_mtu: 1500}\nhosts:\n");
        for (i, a) in addrs.iter().enumerate() {
            y += &format!("  - {{name: {prefix}n{}, address: {a}}}\n", i + 1);
        }
        y += "networks:\n";
        y += "  - {name: secret, vni: 5101, encrypted: true, attachable: true, subnets: [{subnet: 10.70.0.0/24}]}\n";
        y += "  - {name: plain, vni: 5102, attachable: true, subnets: [{subnet: 10.73.0.0/24}]}\n";
        y += "endpoints:\n";
        for (name, host, net, ip) in [
            ("s1", 1, "secret", A1),
            ("s2", 2, "secret", A2),
            ("c1", 1, "plain", PLAIN_A1),
            ("c2", 2, "plain", PLAIN_A2),
        ] {
            y += &format!(
                "  - {{name: {name}, host: {prefix}n{host}, network: {net}, netns: {prefix}-{name}, ip: {ip}}}\n"
            );
        }
        let file = std::env::temp_dir().join(format!("{prefix}.yaml"));
        std::fs::write(&file, y)?;
        let mut dep = Deployment::new(bin);
        let host = |n: usize| (format!("{prefix}n{n}"), format!("{prefix}-n{n}"));
        // Each host's key pair; `host key` puts the public half in the file.
        for n in [1, 2] {
            let (h, ns) = host(n);
            let out = dep.cmd(&h, &ns).args(["host", "key", "--state"]).arg(&file).output()?;
            if !out.status.success() {
                bail!("overlay-bpf host key for {h}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        for n in [1, 2] {
            let (h, ns) = host(n);
            let out = dep.up(&file, &h, &ns);
            if !out.status.success() {
                bail!("overlay-bpf up for {h}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let _ = std::fs::remove_file(&file);
        Ok(Ours { dep, containers, _underlay: u, _keys: keys, prefix })
    }

    /// Packets the hosts' programs took in decrypted from WireGuard.
    fn sealed(&self) -> Result<u64> {
        let mut total = 0;
        for n in [1, 2] {
            let out = self
                .dep
                .cmd(&format!("{}n{n}", self.prefix), &format!("{}-n{n}", self.prefix))
                .args(["status", "-o", "json"])
                .output()?;
            let st: Value = serde_json::from_slice(&out.stdout).context("overlay-bpf status -o json")?;
            for c in st["counters"].as_array().context("status counters")? {
                if c["reason"] == "from_wireguard" {
                    total += c["packets"].as_u64().unwrap_or(0);
                }
            }
        }
        Ok(total)
    }
}

/// Docker's encrypted overlay by hand.
struct DockerEsp {
    containers: Vec<Netns>,
    underlay: Underlay,
}

impl DockerEsp {
    fn new(prefix: &'static str, subnet: u8) -> Result<DockerEsp> {
        let (u, addrs) = hosts(prefix, subnet);
        let containers: Vec<Netns> = ["a1", "a2"].iter().map(|c| Netns::new(&format!("{prefix}-{c}"))).collect();
        vxlan_bridge(&u, &containers, subnet, DOCKER_ESP_MTU);
        // One SA per direction (key and salt of its own, as libnetwork
        // derives them), on both hosts; each host's outbound policy sends
        // its VXLAN datagrams to the other through its SA.
        let sas = [
            (addrs[0], addrs[1], "0x101", "0x5a1d0c8049dd88600ec4f9eded7b1ed540ea607f"),
            (addrs[1], addrs[0], "0x102", "0x3c9e4b27f1a05d6e8b7a9c0d1e2f3a4b5c6d7e8f"),
        ];
        for (i, h) in ["n1", "n2"].iter().enumerate() {
            let h = u.host(h);
            for (src, dst, spi, key) in sas {
                let (src, dst) = (src.to_string(), dst.to_string());
                h.ip(&["xfrm", "state", "add", "src", &src, "dst", &dst, "proto", "esp", "spi", spi, "reqid", spi]
                    .into_iter()
                    .chain(["mode", "transport", "aead", "rfc4106(gcm(aes))", key, "64"])
                    .collect::<Vec<_>>());
            }
            let (src, dst, spi, _) = sas[i];
            let (src, dst) = (src.to_string(), dst.to_string());
            let (src_net, dst_net) = (format!("{src}/32"), format!("{dst}/32"));
            h.ip(&["xfrm", "policy", "add", "src", &src_net, "dst", &dst_net, "proto", "udp", "dport", "4789"]
                .into_iter()
                .chain(["dir", "out", "tmpl", "src", &src, "dst", &dst, "proto", "esp", "reqid", spi])
                .chain(["mode", "transport"])
                .collect::<Vec<_>>());
        }
        Ok(DockerEsp { containers, underlay: u })
    }

    /// Packets n1 sealed with its outbound SA.
    fn sealed(&self) -> Result<u64> {
        let n1 = &self.underlay.hosts[0];
        let out = must(n1.0.cmd("ip").args(["-s", "xfrm", "state", "list", "src", &n1.1.to_string()]));
        sa_packets(&out).with_context(|| format!("ip -s xfrm state shows no SA's packet count: {out}"))
    }
}

/// The packet count of the first SA in `ip -s xfrm state` output: the line
/// after "lifetime current:" reads "B(bytes), P(packets)".
fn sa_packets(out: &str) -> Option<u64> {
    let mut lines = out.lines();
    lines.by_ref().find(|l| l.trim() == "lifetime current:")?;
    let v = lines.next()?;
    v.split(", ").find_map(|f| f.trim().strip_suffix("(packets)")).and_then(|p| p.parse().ok())
}

/// TCP segments the namespace retransmitted so far (/proc/net/snmp).
fn retransmits(ns: &Netns) -> u64 {
    retrans_segs(&String::from_utf8_lossy(&ns.run("cat", &["/proc/net/snmp"]).stdout)).unwrap_or(0)
}

/// RetransSegs of /proc/net/snmp: a "Tcp:" line of names, then one of values.
fn retrans_segs(snmp: &str) -> Option<u64> {
    let tcp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let [names, values] = tcp[..] else { return None };
    let at = names.split_whitespace().position(|n| n == "RetransSegs")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// The kernel's IPsec error counters that are not zero, on each host.
fn xfrm_errors(u: &Underlay) -> String {
    let mut out = Vec::new();
    for (ns, _) in &u.hosts {
        let stat = String::from_utf8_lossy(&ns.run("cat", &["/proc/net/xfrm_stat"]).stdout).into_owned();
        for l in stat.lines() {
            if let Some((k, v)) = l.split_once(char::is_whitespace) {
                if v.trim() != "0" {
                    out.push(format!("{}: {k} {}", ns.name, v.trim()));
                }
            }
        }
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(", ")
    }
}

/// A ping each way between `a` and `b` (WireGuard's handshake, neighbours).
fn check(label: &str, a: &Netns, a_ip: Ipv4Addr, b: &Netns, b_ip: Ipv4Addr) -> Result<()> {
    for (from, to) in [(a, b_ip), (b, a_ip)] {
        let out = from.run("ping", &["-c", "3", "-i", "0.5", "-W", "5", &to.to_string()]);
        if !out.status.success() {
            bail!("{label}: {} cannot ping {to}: the topology is broken", from.name);
        }
    }
    Ok(())
}

fn gbits(server: &Netns, client: &Netns, ip: Ipv4Addr, secs: f64, streams: u32) -> Result<f64> {
    let p = streams.to_string();
    Ok(iperf3(server, client, &ip.to_string(), secs, &["-O", "1", "-P", &p]).map_err(anyhow::Error::msg)? / 1e9)
}

/// The rows; with `perf`, a profile of each path first.
pub fn rows(bin: &Path, rounds: u32, secs: f64, perf: bool) -> Result<Vec<Row>> {
    let t0 = Instant::now();
    step("bench: encrypted rows; overlay-bpf with WireGuard (obbw) against kernel vxlan+bridge with IPsec ESP (obbi)");
    let ours = Ours::new(bin, "obbw", 216)?;
    let docker = DockerEsp::new("obbi", 217)?;
    let [s1, s2, c1, c2] = [0, 1, 2, 3].map(|i| &ours.containers[i]);
    let [a1, a2] = [0, 1].map(|i| &docker.containers[i]);
    check("overlay-bpf encrypted", s1, A1, s2, A2)?;
    check("overlay-bpf plain", c1, PLAIN_A1, c2, PLAIN_A2)?;
    check("vxlan+ESP", a1, A1, a2, A2)?;
    let labels = ["overlay-bpf encrypted", "vxlan+ESP (Docker)", "overlay-bpf plain"];
    if perf {
        for (label, server, client, ip) in
            [(labels[0], s2, s1, A2), (labels[1], a2, a1, A2), (labels[2], c2, c1, PLAIN_A2)]
        {
            super::profile(label, secs, || gbits(server, client, ip, secs + 1.0, 1).map(|_| ()))?;
        }
    }
    let mut rows = Vec::new();
    for streams in [1u32, 4] {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); labels.len()];
        for r in 0..rounds as usize {
            for k in 0..labels.len() {
                check_interrupt()?;
                let i = (k + r) % labels.len();
                let (server, client, ip) = match i {
                    0 => (s2, s1, A2),
                    1 => (a2, a1, A2),
                    _ => (c2, c1, PLAIN_A2),
                };
                let before = retransmits(client);
                let v =
                    gbits(server, client, ip, secs, streams).with_context(|| format!("iperf3 over {}", labels[i]))?;
                println!(
                    "  encrypted_tcp_throughput {streams} stream(s) round {} {:<22} {v:>8.3} Gbit/s ({} retransmitted)",
                    r + 1,
                    labels[i],
                    retransmits(client) - before
                );
                samples[i].push(v);
            }
        }
        let name = if streams == 1 {
            "encrypted_tcp_throughput".to_string()
        } else {
            format!("encrypted_tcp_throughput_{streams}_streams")
        };
        println!(
            "  {name}: {:.3} vs {:.3} Gbit/s (Docker's), {:.3} plain",
            median(&samples[0]),
            median(&samples[1]),
            median(&samples[2])
        );
        rows.push(Row {
            name: name.clone(),
            unit: "Gbit/s",
            ours: samples[0].clone(),
            baseline: Some((labels[1].into(), samples[1].clone())),
        });
        rows.push(Row {
            name: format!("{name}_vs_plain"),
            unit: "Gbit/s",
            ours: samples[0].clone(),
            baseline: Some(("overlay-bpf plain".into(), samples[2].clone())),
        });
    }
    println!("  IPsec errors: {}", xfrm_errors(&docker.underlay));
    let (wg, esp) = (ours.sealed()?, docker.sealed()?);
    if wg == 0 || esp == 0 {
        bail!("the traffic was not encrypted: {wg} packets out of WireGuard, {esp} through the ESP SA");
    }
    step(&format!(
        "bench: encrypted rows done ({:.1}s; {wg} packets out of WireGuard, {esp} through ESP)",
        t0.elapsed().as_secs_f64()
    ));
    Ok(rows)
}

/// Whether this kernel can run the encrypted rows: WireGuard and ESP.
pub fn supported() -> Result<()> {
    for m in ["wireguard", "esp4"] {
        let loaded = || Path::new("/sys/module").join(m).exists();
        if !loaded() {
            let _ = Command::new("modprobe").args(["-q", m]).status();
        }
        if !loaded() {
            bail!("this kernel has no {m} module: the encrypted rows run in a VM (`cargo xtask bench --vm`)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sa_packet_count() {
        let out = "src 192.168.217.11 dst 192.168.217.12\n\tproto esp spi 0x00000101(257) reqid 257(0x00000101) mode transport\n\
                   \tlifetime config:\n\t  limit: soft (INF)(bytes), hard (INF)(bytes)\n\tlifetime current:\n\
                   \t  9870308(bytes), 6337(packets)\n\t  add 2026-12-01 18:18:09 use 2026-12-01 18:18:10\n";
        assert_eq!(sa_packets(out), Some(6337));
        assert_eq!(sa_packets("src 1.1.1.1 dst 2.2.2.2\n"), None);
    }

    #[test]
    fn reads_retransmitted_segments() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n\
                    Tcp: 1 200 120000 -1 3 0 0 0 0 1000 2000 17 0 2 0\n";
        assert_eq!(retrans_segs(snmp), Some(17));
        assert_eq!(retrans_segs("Ip: x\n"), None);
    }
}
