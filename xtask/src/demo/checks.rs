//! The demo's checks, described once: what `cargo xtask run` proves about the
//! example cluster, whether its hosts are namespaces on this machine
//! (`--netns`) or VMs. A mode says how to ping, serve, and fetch a URL on its
//! hosts (`Cluster`); everything else, what is expected and the verdicts, is
//! here.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::util::check_interrupt;

/// The outside client's address on the underlay, in both modes.
pub const CLIENT: &str = "192.168.100.100";
/// The port the example publishes on every host.
const PUBLISHED: u16 = 8080;
/// Requests per host through the routing mesh, and per VIP check.
const MESH_REQUESTS: usize = 6;
const VIP_REQUESTS: usize = 4;

/// One check's outcome.
#[derive(Clone)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// A cluster host as the example state names it.
pub struct Host {
    pub name: String,
    pub addr: String,
}

/// An endpoint of the resolved state.
pub struct Ep {
    pub name: String,
    pub host: String,
    pub network: String,
    pub netns: String,
    pub ip: String,
}

/// One ping of the matrix: from `netns` (on `host`) to `ip`.
pub struct Ping {
    pub host: String,
    pub netns: String,
    pub ip: String,
    /// Whether the networks say it should be answered.
    pub want: bool,
}

/// How a mode reaches its hosts.
pub trait Cluster {
    /// A line of the run's narrative.
    fn say(&self, line: &str);
    /// Every ping at once; for each, whether it was answered.
    fn pings(&mut self, pings: &[Ping]) -> Result<Vec<bool>>;
    /// An HTTP server on :80 in each endpoint's namespace answering every
    /// request with "<endpoint name> saw <the client address it saw>";
    /// returns once they are started.
    fn serve(&mut self, webs: &[&Ep]) -> Result<()>;
    /// GET `url` from the client outside the cluster (`CLIENT`): the body,
    /// or `None` when nothing answered within a few seconds.
    fn get_outside(&mut self, url: &str) -> Result<Option<String>>;
    /// GET `url` `n` times from inside the namespace of `ep`.
    fn get_inside(&mut self, ep: &Ep, url: &str, n: usize) -> Result<Vec<Option<String>>>;
}

pub fn endpoints(resolved: &Value) -> Result<Vec<Ep>> {
    resolved["endpoints"]
        .as_array()
        .context("validate -o json: endpoints")?
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().map(str::to_string).with_context(|| format!("endpoint field {k}"));
            Ok(Ep {
                name: s("name")?,
                host: s("host")?,
                network: s("network")?,
                netns: s("netns")?.trim_start_matches("/run/netns/").to_string(),
                ip: s("ip")?,
            })
        })
        .collect()
}

/// The state file's hosts (`validate` resolves endpoints, not hosts).
pub fn hosts(state: &Path) -> Result<Vec<Host>> {
    let v: Value = serde_yaml::from_str(&std::fs::read_to_string(state)?)
        .with_context(|| format!("{} is not YAML", state.display()))?;
    v["hosts"]
        .as_array()
        .with_context(|| format!("{}: no hosts", state.display()))?
        .iter()
        .map(|h| {
            Ok(Host {
                name: h["name"].as_str().context("host name")?.to_string(),
                addr: h["address"].as_str().context("host address")?.to_string(),
            })
        })
        .collect()
}

