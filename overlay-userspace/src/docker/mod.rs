//! The Docker network plugin (`agent --docker-plugin`, docs/docker.md):
//! Docker's remote NetworkDriver and IpamDriver, both named `overlay-bpf`,
//! served over HTTP on a Unix socket in `/run/docker/plugins`.
//!
//! How Docker's calls map onto the store:
//!
//! - IPAM `RequestPool` checks the subnet against the store's networks;
//!   `RequestAddress` for the gateway answers the network's gateway; for a
//!   container it registers a *pending* endpoint on this host in the store
//!   (one compare-and-swap transaction), which allocates the address, or
//!   takes `--ip`: race-free across hosts as every allocation is.
//! - `CreateNetwork` carries no name: it is checked (our IPAM, no overlap,
//!   `-o encrypted` only where the kernel has WireGuard) and the store's
//!   network is made once Docker's API
//!   shows the network's name, or at the first container, whichever first.
//!   A store network with the same subnet is the same network.
//! - `CreateEndpoint` gives the pending endpoint Docker's EndpointID (and
//!   answers its MAC); `Join` makes the veth (host end named from the
//!   EndpointID, container end for Docker to move), records the sandbox, and
//!   answers once the agent has the host end in its maps and under its TC
//!   program. Then the endpoint is named after its container, with its
//!   aliases, from Docker's API.
//! - `ProgramExternalConnectivity` sets the endpoint's `-p` ports (host
//!   mode); `Leave` removes the veth; `DeleteEndpoint` and `ReleaseAddress`
//!   the endpoint; `DeleteNetwork` this host's use of the network, and the
//!   network when no host uses it and Docker made it.
//! - `-o parent=DEVICE [-o macvlan_mode=M]` (Docker's macvlan options)
//!   makes a macvlan network (`driver: macvlan`): `Join` makes a macvlan
//!   sub-interface of the parent instead of a veth, which Docker moves in,
//!   and `Leave`/`DeleteEndpoint` delete it once Docker has moved it back.

pub mod api;
mod engine;
pub mod error;

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State as Shared,
    http::{header, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use ipnet::Ipv4Net;
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{oneshot, Mutex};

use self::{
    api::*,
    engine::{Backoff, DockerApi},
    error::{Refusal, Result},
};
use crate::{
    host::netdev,
    state::model::{EndpointPort, EndpointSpec, Mac, NetworkSpec, Protocol, Runtime, State, SubnetSpec},
    state::store::Store,
};

/// The socket Docker looks for the plugin at.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/overlay-bpf.sock";

use crate::agent::ApplyNow;

/// Where the plugin listens and where Docker's API is.
#[derive(Debug, Clone)]
pub struct PluginOptions {
    pub socket: PathBuf,
    /// `--docker-host`: `unix:///var/run/docker.sock` or `tcp://...`;
    /// `None`: `$DOCKER_HOST`, else the default socket.
    pub docker_host: Option<String>,
}

struct Plugin {
    store: Mutex<Store>,
    /// This host's name in the state.
    host: String,
    docker: DockerApi,
    /// Docker's NetworkID -> the network's subnet (the store's network is
    /// found by its subnet).
    networks: std::sync::Mutex<HashMap<String, Ipv4Net>>,
    apply: ApplyNow,
    seq: AtomicU64,
}

/// Serves the plugin until the returned task is dropped, whether Docker's
/// API answers yet or not; once it does, removes this host's Docker
/// endpoints whose containers Docker no longer has.
pub async fn serve(
    opts: &PluginOptions,
    store: Store,
    host: String,
    apply: ApplyNow,
) -> crate::error::Result<crate::task::AbortOnDrop<()>> {
    let docker = DockerApi::new(opts.docker_host.clone());
    let plugin = Arc::new(Plugin {
        store: Mutex::new(store),
        host,
        docker,
        networks: Default::default(),
        apply,
        seq: AtomicU64::new(0),
    });
    // Docker may be starting too (its plugins start first): until its API
    // answers, the check of gone containers waits.
    let first = plugin.clone();
    let adopt = tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        while !first.adopt().await {
            backoff.wait().await;
        }
    });
    if let Some(dir) = opts.socket.parent() {
        std::fs::create_dir_all(dir).map_err(crate::error::Error::io(format!("create {}", dir.display())))?;
    }
    // A socket left by an agent that was killed.
    let _ = std::fs::remove_file(&opts.socket);
    let listener = tokio::net::UnixListener::bind(&opts.socket)
        .map_err(crate::error::Error::io(format!("listen on {} for Docker", opts.socket.display())))?;
    tracing::info!(host = plugin.host, "Docker network and IPAM plugin overlay-bpf at {}", opts.socket.display());
    let app = Router::new().fallback(call).with_state(plugin);
    Ok(crate::task::AbortOnDrop(tokio::spawn(async move {
        let _adopt = crate::task::AbortOnDrop(adopt);
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the Docker plugin stopped: {e}");
        }
    })))
}

/// A body as `T`; an empty body is `T`'s default (Docker sends none to some calls).
fn parse<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    Ok(serde_json::from_slice(body).map_err(|e| Refusal::Unreadable(e.to_string()))?)
}

fn reply<T: Serialize>(v: T) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(v).expect("responses serialize"))
}

