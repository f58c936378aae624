//! The agent: apply the cluster state, then keep applying it as it changes
//! and as backends' health changes, until stopped. It reads the state
//! through a [`StoreSource`] (the state file or the etcd store), so the
//! command line only parses flags and picks the source.

pub mod dns;
pub mod health;
pub mod metrics;
pub mod status;

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    agent::health::Tracker,
    error::{require_root, Error, Result},
    host::apply,
    host::kmaps::KernelMaps,
    host::pins::Pins,
    plan::delta::{EndpointChange, Incremental},
    state::model::{self, Cluster, State},
    state::store::{Change, ObjectChange, Store},
    task::AbortOnDrop,
};

/// A store as the agent's source: the file, read again every `interval`, or
/// etcd, watched (a change arrives as it is written; a lost watch means a
/// complete read again once etcd answers).
pub struct StoreSource {
    pub store: Store,
    pub interval: Duration,
}

impl StoreSource {
    /// Names the source in messages and errors.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// The state as it is now, read whole.
    pub async fn snapshot(&mut self) -> Result<State> {
        Ok(self.store.read().await?)
    }

    /// Returns when the state may have changed: what changed, when the
    /// store knows (etcd's watch), else a resync (the file, polled).
    pub async fn changed(&mut self) -> Change {
        self.store.changed(self.interval).await
    }

    /// The state as of the changes reported, without reading the store
    /// again where it holds them (etcd: the last read and the watch's
    /// events since).
    pub async fn held(&mut self) -> Result<State> {
        match self.store.etcd() {
            Some(e) => Ok(e.held()?),
            None => self.snapshot().await,
        }
    }

    /// The endpoint changes `objects` are, if all of them are endpoints'.
    pub fn endpoint_changes(&self, objects: &[ObjectChange]) -> std::result::Result<Vec<EndpointChange>, String> {
        let Some(e) = self.store.etcd() else { return Err("a file".into()) };
        objects
            .iter()
            .map(|o| match e.layout().endpoint_change(o) {
                Some(r) => r.map_err(|e| e.to_string()),
                None => Err(format!("{} is not an endpoint", o.key)),
            })
            .collect()
    }

    /// Where agents meet when the store holds them (etcd): presence under
    /// a lease and health reports, in place of fetching each other's
    /// reports over HTTP.
    pub fn agents(&self) -> Option<crate::state::store::Agents> {
        self.store.etcd().map(|e| e.agents())
    }

    /// Puts host `host`'s WireGuard public key in the store, where it can
    /// (etcd; a file is the user's to edit): true when written.
    pub async fn publish_key(&mut self, host: &str, key: &str) -> Result<bool> {
        if self.store.file().is_some() {
            return Ok(false);
        }
        Ok(self.store.edit(|s| Ok(crate::state::ops::host::set_key(s, host, key)?)).await?.0)
    }

    /// The store's numbers for `/metrics`, when it has some (etcd).
    pub fn stats(&self) -> Option<Arc<crate::state::store::StoreStats>> {
        self.store.etcd().map(|e| e.stats())
    }
}

/// Health-check settings (`overlay-bpf agent --health-*`).
#[derive(Debug, Clone)]
pub struct HealthOptions {
    pub interval: Duration,
    pub timeout: Duration,
    pub fails: u32,
    pub passes: u32,
    pub port: u16,
    /// No health checks: every configured backend is used.
    pub off: bool,
    /// The lease that keeps this agent present in an etcd store.
    pub lease_ttl: Duration,
}

/// A request to apply the store now, answered once this host's maps hold it.
pub type ApplyReply = tokio::sync::oneshot::Sender<std::result::Result<(), String>>;

/// Asks the agent to read the store and apply it now; the answer comes once
/// this host's maps hold it.
pub type ApplyNow = tokio::sync::mpsc::Sender<ApplyReply>;

/// A front end served beside the agent (the Docker plugin, `agent
/// --docker-plugin`): started once the agent knows its host, given the
/// host's name and a way to ask for an apply; it serves until the returned
/// task is dropped, when the agent stops.
pub type Attach =
    Box<dyn FnOnce(String, ApplyNow) -> futures::future::BoxFuture<'static, Result<AbortOnDrop<()>>> + Send>;

