//! The `overlay-bpf` binary as a CNI plugin (docs/cni.md): started with
//! `CNI_COMMAND` set, it reads the network configuration on stdin and the
//! `CNI_*` variables, and answers on stdout with a result or an error object.
//!
//! ADD registers the endpoint in the store (the store's compare-and-swap
//! makes concurrent ADDs on many hosts race-free), then applies this host
//! from the store under the host lock, as `up` does: the interface appears
//! in the container with its address, MAC, MTU and route, under our TC
//! program and in the maps, before ADD returns, whether an agent runs or
//! not. Other hosts' agents learn of it through the store.

pub mod install;
pub mod types;

use std::{
    collections::HashSet,
    io::Read as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use types::{code, AddResult, CniError, Dns, Interface, IpConfig, NetConf, Route, VersionResult};

use crate::{
    error::Error,
    host::apply::{self, UpOptions},
    host::netdev,
    host::pins::Pins,
    state::model::{self, EndpointSpec, Mac, Runtime, State},
    state::store::{self, EtcdTls, Store, StoreError},
};

/// The variables a runtime sets.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: String,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            command: var("CNI_COMMAND").unwrap_or_default(),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS").unwrap_or_default(),
        }
    }

    fn require<'a>(&self, key: &str, v: &'a Option<String>) -> Result<&'a str, Failure> {
        v.as_deref()
            .ok_or_else(|| Failure::new(code::INVALID_ENV, format!("{key} is not set; {} needs it", self.command)))
    }
}

/// An error on its way to stdout: the CNI code and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl Failure {
    fn new(code: u32, msg: impl Into<String>) -> Failure {
        Failure { code, msg: msg.into(), details: String::new() }
    }

    fn with_details(mut self, d: impl Into<String>) -> Failure {
        self.details = d.into();
        self
    }
}

/// An error of the store, the model or the kernel, with the CNI code a
/// runtime can act on: try again when the store did not answer, a bad
/// configuration when the store URL or the host is wrong.
impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let c = match &e {
            Error::Store(s) => match **s {
                StoreError::Unreachable { .. } | StoreError::Etcd { .. } => code::TRY_AGAIN,
                _ => code::INVALID_CONFIG,
            },
            Error::State(_) => code::REFUSED,
            Error::Apply(_) => code::INVALID_CONFIG,
            _ => code::IO_FAILURE,
        };
        Failure::new(c, crate::error::chain(&e))
    }
}

impl From<crate::state::error::Error> for Failure {
    fn from(e: crate::state::error::Error) -> Failure {
        Error::from(e).into()
    }
}

/// Runs the plugin: reads stdin, prints the answer; the exit code.
pub fn main() -> i32 {
    let env = Env::from_process();
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return emit(&input, Err(Failure::new(code::IO_FAILURE, format!("tokio runtime: {e}")))),
    };
    let out = rt.block_on(run(&env, &input));
    emit(&input, out)
}

/// Prints a success's output, or the error object; the exit code.
fn emit(input: &str, out: Result<Option<String>, Failure>) -> i32 {
    match out {
        Ok(Some(s)) => {
            println!("{s}");
            0
        }
        Ok(None) => 0,
        Err(f) => {
            let version = serde_json::from_str::<serde_json::Value>(input)
                .ok()
                .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
                .filter(|v| types::SUPPORTED_VERSIONS.contains(&v.as_str()))
                .unwrap_or_else(|| types::LATEST.to_string());
            let e = CniError { cni_version: version, code: f.code, msg: f.msg, details: f.details };
            println!("{}", serde_json::to_string(&e).expect("errors serialize"));
            1
        }
    }
}