/// Every call: one POST per method, dispatched by path. Unknown ones get 404;
/// errors go in the API's error field, which Docker shows the user.
async fn call(Shared(p): Shared<Arc<Plugin>>, uri: Uri, body: Bytes) -> Response {
    let method = uri.path().trim_start_matches('/').to_string();
    let r = match method.as_str() {
        "Plugin.Activate" => reply(Activate { implements: vec!["NetworkDriver", "IpamDriver"] }),
        "NetworkDriver.GetCapabilities" => reply(Capabilities { scope: "local", connectivity_scope: "global" }),
        "NetworkDriver.CreateNetwork" => async { p.clone().create_network(parse(&body)?).await }.await,
        "NetworkDriver.DeleteNetwork" => async { p.delete_network(&parse::<NetworkId>(&body)?.network_id).await }.await,
        "NetworkDriver.CreateEndpoint" => async { p.create_endpoint(parse(&body)?).await }.await,
        "NetworkDriver.EndpointOperInfo" => reply(OperInfo { value: HashMap::new() }),
        "NetworkDriver.DeleteEndpoint" => {
            async { p.delete_endpoint(&parse::<EndpointRef>(&body)?.endpoint_id).await }.await
        }
        "NetworkDriver.Join" => async { p.clone().join(parse(&body)?).await }.await,
        "NetworkDriver.Leave" => async { p.leave(&parse::<EndpointRef>(&body)?.endpoint_id).await }.await,
        "NetworkDriver.ProgramExternalConnectivity" => {
            async {
                let r = parse::<EndpointRef>(&body)?;
                p.publish(&r.endpoint_id, &r.options).await
            }
            .await
        }
        "NetworkDriver.RevokeExternalConnectivity" => {
            async { p.publish(&parse::<EndpointRef>(&body)?.endpoint_id, &None).await }.await
        }
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => reply(Empty {}),
        "IpamDriver.GetCapabilities" => {
            reply(IpamCapabilities { requires_mac_address: false, requires_request_replay: false })
        }
        "IpamDriver.GetDefaultAddressSpaces" => reply(AddressSpaces {
            local_default_address_space: ADDRESS_SPACE,
            global_default_address_space: ADDRESS_SPACE,
        }),
        "IpamDriver.RequestPool" => async { p.request_pool(parse(&body)?).await }.await,
        "IpamDriver.ReleasePool" => reply(Empty {}),
        "IpamDriver.RequestAddress" => async { p.request_address(parse(&body)?).await }.await,
        "IpamDriver.ReleaseAddress" => async { p.release_address(parse(&body)?).await }.await,
        _ => {
            tracing::debug!("Docker called {method}, which overlay-bpf does not serve");
            return (StatusCode::NOT_FOUND, format!("overlay-bpf does not serve {method}\n")).into_response();
        }
    };
    let json = match r {
        Ok(v) => {
            tracing::debug!("{method}: {v}");
            v
        }
        Err(e) => {
            tracing::warn!("{method} refused: {e}");
            error_response(&method, e.to_string())
        }
    };
    ([(header::CONTENT_TYPE, "application/vnd.docker.plugins.v1+json")], json.to_string()).into_response()
}

/// The pool `PoolID` names (`overlay-bpf/<subnet>[/<range>]`).
fn pool_of(pool_id: &str) -> Result<Ipv4Net> {
    let rest = pool_id.strip_prefix(ADDRESS_SPACE).and_then(|r| r.strip_prefix('/')).unwrap_or(pool_id);
    let mut parts = rest.splitn(3, '/');
    let (Some(a), Some(len)) = (parts.next(), parts.next()) else {
        return Err(Refusal::NotOurPool(pool_id.into()).into());
    };
    Ok(format!("{a}/{len}").parse().map_err(|_| Refusal::NotOurPool(pool_id.into()))?)
}

fn net_by_subnet(state: &State, subnet: Ipv4Net) -> Option<&NetworkSpec> {
    state.networks.iter().find(|n| n.subnets.iter().any(|s| s.subnet == subnet))
}

/// Refuses a new network of Docker's that the store would refuse, in the
/// state's own words (overlapping subnets, `-o encrypted` on a kernel
/// without WireGuard or on a macvlan network, ...): `state` with `new`
/// added, resolved as every write of the store is. A network of the same
/// subnet in the store is the same network (another host made it first).
/// `rules`: the rules that count (at RequestPool, only the pool is known, not
/// the network's kind or options: only its overlaps count).
fn check_new(
    mut state: State,
    mut new: NetworkSpec,
    host: &str,
    caps: crate::state::model::Capabilities,
    rules: impl Fn(crate::state::model::Rule) -> bool,
) -> Result<()> {
    if net_by_subnet(&state, new.subnets[0].subnet).is_some() {
        return Ok(());
    }
    if new.name.is_empty() {
        // Docker names the network after this call; a placeholder until then.
        new.name = format!("new-{}", new.subnets[0].subnet).replace('/', "-");
    }
    new.used_by = vec![host.to_string()];
    state.networks.push(new);
    match crate::state::model::resolve("the store", &state, caps) {
        Ok(_) => Ok(()),
        Err(mut e) => {
            e.problems.retain(|p| rules(p.rule));
            match e.problems.is_empty() {
                true => Ok(()),
                false => Err(e.into()),
            }
        }
    }
}

fn endpoint_by_id<'s>(state: &'s mut State, id: &str) -> Option<&'s mut EndpointSpec> {
    state.endpoints.iter_mut().find(|e| e.endpoint_id.as_deref() == Some(id))
}

impl Plugin {
    /// Asks the agent to apply the store now and waits until it has.
    async fn apply_now(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        const WAIT: u64 = 30;
        self.apply.send(tx).await.map_err(|_| Refusal::AgentStopping)?;
        match tokio::time::timeout(Duration::from_secs(WAIT), rx).await {
            Ok(Ok(r)) => Ok(r.map_err(Refusal::NotApplied)?),
            Ok(Err(_)) => Err(Refusal::AgentStopping.into()),
            Err(_) => Err(Refusal::AgentSlow(WAIT).into()),
        }
    }