/// What the agent runs with, besides the state.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `--host`: which host of the state this is.
    pub host: Option<String>,
    /// `--pin-dir`, else the default for the host.
    pub pin_dir: Option<PathBuf>,
    pub ct_size: Option<u32>,
    pub bpf_log: bool,
    /// The data-path mode asked for (`--datapath`).
    pub datapath: crate::host::datapath::Datapath,
    pub health: HealthOptions,
    /// The resolver's upstreams; None: no resolver (`--no-dns`).
    pub dns: Option<Vec<std::net::SocketAddr>>,
}

/// Resolves the state that will be applied, and finds this host in it.
fn load(source: &str, state: &State, host: Option<&str>) -> Result<(Cluster, usize)> {
    let cluster = model::resolve(source, state, crate::host::capabilities())?;
    let h = apply::select_host(&cluster, host)?;
    Ok((cluster, h))
}

/// Applies endpoint changes as they arrived, one map entry each
/// ([`crate::plan::delta`]); or says why they need the full reconcile.
fn apply_as_they_arrive(
    inc: &mut Incremental,
    changes: std::result::Result<Vec<EndpointChange>, String>,
    pins: &Pins,
) -> std::result::Result<usize, String> {
    let changes = changes?;
    let mut writes = Vec::new();
    for c in &changes {
        writes.extend(inc.plan(c).map_err(|e| e.to_string())?);
    }
    let mut maps = KernelMaps::open(pins).map_err(|e| e.to_string())?;
    maps.write_endpoints(&writes).map_err(|e| e.to_string())?;
    Ok(changes.len())
}

/// The host's lasting conditions (`apply::Warning`s) as last applied: each
/// is logged when it starts and when it ends, not at every apply.
#[derive(Debug, Default)]
struct Conditions(BTreeMap<String, String>);

impl Conditions {
    /// Takes an apply's warnings: returns those that started (new) and the
    /// conditions that ended (gone since the last apply).
    fn update(&mut self, warnings: &[apply::Warning]) -> (Vec<apply::Warning>, Vec<String>) {
        let now: BTreeMap<String, String> = warnings.iter().map(|w| (w.condition.clone(), w.message.clone())).collect();
        let started = warnings.iter().filter(|w| !self.0.contains_key(&w.condition)).cloned().collect();
        let ended = self.0.keys().filter(|c| !now.contains_key(*c)).cloned().collect();
        self.0 = now;
        (started, ended)
    }

    /// Logs an apply: the conditions that started (WARN) and ended (INFO)
    /// with it, then one INFO line, `what`, with its counts.
    fn applied(&mut self, host: &str, r: &apply::UpReport, what: &str) {
        let (started, ended) = self.update(&r.warnings);
        for w in started {
            tracing::warn!(host, "{}", w.message);
        }
        for c in ended {
            tracing::info!(host, "resolved: {c}");
        }
        tracing::info!(host, written = r.entries_written, deleted = r.entries_deleted, programs = ?r.programs, "{what}");
    }
}

/// Health as every agent reports it, merged.
struct Health {
    local: Tracker,
    /// Reachability of each peer agent, by host name.
    peers: Tracker,
    /// Backends each peer reported down.
    remote_down: BTreeMap<String, BTreeSet<String>>,
    report: Arc<Mutex<health::Report>>,
    /// With an etcd store: the peers' presence and reports, read from it.
    store: Option<crate::state::store::Agents>,
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
                out.extend(cluster.endpoints.iter().filter(|e| e.host == i).map(|e| e.key.clone()));
            }
        }
        out
    }

    /// One round: probe the local backends, fetch every peer's report.
    async fn round(&mut self, cluster: &Cluster, h: usize, args: &HealthOptions) {
        let host = &cluster.hosts[h].name;
        let timeout = args.timeout;
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
        let names: BTreeSet<String> = peers.iter().map(|p| p.name.clone()).collect();
        self.peers.retain(&names);
        self.remote_down.retain(|n, _| names.contains(n));
        let answers: Vec<Result<Option<health::Report>, String>> = match &mut self.store {
            // Each peer's lease and report, from the store: no peer is asked.
            Some(agents) => match agents.view().await {
                Ok(view) => peers
                    .iter()
                    .map(|p| match view.get(&p.name) {
                        Some(v) if v.alive => Ok(v.report.clone()),
                        Some(v) => Err(format!(
                            "its agent's lease expired (last seen {})",
                            v.last_seen.as_deref().unwrap_or("never")
                        )),
                        // A host that never ran an agent on this store is not judged.
                        None => Ok(None),
                    })
                    .collect(),
                // The store unreachable: the last verdicts stand.
                Err(_) => return,
            },
            None => {
                let fetches = peers.iter().map(|p| health::fetch(p.address, args.port, timeout));
                futures::future::join_all(fetches).await.into_iter().map(|r| r.map(Some)).collect()
            }
        };
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
            match a {
                Ok(Some(r)) => {
                    self.remote_down.insert(p.name.clone(), r.down().cloned().collect());
                }
                Ok(None) => {
                    self.remote_down.remove(&p.name);
                }
                Err(_) => {}
            }
        }
    }
}