/// Runs every check on `c`, a cluster brought up from the example state,
/// reporting each as it is decided through `record`. Stops early only when
/// the mesh's servers cannot start.
pub fn run(c: &mut dyn Cluster, resolved: &Value, hosts: &[Host], record: &mut dyn FnMut(Check)) -> Result<()> {
    // The macvlan network's endpoints are on the LAN, not on the overlay:
    // checked apart, after the overlay's.
    let macvlan: BTreeSet<&str> = resolved["networks"]
        .as_array()
        .context("validate -o json: networks")?
        .iter()
        .filter(|n| n["driver"] == "macvlan")
        .filter_map(|n| n["name"].as_str())
        .collect();
    let (lan, eps): (Vec<Ep>, Vec<Ep>) =
        endpoints(resolved)?.into_iter().partition(|e| macvlan.contains(e.network.as_str()));
    let mut check = |name: String, passed: bool, detail: String| record(Check { name, passed, detail });

    // The overlay: every endpoint pings every endpoint in another namespace;
    // a namespace reaches an endpoint when it has one on the same network.
    let mut pings = Vec::new();
    let mut seen_pairs = BTreeSet::new();
    for a in &eps {
        for b in &eps {
            if a.netns == b.netns || !seen_pairs.insert((a.netns.clone(), b.ip.clone())) {
                continue;
            }
            let want = eps.iter().any(|x| x.netns == a.netns && x.network == b.network);
            pings.push((
                Ping { host: a.host.clone(), netns: a.netns.clone(), ip: b.ip.clone(), want },
                a.host != b.host,
            ));
        }
    }
    c.say("connectivity matrix (rows ping columns through the overlay; ok = reached, x = blocked)");
    let list: Vec<Ping> = pings
        .iter()
        .map(|(p, _)| Ping { host: p.host.clone(), netns: p.netns.clone(), ip: p.ip.clone(), want: p.want })
        .collect();
    let got = c.pings(&list)?;
    let seen: BTreeMap<(String, String), bool> =
        list.iter().zip(&got).map(|(p, g)| ((p.netns.clone(), p.ip.clone()), *g)).collect();
    let (mut conn, mut across, mut conn_bad, mut iso, mut iso_bad) = (0, 0, Vec::new(), 0, Vec::new());
    for ((p, cross), reached) in pings.iter().zip(&got) {
        if p.want {
            conn += 1;
            across += *cross as usize;
            if !reached {
                conn_bad.push(format!("{} -> {}: no reply", p.netns, p.ip));
            }
        } else {
            iso += 1;
            if *reached {
                iso_bad.push(format!("{} -> {}: REACHED", p.netns, p.ip));
            }
        }
    }
    for l in matrix(&eps, &seen) {
        c.say(&l);
    }
    check(
        format!("overlay: connectivity ({conn} pairs, {across} across hosts)"),
        conn_bad.is_empty(),
        conn_bad.join(", "),
    );
    check(format!("overlay: isolation ({iso} pairs blocked)"), iso_bad.is_empty(), iso_bad.join(", "));
    check_interrupt()?;

    // The routing mesh, from a client outside the cluster on the underlay.
    let webs: Vec<&Ep> = eps.iter().filter(|e| e.name.starts_with("web.") && e.network == "uber-svc").collect();
    c.say(&format!(
        "routing mesh: HTTP servers in {} on :80; a client outside the cluster ({CLIENT}) asks every host's \
         published port {PUBLISHED}",
        webs.iter().map(|w| w.name.as_str()).collect::<Vec<_>>().join(", ")
    ));
    if let Err(e) = c.serve(&webs) {
        check(format!("mesh: HTTP servers in {} endpoints", webs.len()), false, format!("{e:#}"));
        return Ok(());
    }
    let (mut answered, mut asked, mut kept, mut backends) = (0, 0, true, BTreeSet::new());
    let mut wrong = Vec::new();
    for h in hosts {
        let mut line = Vec::new();
        for _ in 0..MESH_REQUESTS {
            check_interrupt()?;
            asked += 1;
            let body = c.get_outside(&format!("http://{}:{PUBLISHED}/", h.addr))?;
            match body.as_deref().and_then(|b| b.split_once(" saw ")) {
                Some((backend, saw)) => {
                    answered += 1;
                    backends.insert(backend.to_string());
                    if saw != CLIENT {
                        kept = false;
                        wrong.push(format!("{} saw {saw}", h.name));
                    }
                    line.push(format!("{backend}<-{saw}"));
                }
                None => {
                    wrong.push(format!("{}: no answer", h.name));
                    line.push("NO ANSWER".into());
                }
            }
        }
        c.say(&format!(
            "  curl http://{}:{PUBLISHED}/ ({}) x{MESH_REQUESTS} from {CLIENT}: {}",
            h.addr,
            h.name,
            line.join(", ")
        ));
    }
    check(format!("mesh: every host answers on :{PUBLISHED} ({asked} requests)"), answered == asked, wrong.join(", "));
    check("mesh: the client address kept".into(), kept && answered > 0, wrong.join(", "));
    check(
        format!("mesh: spread over backends ({} of {})", backends.len(), webs.len()),
        backends.len() > 1,
        format!("only {backends:?} answered"),
    );
    check_interrupt()?;

    // The internal VIP from a container, and from a backend to its own
    // service (hairpin: picked by its own VIP, it sees the VIP as the caller).
    let vip = resolved["services"][0]["vip"].as_str().context("the example's service VIP")?.to_string();
    let client = eps.iter().find(|e| e.name == "client").context("the example's client endpoint")?;
    let web1 = webs.first().context("the example's web.1")?;
    for (ep, what) in
        [(client, "vip: the service VIP from a container"), (*web1, "vip: hairpin, web.1 to its own service's VIP")]
    {
        let answers = c.get_inside(ep, &format!("http://{vip}/"), VIP_REQUESTS)?;
        let shown: Vec<String> =
            answers.iter().map(|a| a.as_deref().map_or("NO ANSWER".into(), |b| b.replace(" saw ", "<-"))).collect();
        c.say(&format!("  GET http://{vip}/ x{VIP_REQUESTS} from {} ({}): {}", ep.name, ep.ip, shown.join(", ")));
        // A backend other than the caller sees the caller's own address; the
        // caller picked by its own VIP sees the VIP (the only way to answer).
        let right = answers
            .iter()
            .flatten()
            .filter(|b| match b.split_once(" saw ") {
                Some((backend, saw)) if backend == ep.name => saw == vip,
                Some((_, saw)) => saw == ep.ip,
                None => false,
            })
            .count();
        check(
            format!("{what} ({VIP_REQUESTS} requests)"),
            right == VIP_REQUESTS,
            format!("{right} of {VIP_REQUESTS} right: {}", shown.join(" | ")),
        );
    }
    c.say("(backend<-the address it saw: the callers' own, no SNAT; web.1 picked by its own VIP sees the VIP)");
    check_interrupt()?;
    macvlan_checks(c, &lan, &mut check)
}