    async fn edit<T>(&self, change: impl FnMut(&mut State) -> Result<T>) -> Result<T> {
        Ok(self.store.lock().await.edit_with(change).await?.0)
    }

    async fn read(&self) -> Result<State> {
        Ok(self.store.lock().await.read().await?)
    }

    /// Refuses a network the store would refuse for `rules`: see [`check_new`].
    async fn check_new(&self, new: NetworkSpec, rules: impl Fn(crate::state::model::Rule) -> bool) -> Result<()> {
        check_new(self.read().await?, new, &self.host, crate::host::capabilities(), rules)
    }

    /// At start: which of Docker's networks are ours, and this host's Docker
    /// endpoints whose containers Docker no longer has leave the store (a
    /// dockerd that crashed, or containers removed while no agent ran).
    /// False while Docker's API does not answer.
    ///
    /// Docker may be using the plugin meanwhile: only endpoints that were in
    /// the store before Docker was asked are candidates, so one that Docker
    /// creates now (pending, or created but not yet joined, which Docker does
    /// not list yet) is never taken for a gone one.
    async fn adopt(&self) -> bool {
        let candidates: HashSet<String> = match self.read().await {
            Ok(s) => s
                .endpoints
                .into_iter()
                .filter(|e| e.host == self.host && e.runtime == Some(Runtime::Docker))
                .map(|e| e.name)
                .collect(),
            Err(e) => {
                tracing::debug!("the store: {e}");
                return false;
            }
        };
        let live = match self.docker_endpoints().await {
            Ok(live) => live,
            Err(e) => {
                tracing::debug!("{e}");
                return false;
            }
        };
        let r = self
            .edit(|s| {
                let gone = crate::state::model::remove_endpoints(s, |e| {
                    candidates.contains(&e.name) && !e.endpoint_id.as_ref().is_some_and(|id| live.contains(id))
                });
                Ok(gone.len())
            })
            .await;
        match r {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(host = self.host, "removed {n} Docker endpoints of containers Docker no longer has");
                let _ = self.apply_now().await;
            }
            Err(e) => tracing::warn!(host = self.host, "could not remove the endpoints of gone containers: {e}"),
        }
        true
    }

    /// The EndpointIDs Docker has on our networks, learning the networks.
    async fn docker_endpoints(&self) -> std::result::Result<HashSet<String>, engine::DockerApiError> {
        let mut live = HashSet::new();
        for n in self.docker.list_networks().await? {
            if n.driver.as_deref() != Some("overlay-bpf") {
                continue;
            }
            let Some(id) = n.id.clone() else { continue };
            if let Some(subnet) = docker_subnet(&n) {
                self.networks.lock().expect("not poisoned").insert(id.clone(), subnet);
            }
            let full = self.docker.inspect_network(&id).await?;
            live.extend(full.containers.unwrap_or_default().into_values().filter_map(|c| c.endpoint_id));
        }
        Ok(live)
    }

    async fn request_pool(&self, r: RequestPool) -> Result<serde_json::Value> {
        if r.v6 {
            return Err(Refusal::Ipv6.into());
        }
        if r.pool.is_empty() {
            return Err(Refusal::NoSubnet.into());
        }
        let pool: Ipv4Net =
            r.pool.parse().map_err(|_| Refusal::NotIpv4Subnet { flag: "--subnet", value: r.pool.clone() })?;
        // The pool is all Docker's IPAM call says: whether the network is an
        // overlay or a macvlan one (whose subnet is the hosts' LAN) comes at
        // CreateNetwork, which checks every rule.
        let new = NetworkSpec { subnets: vec![subnet_spec(pool)], ..Default::default() };
        self.check_new(new, |r| r == crate::state::model::Rule::SubnetOverlap).await?;
        let mut id = format!("{ADDRESS_SPACE}/{pool}");
        if !r.sub_pool.is_empty() {
            id += &format!("/{}", r.sub_pool.replace('/', "-"));
        }
        reply(PoolResponse { pool_id: id, pool: pool.to_string(), data: HashMap::new() })
    }

    /// The store's network of `subnet`, made from Docker's view of it when
    /// the store has none yet; this host joins its users. `None`: Docker has
    /// no such network yet either (it is being created).
    async fn ensure_network(&self, subnet: Ipv4Net) -> Result<Option<NetworkSpec>> {
        let state = self.read().await?;
        let docker_view = match net_by_subnet(&state, subnet) {
            Some(n) if n.used_by.contains(&self.host) => return Ok(Some(n.clone())),
            Some(_) => None,
            None => {
                let nets = self.docker.list_networks().await.map_err(|e| Refusal::DockerApi(e.to_string()))?;
                let Some(n) = nets
                    .into_iter()
                    .find(|n| n.driver.as_deref() == Some("overlay-bpf") && docker_subnet(n) == Some(subnet))
                else {
                    return Ok(None);
                };
                Some(n)
            }
        };
        let host = self.host.clone();
        let made = self
            .edit(|s| {
                if let Some(n) = s.networks.iter_mut().find(|n| n.subnets.iter().any(|x| x.subnet == subnet)) {
                    if !n.used_by.contains(&host) {
                        n.used_by.push(host.clone());
                    }
                    return Ok(n.clone());
                }
                let d = docker_view.as_ref().ok_or(Refusal::Gone("network"))?;
                let n = network_from_docker(d, subnet, &host)?;
                s.networks.push(n.clone());
                Ok(n)
            })
            .await?;
        Ok(Some(made))
    }

    async fn request_address(&self, r: RequestAddress) -> Result<serde_json::Value> {
        let pool = pool_of(&r.pool_id)?;
        let cidr = |ip: Ipv4Addr| format!("{ip}/{}", pool.prefix_len());
        let asked: Option<Ipv4Addr> = match r.address.as_str() {
            "" => None,
            a => Some(a.parse().map_err(|_| Refusal::NotIpv4Address(a.into()))?),
        };
        let gateway = r.options.as_ref().and_then(|o| o.get(REQUEST_ADDRESS_TYPE)).is_some_and(|t| t == GATEWAY_TYPE);
        let state = self.read().await?;
        let stored = net_by_subnet(&state, pool).cloned();
        if gateway {
            let stored_gw = stored.as_ref().and_then(|n| n.subnets.iter().find(|s| s.subnet == pool)?.gateway);
            return match (asked, stored_gw) {
                (Some(a), Some(g)) if a != g => Err(Refusal::OtherGateway { asked: a, pool, stored: g }.into()),
                (a, g) => reply(AddressResponse {
                    address: cidr(a.or(g).unwrap_or_else(|| crate::state::model::first_usable(pool))),
                    data: HashMap::new(),
                }),
            };
        }
        // Aux addresses are reserved while the network is being made.
        let network = match stored {
            Some(n) if n.used_by.contains(&self.host) => n,
            _ => match self.ensure_network(pool).await? {
                Some(n) => n,
                None => {
                    let a = asked.ok_or(Refusal::NoNetworkOf(pool))?;
                    return reply(AddressResponse { address: cidr(a), data: HashMap::new() });
                }
            },
        };
        if let Some(a) = asked {
            if network.subnets.iter().any(|s| s.aux_addresses.values().any(|x| *x == a)) {
                return reply(AddressResponse { address: cidr(a), data: HashMap::new() });
            }
        }
        // A container's address: a pending endpoint holds it until Docker
        // creates the endpoint (CreateEndpoint names it by its address).
        let name = format!("pending-{:x}-{}", std::process::id(), self.seq.fetch_add(1, Ordering::Relaxed));
        let (host, net) = (self.host.clone(), network.name.clone());
        let ip = self
            .edit(|s| {
                s.endpoints.push(EndpointSpec {
                    name: name.clone(),
                    host: host.clone(),
                    network: net.clone(),
                    netns: "docker-pending".into(),
                    ifname: None,
                    ip: asked,
                    mac: None,
                    aliases: Vec::new(),
                    runtime: Some(Runtime::Docker),
                    container_id: None,
                    endpoint_id: None,
                    publish: Vec::new(),
                    unknown: Default::default(),
                });
                let cluster = crate::state::model::resolve("the store", s, crate::host::capabilities())?;
                *s = crate::state::model::pinned(s, &cluster);
                Ok(s.endpoints.iter().find(|e| e.name == name && e.network == net).and_then(|e| e.ip))
            })
            .await?
            .ok_or(Refusal::NoAddress)?;
        reply(AddressResponse { address: cidr(ip), data: HashMap::new() })
    }

    async fn release_address(&self, r: ReleaseAddress) -> Result<serde_json::Value> {
        let pool = pool_of(&r.pool_id)?;
        let Some(ip) = address_of(&r.address) else {
            return reply(Empty {});
        };
        let host = self.host.clone();
        self.edit(|s| {
            let Some(net) = net_by_subnet(s, pool).map(|n| n.name.clone()) else { return Ok(()) };
            crate::state::model::remove_endpoints(s, |e| {
                e.network == net && e.host == host && e.runtime == Some(Runtime::Docker) && e.ip == Some(ip)
            });
            Ok(())
        })
        .await?;
        reply(Empty {})
    }

    async fn create_network(self: Arc<Self>, r: CreateNetwork) -> Result<serde_json::Value> {
        let data = r.ipv4_data.as_deref().unwrap_or_default();
        let Some(d) = data.first() else {
            return Err(Refusal::NoPool.into());
        };
        if d.address_space != ADDRESS_SPACE {
            return Err(Refusal::DefaultIpam.into());
        }
        if data.len() > 1 {
            return Err(Refusal::SubnetsMany.into());
        }
        if r.ipv6_data.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(Refusal::Ipv6.into());
        }
        let subnet: Ipv4Net =
            d.pool.parse().map_err(|_| Refusal::NotIpv4Subnet { flag: "pool", value: d.pool.clone() })?;
        // Docker's `-o` options are read as `network create` reads them, and
        // the network is checked against the store as any new network is.
        let mut new = network_spec(String::new(), subnet, &r.generics(), Unknown::Refuse)?;
        // The addresses Docker's IPAM call gave, as the store's network gets
        // them from Docker's API later.
        new.subnets[0].gateway = address_of(&d.gateway);
        new.subnets[0].aux_addresses =
            d.aux_addresses.iter().flatten().filter_map(|(k, v)| Some((k.clone(), address_of(v)?))).collect();
        // `-o parent=DEVICE`: a macvlan network (Docker's own macvlan
        // driver's options), its parent checked here as Docker's driver does.
        if let Some(parent) = &new.parent {
            if netdev::ifindex(parent).is_none() {
                return Err(Refusal::NoParent { parent: parent.clone(), host: self.host.clone() }.into());
            }
            // Docker sets the container interface's MAC, which on a passthru
            // sub-interface is its parent's own.
            if new.macvlan_mode == Some(crate::state::model::MacvlanMode::Passthru) {
                return Err(Refusal::PassthruFromDocker.into());
            }
        }
        self.check_new(new, |_| true).await?;
        self.networks.lock().expect("not poisoned").insert(r.network_id.clone(), subnet);
        // Docker names the network once this call returns: the store's
        // network is made then (or at its first container, if sooner).
        let (plugin, id) = (self.clone(), r.network_id.clone());
        tokio::spawn(async move {
            let shown =
                plugin.until_docker_shows(|| async { plugin.docker.inspect_network(&id).await.ok().map(|_| ()) }).await;
            if shown.is_none() {
                tracing::warn!(
                    host = plugin.host,
                    "Docker's API does not show network {id:.12}: made at its first container"
                );
                return;
            }
            match plugin.ensure_network(subnet).await {
                Ok(Some(n)) => {
                    tracing::info!(host = plugin.host, "Docker's network {} is {subnet} in the store", n.name)
                }
                Ok(None) => tracing::warn!(host = plugin.host, "Docker's network {id:.12} is not listed with {subnet}"),
                Err(e) => tracing::warn!(host = plugin.host, "Docker's network {id:.12} ({subnet}): {e}"),
            }
        });
        Ok(serde_json::json!({}))
    }

    async fn delete_network(&self, id: &str) -> Result<serde_json::Value> {
        let Some(subnet) = self.networks.lock().expect("not poisoned").remove(id) else {
            return reply(Empty {});
        };
        let host = self.host.clone();
        self.edit(|s| {
            let Some(i) = s.networks.iter().position(|n| n.subnets.iter().any(|x| x.subnet == subnet)) else {
                return Ok(());
            };
            s.networks[i].used_by.retain(|h| *h != host);
            let n = &s.networks[i];
            let name = n.name.clone();
            if n.used_by.is_empty()
                && n.runtime == Some(Runtime::Docker)
                && !s.endpoints.iter().any(|e| e.network == name)
            {
                s.networks.remove(i);
            }
            Ok(())
        })
        .await?;
        reply(Empty {})
    }

    async fn create_endpoint(&self, r: CreateEndpoint) -> Result<serde_json::Value> {
        let iface = r.interface.unwrap_or_default();
        let ip = address_of(&iface.address).ok_or(Refusal::NoEndpointAddress)?;
        let mac: Option<Mac> = match iface.mac_address.as_str() {
            "" => None,
            m => Some(m.parse().map_err(|why| Refusal::BadMac { value: m.into(), why })?),
        };
        let (host, id) = (self.host.clone(), r.endpoint_id.clone());
        let mac = self
            .edit(|s| {
                // IPAM hands out aux addresses (Docker asks for them when it
                // makes the network), so a container asking for one gets as
                // far as here.
                let aux = s.networks.iter().find_map(|n| {
                    let reserved = n.subnets.iter().flat_map(|sub| &sub.aux_addresses).find(|(_, a)| **a == ip);
                    reserved.map(|(name, _)| Refusal::Reserved { ip, network: n.name.clone(), aux: name.clone() })
                });
                if let Some(refusal) = aux {
                    return Err(refusal.into());
                }
                let e = s
                    .endpoints
                    .iter_mut()
                    .find(|e| {
                        e.host == host
                            && e.runtime == Some(Runtime::Docker)
                            && e.ip == Some(ip)
                            && (e.endpoint_id.is_none() || e.endpoint_id.as_deref() == Some(&id))
                    })
                    .ok_or(Refusal::NotHandedOut(ip))?;
                e.endpoint_id = Some(id.clone());
                if let Some(m) = mac {
                    e.mac = Some(m);
                }
                Ok(e.mac)
            })
            .await?;
        let answer = match (iface.mac_address.is_empty(), mac) {
            (true, Some(m)) => Some(Interface { mac_address: m.to_string(), ..Default::default() }),
            _ => None,
        };
        reply(CreateEndpointResponse { interface: answer })
    }

    async fn delete_endpoint(&self, id: &str) -> Result<serde_json::Value> {
        self.remove_veth(id).await?;
        let id = id.to_string();
        let removed = self
            .edit(|s| {
                Ok(!crate::state::model::remove_endpoints(s, |e| e.endpoint_id.as_deref() == Some(&id)).is_empty())
            })
            .await?;
        if removed {
            self.apply_now().await?;
        }
        reply(Empty {})
    }

    /// The endpoint's veth, or its macvlan sub-interface once Docker has
    /// moved it back here (it does when the container leaves).
    async fn remove_veth(&self, id: &str) -> Result<()> {
        let handle = netdev::connect()?;
        netdev::delete_link(&handle, &netdev::host_veth_name(id)).await?;
        netdev::delete_link(&handle, &peer_name(id)).await?;
        Ok(())
    }

    async fn join(self: Arc<Self>, r: Join) -> Result<serde_json::Value> {
        let state = self.read().await?;
        let e = state
            .endpoints
            .iter()
            .find(|e| e.endpoint_id.as_deref() == Some(&r.endpoint_id))
            .ok_or_else(|| Refusal::NoEndpoint(r.endpoint_id.clone()))?;
        let n =
            state.networks.iter().find(|n| n.name == e.network).ok_or_else(|| Refusal::NoNetwork(e.network.clone()))?;
        let cluster = crate::state::model::resolve("the store", &state, crate::host::capabilities())?;
        let resolved = cluster
            .endpoints
            .iter()
            .find(|x| x.endpoint_id.as_deref() == Some(&r.endpoint_id))
            .ok_or_else(|| Refusal::NoEndpoint(r.endpoint_id.clone()))?;
        let net = &cluster.networks[resolved.network];
        let (host_end, peer) = (netdev::host_veth_name(&r.endpoint_id), peer_name(&r.endpoint_id));
        let handle = netdev::connect()?;
        match &net.kind {
            // A sub-interface of the parent, which Docker moves in.
            crate::state::model::NetworkKind::Macvlan(m) => {
                // As `up` refuses an endpoint whose parent is missing.
                let parent = netdev::ifindex(&m.parent).ok_or_else(|| crate::host::apply::ApplyError::NoParent {
                    endpoint: resolved.name.clone(),
                    network: net.name.clone(),
                    host: self.host.clone(),
                    parent: m.parent.clone(),
                })?;
                let mtu = crate::host::macvlan::mtu(net).unwrap_or(1500);
                if netdev::ifindex(&peer).is_none() {
                    let mode = crate::host::macvlan::kernel_mode(m.mode);
                    crate::host::macvlan::create_link(&handle, &peer, parent, mode, resolved.mac, mtu, None).await?;
                }
            }
            crate::state::model::NetworkKind::Overlay(o) => {
                netdev::create_docker_veth(&handle, &host_end, &peer, resolved.mac, o.mtu).await?;
            }
        }
        let (id, sandbox) = (r.endpoint_id.clone(), r.sandbox_key.clone());
        let result = async {
            self.edit(|s| {
                let e = endpoint_by_id(s, &id).ok_or(Refusal::Gone("endpoint"))?;
                e.netns = sandbox.clone();
                Ok(())
            })
            .await?;
            // The host end under our TC program and in the maps before the
            // container runs: its first packet goes through.
            self.apply_now().await
        }
        .await;
        if let Err(e) = result {
            let _ = self.remove_veth(&r.endpoint_id).await;
            return Err(e);
        }
        let gateway = if n.internal { String::new() } else { resolved.gateway.to_string() };
        let plugin = self.clone();
        let (nid, eid) = (r.network_id.clone(), r.endpoint_id.clone());
        tokio::spawn(async move { plugin.name_after_container(&nid, &eid).await });
        reply(JoinResponse {
            interface_name: InterfaceName { src_name: peer, dst_prefix: "eth".into() },
            gateway,
            disable_gateway_service: true,
        })
    }

    /// Names the endpoint after its container, with the container's aliases
    /// on the network, from Docker's API: `<container>` when free on the
    /// network, else `<container>.<host>`. Docker tells drivers neither.
    async fn name_after_container(&self, nid: &str, eid: &str) {
        // The container is listed on the network once it runs, and its
        // aliases once its settings show this endpoint.
        let found = self.until_docker_shows(|| self.container_of(nid, eid)).await;
        let Some((cid, name, aliases)) = found else {
            tracing::warn!("Docker's API does not show endpoint {eid:.12}'s container: it keeps its pending name");
            return;
        };
        let (host, eid_s) = (self.host.clone(), eid.to_string());
        let name = name.trim_start_matches('/').to_string();
        let r = self
            .edit(|s| {
                let Some(network) =
                    s.endpoints.iter().find(|e| e.endpoint_id.as_deref() == Some(&eid_s)).map(|e| e.network.clone())
                else {
                    return Ok(None);
                };
                let is_self = |e: &EndpointSpec| e.endpoint_id.as_deref() == Some(&eid_s);
                let chosen =
                    crate::state::ops::runtime::container_name(s, &network, &name, &host, is_self).ok_or_else(
                        || Refusal::NamesTaken { name: name.clone(), host: host.clone(), network: network.clone() },
                    )?;
                let e = endpoint_by_id(s, &eid_s).expect("found above");
                e.name = chosen.clone();
                e.aliases = aliases.iter().filter(|a| **a != chosen).cloned().collect();
                e.container_id = Some(cid.clone());
                Ok(Some(chosen))
            })
            .await;
        match r {
            Ok(Some(n)) => {
                tracing::info!(host = self.host, "endpoint {eid:.12} is container {n}");
                let _ = self.apply_now().await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(host = self.host, "endpoint {eid:.12} keeps its pending name: {e}"),
        }
    }

    async fn leave(&self, id: &str) -> Result<serde_json::Value> {
        self.remove_veth(id).await?;
        self.apply_now().await?;
        reply(Empty {})
    }

    /// `-p` ports of the endpoint (`None`: revoked).
    async fn publish(
        &self,
        id: &str,
        options: &Option<HashMap<String, serde_json::Value>>,
    ) -> Result<serde_json::Value> {
        let mut ports = Vec::new();
        for b in port_bindings(options).map_err(Refusal::BadPortMap)? {
            let protocol = match b.proto {
                6 => Protocol::Tcp,
                17 => Protocol::Udp,
                p => return Err(Refusal::PortProtocol(p).into()),
            };
            if b.host_port_end > b.host_port {
                return Err(Refusal::PortRange.into());
            }
            if b.host_port == 0 {
                return Err(Refusal::NoHostPort(b.port).into());
            }
            ports.push(EndpointPort { published: b.host_port, target: b.port, protocol });
        }
        let id_s = id.to_string();
        let changed = self
            .edit(|s| {
                let Some(e) = endpoint_by_id(s, &id_s) else { return Ok(false) };
                let changed = e.publish != ports;
                e.publish = ports.clone();
                Ok(changed)
            })
            .await?;
        if changed {
            self.apply_now().await?;
        }
        reply(Empty {})
    }
}