/// Applies, then re-applies whenever the state or a backend's health
/// changes, until `stop` completes. A bad state is reported and skipped: the
/// data path keeps the last good one. Stopping leaves the data path up.
pub async fn run(
    source: StoreSource,
    opts: AgentOptions,
    attach: Option<Attach>,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let (apply_tx, mut apply_rx) = tokio::sync::mpsc::channel::<ApplyReply>(16);
    let (mut agent, _tasks) = Agent::start(source, opts, attach, apply_tx).await?;
    let mut dns_tick = tokio::time::interval(Duration::from_millis(250));
    let mut health_tick = tokio::time::interval(agent.opts.health.interval.max(Duration::from_secs(1)));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            c = agent.source.changed() => {
                // Logged where it failed; nobody waits for this one.
                let _ = agent.on_change(c).await;
            }
            Some(r) = apply_rx.recv() => {
                // Every request queued meanwhile is answered by one apply.
                let mut waiting = vec![r];
                while let Ok(r) = apply_rx.try_recv() {
                    waiting.push(r);
                }
                let outcome = agent.on_change(Change::Resync).await;
                for r in waiting {
                    let _ = r.send(outcome.clone());
                }
            }
            _ = health_tick.tick(), if !agent.opts.health.off => {
                agent.health.round(&agent.cluster, agent.h, &agent.opts.health).await;
                agent.on_health().await;
            }
            _ = dns_tick.tick(), if agent.dns_dirty => {
                agent.on_dns_tick().await;
                agent.on_health().await;
            }
            _ = &mut stop => break,
        }
    }
    tracing::info!("agent stopping; the data path stays pinned (use `overlay-bpf down` to remove it)");
    Ok(())
}

/// What runs beside the agent's loop until it stops: the front end it
/// serves, the data path's debug logs, its presence in the store, and its
/// /health and /metrics server.
struct Tasks {
    _attached: Option<AbortOnDrop<()>>,
    _bpf_log: Option<AbortOnDrop<()>>,
    _presence: Option<AbortOnDrop<()>>,
    _server: AbortOnDrop<()>,
}

/// The agent between events: what it applied, and what it needs to apply
/// the next change. Each event is one method; every full apply that
/// succeeds goes through [`Agent::adopt`], which keeps the fields below in
/// step.
struct Agent {
    source: StoreSource,
    /// The source, named for messages.
    name: String,
    opts: AgentOptions,
    host: String,
    pins: Pins,
    /// The state of the last full reconcile, resolved, and this host in it.
    cluster: Cluster,
    h: usize,
    /// The backends health keeps out of the tables, as last applied.
    unhealthy: BTreeSet<String>,
    /// The store revision `cluster` was read at (etcd).
    cluster_revision: Option<i64>,
    /// The fast path's indexes: `cluster` plus the changes applied since.
    inc: Incremental,
    /// The content last dealt with, applied or refused (a bad state is
    /// reported once, not at every tick). None while `ahead`.
    seen: Option<State>,
    /// Endpoint changes were applied as they arrived since `cluster`: the
    /// maps are ahead of it, so a full apply starts from the source's
    /// state, never from `cluster`, which would undo them.
    ahead: bool,
    conditions: Conditions,
    resolver: Option<crate::agent::dns::Resolver>,
    /// Endpoints applied as they arrived reach the resolver at its next tick.
    dns_dirty: bool,
    health: Health,
    /// The state last applied, for /metrics to name services and backends.
    served: Arc<Mutex<Arc<Cluster>>>,
    /// The source did not answer at the last read (said once per outage).
    source_down: bool,
}

