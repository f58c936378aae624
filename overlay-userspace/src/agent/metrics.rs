//! The agent's `/metrics`: everything `status` shows (counters per program
//! and reason, per service and backend, map fill levels, links, WireGuard's
//! peers and rejections), and the health checks' verdicts, in the Prometheus
//! text format.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{agent::status::Status, state::store::report::Report};

type Labels = Vec<(&'static str, String)>;

fn counters(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

fn gauges(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    registry.register(name, help, f.clone());
    f
}

/// The exposition of `status` (when the maps could be read), `report`, and
/// the etcd store's numbers when the state comes from one.
pub fn render(status: Option<&Status>, report: &Report, store: Option<&crate::state::store::StoreStats>) -> String {
    let mut r = Registry::with_prefix("overlay_bpf");
    if let Some(st) = store {
        use std::sync::atomic::Ordering::Relaxed;
        let one = |r: &mut Registry, name: &str, help: &str, v: i64| {
            let g = Gauge::<i64>::default();
            g.set(v);
            r.register(name, help, g);
        };
        one(&mut r, "store_revision", "The etcd revision of the state this agent read last", st.revision.load(Relaxed));
        one(
            &mut r,
            "store_applied_revision",
            "The etcd revision whose state is in this host's maps",
            st.applied_revision.load(Relaxed),
        );
        let lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        lag.set(st.apply_lag_ms.load(Relaxed) as f64 / 1000.0);
        r.register(
            "store_apply_lag_seconds",
            "From the last change's write in etcd to this host's maps (the writer's clock)",
            lag,
        );
        one(
            &mut r,
            "store_watch_up",
            "Whether the watch on the store is up (1) or lost (0)",
            st.watch_up.load(Relaxed) as i64,
        );
        one(
            &mut r,
            "store_lease_up",
            "Whether this agent's lease in the store is live (1) or not (0)",
            st.lease_up.load(Relaxed) as i64,
        );
        let resyncs = Counter::<u64>::default();
        resyncs.inc_by(st.resyncs.load(Relaxed));
        r.register("store_resyncs", "Complete reads of the store after a lost watch (outage, compaction)", resyncs);
        let incremental = Counter::<u64>::default();
        incremental.inc_by(st.incremental.load(Relaxed));
        r.register(
            "store_incremental_applies",
            "Changes applied as they arrived, one map entry per endpoint, without the full reconcile",
            incremental,
        );
    }
    let up = gauges(&mut r, "backend_up", "Whether a local backend passes its health check (1) or not (0)");
    for (n, h) in &report.backends {
        up.get_or_create(&vec![("host", report.host.clone()), ("backend", n.clone())]).set(h.up as i64);
    }
    if let Some(s) = status {
        let packets = counters(&mut r, "packets", "Packets per program and outcome (the reasons of `status`)");
        let bytes = counters(&mut r, "bytes", "Bytes per program and outcome");
        for c in &s.counters {
            let l = vec![("program", c.program.clone()), ("reason", c.reason.clone()), ("drop", c.drop.to_string())];
            packets.get_or_create(&l).inc_by(c.packets);
            bytes.get_or_create(&l).inc_by(c.bytes);
        }
        let b_packets = counters(&mut r, "backend_packets", "Packets this host sent to a service's backend");
        let b_bytes = counters(&mut r, "backend_bytes", "Bytes this host sent to a service's backend");
        let b_flows = counters(&mut r, "backend_flows", "New flows this host sent to a service's backend");
        let rotation =
            gauges(&mut r, "backend_in_rotation", "Whether a backend is in this host's Maglev tables (1) or not (0)");
        for svc in &s.services {
            let service = svc.name.clone().unwrap_or_else(|| format!("{:#010x}", svc.service_id));
            for b in &svc.backends {
                let l = vec![
                    ("service", service.clone()),
                    ("backend", b.name.clone().unwrap_or_else(|| b.address.clone())),
                    ("address", b.address.clone()),
                ];
                b_packets.get_or_create(&l).inc_by(b.packets);
                b_bytes.get_or_create(&l).inc_by(b.bytes);
                b_flows.get_or_create(&l).inc_by(b.flows);
                rotation.get_or_create(&l).set(b.in_rotation as i64);
            }
        }
        if let Some(d) = &s.datapath {
            let mode = gauges(&mut r, "datapath", "The hook the underlay program runs in (1 for the mode that runs)");
            mode.get_or_create(&vec![("device", d.device.clone()), ("mode", d.mode.name().to_string())]).set(1);
        }
        let entries = gauges(&mut r, "map_entries", "Entries in a pinned map");
        let max = gauges(&mut r, "map_max_entries", "The most entries a pinned map holds");
        for m in &s.maps {
            let l = vec![("map", m.name.clone())];
            entries.get_or_create(&l).set(m.entries as i64);
            max.get_or_create(&l).set(m.max_entries as i64);
        }
        if let Some(w) = &s.wireguard {
            let rejected = Counter::<u64>::default();
            rejected.inc_by(w.rejected);
            r.register(
                "wireguard_rejected",
                "WireGuard data messages from cluster hosts that WireGuard did not deliver (authentication, replay, key)",
                rejected,
            );
            let rx = counters(&mut r, "wireguard_peer_rx_bytes", "Bytes WireGuard received from a peer host");
            let tx = counters(&mut r, "wireguard_peer_tx_bytes", "Bytes WireGuard sent to a peer host");
            let handshake = gauges(
                &mut r,
                "wireguard_peer_last_handshake_seconds",
                "Unix time of the last handshake with a peer host (0: none yet)",
            );
            for p in &w.peers {
                let l =
                    vec![("public_key", p.public_key.clone()), ("endpoint", p.endpoint.clone().unwrap_or_default())];
                rx.get_or_create(&l).inc_by(p.rx_bytes);
                tx.get_or_create(&l).inc_by(p.tx_bytes);
                handshake.get_or_create(&l).set(p.last_handshake.unwrap_or(0) as i64);
            }
        }
        let attached = gauges(&mut r, "link_attached", "Whether a program is attached to a device (1) or not (0)");
        for l in &s.links {
            attached
                .get_or_create(&vec![("kind", l.kind.to_string()), ("ifname", l.ifname.clone())])
                .set(l.attached as i64);
        }
    }
    let mut out = String::new();
    encode(&mut out, &r).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agent::status::{BackendStatus, CounterStatus, MapStatus, ServiceStatus},
        state::store::report::BackendHealth,
    };

    #[test]
    fn the_stores_numbers_are_there_when_the_state_comes_from_etcd() {
        use std::sync::atomic::Ordering::Relaxed;
        let st = crate::state::store::StoreStats::default();
        st.revision.store(42, Relaxed);
        st.apply_lag_ms.store(150, Relaxed);
        st.resyncs.store(2, Relaxed);
        st.incremental.store(5, Relaxed);
        st.watch_up.store(true, Relaxed);
        let text = render(None, &Report::default(), Some(&st));
        for want in [
            "overlay_bpf_store_revision 42",
            "overlay_bpf_store_apply_lag_seconds 0.15",
            "overlay_bpf_store_resyncs_total 2",
            "overlay_bpf_store_incremental_applies_total 5",
            "overlay_bpf_store_watch_up 1",
            "overlay_bpf_store_lease_up 0",
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn every_status_row_becomes_a_sample() {
        let status = Status {
            host: "n1".into(),
            pin_dir: "/sys/fs/bpf/overlay-bpf/n1".into(),
            links: Vec::new(),
            datapath: Some(crate::agent::status::DatapathStatus {
                device: "eth0".into(),
                mode: crate::host::datapath::Mode::Tc,
                why: "auto".into(),
            }),
            maps: vec![MapStatus { name: "OB_CT_V2".into(), entries: 7, max_entries: 262144 }],
            macvlans: Vec::new(),
            wireguard: Some(crate::agent::status::WireguardStatus {
                device: "ob-wg".into(),
                rejected: 5,
                peers: vec![crate::host::wireguard::PeerState {
                    public_key: "KEY=".into(),
                    endpoint: Some("192.168.200.12:51820".into()),
                    last_handshake: Some(1_790_000_000),
                    rx_bytes: 1000,
                    tx_bytes: 2000,
                }],
            }),
            services: vec![ServiceStatus {
                service_id: 0x1234,
                name: None,
                frontends: Vec::new(),
                backends: vec![BackendStatus {
                    address: "10.0.0.3".into(),
                    name: Some("web.1".into()),
                    in_rotation: true,
                    packets: 10,
                    bytes: 700,
                    flows: 2,
                }],
            }],
            counters: vec![CounterStatus {
                program: "xdp_underlay_ingress".into(),
                reason: "drop_no_backend".into(),
                drop: true,
                packets: 3,
                bytes: 180,
            }],
        };
        let mut report = Report { host: "n1".into(), ..Default::default() };
        report.backends.insert("web.1".into(), BackendHealth { up: false, detail: Some("refused".into()) });
        let text = render(Some(&status), &report, None);
        for want in [
            "overlay_bpf_backend_up{host=\"n1\",backend=\"web.1\"} 0",
            "overlay_bpf_packets_total{program=\"xdp_underlay_ingress\",reason=\"drop_no_backend\",drop=\"true\"} 3",
            "overlay_bpf_bytes_total{program=\"xdp_underlay_ingress\",reason=\"drop_no_backend\",drop=\"true\"} 180",
            // A service the state does not name goes by its id.
            "overlay_bpf_backend_flows_total{service=\"0x00001234\",backend=\"web.1\",address=\"10.0.0.3\"} 2",
            "overlay_bpf_backend_in_rotation{service=\"0x00001234\",backend=\"web.1\",address=\"10.0.0.3\"} 1",
            "overlay_bpf_map_entries{map=\"OB_CT_V2\"} 7",
            "overlay_bpf_datapath{device=\"eth0\",mode=\"tc\"} 1",
            "overlay_bpf_map_max_entries{map=\"OB_CT_V2\"} 262144",
            "overlay_bpf_wireguard_rejected_total 5",
            "overlay_bpf_wireguard_peer_rx_bytes_total{public_key=\"KEY=\",endpoint=\"192.168.200.12:51820\"} 1000",
            "overlay_bpf_wireguard_peer_tx_bytes_total{public_key=\"KEY=\",endpoint=\"192.168.200.12:51820\"} 2000",
            "overlay_bpf_wireguard_peer_last_handshake_seconds{public_key=\"KEY=\",endpoint=\"192.168.200.12:51820\"} 1790000000",
            "# TYPE overlay_bpf_packets counter",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want:?} in:\n{text}");
        }
        // Without the maps (not readable), the health gauges alone.
        let text = render(None, &report, None);
        assert!(!text.contains("overlay_bpf_packets") && text.contains("overlay_bpf_backend_up"), "{text}");
    }
}