impl Plugin {
    /// Asks `look` until it finds what it looks for: every 100 ms for 10 s
    /// while Docker's API answers (what was just made shows within a
    /// second), and for up to 10 minutes, backing off, while it does not
    /// (a dockerd that is starting or restarting). `None`: never found.
    async fn until_docker_shows<T, Fut: std::future::Future<Output = Option<T>>>(
        &self,
        mut look: impl FnMut() -> Fut,
    ) -> Option<T> {
        const ANSWERING: u32 = 100;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(8));
        let mut answered = 0;
        while answered < ANSWERING && tokio::time::Instant::now() < deadline {
            if let Some(v) = look().await {
                return Some(v);
            }
            if self.docker.answers() {
                answered += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            } else {
                backoff.wait().await;
            }
        }
        None
    }

    /// The container attached by endpoint `eid` of network `nid`: its id,
    /// name and aliases there, once Docker's API shows them.
    async fn container_of(&self, nid: &str, eid: &str) -> Option<(String, String, Vec<String>)> {
        let n = self.docker.inspect_network(nid).await.ok()?;
        let net_name = n.name.clone().unwrap_or_default();
        let (cid, c) = n.containers?.into_iter().find(|(_, c)| c.endpoint_id.as_deref() == Some(eid))?;
        let inspect = self.docker.inspect_container(&cid).await.ok()?;
        let settings = inspect.network_settings?.networks?.remove(&net_name)?;
        if settings.endpoint_id.as_deref() != Some(eid) {
            return None;
        }
        Some((cid, c.name.unwrap_or_default(), settings.aliases.unwrap_or_default()))
    }
}

