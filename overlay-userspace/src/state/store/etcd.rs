//! The etcd store: the layout's keys under one prefix, read with one range
//! get, changed with compare-and-swap transactions on the revision guard,
//! watched from the revision last read.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, Txn, TxnOp,
    WatchOptions, WatchStream,
};

use super::{
    layout::{Layout, Orders},
    summary, Change, EtcdTls, ObjectChange, StoreError,
};
use crate::{
    state::error::{Error, Result},
    state::model::{self, Capabilities, State},
};

/// Keys per page of a read (about 2 MiB of endpoints).
const PAGE: i64 = 10_000;

/// The end of the range of keys that start with `prefix` (etcd's prefix end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// How often a change is tried again when other writers keep winning.
const MAX_TRIES: u32 = 64;

pub struct EtcdStore {
    client: Client,
    connector: Connector,
    /// A request failed: the next one connects anew first (to the members
    /// that answer then).
    broken: bool,
    endpoints: String,
    url: String,
    layout: Layout,
    /// The store's revision at the last read: watches start after it.
    seen: i64,
    watch: Option<WatchStream>,
    /// The last watch failure, said once until the watch works again.
    watch_failed: bool,
    /// Watches lost in a row, for the backoff.
    retries: u32,
    stats: Arc<StoreStats>,
    /// Every key's value as of `seen`, for a watcher (the agent): the last
    /// complete read with the watch's events since applied. `None` until the
    /// first [`EtcdStore::read`].
    mirror: Option<BTreeMap<String, Vec<u8>>>,
    /// The revision of the read the mirror started from: a watch started
    /// earlier still delivers the events up to it, which the read holds.
    mirror_revision: i64,
    /// The revision of this client's last successful commit.
    committed: i64,
    /// What this machine can do, for the rules a write is checked against.
    caps: Capabilities,
}

/// What `/metrics` shows of the store, as the agent sees it.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// The store revision of the last complete read.
    pub revision: AtomicI64,
    /// When the last change was written (ms since the epoch, the writer's clock).
    pub changed_at_ms: AtomicI64,
    /// How long the last change took from its write to this host's maps, in ms.
    pub apply_lag_ms: AtomicI64,
    /// The store revision whose state is in this host's maps.
    pub applied_revision: AtomicI64,
    /// Complete reads after a lost watch (outage, compaction).
    pub resyncs: AtomicU64,
    /// The watch is up.
    pub watch_up: AtomicBool,
    /// This agent's lease is live.
    pub lease_up: AtomicBool,
    /// Changes applied as they arrived, without the full reconcile.
    pub incremental: AtomicU64,
}