/// One command, from its environment and stdin, to what goes on stdout.
pub async fn run(env: &Env, input: &str) -> Result<Option<String>, Failure> {
    if env.command == "VERSION" {
        // No network name, and a configuration that may be only its version.
        let asked = serde_json::from_str::<serde_json::Value>(input)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
            .unwrap_or_else(|| types::LATEST.to_string());
        let v = VersionResult { cni_version: asked, supported_versions: types::SUPPORTED_VERSIONS };
        return Ok(Some(serde_json::to_string(&v).expect("serializes")));
    }
    let conf: NetConf = serde_json::from_str(input).map_err(|e| {
        Failure::new(code::DECODE, format!("the network configuration on stdin is not valid JSON: {e}"))
    })?;
    if !types::SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(Failure::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {:?} is not one overlay-bpf speaks ({})",
                conf.cni_version,
                types::SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    match env.command.as_str() {
        "ADD" => add(env, &conf).await.map(|r| Some(serde_json::to_string(&r).expect("serializes"))),
        "DEL" => del(env, &conf).await.map(|()| None),
        "CHECK" => check(env, &conf).await.map(|()| None),
        "STATUS" => status(&conf).await.map(|()| None),
        "GC" => gc(&conf).await.map(|()| None),
        other => Err(Failure::new(
            code::INVALID_ENV,
            format!("CNI_COMMAND={other:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
        )),
    }
}

fn network_of(conf: &NetConf) -> Result<&str, Failure> {
    conf.network.as_deref().ok_or_else(|| {
        Failure::new(
            code::INVALID_CONFIG,
            format!(
                "the configuration of {:?} names no overlay-bpf network (\"network\": NAME); write it with \
                 `overlay-bpf cni install --network NAME`",
                conf.name
            ),
        )
    })
}

async fn open_store(conf: &NetConf) -> Result<Store, Failure> {
    let env = |k: &str| std::env::var(k).ok();
    let url = store::choose(None, conf.store.clone(), env("OVERLAY_BPF_STATE"), env("OVERLAY_BPF_STORE"))
        .map_err(|e| Failure::from(Error::from(e)))?;
    let tls = EtcdTls { cacert: conf.etcd_cacert.clone(), cert: conf.etcd_cert.clone(), key: conf.etcd_key.clone() };
    Ok(Store::open(&url, &tls, crate::host::capabilities()).await?)
}

/// The attachment's ID in the store (`endpoint_id`): one container may have
/// several interfaces, each its own endpoint.
pub fn attachment(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// The name a container's endpoint gets before the network's
/// taken names are considered: `K8S_POD_NAME` (with its namespace when
/// given), else the container ID's first 12 characters; `-<ifname>` when
/// the interface is not eth0.
pub fn wanted_name(args: &str, container_id: &str, ifname: &str) -> String {
    let base = match (types::cni_arg(args, "K8S_POD_NAMESPACE"), types::cni_arg(args, "K8S_POD_NAME")) {
        (Some(ns), Some(n)) if !ns.is_empty() && !n.is_empty() => format!("{ns}.{n}"),
        (_, Some(n)) if !n.is_empty() => n.to_string(),
        _ => container_id.chars().take(12).collect(),
    };
    if ifname == "eth0" {
        base
    } else {
        format!("{base}-{ifname}")
    }
}

fn is_ours(e: &EndpointSpec, attach: &str) -> bool {
    e.runtime == Some(Runtime::Cni) && e.endpoint_id.as_deref() == Some(attach)
}

/// Which host of the state this is: the configuration's `host`, else as
/// the CLI decides.
fn this_host(state: &State, conf: &NetConf) -> Result<String, Failure> {
    let cluster = model::resolve("the store", state, crate::host::capabilities()).map_err(Error::from)?;
    let h = apply::select_host(&cluster, conf.host.as_deref()).map_err(Error::from)?;
    Ok(cluster.hosts[h].name.clone())
}

/// Applies this host from `state`, as `up` does (under the host lock).
/// `revision`: the store's, as of `state` (etcd).
async fn apply_host(state: &State, host: &str, revision: Option<i64>) -> Result<(model::Cluster, usize), Error> {
    let cluster = model::resolve("the store", state, crate::host::capabilities())?;
    let h = apply::select_host(&cluster, Some(host))?;
    let opts = UpOptions { revision, ..Default::default() };
    let r = apply::up(&cluster, h, &Pins::for_host(host), &opts, &|m| tracing::debug!("{host}: {m}")).await?;
    // The agent says them once; each ADD and DEL would repeat them.
    for w in &r.warnings {
        tracing::debug!("{host}: warning: {}", w.message);
    }
    Ok((cluster, h))
}

/// A static address asked for: `IP=` in CNI_ARGS, or the `ips` capability.
fn asked_ip(env: &Env, conf: &NetConf) -> Result<Option<Ipv4Addr>, Failure> {
    let raw = types::cni_arg(&env.args, "IP").map(str::to_string).or_else(|| conf.runtime_config.ips.first().cloned());
    let Some(raw) = raw else { return Ok(None) };
    let ip = raw.split('/').next().unwrap_or_default();
    ip.parse().map(Some).map_err(|_| Failure::new(code::INVALID_CONFIG, format!("IP {raw:?} is not an IPv4 address")))
}

fn asked_mac(env: &Env, conf: &NetConf) -> Result<Option<Mac>, Failure> {
    let raw = types::cni_arg(&env.args, "MAC").map(str::to_string).or_else(|| conf.runtime_config.mac.clone());
    let Some(raw) = raw else { return Ok(None) };
    raw.parse().map(Some).map_err(|_| Failure::new(code::INVALID_CONFIG, format!("MAC {raw:?} is not a MAC address")))
}

async fn add(env: &Env, conf: &NetConf) -> Result<AddResult, Failure> {
    let cid = env.require("CNI_CONTAINERID", &env.container_id)?.to_string();
    let netns = env.require("CNI_NETNS", &env.netns)?.to_string();
    let ifname = env.require("CNI_IFNAME", &env.ifname)?.to_string();
    let network = network_of(conf)?.to_string();
    if !Path::new(&netns).exists() {
        return Err(Failure::new(code::UNKNOWN_CONTAINER, format!("CNI_NETNS {netns} does not exist")));
    }
    let (ip, mac) = (asked_ip(env, conf)?, asked_mac(env, conf)?);
    let mut store = open_store(conf).await?;
    let host = this_host(&store.read().await?, conf)?;
    let attach = attachment(&cid, &ifname);
    let wanted = wanted_name(&env.args, &cid, &ifname);
    let (name, after) = store
        .edit_with(|s| {
            if !s.networks.iter().any(|n| n.name == network) {
                return Err(Failure::new(
                    code::INVALID_CONFIG,
                    format!(
                        "network {network} is not in the store; create it (`overlay-bpf network create --subnet ... \
                         {network}`) or fix \"network\" in the CNI configuration"
                    ),
                ));
            }
            // ADD again for the same attachment replaces it.
            s.endpoints.retain(|e| !is_ours(e, &attach));
            let name = crate::state::ops::runtime::container_name(s, &network, &wanted, &host, |_| false).ok_or_else(
                || {
                    Failure::new(
                        code::REFUSED,
                        format!("names {wanted} and {wanted}.{host} are both taken on {network}"),
                    )
                },
            )?;
            s.endpoints.push(EndpointSpec {
                name: name.clone(),
                host: host.clone(),
                network: network.clone(),
                netns: netns.clone(),
                ifname: Some(ifname.clone()),
                ip,
                mac,
                aliases: Vec::new(),
                runtime: Some(Runtime::Cni),
                container_id: Some(cid.clone()),
                endpoint_id: Some(attach.clone()),
                publish: Vec::new(),
                unknown: Default::default(),
            });
            let cluster = model::resolve("the store", s, crate::host::capabilities()).map_err(Error::from)?;
            *s = model::pinned(s, &cluster);
            Ok(name)
        })
        .await?;
    let (cluster, _) = match apply_host(&after, &host, store.revision()).await {
        Ok(r) => r,
        Err(e) => {
            // Nothing half-done: the endpoint leaves the store, its veth goes.
            let undo = store
                .edit(|s| {
                    model::remove_endpoints(s, |e| is_ours(e, &attach));
                    Ok(())
                })
                .await;
            delete_veth(&attach).await;
            let f = Failure::new(code::IO_FAILURE, format!("endpoint {name}: {}", crate::error::chain(&e)));
            return Err(match undo {
                Ok(_) => f,
                Err(u) => f.with_details(format!("and removing it from the store failed: {u}")),
            });
        }
    };
    let e = cluster
        .endpoints
        .iter()
        .find(|e| e.endpoint_id.as_deref() == Some(&attach))
        .ok_or_else(|| Failure::new(code::IO_FAILURE, format!("endpoint {name} left the store meanwhile")))?;
    let net = &cluster.networks[e.network];
    let old = conf.cni_version.starts_with("0.");
    let container =
        Interface { name: ifname, mac: mac_of(net, e).to_string(), mtu: Some(mtu_of(net)), sandbox: Some(netns) };
    // A macvlan endpoint has no host end, and no resolver of ours: its
    // network is the LAN's, with the LAN's router (none when internal).
    let macvlan = net.macvlan().is_some();
    let (interfaces, at) = match macvlan {
        true => (vec![container], 0),
        false => (vec![Interface { name: e.veth(), mac: host_mac(&e.veth()), mtu: None, sandbox: None }, container], 1),
    };
    Ok(AddResult {
        cni_version: conf.cni_version.clone(),
        interfaces,
        ips: vec![IpConfig {
            version: old.then_some("4"),
            address: format!("{}/{}", e.ip, e.prefix_len),
            gateway: Some(e.gateway.to_string()),
            interface: at,
        }],
        routes: if routes_default(net, e) {
            vec![Route { dst: "0.0.0.0/0".into(), gw: e.gateway.to_string() }]
        } else {
            Vec::new()
        },
        dns: Dns { nameservers: if macvlan { Vec::new() } else { vec![e.gateway.to_string()] } },
    })
}

/// The MTU a network's interfaces get here (see [`crate::host::macvlan::mtu`]).
fn mtu_of(net: &model::Network) -> u32 {
    crate::host::macvlan::mtu(net).unwrap_or(0)
}

/// The MAC `e`'s interface has (a passthru sub-interface keeps its parent's).
fn mac_of(net: &model::Network, e: &model::Endpoint) -> Mac {
    net.macvlan().as_ref().map_or(e.mac, |m| crate::host::macvlan::mac(m, e.mac))
}

/// Whether `e`'s interface carries its netns's default route, as `up` sets it.
fn routes_default(net: &model::Network, e: &model::Endpoint) -> bool {
    crate::host::macvlan::default_route(net, e.default_route)
}

fn host_mac(veth: &str) -> String {
    netdev::link_mac(veth).map(|m| Mac(m).to_string()).unwrap_or_default()
}

async fn delete_veth(attach: &str) {
    if let Ok(h) = netdev::connect() {
        let _ = netdev::delete_link(&h, &netdev::host_veth_name(attach)).await;
    }
}

/// DEL: best effort and idempotent. The veth goes whatever the store says;
/// the endpoint leaves the store; this host's maps follow when it is up.
/// Only a store that does not answer fails it (try again: the address
/// would leak otherwise).
async fn del(env: &Env, conf: &NetConf) -> Result<(), Failure> {
    let cid = env.require("CNI_CONTAINERID", &env.container_id)?;
    let ifname = env.require("CNI_IFNAME", &env.ifname)?;
    network_of(conf)?;
    let attach = attachment(cid, ifname);
    delete_veth(&attach).await;
    let mut store = open_store(conf).await?;
    let (removed, after) = store.edit(|s| Ok(model::remove_endpoints(s, |e| is_ours(e, &attach)).len())).await?;
    if removed > 0 {
        reapply_if_up(&after, conf, store.revision()).await?;
    }
    Ok(())
}

/// Applies this host again if it is up (its pins exist): the maps lose
/// what the store lost.
async fn reapply_if_up(state: &State, conf: &NetConf, revision: Option<i64>) -> Result<(), Failure> {
    let host = this_host(state, conf)?;
    if Pins::for_host(&host).exists() {
        apply_host(state, &host, revision).await?;
    }
    Ok(())
}

/// CHECK: the endpoint is in the store and the interface in the container
/// is what ADD made (and what prevResult says).
async fn check(env: &Env, conf: &NetConf) -> Result<(), Failure> {
    let cid = env.require("CNI_CONTAINERID", &env.container_id)?;
    let netns = env.require("CNI_NETNS", &env.netns)?;
    let ifname = env.require("CNI_IFNAME", &env.ifname)?;
    network_of(conf)?;
    let attach = attachment(cid, ifname);
    let mut store = open_store(conf).await?;
    let state = store.read().await?;
    let cluster = model::resolve("the store", &state, crate::host::capabilities()).map_err(Error::from)?;
    let drift = |m: String| Failure::new(code::DRIFTED, m);
    let e = cluster
        .endpoints
        .iter()
        .find(|e| e.endpoint_id.as_deref() == Some(&attach))
        .ok_or_else(|| drift(format!("container {cid:.12} ({ifname}) has no endpoint in the store")))?;
    let want = format!("{}/{}", e.ip, e.prefix_len);
    if let Some(prev) = &conf.prev_result {
        let ips: Vec<&str> =
            prev["ips"].as_array().into_iter().flatten().filter_map(|i| i["address"].as_str()).collect();
        if !ips.contains(&want.as_str()) {
            return Err(drift(format!("prevResult has {ips:?}; the store has {want} for endpoint {}", e.name)));
        }
    }
    let network = &cluster.networks[e.network];
    if network.macvlan().is_none() && netdev::ifindex(&e.veth()).is_none() {
        return Err(drift(format!("endpoint {}: the host end {} of its veth is gone", e.name, e.veth())));
    }
    let o = netdev::observe_container(Path::new(netns), ifname)
        .map_err(|x| Failure::new(code::IO_FAILURE, x.to_string()))?
        .ok_or_else(|| drift(format!("endpoint {}: {ifname} is gone from {netns}", e.name)))?;
    let net: ipnet::Ipv4Net = want.parse().expect("address/prefix");
    if !o.addresses.contains(&net) {
        return Err(drift(format!("endpoint {}: {ifname} has {:?}, not {want}", e.name, o.addresses)));
    }
    let mac = mac_of(network, e);
    if o.mac != Some(mac) {
        return Err(drift(format!("endpoint {}: {ifname} has MAC {:?}, not {mac}", e.name, o.mac)));
    }
    let mtu = mtu_of(network);
    if o.mtu != Some(mtu) {
        return Err(drift(format!("endpoint {}: {ifname} has MTU {:?}, not {mtu}", e.name, o.mtu)));
    }
    if routes_default(network, e) && o.default_gateway != Some(e.gateway) {
        return Err(drift(format!(
            "endpoint {}: the default route via {} on {ifname} is gone (found {:?})",
            e.name, e.gateway, o.default_gateway
        )));
    }
    Ok(())
}

/// STATUS (1.1.0): ready when the store answers and holds a cluster.
async fn status(conf: &NetConf) -> Result<(), Failure> {
    let r = async { open_store(conf).await?.read().await.map_err(Failure::from) }.await;
    r.map(|_| ())
        .map_err(|f| Failure::new(code::NOT_AVAILABLE, format!("overlay-bpf cannot add containers now: {}", f.msg)))
}

/// GC (1.1.0): this host's CNI endpoints on the network that are not in
/// the runtime's valid attachments leave the store, with their veths.
async fn gc(conf: &NetConf) -> Result<(), Failure> {
    let network = network_of(conf)?.to_string();
    let valid: HashSet<String> =
        conf.valid_attachments.iter().flatten().map(|a| attachment(&a.container_id, &a.ifname)).collect();
    let mut store = open_store(conf).await?;
    let host = this_host(&store.read().await?, conf)?;
    let (gone, after) = store
        .edit(|s| {
            let (keep, gone): (Vec<EndpointSpec>, Vec<EndpointSpec>) =
                std::mem::take(&mut s.endpoints).into_iter().partition(|e| {
                    e.runtime != Some(Runtime::Cni)
                        || e.host != host
                        || e.network != network
                        || e.endpoint_id.as_ref().is_some_and(|a| valid.contains(a))
                });
            s.endpoints = keep;
            Ok(gone.into_iter().filter_map(|e| e.endpoint_id).collect::<Vec<_>>())
        })
        .await?;
    for a in &gone {
        delete_veth(a).await;
    }
    if !gone.is_empty() {
        tracing::info!("GC: removed {} endpoints of {network} on {host}", gone.len());
        reapply_if_up(&after, conf, store.revision()).await?;
    }
    Ok(())
}

/// Where `cni install` links the binary by default (Debian's CNI plugins).
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/cni";
/// Where runtimes read conflists.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";

/// The conflist file of `network` in `dir`.
pub fn conflist_path(dir: &Path, network: &str) -> PathBuf {
    dir.join(format!("{network}.conflist"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_follow_the_spec() {
        let id = "0123456789abcdef0123";
        assert_eq!(wanted_name("", id, "eth0"), "0123456789ab");
        assert_eq!(wanted_name("", id, "net1"), "0123456789ab-net1");
        assert_eq!(wanted_name("IgnoreUnknown=1;K8S_POD_NAME=web1", id, "eth0"), "web1");
        assert_eq!(wanted_name("K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web1", id, "eth1"), "prod.web1-eth1");
        assert_eq!(wanted_name("K8S_POD_NAME=", id, "eth0"), "0123456789ab", "an empty name is no name");
    }

    fn env(command: &str) -> Env {
        Env { command: command.into(), ..Default::default() }
    }

    async fn fails(env: &Env, input: &str) -> Failure {
        run(env, input).await.expect_err("must fail")
    }

    #[tokio::test]
    async fn version_needs_no_network_and_answers_the_supported_versions() {
        let out = run(&env("VERSION"), r#"{"cniVersion":"1.0.0"}"#).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"], serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
        assert!(run(&env("VERSION"), "").await.unwrap().is_some(), "no stdin at all");
    }

    #[tokio::test]
    async fn bad_input_gets_the_spec_codes() {
        assert_eq!(fails(&env("ADD"), "{not json").await.code, code::DECODE);
        let old = r#"{"cniVersion":"0.2.0","name":"app","type":"overlay-bpf","network":"app"}"#;
        assert_eq!(fails(&env("ADD"), old).await.code, code::INCOMPATIBLE_VERSION);
        let ok = r#"{"cniVersion":"1.0.0","name":"app","type":"overlay-bpf","network":"app"}"#;
        assert_eq!(fails(&env("FROB"), ok).await.code, code::INVALID_ENV);
        let f = fails(&env("ADD"), ok).await;
        assert_eq!((f.code, f.msg.as_str()), (code::INVALID_ENV, "CNI_CONTAINERID is not set; ADD needs it"));
        let e = Env { container_id: Some("c1".into()), ..env("DEL") };
        assert_eq!(fails(&e, ok).await.msg, "CNI_IFNAME is not set; DEL needs it");
        let nonet = r#"{"cniVersion":"1.0.0","name":"app","type":"overlay-bpf"}"#;
        let e = Env { container_id: Some("c1".into()), ifname: Some("eth0".into()), ..env("DEL") };
        assert_eq!(fails(&e, nonet).await.code, code::INVALID_CONFIG);
    }
}