/// The container end's name until Docker moves and renames it.
fn peer_name(endpoint_id: &str) -> String {
    format!("obc{:08x}", crate::state::model::fnv1a(endpoint_id.as_bytes()) as u32)
}

/// A Docker network's one IPv4 subnet.
fn docker_subnet(n: &bollard::models::Network) -> Option<Ipv4Net> {
    n.ipam.as_ref()?.config.as_ref()?.iter().find_map(|c| c.subnet.as_deref()?.parse().ok())
}

/// What to do with a `-o` option overlay-bpf does not know.
#[derive(Clone, Copy, PartialEq)]
enum Unknown {
    /// At `docker network create`: refused, naming the ones it knows.
    Refuse,
    /// Read back from Docker's API: it was refused at creation, unless an
    /// older release made the network; ignored.
    Ignore,
}

/// A store network of `subnet` from Docker's `-o` options, read by the
/// same code as `network create --opt`: `-o parent=DEVICE` makes it a
/// macvlan network, as with Docker's own macvlan driver.
fn network_spec(name: String, subnet: Ipv4Net, options: &[(String, String)], unknown: Unknown) -> Result<NetworkSpec> {
    use crate::state::{model::Driver, ops::network::NetworkError};
    let macvlan = options.iter().any(|(k, _)| k == "parent");
    let mut n = NetworkSpec {
        name,
        driver: if macvlan { Driver::Macvlan } else { Driver::Overlay },
        subnets: vec![subnet_spec(subnet)],
        // Containers join it by `docker run --network`: attachable.
        attachable: true,
        runtime: Some(Runtime::Docker),
        ..Default::default()
    };
    for (k, v) in options {
        match crate::state::ops::network::set_opt(&mut n, k, v) {
            Err(NetworkError::UnknownOpt(_)) if unknown == Unknown::Ignore => {}
            r => r?,
        }
    }
    Ok(n)
}

