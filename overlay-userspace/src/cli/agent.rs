use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{pins_for, Global, TableArgs};
use overlay_bpf::{
    apply,
    error::{require_root, UserError},
    health::{self, Tracker},
    model::{self, Capabilities, Cluster},
};

/// Health-check settings (`overlay-bpf agent --health-*`).
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Seconds between health-check rounds (probes of the local backends and
    /// fetches of the peers' reports).
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    pub health_interval: u64,
    /// How long a probe (TCP connect) or a peer fetch may take.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub health_timeout: u64,
    /// Consecutive failed probes that take a backend out of the load balancing.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub health_fails: u32,
    /// Consecutive good probes that bring it back.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub health_passes: u32,
    /// TCP port on the host's underlay address where the agent serves its
    /// backends' health to the other agents (GET /health) and metrics
    /// (GET /metrics).
    #[arg(long, default_value_t = 7947, value_name = "PORT")]
    pub health_port: u16,
    /// No health checks: every configured backend is used.
    #[arg(long)]
    pub no_health: bool,
}

/// Parses the exact bytes that will be applied, so change detection compares
/// against what is in the kernel, not against a later read of the file.
fn load(g: &Global, bytes: &[u8]) -> anyhow::Result<(Cluster, usize)> {
    let file = g.state.display().to_string();
    let cluster = model::resolve(&file, &model::parse_state(&file, bytes)?, Capabilities::default())?;
    let h = apply::select_host(&cluster, g.host.as_deref())?;
    Ok((cluster, h))
}

fn read(g: &Global) -> anyhow::Result<Vec<u8>> {
    std::fs::read(&g.state).map_err(|e| UserError(format!("{}: cannot read: {e}", g.state.display())).into())
}

/// Health as every agent reports it, merged.
struct Health {
    local: Tracker,
    /// Reachability of each peer agent, by host name.
    peers: Tracker,
    /// Backends each peer reported down.
    remote_down: BTreeMap<String, BTreeSet<String>>,
    report: Arc<Mutex<health::Report>>,
}