impl Agent {
    /// The first apply, and what serves beside the loop.
    async fn start(
        mut source: StoreSource,
        opts: AgentOptions,
        attach: Option<Attach>,
        apply_tx: ApplyNow,
    ) -> Result<(Self, Tasks)> {
        let name = source.describe();
        let first = source.snapshot().await?;
        let (cluster, h) = load(&name, &first, opts.host.as_deref())?;
        require_root("agent")?;
        let host = cluster.hosts[h].name.clone();
        let pins = match &opts.pin_dir {
            Some(d) => Pins::new(d),
            None => Pins::for_host(&host),
        };
        // A front end (the Docker plugin) serves from the start (dockerd
        // activates its plugins while it starts), whether Docker's API
        // answers yet or not. It asks the loop to apply what it wrote to the
        // store, and waits for the answer: calls made before the loop runs
        // wait for it.
        let attached = match attach {
            Some(start) => Some(start(host.clone(), apply_tx).await?),
            None => None,
        };
        let args = opts.health.clone();
        let report = Arc::new(Mutex::new(health::Report { host: host.clone(), ..Default::default() }));
        let store_agents = source.agents();
        // With etcd, a lease that expired is already TTL seconds of silence.
        let peer_fails = if store_agents.is_some() { 1 } else { args.fails };
        let health = Health {
            local: Tracker::new(args.fails, args.passes),
            peers: Tracker::new(peer_fails, 1),
            remote_down: BTreeMap::new(),
            report: report.clone(),
            store: store_agents.clone(),
        };
        let cluster_revision = revision_now(&source);
        let mut agent = Agent {
            inc: Incremental::new(&first, &cluster, h),
            served: Arc::new(Mutex::new(Arc::new(cluster.clone()))),
            resolver: opts.dns.clone().map(crate::agent::dns::Resolver::new),
            source,
            name,
            opts,
            host,
            pins,
            cluster,
            h,
            unhealthy: BTreeSet::new(),
            cluster_revision,
            seen: Some(first),
            ahead: false,
            conditions: Conditions::default(),
            dns_dirty: false,
            health,
            source_down: false,
        };
        let r = agent.up(&agent.cluster, agent.h, &agent.unhealthy, agent.cluster_revision).await?;
        let host = agent.host.clone();
        agent.conditions.applied(&host, &r, &format!("applied; watching {}", agent.name));
        publish_key(&mut agent.source, &agent.cluster, agent.h).await;
        if let Some(r) = agent.resolver.as_mut() {
            r.update(&agent.cluster, agent.h, &agent.unhealthy).await;
        }
        let bpf_log = if agent.opts.bpf_log {
            let logger = crate::host::bpf_log::reader(&agent.pins)?;
            tracing::info!(host, "printing the data path's debug logs (target overlay_bpf::bpf)");
            Some(AbortOnDrop(tokio::spawn(async move {
                if let Err(e) = crate::host::bpf_log::follow(logger).await {
                    tracing::error!("{e}");
                }
            })))
        } else {
            None
        };
        let presence = store_agents.map(|a| {
            tracing::info!(host, "present in {} under a lease of {:?}", agent.name, args.lease_ttl);
            AbortOnDrop(tokio::spawn(a.keep_present(host.clone(), args.lease_ttl, report.clone())))
        });
        // Served with health checks off too: /metrics is not only health.
        let server = {
            let addr = (agent.cluster.hosts[agent.h].address, args.port);
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(Error::io(format!(
                "cannot serve health reports on {}:{} (free the port or pick another with --health-port)",
                addr.0, addr.1
            )))?;
            tracing::info!(host, "health reports at http://{}:{}/health, metrics at /metrics", addr.0, addr.1);
            let served = health::Served {
                report,
                pins: agent.pins.clone(),
                cluster: agent.served.clone(),
                store: agent.source.stats(),
            };
            AbortOnDrop(tokio::spawn(health::serve(listener, served)))
        };
        let tasks = Tasks { _attached: attached, _bpf_log: bpf_log, _presence: presence, _server: server };
        Ok((agent, tasks))
    }