/// The address of Docker's `a.b.c.d/len` (or a bare `a.b.c.d`).
fn address_of(cidr: &str) -> Option<Ipv4Addr> {
    cidr.split('/').next().unwrap_or_default().parse().ok()
}

fn subnet_spec(subnet: Ipv4Net) -> SubnetSpec {
    SubnetSpec { subnet, gateway: None, ip_range: None, aux_addresses: Default::default() }
}

/// The store network for Docker's network `d` of `subnet`, made by Docker
/// for `host`.
fn network_from_docker(d: &bollard::models::Network, subnet: Ipv4Net, host: &str) -> Result<NetworkSpec> {
    let name = d.name.clone().ok_or(Refusal::Unnamed)?;
    let cfg = d.ipam.as_ref().and_then(|i| i.config.as_ref()).and_then(|c| c.first()).cloned().unwrap_or_default();
    let options: Vec<(String, String)> = d.options.clone().unwrap_or_default().into_iter().collect();
    let mut n = network_spec(name, subnet, &options, Unknown::Ignore)?;
    n.subnets[0] = SubnetSpec {
        subnet,
        gateway: cfg.gateway.as_deref().and_then(address_of),
        ip_range: cfg.ip_range.as_deref().and_then(|r| r.parse().ok()),
        aux_addresses: cfg
            .auxiliary_addresses
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((k, address_of(&v)?)))
            .collect(),
    };
    n.internal = d.internal.unwrap_or(false);
    n.used_by = vec![host.to_string()];
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::{error::Error, *};

    #[test]
    fn the_systemd_unit_starts_before_docker_and_stops_after_it() {
        let unit = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib/systemd/overlay-bpf-agent.service"));
        let line = |k: &str| unit.lines().find(|l| l.starts_with(k)).unwrap_or_else(|| panic!("no {k}"));
        // Ordered before docker.service: started first, stopped last.
        assert!(line("Before=").contains("docker.service"));
        assert!(line("WantedBy=").contains("docker.service"), "started when Docker is");
        assert!(line("ExecStart=").contains("overlay-bpf agent --docker-plugin"));
        assert!(line("EnvironmentFile=").contains("/etc/default/overlay-bpf"));
        assert_eq!(line("Restart="), "Restart=always");
        assert_eq!(line("Environment="), "Environment=NO_COLOR=1", "journald gets no escape codes");
    }

    #[test]
    fn pool_ids_name_their_subnet() {
        assert_eq!(pool_of("overlay-bpf/10.0.9.0/24").unwrap(), "10.0.9.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(
            pool_of("overlay-bpf/10.0.9.0/24/10.0.9.128-25").unwrap(),
            "10.0.9.0/24".parse::<Ipv4Net>().unwrap()
        );
        assert!(pool_of("LocalDefault/10.0.0.0/8x").is_err());
    }

    #[test]
    fn a_network_the_store_would_refuse_is_refused_in_the_states_words() {
        use crate::state::model::{Capabilities, Rule};
        let s: State = crate::state::model::parse_state(
            "t",
            b"version: 1\nhosts: [{name: n1, address: 192.168.1.1}]\nnetworks:\n  - {name: front, subnets: [{subnet: 10.0.0.0/16}]}\n",
        )
        .unwrap();
        let caps = Capabilities { encryption: true };
        let new = |subnet: &str, opts: &[(&str, &str)]| {
            let opts: Vec<(String, String)> = opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            network_spec(String::new(), subnet.parse().unwrap(), &opts, Unknown::Refuse)
        };
        let rule = |r: Result<()>| match r {
            Err(Error::Overlay(crate::error::Error::State(e))) => e.problems.iter().map(|p| p.rule).collect::<Vec<_>>(),
            other => panic!("not a state error: {other:?}"),
        };
        let overlap = check_new(s.clone(), new("10.0.9.0/24", &[]).unwrap(), "n1", caps, |_| true);
        assert_eq!(
            overlap.as_ref().unwrap_err().to_string(),
            "the store: networks[1] (new-10.0.9.0-24).subnets[0]: subnet 10.0.9.0/24 overlaps 10.0.0.0/16 of \
             networks[0] (front).subnets[0]; subnets of all networks must not overlap"
        );
        assert_eq!(rule(overlap), vec![Rule::SubnetOverlap]);
        // The same subnet is the same network, made by another host first.
        check_new(s.clone(), new("10.0.0.0/16", &[]).unwrap(), "n1", caps, |_| true).unwrap();
        check_new(s.clone(), new("10.1.0.0/16", &[]).unwrap(), "n1", caps, |_| true).unwrap();
        let encrypted = new("10.1.0.0/16", &[("encrypted", "")]).unwrap();
        let no_wireguard = Capabilities { encryption: false };
        assert_eq!(rule(check_new(s.clone(), encrypted, "n1", no_wireguard, |_| true)), vec![Rule::Encryption]);
        let lan = new("10.1.0.0/16", &[("parent", "eth0"), ("encrypted", "")]).unwrap();
        assert_eq!(rule(check_new(s.clone(), lan, "n1", caps, |_| true)), vec![Rule::Macvlan]);
        // The hosts' LAN: at RequestPool (the pool alone, only overlaps
        // count) and as a macvlan network it passes; as an overlay, not.
        let pool = || new("192.168.1.0/24", &[]).unwrap();
        check_new(s.clone(), pool(), "n1", caps, |r| r == Rule::SubnetOverlap).unwrap();
        check_new(s.clone(), new("192.168.1.0/24", &[("parent", "eth0")]).unwrap(), "n1", caps, |_| true).unwrap();
        assert_eq!(rule(check_new(s.clone(), pool(), "n1", caps, |_| true)), vec![Rule::SubnetHoldsHost]);
        // Options read as `network create --opt` reads them: the same error.
        let e = new("10.1.0.0/16", &[("macvlan_mode", "bridge")]).unwrap_err();
        assert!(
            matches!(
                &e,
                Error::Overlay(crate::error::Error::Network(crate::state::ops::network::NetworkError::BadOpt { key, .. }))
                    if key == "macvlan_mode"
            ),
            "{e:?}"
        );
        let e = new("10.1.0.0/16", &[("com.docker.network.driver.mtu", "big")]).unwrap_err();
        assert!(matches!(&e, Error::Overlay(crate::error::Error::Network(_))), "{e:?}");
    }

    #[test]
    fn docker_networks_become_attachable_store_networks() {
        let d: bollard::models::Network = serde_json::from_value(serde_json::json!({
            "Name": "app", "Id": "9f2", "Driver": "overlay-bpf", "Internal": true,
            "IPAM": {"Driver": "overlay-bpf", "Config": [{"Subnet": "10.0.9.0/24", "Gateway": "10.0.9.254",
                "IPRange": "10.0.9.0/25", "AuxiliaryAddresses": {"printer": "10.0.9.200"}}]},
            "Options": {"com.docker.network.driver.mtu": "1400"}
        }))
        .unwrap();
        let subnet = docker_subnet(&d).unwrap();
        let n = network_from_docker(&d, subnet, "node1").unwrap();
        assert_eq!((n.name.as_str(), n.mtu, n.attachable, n.internal), ("app", Some(1400), true, true));
        assert_eq!(n.subnets[0].gateway, Some("10.0.9.254".parse().unwrap()));
        assert_eq!(n.subnets[0].ip_range, Some("10.0.9.0/25".parse().unwrap()));
        assert_eq!(n.subnets[0].aux_addresses["printer"], "10.0.9.200".parse::<Ipv4Addr>().unwrap());
        assert_eq!((n.runtime, n.used_by), (Some(Runtime::Docker), vec!["node1".to_string()]));
    }
}