impl Health {
    /// Backends to keep out of the Maglev tables.
    fn unhealthy(&self, cluster: &Cluster, h: usize) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.local.down().cloned().collect();
        for down in self.remote_down.values() {
            out.extend(down.iter().cloned());
        }
        // An unreachable host takes its backends with it.
        for (i, p) in cluster.hosts.iter().enumerate() {
            if i != h && !self.peers.is_up(&p.name) {
                out.extend(cluster.endpoints.iter().filter(|e| e.host == i).map(|e| e.name.clone()));
            }
        }
        out
    }

    /// One round: probe the local backends, fetch every peer's report.
    async fn round(&mut self, cluster: &Cluster, h: usize, args: &HealthArgs) {
        let host = &cluster.hosts[h].name;
        let timeout = Duration::from_millis(args.health_timeout);
        let probes = health::probes(cluster, h);
        let results = tokio::task::spawn_blocking({
            let probes = probes.clone();
            move || probes.iter().map(|p| health::probe(p, timeout)).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        // One result per endpoint: down if any of its ports fails.
        let mut by_name: BTreeMap<String, Result<(), String>> = BTreeMap::new();
        for (p, r) in probes.iter().zip(results) {
            let e = by_name.entry(p.name.clone()).or_insert(Ok(()));
            if let Err(err) = r {
                if e.is_ok() {
                    *e = Err(format!("{}: {err}", p.addr));
                }
            }
        }
        self.local.retain(&by_name.keys().cloned().collect());
        for (name, r) in by_name {
            if let Some(t) = self.local.record(&name, r) {
                if t.up {
                    tracing::warn!(
                        host,
                        backend = t.name,
                        "backend UP after {} good probes: back in the load balancing",
                        t.after
                    );
                } else {
                    tracing::warn!(
                        host,
                        backend = t.name,
                        "backend DOWN after {} failed probes ({}): out of the load balancing",
                        t.after,
                        t.detail.unwrap_or_default()
                    );
                }
            }
        }
        if let Ok(mut r) = self.report.lock() {
            *r = self.local.report(host);
        }
        let peers: Vec<_> = cluster.hosts.iter().enumerate().filter(|(i, _)| *i != h).map(|(_, p)| p.clone()).collect();
        let fetches = peers.iter().map(|p| health::fetch(p.address, args.health_port, timeout));
        let answers = futures::future::join_all(fetches).await;
        let names: BTreeSet<String> = peers.iter().map(|p| p.name.clone()).collect();
        self.peers.retain(&names);
        self.remote_down.retain(|n, _| names.contains(n));
        for (p, a) in peers.iter().zip(answers) {
            let ok = a.as_ref().map(|_| ()).map_err(|e| e.clone());
            if let Some(t) = self.peers.record(&p.name, ok) {
                if t.up {
                    tracing::warn!(host, peer = p.name, "peer agent reachable again");
                } else {
                    tracing::warn!(
                        host,
                        peer = p.name,
                        "peer agent unreachable {} times ({}): its backends are out of the load balancing",
                        t.after,
                        t.detail.unwrap_or_default()
                    );
                }
            }
            if let Ok(r) = a {
                self.remote_down.insert(p.name.clone(), r.down().cloned().collect());
            }
        }
    }
}

/// Applies, then re-applies whenever the state file's content or a
/// backend's health changes. A bad edit is reported and skipped: the data
/// path keeps the last good state.
pub async fn agent(g: &Global, interval: u64, table: TableArgs, args: HealthArgs) -> anyhow::Result<i32> {
    let mut applied = read(g)?;
    let (mut cluster, mut h) = load(g, &applied)?;
    require_root("agent")?;
    let host = cluster.hosts[h].name.clone();
    let pins = pins_for(g, &host);
    let log = |m: &str| tracing::info!("{host}: {m}");
    let opts = |unhealthy: &BTreeSet<String>| apply::UpOptions {
        unhealthy: unhealthy.clone(),
        ct_size: table.ct_size,
        bpf_log: table.bpf_log,
    };
    let mut unhealthy = BTreeSet::new();
    let r = apply::up(&cluster, h, &pins, &opts(&unhealthy), &log).await?;
    tracing::info!(
        host,
        written = r.entries_written,
        deleted = r.entries_deleted,
        "applied; watching {}",
        g.state.display()
    );
    let _bpf_log = if table.bpf_log {
        let logger = overlay_bpf::bpf_log::reader(&pins)?;
        tracing::info!(host, "printing the data path's debug logs (target overlay_bpf::bpf)");
        Some(tokio::spawn(async move {
            if let Err(e) = overlay_bpf::bpf_log::follow(logger).await {
                tracing::error!("{e}");
            }
        }))
    } else {
        None
    };
    let report = Arc::new(Mutex::new(health::Report { host: host.clone(), ..Default::default() }));
    let mut health = Health {
        local: Tracker::new(args.health_fails, args.health_passes),
        peers: Tracker::new(args.health_fails, 1),
        remote_down: BTreeMap::new(),
        report: report.clone(),
    };
    let _server = if args.no_health {
        None
    } else {
        let addr = (cluster.hosts[h].address, args.health_port);
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot serve health reports on {}:{}: {e}; free the port or pick another with --health-port",
                addr.0,
                addr.1
            )
        })?;
        tracing::info!(host, "health reports at http://{}:{}/health", addr.0, addr.1);
        Some(tokio::spawn(health::serve(listener, report)))
    };
    let mut tick = tokio::time::interval(Duration::from_secs(interval.max(1)));
    let mut health_tick = tokio::time::interval(Duration::from_secs(args.health_interval.max(1)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let mut file_changed = false;
        tokio::select! {
            _ = tick.tick() => file_changed = true,
            _ = health_tick.tick(), if !args.no_health => {
                health.round(&cluster, h, &args).await;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        if file_changed {
            let now = match read(g) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("{e:#}; keeping the applied state");
                    continue;
                }
            };
            if now == applied {
                continue;
            }
            // Whatever happens, this content has been dealt with: a bad file
            // is reported once, not every tick.
            applied = now;
            match load(g, &applied) {
                Ok((c, h2)) if c.hosts[h2].name == host => {
                    let wanted = health.unhealthy(&c, h2);
                    match apply::up(&c, h2, &pins, &opts(&wanted), &log).await {
                        Ok(r) => {
                            tracing::info!(
                                host,
                                written = r.entries_written,
                                deleted = r.entries_deleted,
                                "re-applied"
                            );
                            (cluster, h, unhealthy) = (c, h2, wanted);
                        }
                        Err(e) => tracing::error!("re-apply failed, keeping the previous state: {e:#}"),
                    }
                }
                Ok(_) => tracing::error!("the state file no longer selects host {host}; ignoring it"),
                Err(e) => tracing::error!("state file rejected, keeping the previous state: {e:#}"),
            }
            continue;
        }
        let wanted = health.unhealthy(&cluster, h);
        if wanted != unhealthy {
            match apply::up(&cluster, h, &pins, &opts(&wanted), &log).await {
                Ok(r) => {
                    tracing::info!(
                        host,
                        out = ?wanted,
                        written = r.entries_written,
                        deleted = r.entries_deleted,
                        "load balancing updated for health"
                    );
                    unhealthy = wanted;
                }
                Err(e) => tracing::error!("health update failed, keeping the previous state: {e:#}"),
            }
        }
    }
    tracing::info!("agent stopping; the data path stays pinned (use `overlay-bpf down` to remove it)");
    Ok(0)
}
