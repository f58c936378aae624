//! Backend health checks, as `overlay-bpf agent` runs them.
//!
//! Each agent probes the backends on its own host: a TCP connect to the
//! backend's target port, made from inside the backend's network namespace to
//! the backend's own address (so it works for internal networks too, and
//! needs no route from the host). A backend goes down after `fails`
//! consecutive failed probes and comes back after `passes` good ones.
//!
//! Agents share what they see over HTTP on the underlay (`GET /health` on
//! `--health-port`): every agent fetches every peer's report each round, so
//! every host takes a failed backend out of its Maglev tables, wherever the
//! backend runs. A peer that cannot be reached for `fails` rounds counts as
//! down with all its backends.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::state::model::{Cluster, Protocol};

/// One backend port to probe on this host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Probe {
    /// The endpoint's key (`Endpoint::key`, its name unless another endpoint
    /// has that name): what the health state is kept under.
    pub name: String,
    pub netns: PathBuf,
    pub addr: SocketAddrV4,
}

/// The local backends of every service with a TCP port, one probe per
/// (endpoint, TCP target port). Backends of UDP-only services are not
/// probed: a connect proves nothing there.
pub fn probes(cluster: &Cluster, h: usize) -> Vec<Probe> {
    let mut out = BTreeSet::new();
    for s in &cluster.services {
        for p in s.ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
            for &b in &s.backends {
                let e = &cluster.endpoints[b];
                if e.host == h {
                    out.insert(Probe {
                        name: e.key.clone(),
                        netns: e.netns.clone(),
                        addr: SocketAddrV4::new(e.ip, p.target),
                    });
                }
            }
        }
    }
    out.into_iter().collect()
}

/// Runs one probe: a TCP connect inside the backend's namespace.
pub fn probe(p: &Probe, timeout: Duration) -> Result<(), String> {
    let (netns, addr) = (p.netns.clone(), p.addr);
    std::thread::spawn(move || -> Result<(), String> {
        crate::host::netdev::enter_netns(&netns).map_err(|e| e.to_string())?;
        TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout).map(|_| ()).map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("probe thread panicked".into()))
}

pub use crate::state::store::report::{BackendHealth, Report};

/// A state change worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub name: String,
    pub up: bool,
    /// How many results in a row made it.
    pub after: u32,
    pub detail: Option<String>,
}

#[derive(Debug, Clone)]
struct Counts {
    up: bool,
    streak: u32,
    detail: Option<String>,
}

/// Up/down with hysteresis: `fails` bad results in a row take a name down,
/// `passes` good ones bring it back. Names start up.
#[derive(Debug, Clone)]
pub struct Tracker {
    fails: u32,
    passes: u32,
    state: BTreeMap<String, Counts>,
}

impl Tracker {
    pub fn new(fails: u32, passes: u32) -> Tracker {
        Tracker { fails: fails.max(1), passes: passes.max(1), state: BTreeMap::new() }
    }

    /// Records one result; returns the transition it caused, if any.
    pub fn record(&mut self, name: &str, result: Result<(), String>) -> Option<Transition> {
        let c = self.state.entry(name.to_string()).or_insert(Counts { up: true, streak: 0, detail: None });
        let good = result.is_ok();
        c.detail = result.err();
        if good == c.up {
            c.streak = 0;
            return None;
        }
        c.streak += 1;
        let need = if c.up { self.fails } else { self.passes };
        if c.streak < need {
            return None;
        }
        c.up = good;
        c.streak = 0;
        Some(Transition { name: name.to_string(), up: good, after: need, detail: c.detail.clone() })
    }

    /// Forgets names no longer checked.
    pub fn retain(&mut self, names: &BTreeSet<String>) {
        self.state.retain(|n, _| names.contains(n));
    }

    pub fn is_up(&self, name: &str) -> bool {
        self.state.get(name).is_none_or(|c| c.up)
    }

    /// The names that are down now.
    pub fn down(&self) -> impl Iterator<Item = &String> {
        self.state.iter().filter(|(_, c)| !c.up).map(|(n, _)| n)
    }

    pub fn report(&self, host: &str) -> Report {
        Report {
            host: host.to_string(),
            backends: self
                .state
                .iter()
                .map(|(n, c)| (n.clone(), BackendHealth { up: c.up, detail: c.detail.clone() }))
                .collect(),
        }
    }
}