/// The macvlan network beside the overlay: its containers, sub-interfaces
/// of their hosts' NIC, reach each other across hosts and are reached by
/// the LAN's own machine (the outside client) at their own addresses.
fn macvlan_checks(c: &mut dyn Cluster, lan: &[Ep], check: &mut dyn FnMut(String, bool, String)) -> Result<()> {
    if lan.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = lan.iter().map(|e| e.name.as_str()).collect();
    c.say(&format!(
        "macvlan: {} sit on the hosts' own LAN (sub-interfaces of eth0, no VXLAN); they ping each other across \
         hosts, and the LAN's machine ({CLIENT}) fetches from each",
        names.join(", ")
    ));
    let pings: Vec<Ping> = lan
        .iter()
        .flat_map(|a| lan.iter().filter(move |b| b.host != a.host).map(move |b| (a, b)))
        .map(|(a, b)| Ping { host: a.host.clone(), netns: a.netns.clone(), ip: b.ip.clone(), want: true })
        .collect();
    let got = c.pings(&pings)?;
    let bad: Vec<String> = pings
        .iter()
        .zip(&got)
        .filter(|(_, g)| !**g)
        .map(|(p, _)| format!("{} -> {}: no reply", p.netns, p.ip))
        .collect();
    for (p, g) in pings.iter().zip(&got) {
        c.say(&format!("  ping {} from {}: {}", p.ip, p.netns, if *g { "ok" } else { "NO REPLY" }));
    }
    check(
        format!("macvlan: containers reach each other across hosts ({} pairs)", pings.len()),
        bad.is_empty(),
        bad.join(", "),
    );
    let refs: Vec<&Ep> = lan.iter().collect();
    if let Err(e) = c.serve(&refs) {
        check(format!("macvlan: HTTP servers in {} endpoints", lan.len()), false, format!("{e:#}"));
        return Ok(());
    }
    let mut wrong = Vec::new();
    for e in lan {
        check_interrupt()?;
        let body = c.get_outside(&format!("http://{}/", e.ip))?;
        c.say(&format!(
            "  curl http://{}/ ({}) from {CLIENT}: {}",
            e.ip,
            e.name,
            body.as_deref().unwrap_or("NO ANSWER")
        ));
        if body.as_deref() != Some(&format!("{} saw {CLIENT}", e.name)) {
            wrong.push(format!("{}: {}", e.name, body.unwrap_or_else(|| "no answer".into())));
        }
    }
    check(
        format!("macvlan: the LAN's machine reaches each container at its own address ({} requests)", lan.len()),
        wrong.is_empty(),
        wrong.join(", "),
    );
    Ok(())
}

/// The connectivity matrix as text lines.
fn matrix(eps: &[Ep], seen: &BTreeMap<(String, String), bool>) -> Vec<String> {
    let w = eps.iter().map(|e| e.name.len()).max().unwrap_or(4).max(4);
    let mut lines = Vec::new();
    let mut head = format!("{:w$}  ", "");
    for b in eps {
        head += &format!("{:>w$} ", b.name);
    }
    lines.push(head);
    for a in eps {
        let mut row = format!("{:>w$}  ", a.name);
        for b in eps {
            let cell = match seen.get(&(a.netns.clone(), b.ip.clone())) {
                _ if a.netns == b.netns => "-",
                Some(true) => "ok",
                Some(false) => "x",
                None => "?",
            };
            row += &format!("{cell:>w$} ");
        }
        lines.push(row);
    }
    let nets: Vec<String> = eps.iter().map(|e| format!("{}: {}", e.name, e.network)).collect();
    lines.push(format!("networks: {}", nets.join(", ")));
    lines
}
