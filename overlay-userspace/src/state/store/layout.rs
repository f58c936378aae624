//! How the cluster lives in etcd: one key per object under a versioned
//! prefix, each value the object as the state file writes it (JSON), with its
//! place in the file's order.
//!
//! ```text
//! <prefix>/v1/cluster                      the cluster settings (vxlan_port, MTU, timeouts)
//! <prefix>/v1/hosts/<name>                 a host
//! <prefix>/v1/networks/<name>              a network, its VNI and gateways written out
//! <prefix>/v1/endpoints/<network>/<name>   an endpoint, its address and MAC written out
//! <prefix>/v1/services/<name>              a service, its VIP written out
//! <prefix>/v1/revision                     rewritten by every change, with when (the compare-and-swap guard)
//! <prefix>/v1/agents/<host>/alive          the host's agent is running (under its lease)
//! <prefix>/v1/agents/<host>/health         its backends' health report (under its lease)
//! <prefix>/v1/agents/<host>/seen           when its agent last renewed its lease
//! ```
//!
//! Values are `{"order": N, "spec": {...}}`: the order is the object's place
//! among its kind (a file's order matters: the first endpoint of a namespace
//! carries its default route, and Maglev slots go in file order), so an
//! export lists the objects as they were imported or created. A `/` or `%`
//! in a name is written `%2F` or `%25` in its key.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::ObjectChange;
use crate::{
    state::model::{EndpointSpec, State},
    state::store::EndpointChange,
};

/// Each object's place among its kind, by key.
pub type Orders = std::collections::BTreeMap<String, u64>;

/// The layout version: the first path element under the prefix.
pub const VERSION: &str = "v1";
/// The prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "/overlay-bpf";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("key {key}: {why}")]
    Key { key: String, why: String },
}

/// A stored object. Readers ignore what they do not know, here and in the
/// spec (which keeps it, see `model::Unknown`): a newer release's agents
/// share the store during a rolling upgrade.
#[derive(Serialize, Deserialize)]
struct Stored<T> {
    order: u64,
    spec: T,
}

/// The keys of one store (its prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

fn unescape(part: &str) -> String {
    part.replace("%2F", "/").replace("%25", "%")
}

impl Layout {
    /// `prefix` without a trailing `/` (`/overlay-bpf`, `/team-a/overlay`).
    pub fn new(prefix: &str) -> Layout {
        Layout { prefix: prefix.trim_end_matches('/').to_string() }
    }
    /// Every key of the store starts with this.
    pub fn root(&self) -> String {
        format!("{}/{VERSION}/", self.prefix)
    }
    pub fn cluster(&self) -> String {
        format!("{}cluster", self.root())
    }
    pub fn revision(&self) -> String {
        format!("{}revision", self.root())
    }
    pub fn host(&self, name: &str) -> String {
        format!("{}hosts/{}", self.root(), escape(name))
    }
    pub fn network(&self, name: &str) -> String {
        format!("{}networks/{}", self.root(), escape(name))
    }
    pub fn endpoint(&self, network: &str, name: &str) -> String {
        format!("{}endpoints/{}/{}", self.root(), escape(network), escape(name))
    }
    pub fn service(&self, name: &str) -> String {
        format!("{}services/{}", self.root(), escape(name))
    }
    /// Where agents keep what is theirs (presence, health): not state.
    pub fn agents(&self) -> String {
        format!("{}agents/", self.root())
    }
    /// `what` of host `host`'s agent: `alive`, `health` or `seen`.
    pub fn agent(&self, host: &str, what: &str) -> String {
        format!("{}{}/{what}", self.agents(), escape(host))
    }
    /// The host and the item an agent key names.
    pub fn agent_key(&self, key: &str) -> Option<(String, String)> {
        let rest = key.strip_prefix(&self.agents())?;
        let (host, what) = rest.split_once('/')?;
        Some((unescape(host), what.to_string()))
    }
    /// True for the keys that hold the state (objects), not agents' keys or the guard.
    pub fn is_object_key(&self, key: &str) -> bool {
        key.strip_prefix(&self.root()).is_some_and(|rest| {
            rest == "cluster" || ["hosts/", "networks/", "endpoints/", "services/"].iter().any(|k| rest.starts_with(k))
        })
    }

