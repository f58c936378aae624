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

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::model::{Cluster, Protocol};

/// One backend port to probe on this host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Probe {
    /// The endpoint's name: what the health state is kept under.
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
                        name: e.name.clone(),
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
        crate::netdev::enter_netns(&netns).map_err(|e| e.to_string())?;
        TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout).map(|_| ()).map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("probe thread panicked".into()))
}

/// Health of one backend as its host's agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendHealth {
    pub up: bool,
    /// The last probe's error, if it failed.
    pub detail: Option<String>,
}

/// What an agent serves at `GET /health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub host: String,
    pub backends: BTreeMap<String, BackendHealth>,
}

impl Report {
    pub fn down(&self) -> impl Iterator<Item = &String> {
        self.backends.iter().filter(|(_, h)| !h.up).map(|(n, _)| n)
    }
}

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

/// Fetches a peer agent's report.
pub async fn fetch(addr: Ipv4Addr, port: u16, timeout: Duration) -> Result<Report, String> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect((addr, port)).await.map_err(|e| e.to_string())?;
        s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(format!("answered {}", head.lines().next().unwrap_or("")));
        }
        serde_json::from_str(body).map_err(|e| format!("bad report: {e}"))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("no answer within {timeout:?}"))?
}

/// Serves `GET /health` (this host's report) and `GET /metrics` (the same
/// as Prometheus text) until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, report: Arc<Mutex<Report>>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else { continue };
        let report = report.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let r = report.lock().map(|r| r.clone()).unwrap_or_default();
            let (status, kind, body) = match path {
                "/health" => ("200 OK", "application/json", serde_json::to_string(&r).unwrap_or_default()),
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics(&r)),
                _ => ("404 Not Found", "text/plain", "try /health or /metrics\n".to_string()),
            };
            let head = format!("HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        });
    }
}

fn metrics(r: &Report) -> String {
    let mut m = String::from("# HELP overlay_bpf_backend_up Whether a local backend passes its health check.\n");
    m += "# TYPE overlay_bpf_backend_up gauge\n";
    for (n, h) in &r.backends {
        m += &format!("overlay_bpf_backend_up{{host=\"{}\",backend=\"{n}\"}} {}\n", r.host, h.up as u8);
    }
    m
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
        assert!(metrics(&r).contains("overlay_bpf_backend_up{host=\"n1\",backend=\"w1\"} 0"));
    }
}