impl StoreStats {
    /// The state read last is in the maps now.
    pub fn applied(&self) {
        self.applied_revision.store(self.revision.load(Ordering::Relaxed), Ordering::Relaxed);
        let at = self.changed_at_ms.load(Ordering::Relaxed);
        if at > 0 {
            self.apply_lag_ms.store((unix_ms() - at).max(0), Ordering::Relaxed);
        }
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What one read of the store found.
struct Read {
    state: Option<State>,
    orders: Orders,
    /// Every key's value, as read.
    raw: BTreeMap<String, Vec<u8>>,
    /// The guard's mod revision; 0 when the store was never written.
    guard: i64,
}

/// How to reach the cluster's members.
#[derive(Clone)]
struct Connector {
    urls: Vec<String>,
    options: ConnectOptions,
    endpoints: String,
}

impl Connector {
    /// A client over the members that answer now. The client's balancer
    /// keeps sending to a member that went down (its requests fail rather
    /// than go to another), so after a failure the caller connects anew.
    async fn live_client(&self) -> Result<Client, StoreError> {
        let probes = self.urls.iter().map(|u| {
            let options = self.options.clone();
            async move {
                let mut c = Client::connect([u.as_str()], Some(options)).await?;
                c.status().await.map(|_| u.clone())
            }
        });
        let answers = futures::future::join_all(probes).await;
        let why: Vec<String> = answers.iter().filter_map(|a| a.as_ref().err().map(|e| e.to_string())).collect();
        let live: Vec<String> = answers.into_iter().filter_map(Result::ok).collect();
        if live.is_empty() {
            return Err(StoreError::Unreachable { endpoints: self.endpoints.clone(), why: why.join("; ") });
        }
        Client::connect(&live, Some(self.options.clone()))
            .await
            .map_err(|e| StoreError::Unreachable { endpoints: self.endpoints.clone(), why: e.to_string() })
    }
}

fn read_pem(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|source| StoreError::Tls { what, path: path.display().to_string(), source })
}

impl EtcdStore {
    /// Connects, and checks that etcd answers.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        tls: &EtcdTls,
        caps: Capabilities,
    ) -> Result<EtcdStore, StoreError> {
        let joined = endpoints.join(",");
        let mut options =
            ConnectOptions::new().with_connect_timeout(Duration::from_secs(3)).with_timeout(Duration::from_secs(10));
        let scheme = if tls.enabled() {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.cacert {
                t = t.ca_certificate(Certificate::from_pem(read_pem("--etcd-cacert", ca)?));
            }
            match (&tls.cert, &tls.key) {
                (Some(c), Some(k)) => {
                    t = t.identity(Identity::from_pem(read_pem("--etcd-cert", c)?, read_pem("--etcd-key", k)?))
                }
                (Some(_), None) => return Err(StoreError::TlsPair { given: "--etcd-cert" }),
                (None, Some(_)) => return Err(StoreError::TlsPair { given: "--etcd-key" }),
                (None, None) => {}
            }
            options = options.with_tls(t);
            "https"
        } else {
            "http"
        };
        let urls: Vec<String> = endpoints.iter().map(|e| format!("{scheme}://{e}")).collect();
        let connector = Connector { urls, options, endpoints: joined.clone() };
        let client = connector.live_client().await?;
        Ok(EtcdStore {
            client,
            connector,
            broken: false,
            url: format!("etcd://{joined}{}", prefix.trim_end_matches('/')),
            endpoints: joined,
            layout: Layout::new(prefix),
            seen: 0,
            watch: None,
            watch_failed: false,
            retries: 0,
            stats: Arc::default(),
            mirror: None,
            mirror_revision: 0,
            committed: 0,
            caps,
        })
    }

    pub fn describe(&self) -> String {
        self.url.clone()
    }

    /// A handle on the agents' keys, for a task of its own.
    pub fn agents(&self) -> Agents {
        Agents {
            client: self.client.clone(),
            connector: self.connector.clone(),
            layout: self.layout.clone(),
            url: self.url.clone(),
            stats: self.stats.clone(),
        }
    }

    /// The store's numbers as this client sees them, for `/metrics`.
    pub fn stats(&self) -> Arc<StoreStats> {
        self.stats.clone()
    }

    /// After a failed request: a client over the members that answer now.
    async fn heal(&mut self) -> Result<(), StoreError> {
        if self.broken {
            self.client = self.connector.live_client().await?;
            self.watch = None;
            self.broken = false;
        }
        Ok(())
    }