    /// One full apply of `cluster` for host `h`, its steps logged for -vv
    /// (an apply is one INFO line with its counts).
    async fn up(
        &self,
        cluster: &Cluster,
        h: usize,
        unhealthy: &BTreeSet<String>,
        revision: Option<i64>,
    ) -> Result<apply::UpReport> {
        let host = &self.host;
        let log = |m: &str| tracing::debug!("{host}: {m}");
        let opts = apply::UpOptions {
            unhealthy: unhealthy.clone(),
            ct_size: self.opts.ct_size,
            bpf_log: self.opts.bpf_log,
            revision,
            datapath: self.opts.datapath,
        };
        Ok(apply::up(cluster, h, &self.pins, &opts, &log).await?)
    }

    /// The maps hold `state`, resolved as `cluster` for host `h`, read at
    /// `revision`: what a later change starts from.
    fn adopt(&mut self, state: &State, cluster: Cluster, h: usize, revision: Option<i64>) {
        self.inc = Incremental::new(state, &cluster, h);
        self.seen = Some(state.clone());
        self.ahead = false;
        self.cluster_revision = revision;
        (self.cluster, self.h) = (cluster, h);
    }

    /// The state changed at the source: applied as it arrived when it is
    /// endpoints the fast path takes, else read and applied whole. The
    /// outcome answers those who asked for an apply.
    async fn on_change(&mut self, change: Change) -> std::result::Result<(), String> {
        let host = self.host.clone();
        let read = match change {
            Change::Objects(objects) => {
                let endpoints = self.source.endpoint_changes(&objects);
                match apply_as_they_arrive(&mut self.inc, endpoints, &self.pins) {
                    Ok(n) => {
                        tracing::info!(host, endpoints = n, "applied as it arrived");
                        self.dns_dirty = true;
                        if let Some(stats) = self.source.stats() {
                            stats.applied();
                            stats.incremental.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        self.ahead = true;
                        self.seen = None;
                        return Ok(());
                    }
                    Err(why) => {
                        tracing::debug!(host, "full reconcile: {why}");
                        self.source.held().await
                    }
                }
            }
            Change::Resync => self.source.snapshot().await,
        };
        let now = match read {
            Ok(s) => {
                if self.source_down {
                    tracing::info!(host, "{} answers again: read it whole", self.name);
                    self.source_down = false;
                }
                s
            }
            Err(e) => {
                // Said once per outage, not at every retry.
                if !self.source_down {
                    tracing::error!(host, "{e}; forwarding continues on the applied state, retrying");
                    self.source_down = true;
                }
                return Err(format!("{}: {e}", self.name));
            }
        };
        if self.seen.as_ref() == Some(&now) {
            return Ok(());
        }
        // Whatever happens, this content has been dealt with: a bad state
        // is reported once, not every tick.
        self.seen = Some(now.clone());
        let (c, h) = match load(&self.name, &now, self.opts.host.as_deref()) {
            Ok((c, h)) if c.hosts[h].name == host => (c, h),
            Ok(_) => {
                tracing::error!("the state no longer selects host {host}; ignoring it");
                return Err(format!("the state no longer has host {host}"));
            }
            Err(e) => {
                tracing::error!("state rejected, keeping the previous state: {e}");
                return Err(format!("state rejected: {e}"));
            }
        };
        let wanted = self.health.unhealthy(&c, h);
        let revision = revision_now(&self.source);
        match self.up(&c, h, &wanted, revision).await {
            Ok(r) if r.stale => {
                tracing::info!(host, "skipped a state older than the host's (a CNI ADD was first)");
                Ok(())
            }
            Ok(r) => {
                self.conditions.applied(&host, &r, "re-applied");
                if let Ok(mut shown) = self.served.lock() {
                    *shown = Arc::new(c.clone());
                }
                if let Some(stats) = self.source.stats() {
                    stats.applied();
                }
                if let Some(r) = self.resolver.as_mut() {
                    r.update(&c, h, &wanted).await;
                    self.dns_dirty = false;
                }
                self.adopt(&now, c, h, revision);
                self.unhealthy = wanted;
                Ok(())
            }
            Err(e) => {
                tracing::error!("re-apply failed, keeping the previous state: {e}");
                Err(format!("re-apply failed: {e}"))
            }
        }
    }

    /// Backends' health may have changed: the tables are applied again when
    /// the set kept out of them did.
    async fn on_health(&mut self) {
        if self.health.unhealthy(&self.cluster, self.h) == self.unhealthy {
            return;
        }
        let host = self.host.clone();
        if self.ahead {
            // The full reconcile must not undo what arrived as changes.
            let held = self.source.held().await.and_then(|s| {
                let (c, h) = load(&self.name, &s, self.opts.host.as_deref())?;
                Ok((s, c, h))
            });
            match held {
                Ok((s, c, h)) if c.hosts[h].name == host => {
                    let revision = revision_now(&self.source);
                    self.adopt(&s, c, h, revision);
                }
                Ok(_) => {
                    tracing::error!("the state no longer selects host {host}; ignoring it");
                    return;
                }
                Err(e) => {
                    tracing::error!("health update waits: the state held is not usable: {e}");
                    return;
                }
            }
        }
        let wanted = self.health.unhealthy(&self.cluster, self.h);
        match self.up(&self.cluster, self.h, &wanted, self.cluster_revision).await {
            Ok(r) => {
                self.conditions.applied(&host, &r, &format!("load balancing updated for health (out: {wanted:?})"));
                if let Some(r) = self.resolver.as_mut() {
                    r.update(&self.cluster, self.h, &wanted).await;
                }
                self.unhealthy = wanted;
            }
            Err(e) => tracing::error!("health update failed, keeping the previous state: {e}"),
        }
    }

    /// Endpoints applied as they arrived, to the resolver: from the state
    /// the source holds.
    async fn on_dns_tick(&mut self) {
        self.dns_dirty = false;
        if let (Some(r), Ok(s)) = (self.resolver.as_mut(), self.source.held().await) {
            if let Ok((c, h)) = load(&self.name, &s, self.opts.host.as_deref()) {
                r.update(&c, h, &self.unhealthy).await;
            }
        }
    }
}

/// The store revision of the state just read or held (etcd).
fn revision_now(source: &StoreSource) -> Option<i64> {
    source.stats().map(|s| s.revision.load(std::sync::atomic::Ordering::Relaxed))
}

/// With an encrypted network in the cluster, puts this host's WireGuard
/// public key (made by `up`) in the source when it is not there: the other
/// hosts' agents then add this host as a peer. A failure is logged; `up` has
/// warned about the missing key already.
async fn publish_key(source: &mut StoreSource, cluster: &Cluster, h: usize) {
    let me = &cluster.hosts[h];
    if !cluster.networks.iter().any(|n| n.encrypted()) {
        return;
    }
    let Ok((kp, _)) = crate::host::wireguard::load_or_create(&me.name) else { return };
    if me.wireguard_key == Some(kp.public.0) {
        return;
    }
    match source.publish_key(&me.name, &kp.public.to_string()).await {
        Ok(true) => tracing::info!(host = me.name, "published this host's WireGuard public key {}", kp.public),
        Ok(false) => {}
        Err(e) => tracing::warn!(host = me.name, "could not publish this host's WireGuard public key: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(condition: &str) -> apply::Warning {
        apply::Warning { condition: condition.into(), message: format!("{condition}: the whole story") }
    }

    #[test]
    fn a_condition_is_reported_when_it_starts_and_when_it_ends_only() {
        let mut c = Conditions::default();
        let (started, ended) = c.update(&[w("veth peer"), w("no key")]);
        assert_eq!((started, ended), (vec![w("veth peer"), w("no key")], vec![]));
        // The same conditions at the next applies: nothing to say.
        for _ in 0..3 {
            assert_eq!(c.update(&[w("no key"), w("veth peer")]), (vec![], vec![]));
        }
        // One mended, one new.
        let (started, ended) = c.update(&[w("no key"), w("netns gone")]);
        assert_eq!((started, ended), (vec![w("netns gone")], vec!["veth peer".to_string()]));
        assert_eq!(c.update(&[]), (vec![], vec!["netns gone".to_string(), "no key".to_string()]));
        assert_eq!(c.update(&[]), (vec![], vec![]));
    }
}