    /// Every key and value that holds `state`, the revision guard aside.
    /// An object keeps the order `orders` (what `assemble` read) gives its
    /// key; a new one goes after the others of its kind, so a change rewrites
    /// only the keys of the objects it changed.
    pub fn explode(&self, state: &State, orders: &Orders) -> Vec<(String, Vec<u8>)> {
        fn kind<T: Serialize>(
            out: &mut Vec<(String, Vec<u8>)>,
            orders: &Orders,
            objects: impl Iterator<Item = (String, T)>,
        ) {
            let objects: Vec<(String, T)> = objects.collect();
            let mut next = objects.iter().filter_map(|(k, _)| orders.get(k)).max().map_or(0, |m| m + 1);
            for (key, spec) in objects {
                let order = orders.get(&key).copied().unwrap_or_else(|| {
                    next += 1;
                    next - 1
                });
                out.push((key, serde_json::to_vec(&Stored { order, spec }).expect("state objects serialize")));
            }
        }
        let mut out = Vec::new();
        kind(&mut out, orders, std::iter::once((self.cluster(), &state.cluster)));
        kind(&mut out, orders, state.hosts.iter().map(|h| (self.host(&h.name), h)));
        kind(&mut out, orders, state.networks.iter().map(|n| (self.network(&n.name), n)));
        kind(&mut out, orders, state.endpoints.iter().map(|e| (self.endpoint(&e.network, &e.name), e)));
        kind(&mut out, orders, state.services.iter().map(|s| (self.service(&s.name), s)));
        out
    }

    /// The endpoint change a key's change is; `None` when the key holds
    /// another kind of object. A value that does not parse, or names another
    /// endpoint than its key, is an error naming the key.
    pub fn endpoint_change(&self, c: &ObjectChange) -> Option<Result<EndpointChange, LayoutError>> {
        let rest = c.key.strip_prefix(&self.root())?;
        let ["endpoints", network, name] = rest.split('/').collect::<Vec<_>>()[..] else { return None };
        let (network, name) = (unescape(network), unescape(name));
        let parse = |v: &Option<Vec<u8>>| -> Result<Option<EndpointSpec>, LayoutError> {
            let err = |why: String| LayoutError::Key { key: c.key.clone(), why };
            let Some(v) = v else { return Ok(None) };
            let e = serde_json::from_slice::<Stored<EndpointSpec>>(v).map_err(|e| err(e.to_string()))?.spec;
            if e.network != network || e.name != name {
                return Err(err(format!("holds endpoint {:?} of network {:?}", e.name, e.network)));
            }
            Ok(Some(e))
        };
        Some(parse(&c.old).and_then(|old| Ok(EndpointChange { old, new: parse(&c.new)? })))
    }