    async fn read_all(&mut self) -> Result<Read, StoreError> {
        self.heal().await?;
        let root = self.layout.root();
        // In pages, all at the revision of the first: one response of a big
        // store would pass gRPC's message limit (4 MiB: about 20,000 endpoints).
        let end = prefix_end(root.as_bytes());
        let mut from = root.as_bytes().to_vec();
        let mut revision = 0;
        let mut kvs = Vec::new();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = match self.client.get(from.clone(), Some(opts)).await {
                Ok(r) => r,
                Err(source) => {
                    self.broken = true;
                    return Err(StoreError::Etcd { endpoints: self.endpoints.clone(), op: "read", source });
                }
            };
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            if let Some(last) = resp.kvs().last() {
                from = last.key().to_vec();
                from.push(0);
            }
            kvs.extend(resp.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision())));
            if !more {
                break;
            }
        }
        self.seen = revision;
        self.stats.revision.store(self.seen, Ordering::Relaxed);
        let guard_key = self.layout.revision();
        let mut guard = 0;
        let mut raw = BTreeMap::new();
        for (k, v, mod_revision) in kvs {
            let key = String::from_utf8_lossy(&k).into_owned();
            if key == guard_key {
                guard = mod_revision;
                if let Some(at) = serde_json::from_slice::<serde_json::Value>(&v).ok().and_then(|v| v["at_ms"].as_i64())
                {
                    self.stats.changed_at_ms.store(at, Ordering::Relaxed);
                }
            }
            raw.insert(key, v);
        }
        let assembled = self
            .layout
            .assemble(raw.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())))
            .map_err(|source| StoreError::Layout { store: self.url.clone(), source })?;
        let (state, orders) = match assembled {
            Some((s, o)) => (Some(s), o),
            None => (None, Orders::new()),
        };
        Ok(Read { state, orders, raw, guard })
    }

    /// The state and the store revision it was read at.
    pub async fn read(&mut self) -> Result<(State, i64), StoreError> {
        let since = std::time::Instant::now();
        let r = loop {
            match self.read_all().await {
                Ok(r) => break r,
                Err(e) if self.passing(&e, since) => tokio::time::sleep(Duration::from_millis(250)).await,
                Err(e) => return Err(e),
            }
        };
        self.mirror = Some(r.raw);
        self.mirror_revision = self.seen;
        match r.state {
            Some(s) => Ok((s, self.seen)),
            None => Err(StoreError::Empty { store: self.url.clone() }),
        }
    }

    /// The state as of the last change [`EtcdStore::changed`] reported: the
    /// last read with the watch's events since, no request made.
    pub fn held(&self) -> Result<State, StoreError> {
        let Some(mirror) = &self.mirror else { return Err(StoreError::Empty { store: self.url.clone() }) };
        let assembled = self
            .layout
            .assemble(mirror.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())))
            .map_err(|source| StoreError::Layout { store: self.url.clone(), source })?;
        assembled.map(|(s, _)| s).ok_or_else(|| StoreError::Empty { store: self.url.clone() })
    }

    /// What the layout makes of one key's change.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The guard: the transaction applies only if no other change landed
    /// since `guard` was read.
    fn unchanged_since(&self, guard: i64) -> Compare {
        match guard {
            0 => Compare::create_revision(self.layout.revision(), CompareOp::Equal, 0),
            g => Compare::mod_revision(self.layout.revision(), CompareOp::Equal, g),
        }
    }

    /// Runs `ops` (plus the guard's bump) if nothing changed since `guard`.
    async fn commit(&mut self, guard: i64, mut ops: Vec<TxnOp>) -> Result<bool, StoreError> {
        // The guard says when: agents measure how long a change took to reach them.
        let stamp = serde_json::json!({"after_revision": self.seen, "at_ms": unix_ms()}).to_string();
        ops.push(TxnOp::put(self.layout.revision(), stamp, None));
        let txn = Txn::new().when([self.unchanged_since(guard)]).and_then(ops);
        let resp = self.client.txn(txn).await.map_err(|source| {
            self.broken = true;
            let text = source.to_string();
            if text.contains("too many operations") || text.contains("request is too large") {
                StoreError::TooBig { endpoints: self.endpoints.clone(), source }
            } else {
                StoreError::Etcd { endpoints: self.endpoints.clone(), op: "write", source }
            }
        })?;
        if resp.succeeded() {
            self.committed = resp.header().map_or(0, |h| h.revision());
        }
        Ok(resp.succeeded())
    }

    /// The newest store revision this client knows: its last read, or its
    /// last commit. A state read or written at it holds every change up to it.
    pub fn revision(&self) -> i64 {
        self.seen.max(self.committed)
    }

    /// Backs off before trying again, more each time, with jitter, so that
    /// many writers at once spread out.
    async fn back_off(attempt: u32) {
        let jitter = u64::from(std::process::id() ^ attempt.wrapping_mul(2_654_435_761)) % 20;
        tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)) * 5 + jitter)).await;
    }

    /// Whether `e` is etcd passing through an election or a member going
    /// away (no leader, leader changed, unavailable, timed out): then the
    /// caller waits a moment and tries again, for up to 15 s since `since`.
    /// The compare-and-swap makes a retried write safe: it applies to the
    /// store as read again.
    fn passing(&mut self, e: &StoreError, since: std::time::Instant) -> bool {
        let StoreError::Etcd { source, .. } = e else { return false };
        let text = source.to_string();
        let passing =
            ["leader", "navailable", "timed out", "Timeout", "connect error", "reset"].iter().any(|w| text.contains(w));
        if !passing || since.elapsed() > Duration::from_secs(15) {
            return false;
        }
        self.broken = true;
        true
    }

    /// The writes that turn the objects `raw` holds into `want`: a put for
    /// each key whose value differs, a removal for each object key `want`
    /// lacks, one by one (etcd refuses a range removal overlapping a put of
    /// the same transaction). Agents' keys and the guard stay.
    fn changes(&self, raw: &BTreeMap<String, Vec<u8>>, want: Vec<(String, Vec<u8>)>) -> Vec<TxnOp> {
        let want: BTreeMap<String, Vec<u8>> = want.into_iter().collect();
        let mut ops: Vec<TxnOp> = want
            .iter()
            .filter(|(k, v)| raw.get(*k) != Some(*v))
            .map(|(k, v)| TxnOp::put(k.as_str(), v.clone(), None))
            .collect();
        ops.extend(
            raw.keys()
                .filter(|k| self.layout.is_object_key(k) && !want.contains_key(*k))
                .map(|k| TxnOp::delete(k.as_str(), None)),
        );
        ops
    }

    /// Reads the store, asks `plan` for the writes to make from what it read
    /// (and what to return), and commits them against the revision read: from
    /// a fresh read again when another writer got there first, or while etcd
    /// passes through an election. With `skip_empty`, no writes commit nothing.
    async fn transact<T, E: From<Error>>(
        &mut self,
        skip_empty: bool,
        mut plan: impl FnMut(&Self, Read) -> Result<(Vec<TxnOp>, T), E>,
    ) -> Result<T, E> {
        let since = std::time::Instant::now();
        for attempt in 0..MAX_TRIES {
            let read = match self.read_all().await {
                Ok(r) => r,
                Err(e) if self.passing(&e, since) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                Err(e) => return Err(Error::from(e).into()),
            };
            let guard = read.guard;
            let (ops, out) = plan(self, read)?;
            if skip_empty && ops.is_empty() {
                return Ok(out);
            }
            match self.commit(guard, ops).await {
                Ok(true) => return Ok(out),
                Ok(false) => Self::back_off(attempt).await,
                Err(e) if self.passing(&e, since) => tokio::time::sleep(Duration::from_millis(250)).await,
                Err(e) => return Err(Error::from(e).into()),
            }
        }
        Err(Error::from(StoreError::Contended { store: self.url.clone(), tries: MAX_TRIES }).into())
    }

    /// See [`super::Store::edit`].
    pub async fn edit<T, E: From<Error>>(
        &mut self,
        change: &mut impl FnMut(&mut State) -> Result<T, E>,
    ) -> Result<(T, State), E> {
        self.transact(true, |me, read| {
            let mut state = read.state.unwrap_or_else(State::empty);
            let out = change(&mut state)?;
            let cluster = model::resolve(&me.url, &state, me.caps).map_err(Error::from)?;
            let state = model::pinned(&state, &cluster);
            let ops = me.changes(&read.raw, me.layout.explode(&state, &read.orders));
            Ok((ops, (out, state)))
        })
        .await
    }

    /// See [`super::Store::import`]; `state` has its allocations written out.
    pub async fn import(&mut self, state: &State, replace: bool) -> Result<()> {
        self.transact(false, |me, read| {
            if let (Some(old), false) = (&read.state, replace) {
                return Err(StoreError::NotEmpty { store: me.url.clone(), summary: summary(old) }.into());
            }
            Ok((me.changes(&read.raw, me.layout.explode(state, &Orders::new())), ()))
        })
        .await
    }

    /// Returns the next change to the store's objects since the last read
    /// or change, each key's value before and after (the mirror of the store
    /// follows). Or, after a second or more when the watch cannot be kept
    /// (etcd unreachable, or compacted past the revision read),
    /// [`Change::Resync`]: the caller reads the whole store again.
    pub async fn changed(&mut self) -> Change {
        if self.heal().await.is_err() {
            self.watch_lost("no member answers").await;
            return Change::Resync;
        }
        if self.watch.is_none() {
            let opts = WatchOptions::new().with_prefix().with_start_revision(self.seen + 1);
            let root = self.layout.root();
            match self.client.watch(root, Some(opts)).await {
                Ok(w) => {
                    self.watch = Some(w);
                    self.stats.watch_up.store(true, Ordering::Relaxed);
                    if self.watch_failed {
                        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                        // Back after an outage: the caller reads the whole
                        // store now (the resynchronisation), then waits on
                        // this watch.
                        tracing::info!("watching {} again", self.url);
                        self.watch_failed = false;
                        self.retries = 0;
                        return Change::Resync;
                    }
                }
                Err(e) => {
                    self.watch_lost(&e.to_string()).await;
                    return Change::Resync;
                }
            }
        }
        loop {
            let Some(w) = self.watch.as_mut() else { return Change::Resync };
            let resp = match w.message().await {
                Ok(Some(resp)) if resp.canceled() || resp.compact_revision() > 0 => {
                    let why =
                        format!("the watch ended ({}; compacted at {})", resp.cancel_reason(), resp.compact_revision());
                    self.watch_lost(&why).await;
                    return Change::Resync;
                }
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    self.watch_lost("the watch stream ended").await;
                    return Change::Resync;
                }
                Err(e) => {
                    self.watch_lost(&e.to_string()).await;
                    return Change::Resync;
                }
            };
            // Agents renewing their presence or reporting health change no
            // state: no reason to apply anything.
            let mut changes = Vec::new();
            let guard_key = self.layout.revision();
            if let Some(h) = resp.header() {
                self.seen = self.seen.max(h.revision());
            }
            for e in resp.events() {
                let Some(kv) = e.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                self.seen = self.seen.max(kv.mod_revision());
                if kv.mod_revision() <= self.mirror_revision {
                    continue;
                }
                let new = (e.event_type() == EventType::Put).then(|| kv.value().to_vec());
                if key == guard_key {
                    let at = new.as_deref().and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok());
                    if let Some(at) = at.and_then(|v| v["at_ms"].as_i64()) {
                        self.stats.changed_at_ms.store(at, Ordering::Relaxed);
                    }
                }
                if !self.layout.is_object_key(&key) {
                    continue;
                }
                let Some(mirror) = self.mirror.as_mut() else { return Change::Resync };
                let old = match &new {
                    Some(v) => mirror.insert(key.clone(), v.clone()),
                    None => mirror.remove(&key),
                };
                changes.push(ObjectChange { key, old, new });
            }
            self.stats.revision.store(self.seen, Ordering::Relaxed);
            if !changes.is_empty() {
                return Change::Objects(changes);
            }
        }
    }

    /// Says once that the watch is lost, then backs off: 0.5 s doubling up
    /// to 4 s while etcd stays away.
    async fn watch_lost(&mut self, why: &str) {
        self.watch = None;
        self.broken = true;
        self.stats.watch_up.store(false, Ordering::Relaxed);
        if !self.watch_failed {
            tracing::warn!("lost the watch on {}: {why}; forwarding continues on what was applied, retrying", self.url);
            self.watch_failed = true;
            self.retries = 0;
        }
        let wait = Duration::from_millis(500 << self.retries.min(3));
        self.retries += 1;
        tokio::time::sleep(wait).await;
    }
}