/// The most a peer's report may weigh.
const REPORT_LIMIT: usize = 1 << 20;

/// Fetches a peer agent's report (`GET /health`).
pub async fn fetch(addr: Ipv4Addr, port: u16, timeout: Duration) -> Result<Report, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    let work = async {
        let stream = tokio::net::TcpStream::connect((addr, port)).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let _conn = crate::task::AbortOnDrop(tokio::spawn(conn));
        let req = hyper::Request::get("/health")
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<hyper::body::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != hyper::StatusCode::OK {
            return Err(format!("answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), REPORT_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("reading the report: {e}"))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("bad report: {e}"))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("no answer within {timeout:?}"))?
}

/// What the agent's HTTP server answers from.
#[derive(Clone)]
pub struct Served {
    /// This host's health report.
    pub report: Arc<Mutex<Report>>,
    /// This host's pins, for `/metrics`.
    pub pins: crate::host::pins::Pins,
    /// The state last applied, to name services and backends in `/metrics`.
    pub cluster: Arc<Mutex<Arc<Cluster>>>,
    /// The etcd store's numbers, when the state comes from one.
    pub store: Option<Arc<crate::state::store::StoreStats>>,
}

/// Serves `GET /health` (this host's report, JSON) and `GET /metrics`
/// (`crate::agent::metrics`) until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, served: Served) {
    use axum::{extract::State, http::header::CONTENT_TYPE, routing::get, Json, Router};
    async fn health(State(s): State<Served>) -> Json<Report> {
        Json(s.report.lock().map(|r| r.clone()).unwrap_or_default())
    }
    async fn metrics(State(s): State<Served>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
        let report = s.report.lock().map(|r| r.clone()).unwrap_or_default();
        let cluster = s.cluster.lock().map(|c| c.clone()).ok();
        let status = crate::agent::status::gather(&report.host, &s.pins, cluster.as_deref()).await;
        if let Err(e) = &status {
            tracing::warn!("/metrics: cannot read the maps: {e}");
        }
        let body = crate::agent::metrics::render(status.as_ref().ok(), &report, s.store.as_deref());
        ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
    }
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "try /health or /metrics\n") })
        .with_state(served);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the health server stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad() -> Result<(), String> {
        Err("connection refused".into())
    }

    #[test]
    fn goes_down_after_fails_and_up_after_passes() {
        let mut t = Tracker::new(3, 2);
        assert_eq!(t.record("w1", Ok(())), None);
        assert_eq!(t.record("w1", bad()), None);
        assert_eq!(t.record("w1", bad()), None);
        // A good result in between resets the streak.
        assert_eq!(t.record("w1", Ok(())), None);
        assert_eq!(t.record("w1", bad()), None);
        assert_eq!(t.record("w1", bad()), None);
        assert!(t.is_up("w1"));
        let down = t.record("w1", bad()).expect("third failure in a row");
        assert!(!down.up && down.after == 3 && down.detail.as_deref() == Some("connection refused"));
        assert!(!t.is_up("w1"));
        assert_eq!(t.report("n1").down().collect::<Vec<_>>(), ["w1"]);
        assert_eq!(t.record("w1", bad()), None);
        assert_eq!(t.record("w1", Ok(())), None);
        let up = t.record("w1", Ok(())).expect("second pass in a row");
        assert!(up.up && up.after == 2);
        assert!(t.is_up("w1"));
        assert!(t.is_up("never-seen"));
    }

    #[test]
    fn retain_forgets_removed_backends() {
        let mut t = Tracker::new(1, 1);
        t.record("w1", bad());
        t.record("w2", bad());
        t.retain(&BTreeSet::from(["w2".to_string()]));
        assert!(t.is_up("w1"));
        assert!(!t.is_up("w2"));
    }

    #[test]
    fn report_round_trips_through_json() {
        let mut t = Tracker::new(1, 1);
        t.record("w1", bad());
        t.record("w2", Ok(()));
        let r = t.report("n1");
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(crate::agent::metrics::render(None, &r, None)
            .contains("overlay_bpf_backend_up{host=\"n1\",backend=\"w1\"} 0"));
    }
}