    /// The state held by `kvs`, every key under `root()`; `None` when they
    /// hold no cluster (an empty store). A value that does not parse is an
    /// error naming the key; a key this layout does not know is a newer
    /// release's, and is skipped.
    pub fn assemble<'a>(
        &self,
        kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<Option<(State, Orders)>, LayoutError> {
        let root = self.root();
        let mut cluster = None;
        let mut orders = Orders::new();
        let (mut hosts, mut networks, mut endpoints, mut services) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (k, v) in kvs {
            let key = String::from_utf8_lossy(k).into_owned();
            let err = |why: String| LayoutError::Key { key: key.clone(), why };
            let Some(rest) = key.strip_prefix(&root) else {
                return Err(err(format!("not under {root}")));
            };
            fn parse<T: DeserializeOwned>(v: &[u8]) -> Result<(u64, T), String> {
                serde_json::from_slice::<Stored<T>>(v).map(|s| (s.order, s.spec)).map_err(|e| e.to_string())
            }
            let parts: Vec<&str> = rest.split('/').collect();
            match parts[..] {
                ["cluster"] => cluster = Some(parse(v).map_err(err)?.1),
                ["revision"] => continue,
                ["agents", ..] => continue,
                ["hosts", name] => {
                    hosts.push(check(parse::<crate::state::model::HostSpec>(v), name, |h| &h.name).map_err(err)?)
                }
                ["networks", name] => {
                    networks.push(check(parse::<crate::state::model::NetworkSpec>(v), name, |n| &n.name).map_err(err)?)
                }
                ["endpoints", _, name] => endpoints
                    .push(check(parse::<crate::state::model::EndpointSpec>(v), name, |e| &e.name).map_err(err)?),
                ["services", name] => {
                    services.push(check(parse::<crate::state::model::ServiceSpec>(v), name, |s| &s.name).map_err(err)?)
                }
                // A kind of object a newer release keeps (its own keys, so
                // nothing here rewrites it): not this release's state.
                _ => {
                    tracing::debug!(key, "a key this release does not know; left alone");
                    continue;
                }
            }
            // Parsed above: a known key with a well-formed value.
            let order =
                serde_json::from_slice::<Stored<serde::de::IgnoredAny>>(v).map_err(|e| err(e.to_string()))?.order;
            orders.insert(key.clone(), order);
        }
        let Some(cluster) = cluster else {
            return match hosts.len() + networks.len() + endpoints.len() + services.len() {
                0 => Ok(None),
                _ => Err(LayoutError::Key { key: self.cluster(), why: "missing, while objects exist".into() }),
            };
        };
        fn ordered<T>(mut v: Vec<(u64, T)>) -> Vec<T> {
            v.sort_by_key(|(o, _)| *o);
            v.into_iter().map(|(_, t)| t).collect()
        }
        let state = State {
            version: 1,
            cluster,
            hosts: ordered(hosts),
            networks: ordered(networks),
            endpoints: ordered(endpoints),
            services: ordered(services),
        };
        Ok(Some((state, orders)))
    }
}