/// What the store says of one host's agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentView {
    /// Its lease is live: the agent runs and reaches etcd.
    pub alive: bool,
    /// When it last renewed its lease (RFC 3339), alive or not; `None`: never.
    pub last_seen: Option<String>,
    /// Its backends' health, while alive.
    pub report: Option<super::report::Report>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Seen {
    last_seen: String,
}

/// The agents' keys of one store: each agent's presence under its lease,
/// its health report, and when it was last seen.
#[derive(Clone)]
pub struct Agents {
    client: Client,
    connector: Connector,
    layout: Layout,
    url: String,
    stats: Arc<StoreStats>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Agents {
    /// Every agent the store knows of, by host name.
    pub async fn view(&mut self) -> Result<BTreeMap<String, AgentView>, StoreError> {
        let resp = match self.client.get(self.layout.agents(), Some(GetOptions::new().with_prefix())).await {
            Ok(r) => r,
            Err(source) => {
                if let Ok(c) = self.connector.live_client().await {
                    self.client = c;
                }
                return Err(StoreError::Etcd { endpoints: self.url.clone(), op: "read the agents", source });
            }
        };
        let mut out: BTreeMap<String, AgentView> = BTreeMap::new();
        for kv in resp.kvs() {
            let Some((host, what)) = self.layout.agent_key(&String::from_utf8_lossy(kv.key())) else { continue };
            let v = out.entry(host).or_default();
            match what.as_str() {
                "alive" => v.alive = true,
                "health" => v.report = serde_json::from_slice(kv.value()).ok(),
                "seen" => v.last_seen = serde_json::from_slice::<Seen>(kv.value()).ok().map(|s| s.last_seen),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Keeps host `host`'s agent present in the store for as long as the
    /// task runs: a lease of `ttl`, renewed every third of it, holding the
    /// `alive` key and the health `report` (re-written when it changes),
    /// and `seen` (no lease) at each renewal. When etcd cannot be reached it
    /// says so once, and starts a new lease once etcd answers again.
    pub async fn keep_present(
        mut self,
        host: String,
        ttl: Duration,
        report: std::sync::Arc<std::sync::Mutex<super::report::Report>>,
    ) {
        let mut lost = false;
        loop {
            let err = self.present(&host, ttl, &report, &mut lost).await;
            self.stats.lease_up.store(false, Ordering::Relaxed);
            // The next lease through the members that answer then.
            if let Ok(c) = self.connector.live_client().await {
                self.client = c;
            }
            if !lost {
                tracing::warn!(
                    host,
                    "lost the lease in {}: {err}; the other hosts will take this host's backends out until it is back",
                    self.url
                );
                lost = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// One lease, for as long as it lasts; why it ended.
    async fn present(
        &mut self,
        host: &str,
        ttl: Duration,
        report: &std::sync::Mutex<super::report::Report>,
        lost: &mut bool,
    ) -> String {
        let secs = ttl.as_secs().max(2) as i64;
        let lease = match self.client.lease_grant(secs, None).await {
            Ok(l) => l.id(),
            Err(e) => return e.to_string(),
        };
        let with_lease = || Some(etcd_client::PutOptions::new().with_lease(lease));
        let since = serde_json::json!({"since": now_rfc3339(), "pid": std::process::id()}).to_string();
        if let Err(e) = self.client.put(self.layout.agent(host, "alive"), since, with_lease()).await {
            return e.to_string();
        }
        let (mut keeper, mut stream) = match self.client.lease_keep_alive(lease).await {
            Ok(k) => k,
            Err(e) => return e.to_string(),
        };
        let mut reported: Option<String> = None;
        let mut tick = tokio::time::interval(Duration::from_secs((secs as u64 / 3).max(1)));
        loop {
            tick.tick().await;
            if let Err(e) = keeper.keep_alive().await {
                return e.to_string();
            }
            match stream.message().await {
                Ok(Some(r)) if r.ttl() > 0 => {}
                Ok(Some(_)) => return "the lease expired".into(),
                Ok(None) => return "the keep-alive stream ended".into(),
                Err(e) => return e.to_string(),
            }
            let now = report.lock().map(|r| serde_json::to_string(&*r).unwrap_or_default()).unwrap_or_default();
            if reported.as_ref() != Some(&now) {
                if let Err(e) = self.client.put(self.layout.agent(host, "health"), now.clone(), with_lease()).await {
                    return e.to_string();
                }
                reported = Some(now);
            }
            let seen = serde_json::to_string(&Seen { last_seen: now_rfc3339() }).unwrap_or_default();
            if let Err(e) = self.client.put(self.layout.agent(host, "seen"), seen, None).await {
                return e.to_string();
            }
            self.stats.lease_up.store(true, Ordering::Relaxed);
            if *lost {
                tracing::info!(host, "present in {} again", self.url);
                *lost = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefix_ends_where_its_last_byte_is_one_more() {
        assert_eq!(super::prefix_end(b"/overlay-bpf/v1/"), b"/overlay-bpf/v10".to_vec());
        assert_eq!(super::prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(super::prefix_end(b"\xff\xff"), vec![0]);
    }
}