/// A parsed object whose name must be the one its key says.
fn check<T>(
    parsed: Result<(u64, T), String>,
    key_name: &str,
    name: impl Fn(&T) -> &String,
) -> Result<(u64, T), String> {
    let (order, t) = parsed?;
    if *name(&t) != unescape(key_name) {
        return Err(format!("holds {:?}, not the object its key names", name(&t)));
    }
    Ok((order, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{parse_state, pinned, resolve, Capabilities};

    fn example() -> State {
        let s =
            parse_state("example", include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cluster.yaml")))
                .unwrap();
        pinned(&s, &resolve("example", &s, Capabilities::default()).unwrap())
    }

    #[test]
    fn a_state_round_trips_through_its_keys_in_any_order() {
        let l = Layout::new("/overlay-bpf/");
        let state = example();
        let mut kvs = l.explode(&state, &Orders::new());
        assert!(kvs.iter().any(|(k, _)| k == "/overlay-bpf/v1/endpoints/uber-svc/web.1"), "{kvs:?}");
        assert!(kvs.iter().any(|(k, _)| k == "/overlay-bpf/v1/networks/backend"));
        // etcd hands keys back sorted by name, not in the file's order.
        kvs.sort();
        kvs.reverse();
        let (back, orders) = l.assemble(kvs.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))).unwrap().unwrap();
        assert_eq!(back, state);

        // A change rewrites only what it changed: removing the first endpoint
        // and adding one leaves every other endpoint's key and value alone.
        let mut changed = back.clone();
        let gone = changed.endpoints.remove(0);
        let mut added = changed.endpoints[0].clone();
        added.name = "new".into();
        changed.endpoints.push(added);
        let before: std::collections::BTreeMap<_, _> = kvs.into_iter().collect();
        let after: std::collections::BTreeMap<_, _> = l.explode(&changed, &orders).into_iter().collect();
        let differ: Vec<&String> = after.iter().filter(|(k, v)| before.get(*k) != Some(v)).map(|(k, _)| k).collect();
        assert_eq!(differ, ["/overlay-bpf/v1/endpoints/uber-svc/new"]);
        assert!(!after.contains_key(&l.endpoint(&gone.network, &gone.name)));
        let (again, _) = l.assemble(after.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))).unwrap().unwrap();
        assert_eq!(again, changed, "the new endpoint comes last, as it was appended");
    }

    #[test]
    fn names_with_slashes_get_keys_of_their_own() {
        let l = Layout::new("/p");
        assert_eq!(l.host("a/b%c"), "/p/v1/hosts/a%2Fb%25c");
        let mut state = example();
        state.hosts[0].name = "rack/1".into();
        for e in &mut state.endpoints {
            if e.host == "node1" {
                e.host = "rack/1".into();
            }
        }
        let kvs = l.explode(&state, &Orders::new());
        let (back, _) = l.assemble(kvs.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))).unwrap().unwrap();
        assert_eq!(back.hosts[0].name, "rack/1");
    }

    #[test]
    fn agents_keys_are_not_state() {
        let l = Layout::new("/p");
        let mut kvs = l.explode(&example(), &Orders::new());
        kvs.push((l.agent("node/1", "alive"), b"{}".to_vec()));
        kvs.push((l.revision(), b"7".to_vec()));
        let (back, orders) = l.assemble(kvs.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))).unwrap().unwrap();
        assert_eq!(back, example());
        assert!(orders.keys().all(|k| l.is_object_key(k)));
        assert!(!l.is_object_key(&l.agent("n1", "alive")) && !l.is_object_key(&l.revision()));
        assert_eq!(l.agent_key(&l.agent("node/1", "seen")), Some(("node/1".into(), "seen".into())));
    }

    #[test]
    fn an_empty_store_holds_no_cluster_and_bad_values_are_named() {
        let l = Layout::new("/p");
        assert_eq!(l.assemble(std::iter::empty()).unwrap(), None);
        let bad = br#"{"order":0,"spec":{"name":"n2","address":"10.0.0.2"}}"#;
        let e = l.assemble([(b"/p/v1/hosts/n1".as_slice(), bad.as_slice())]).unwrap_err();
        assert_eq!(e.to_string(), r#"key /p/v1/hosts/n1: holds "n2", not the object its key names"#);
        let e = l.assemble([(b"/p/v1/hosts/n1".as_slice(), br#"{"order":0,"spec":{"name":"n1"}}"#.as_slice())]);
        assert!(matches!(e, Err(LayoutError::Key { key, .. }) if key == "/p/v1/hosts/n1"));
    }

    /// A newer release's agents share the store during a rolling upgrade:
    /// what it adds (a field, a kind of object under keys of its own) is
    /// read past, and a rewrite by this release keeps its fields.
    #[test]
    fn what_a_newer_release_wrote_is_read_past_and_kept() {
        let l = Layout::new("/p");
        let state = example();
        let mut kvs: std::collections::BTreeMap<String, Vec<u8>> =
            l.explode(&state, &Orders::new()).into_iter().collect();
        let key = l.endpoint(&state.endpoints[0].network, &state.endpoints[0].name);
        let mut v: serde_json::Value = serde_json::from_slice(&kvs[&key]).unwrap();
        v["spec"]["ip6"] = "fd00::3".into();
        v["spec"]["later"] = serde_json::json!({"a": [1, 2]});
        v["written_by"] = "0.2.0".into();
        kvs.insert(key.clone(), serde_json::to_vec(&v).unwrap());
        kvs.insert("/p/v1/policies/deny-all".into(), br#"{"order":0,"spec":{"rules":[]}}"#.to_vec());
        let (back, orders) = l.assemble(kvs.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))).unwrap().unwrap();
        assert_eq!(back.endpoints.len(), state.endpoints.len());
        assert_eq!(back.endpoints[0].unknown.keys().collect::<Vec<_>>(), ["ip6", "later"]);
        assert!(!orders.contains_key("/p/v1/policies/deny-all"));

        // This release changes the endpoint: the newer release's fields stay.
        let mut changed = back;
        changed.endpoints[0].aliases.push("www".into());
        let after: std::collections::BTreeMap<_, _> = l.explode(&changed, &orders).into_iter().collect();
        let spec = &serde_json::from_slice::<serde_json::Value>(&after[&key]).unwrap()["spec"];
        assert_eq!((spec["ip6"].as_str(), spec["aliases"][0].as_str()), (Some("fd00::3"), Some("www")));
        assert_eq!(spec["later"], serde_json::json!({"a": [1, 2]}));
    }

    /// The release before this one (4faeb4b) refuses fields it does
    /// not know, and shares the store with this one while hosts upgrade: so
    /// every field this release writes is one it knew. The list is that
    /// release's fields, and does not grow.
    #[test]
    fn every_field_written_is_one_the_previous_release_reads() {
        const PREVIOUS: &[(&str, &[&str])] = &[
            (
                "cluster",
                &["vxlan_port", "underlay_mtu", "conntrack_tcp_timeout", "conntrack_udp_timeout", "wireguard_port"],
            ),
            ("hosts", &["name", "address", "interface", "wireguard_key"]),
            (
                "networks",
                &[
                    "name",
                    "driver",
                    "parent",
                    "macvlan_mode",
                    "ingress",
                    "vni",
                    "subnets",
                    "mtu",
                    "attachable",
                    "internal",
                    "encrypted",
                    "runtime",
                    "used_by",
                ],
            ),
            (
                "endpoints",
                &[
                    "name",
                    "host",
                    "network",
                    "netns",
                    "ifname",
                    "ip",
                    "mac",
                    "aliases",
                    "runtime",
                    "container_id",
                    "endpoint_id",
                    "publish",
                ],
            ),
            ("services", &["name", "network", "endpoint_mode", "vip", "ports", "backends"]),
        ];
        let l = Layout::new("/p");
        let mut state = example();
        // Every optional field set somewhere.
        state.hosts[0].interface = Some("eth0".into());
        state.hosts[0].wireguard_key = Some("k".into());
        let n = &mut state.networks[0];
        (n.attachable, n.internal, n.encrypted, n.ingress) = (true, true, true, true);
        (n.mtu, n.runtime, n.used_by) = (Some(1400), Some(crate::state::model::Runtime::Docker), vec!["node1".into()]);
        n.parent = Some("eth0".into());
        n.macvlan_mode = Some(crate::state::model::MacvlanMode::Private);
        n.driver = crate::state::model::Driver::Macvlan;
        let e = &mut state.endpoints[0];
        (e.ifname, e.runtime, e.container_id, e.endpoint_id) =
            (Some("eth1".into()), Some(crate::state::model::Runtime::Cni), Some("c".into()), Some("d".into()));
        e.aliases = vec!["a".into()];
        e.publish = vec![crate::state::model::EndpointPort {
            published: 80,
            target: 8080,
            protocol: crate::state::model::Protocol::Tcp,
        }];
        for (key, value) in l.explode(&state, &Orders::new()) {
            let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
            assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["order", "spec"], "{key}");
            let kind = key.trim_start_matches(&l.root()).split('/').next().unwrap();
            let known = PREVIOUS.iter().find(|(k, _)| *k == kind).unwrap_or_else(|| panic!("{key}: a new kind")).1;
            let new: Vec<&String> =
                v["spec"].as_object().unwrap().keys().filter(|f| !known.contains(&f.as_str())).collect();
            assert!(new.is_empty(), "{key} writes {new:?}, which the previous release refuses");
        }
    }
}
