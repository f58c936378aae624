//! The cluster store on a real etcd (Debian's etcd-server, started by each
//! test in a namespace of its own and killed by PID on drop): import and
//! export, the commands on etcd, changes serialised by compare-and-swap, and
//! agents that apply what the store says as it changes. Host tier only: the
//! VMs carry no etcd.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{etcd::*, *};

/// An agent on `url` for each of `hosts` (`n1`, ...) of prefix `p`, with `extra` flags.
fn agents_on(dep: &mut Deployment, p: &str, hosts: &[&str], url: &str, extra: &[&str]) -> Vec<Agent> {
    hosts
        .iter()
        .map(|h| Agent::start_with(dep, &["--store", url], &format!("{p}{h}"), &format!("{p}-{h}"), extra))
        .collect()
}

/// Exit 1, and `error: ` followed by `want`, whole, on stderr.
fn refused(o: &Output, want: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", text(o));
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim_end(), format!("error: {want}"));
}

/// Exit 2 and the refusal of an etcd at `addr` that does not answer: ours
/// around the gRPC library's own words.
fn unreachable(o: &Output, addr: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    let err = err.trim_end();
    let (head, tail) = (
        format!("error: cannot reach etcd at {addr}: "),
        "(is etcd running there? start one with `etcd`, or check --store)",
    );
    assert!(err.starts_with(&head) && err.ends_with(tail) && !err.contains('\n'), "{err}");
}

/// An etcd of its own (in namespace `<p>-etcd`) holding the cluster `yaml`.
fn etcd_holding(p: &str, yaml: &str) -> (Netns, Etcd) {
    let ns = Netns::new(&format!("{p}-etcd"));
    let etcd = Etcd::start(&ns, "127.0.0.1", p);
    let base = StateFile::new(p, yaml);
    assert_ok(&ob(&ns, &["store", "import", base.0.to_str().unwrap(), "--store", &etcd.url]));
    (ns, etcd)
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.yaml")
}

#[test]
fn import_export_round_trip_and_the_refusals() {
    require_root();
    let ns = Netns::new("obsa-etcd");
    let etcd = Etcd::start(&ns, "127.0.0.1", "obsa");
    let url = etcd.url.as_str();
    let ex = example();
    let ex = ex.to_str().unwrap();

    refused(
        &ob(&ns, &["store", "export", "--store", url]),
        &format!(
            "the store {url}/overlay-bpf holds no cluster yet; load one with `overlay-bpf store import FILE --store \
             {url}/overlay-bpf`"
        ),
    );
    let out = assert_ok(&ob(&ns, &["store", "import", ex, "--store", url]));
    assert_eq!(out, format!("{url}/overlay-bpf: imported {ex} (3 hosts, 4 networks, 8 endpoints, 1 services)\n"));
    refused(
        &ob(&ns, &["store", "import", ex, "--store", url]),
        &format!(
            "the store {url}/overlay-bpf already holds a cluster (3 hosts, 4 networks, 8 endpoints, 1 services); \
             `store import --replace` overwrites it, or export it first with `store export`"
        ),
    );

    // The export is a file `validate` accepts, every allocation written out,
    // resolving to what the example resolves to.
    let exported = assert_ok(&ob(&ns, &["store", "export", "--store", url]));
    assert!(exported.contains("ip: 10.0.0.158") && exported.contains("vni: 4098"), "{exported}");
    assert!(exported.contains("mac: 02:42:0a:00:00:9e"), "{exported}");
    let file = StateFile::new("obsa", &exported);
    let f = file.0.to_str().unwrap();
    let from_file = assert_ok(&ob(&ns, &["validate", "-o", "json", "--state", f]));
    assert_eq!(assert_ok(&ob(&ns, &["validate", "-o", "json", "--store", url])), from_file);
    assert_eq!(assert_ok(&ob(&ns, &["validate", "-o", "json", "--state", ex])), from_file);

    // Imported into another prefix, it exports exactly the same.
    let copy = format!("{url}/obsa-copy");
    assert_ok(&ob(&ns, &["store", "import", f, "--store", &copy]));
    assert_eq!(assert_ok(&ob(&ns, &["store", "export", "--store", &copy])), exported);

    // --replace leaves nothing of the cluster it replaces.
    let small = StateFile::new("obsa-small", "version: 1\nhosts:\n  - {name: h1, address: 192.168.9.1}\n");
    assert_ok(&ob(&ns, &["store", "import", small.0.to_str().unwrap(), "--replace", "--store", &copy]));
    let now = assert_ok(&ob(&ns, &["store", "export", "-o", "json", "--store", &copy]));
    let v = json(&now);
    assert_eq!((v["hosts"].as_array().unwrap().len(), v["networks"].as_array().unwrap().len()), (1, 0), "{now}");
    assert!(v.get("endpoints").is_none(), "{now}");

    // Networks on etcd, as on a file: allocated, listed, refused by rule, removed.
    let id = assert_ok(&ob(&ns, &["network", "create", "--subnet", "10.0.9.0/24", "extra", "--store", url]));
    assert_eq!(id.trim().len(), 64, "{id}");
    let ls = assert_ok(&ob(&ns, &["network", "ls", "--store", url]));
    let row = format!("{}  extra               overlay   swarm   4099      10.0.9.0/24", &id.trim()[..12]);
    assert_eq!(ls.lines().last(), Some(row.as_str()), "{ls}");
    refused(
        &ob(&ns, &["network", "create", "--subnet", "10.0.9.128/25", "other", "--store", url]),
        &format!(
            "{url}/overlay-bpf: networks[5] (other).subnets[0]: subnet 10.0.9.128/25 overlaps 10.0.9.0/24 of \
             networks[4] (extra).subnets[0]; subnets of all networks must not overlap"
        ),
    );
    assert_ok(&ob(&ns, &["network", "rm", "extra", "--store", url]));
    assert_eq!(assert_ok(&ob(&ns, &["store", "export", "--store", url])), exported, "back to the import");

    // The flags: one store option; a store that is not there; a scheme that is not a store.
    refused(
        &ob(&ns, &["validate", "--state", ex, "--store", url]),
        &format!("give the state with --state FILE or --store URL, not both ({ex} and {url})"),
    );
    let o = ob(&ns, &["validate", "--store", "etcd://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    unreachable(&o, "127.0.0.1:1");
    refused(
        &ob(&ns, &["validate", "--store", "consul://127.0.0.1:8500"]),
        "--store \"consul://127.0.0.1:8500\" the scheme consul:// is not a store; use file://PATH or etcd://HOST:PORT",
    );
    // $OVERLAY_BPF_STORE names the store; a --state flag wins over it.
    let o = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(bin())
        .arg("validate")
        .env("OVERLAY_BPF_STORE", url)
        .output()
        .unwrap();
    assert!(assert_ok(&o).starts_with(&format!("{url}/overlay-bpf: ok")), "{}", text(&o));
    drop(etcd);
}

#[test]
fn changes_made_at_once_are_serialised() {
    require_root();
    let (ns, etcd) = etcd_holding("obsb", "version: 1\nhosts:\n  - {name: h1, address: 192.168.9.1}\n");
    let url = etcd.url.clone();

    // Eight networks with their own subnets and two whose subnets overlap,
    // all at the same moment, none with a VNI of its own.
    let mut runs: Vec<(String, std::process::Child)> = Vec::new();
    let mut spawn = |name: String, subnet: String| {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(bin())
            .args(["network", "create", "--subnet", &subnet, &name, "--store", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        runs.push((name, child));
    };
    for i in 0..8 {
        spawn(format!("net{i}"), format!("10.50.{i}.0/24"));
    }
    spawn("dupa".into(), "10.60.0.0/24".into());
    spawn("dupb".into(), "10.60.0.0/25".into());
    let results: Vec<(String, Output)> = runs.into_iter().map(|(n, c)| (n, c.wait_with_output().unwrap())).collect();
    for (n, o) in &results[..8] {
        assert!(o.status.success(), "{n}: {}", text(o));
    }
    let dups: Vec<&(String, Output)> = results[8..].iter().collect();
    let won: Vec<&str> = dups.iter().filter(|(_, o)| o.status.success()).map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one of two overlapping networks: {:?}",
        dups.iter().map(|(_, o)| text(o)).collect::<Vec<_>>()
    );
    let lost = dups.iter().find(|(_, o)| !o.status.success()).unwrap();
    // The networks' indexes in the store are the race's: `#` here.
    let (ln, wn) = if lost.0 == "dupa" { ("dupa", "dupb") } else { ("dupb", "dupa") };
    let subnet = |n: &str| if n == "dupa" { "10.60.0.0/24" } else { "10.60.0.0/25" };
    assert_eq!(lost.1.status.code(), Some(1), "{}", text(&lost.1));
    let mut said = String::new();
    let err = String::from_utf8_lossy(&lost.1.stderr);
    for (i, piece) in err.trim_end().split("networks[").enumerate() {
        match i {
            0 => said += piece,
            _ => said += &format!("networks[#{}", piece.trim_start_matches(|c: char| c.is_ascii_digit())),
        }
    }
    assert_eq!(
        said,
        format!(
            "error: {url}/overlay-bpf: networks[#] ({ln}).subnets[0]: subnet {} overlaps {} of networks[#] \
             ({wn}).subnets[0]; subnets of all networks must not overlap",
            subnet(ln),
            subnet(wn)
        )
    );

    let v = json(&assert_ok(&ob(&ns, &["store", "export", "-o", "json", "--store", &url])));
    let nets = v["networks"].as_array().unwrap();
    assert_eq!(nets.len(), 9, "{v}");
    let vnis: std::collections::BTreeSet<u64> = nets.iter().map(|n| n["vni"].as_u64().unwrap()).collect();
    assert_eq!(vnis.len(), 9, "every VNI once: {vnis:?}");
    drop(etcd);
}

/// Whether host `h`'s maps have backend `b` of service `web` in rotation.
fn in_rotation(dep: &Deployment, p: &str, h: &str, url: &str, b: &str) -> Option<bool> {
    let o = dep
        .cmd(&format!("{p}{h}"), &format!("{p}-{h}"))
        .args(["status", "-o", "json", "--store", url])
        .output()
        .unwrap();
    let v = json(&assert_ok(&o));
    let web = v["services"].as_array()?.iter().find(|s| s["name"] == "web")?.clone();
    let be = web["backends"].as_array()?.iter().find(|x| x["name"] == b)?.clone();
    be["in_rotation"].as_bool()
}

#[test]
fn agents_apply_what_the_store_says_and_meet_there() {
    require_root();
    let p = "obsc";
    let u = underlay(p, 3);
    let cs = containers(p, &["w1", "w2", "w3", "x1"]);
    let etcd = Etcd::start(u.host("n1"), "192.168.200.11", p);
    let url = etcd.url.clone();
    let n1 = u.host("n1");
    let web =
        "services:\n  - {name: web, network: front, ports: [{protocol: tcp, target: 8080}], backends: [w2, w3]}\n";
    let two = state(p, &[("w1", "n1", "front", "10.10.0.3"), ("w2", "n2", "front", "10.10.0.4")], 3);
    let three = state(
        p,
        &[("w1", "n1", "front", "10.10.0.3"), ("w2", "n2", "front", "10.10.0.4"), ("w3", "n3", "front", "10.10.0.5")],
        3,
    ) + web;
    let (two, three) = (StateFile::new(p, &two), StateFile::new(&format!("{p}-3"), &three));
    assert_ok(&ob(n1, &["store", "import", two.0.to_str().unwrap(), "--store", &url]));
    let _webs = [Web::start(&cs[1], "w2", 8080), Web::start(&cs[2], "w3", 8080)];

    let mut dep = Deployment::new(&bin());
    let flags = ["--health-interval", "1", "--health-fails", "2", "--lease-ttl", "2"];
    let start = |dep: &mut Deployment, h: &str| {
        Agent::start_with(dep, &["--store", &url], &format!("{p}{h}"), &format!("{p}-{h}"), &flags)
    };
    let mut agents: Vec<Agent> = ["n1", "n2", "n3"].iter().map(|h| start(&mut dep, h)).collect();
    let ping = |from: &Netns, to: &str| from.run("ping", &["-c", "1", "-W", "1", to]).status.success();
    let logs = |agents: &[Agent]| agents.iter().map(|a| a.log_text()).collect::<Vec<_>>().join("\n---\n");
    let t = Instant::now();
    while !ping(&cs[0], "10.10.0.4") {
        assert!(t.elapsed() < Duration::from_secs(60), "w1 never reached w2; the agents' logs:\n{}", logs(&agents));
    }
    assert!(!ping(&cs[0], "10.10.0.5"), "w3 is not in the store yet");

    // A change to the store reaches every agent through its watch.
    assert_ok(&ob(n1, &["store", "import", three.0.to_str().unwrap(), "--replace", "--store", &url]));
    let t = Instant::now();
    while !(ping(&cs[0], "10.10.0.5") && ping(&cs[1], "10.10.0.5")) {
        assert!(t.elapsed() < Duration::from_secs(30), "w3 not reached from w1 and w2; logs:\n{}", logs(&agents));
    }
    assert!(agents[2].log_text().contains("re-applied"), "{}", logs(&agents));
    // The store's side of /metrics: the watch and the lease up, the revision
    // read, the time the change took to arrive.
    let metrics = curl(u.host("n2"), &["http://192.168.200.13:7947/metrics"]);
    for want in ["overlay_bpf_store_watch_up 1", "overlay_bpf_store_lease_up 1", "overlay_bpf_store_resyncs_total 0"] {
        assert!(metrics.iter().any(|l| l == want), "{want} in {metrics:?}");
    }
    let value = |name: &str| -> f64 {
        let l = metrics
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}: {metrics:?}"));
        l.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("overlay_bpf_store_revision") > 1.0);
    assert!(value("overlay_bpf_store_apply_lag_seconds") > 0.0, "the import's change measured on arrival");
    wait_until("w2 and w3 in n1's tables", 30, || {
        in_rotation(&dep, p, "n1", &url, "w2") == Some(true) && in_rotation(&dep, p, "n1", &url, "w3") == Some(true)
    });

    // An endpoint created on n3, which no service names: n3's agent makes its
    // veth (the full reconcile), the others write its one map entry as the
    // change arrives, and count it; its removal the same way.
    let incremental = |host: &str, addr: &str| -> u64 {
        let m = curl(u.host(host), &[&format!("http://{addr}:7947/metrics")]);
        let l = m.iter().find(|l| l.starts_with("overlay_bpf_store_incremental_applies_total ")).cloned();
        l.unwrap_or_else(|| panic!("no incremental count: {m:?}")).rsplit(' ').next().unwrap().parse().unwrap()
    };
    let before = [incremental("n1", "192.168.200.11"), incremental("n2", "192.168.200.12")];
    let x1 = format!("{p}-x1");
    let create = ["endpoint", "create", "x1", "--network", "front", "--container-netns", &x1, "--ip", "10.10.0.6"];
    assert_ok(&ob(n1, &[&create[..], &["--host", &format!("{p}n3"), "--store", &url]].concat()));
    let t = Instant::now();
    while !(ping(&cs[0], "10.10.0.6") && ping(&cs[1], "10.10.0.6")) {
        assert!(t.elapsed() < Duration::from_secs(30), "x1 not reached from w1 and w2; logs:\n{}", logs(&agents));
    }
    let after = [incremental("n1", "192.168.200.11"), incremental("n2", "192.168.200.12")];
    assert!(after[0] > before[0] && after[1] > before[1], "{before:?} -> {after:?}; logs:\n{}", logs(&agents));
    assert!(agents[0].log_text().contains("applied as it arrived"), "{}", logs(&agents));
    assert_ok(&ob(n1, &["endpoint", "rm", "x1", "--network", "front", "--store", &url]));
    wait_until("x1 gone from n1's and n2's maps", 30, || {
        incremental("n1", "192.168.200.11") > after[0] && incremental("n2", "192.168.200.12") > after[1]
    });
    assert!(!ping(&cs[0], "10.10.0.6"), "x1 is gone");

    // Every agent is present in the store, under its lease.
    let hosts = |out: &str| -> Vec<(String, bool, bool)> {
        json(out)
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["name"].as_str().unwrap().to_string(), h["alive"] == true, h["last_seen"].is_string()))
            .collect()
    };
    let ls = || assert_ok(&ob(n1, &["host", "ls", "-o", "json", "--store", &url]));
    wait_until("three agents alive in host ls", 20, || hosts(&ls()).iter().all(|h| h.1 && h.2));

    // n3's agent dies: its lease expires, every host takes w3 out, and n3's
    // data path goes on (w1 still reaches w3).
    agents[2].kill();
    wait_until("n3 not alive in host ls", 20, || hosts(&ls()).iter().any(|h| h.0 == format!("{p}n3") && !h.1 && h.2));
    wait_until("w3 out of n1's and n2's tables", 30, || {
        // Out of rotation, or not listed at all (no entry and no traffic yet).
        in_rotation(&dep, p, "n1", &url, "w3") != Some(true) && in_rotation(&dep, p, "n2", &url, "w3") != Some(true)
    });
    assert_eq!(in_rotation(&dep, p, "n1", &url, "w2"), Some(true));
    assert!(agents[0].log_text().contains("lease expired"), "{}", logs(&agents));
    assert!(ping(&cs[0], "10.10.0.5"), "n3 forwards without its agent");

    // Back: its new lease brings w3 back everywhere.
    agents[2] = start(&mut dep, "n3");
    wait_until("w3 back in n1's tables", 30, || in_rotation(&dep, p, "n1", &url, "w3") == Some(true));
    drop(agents);
    dep.down_all();
    drop(etcd);
}

#[test]
fn hosts_join_list_and_leave_on_etcd_and_on_a_file() {
    require_root();
    let ns = Netns::new("obsd-etcd");
    let etcd = Etcd::start(&ns, "127.0.0.1", "obsd");
    let file = std::env::temp_dir().join("obsd-state.yaml");
    let _ = std::fs::remove_file(&file);
    let file_url = file.to_str().unwrap().to_string();
    for store in [etcd.url.as_str(), file_url.as_str()] {
        let s = ["--store", store];
        let join =
            |name: &str, addr: &str| ob(&ns, &[&["host", "join", "--name", name, "--address", addr][..], &s].concat());
        let name = if store == file_url { file_url.clone() } else { format!("{store}/overlay-bpf") };
        assert_eq!(assert_ok(&join("h1", "192.168.9.1")), format!("h1: joined {name} at 192.168.9.1\n"));
        let again = assert_ok(&join("h1", "192.168.9.1"));
        assert_eq!(again, format!("h1: in {name} already at 192.168.9.1: nothing changed\n"));
        refused(
            &join("h1", "192.168.9.2"),
            "host h1 is in the cluster already with address 192.168.9.1; `host rm h1` first to join it with address \
             192.168.9.2, or pick another --name",
        );
        refused(
            &join("h2", "192.168.9.1"),
            &format!("{name}: hosts[1] (h2): duplicate address 192.168.9.1: hosts[0] already has it"),
        );
        assert_ok(&join("h2", "192.168.9.2"));
        // An endpoint on h2 keeps it, unless --force.
        assert_ok(&ob(
            &ns,
            &[&["network", "create", "--subnet", "10.77.0.0/24", "--attachable", "n"][..], &s].concat(),
        ));
        let mut st = json(&assert_ok(&ob(&ns, &[&["store", "export", "-o", "json"][..], &s].concat())));
        st["endpoints"] = serde_json::json!([{"name": "e1", "host": "h2", "network": "n", "netns": "obsd-e1"}]);
        let with_ep = StateFile::new("obsd-ep", &serde_json::to_string(&st).unwrap());
        assert_ok(&ob(&ns, &[&["store", "import", with_ep.0.to_str().unwrap(), "--replace"][..], &s].concat()));
        let ls = json(&assert_ok(&ob(&ns, &[&["host", "ls", "-o", "json"][..], &s].concat())));
        let names: Vec<&str> = ls.as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["h1", "h2"], "{ls}");
        assert_eq!(ls[1]["endpoints"], 1);
        assert_eq!(ls[0]["alive"], false, "no agent runs: {ls}");
        let text = assert_ok(&ob(&ns, &[&["host", "ls"][..], &s].concat()));
        let table = [
            "NAME                 ADDRESS          INTERFACE  ALIVE   ENDPOINTS  LAST SEEN",
            "h1                   192.168.9.1      -          no      0          never",
            "h2                   192.168.9.2      -          no      1          never",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), table);
        refused(
            &ob(&ns, &[&["host", "rm", "h2"][..], &s].concat()),
            "host h2 still has endpoints [e1]; remove them first, or `host rm h2 --force` removes them too",
        );
        let removed = assert_ok(&ob(&ns, &[&["host", "rm", "h2", "--force"][..], &s].concat()));
        assert_eq!(removed, "h2: removed, with its endpoints e1\n");
        refused(&ob(&ns, &[&["host", "rm", "h9"][..], &s].concat()), "host h9 is not in the cluster (hosts: h1)");
    }
    let _ = std::fs::remove_file(&file);
    drop(etcd);
}

#[test]
fn endpoints_and_services_on_etcd() {
    require_root();
    let base = "version: 1\nhosts:\n  - {name: h1, address: 192.168.9.1}\n  - {name: h2, address: 192.168.9.2}\n  \
                - {name: h3, address: 192.168.9.3}\nnetworks:\n  - {name: front, attachable: true, subnets: [{subnet: 10.60.0.0/22}]}\n  \
                - {name: back, attachable: true, subnets: [{subnet: 10.61.0.0/24}]}\n";
    let (ns, etcd) = etcd_holding("obse", base);
    let url = etcd.url.clone();
    let s = ["--store", url.as_str()];
    let run = |args: &[&str]| ob(&ns, &[args, &s[..]].concat());

    // An endpoint: its allocation printed; the same name on another network is another endpoint.
    let out = assert_ok(&run(&[
        "endpoint",
        "create",
        "web1",
        "--network",
        "front",
        "--container-netns",
        "c1",
        "--host",
        "h1",
        "--alias",
        "web",
    ]));
    assert_eq!(out, "web1 on front: 10.60.1.187/22 mac 02:42:0a:3c:01:bb on host h1, netns c1 (eth0)\n");
    let j = json(&assert_ok(&run(&[
        "endpoint",
        "create",
        "web1",
        "--network",
        "back",
        "--container-netns",
        "c1",
        "--host",
        "h1",
        "-o",
        "json",
    ])));
    assert_eq!((j["network"].as_str(), j["ifname"].as_str()), (Some("back"), Some("eth1")), "{j}");
    refused(
        &run(&["endpoint", "create", "web1", "--network", "front", "--container-netns", "c9", "--host", "h2"]),
        "endpoint web1 exists on network front already; names are unique within a network",
    );
    refused(
        &run(&["endpoint", "create", "x", "--network", "nope", "--container-netns", "c9", "--host", "h2"]),
        "network nope does not exist; create it with `overlay-bpf network create`",
    );
    assert_ok(&run(&[
        "endpoint",
        "create",
        "web2",
        "--network",
        "front",
        "--container-netns",
        "c2",
        "--host",
        "h2",
        "--alias",
        "web",
        "--ip",
        "10.60.3.3",
    ]));

    // A service over the alias: both endpoints; updated, listed, inspected.
    let out = assert_ok(&run(&[
        "service",
        "create",
        "web",
        "--network",
        "front",
        "--publish",
        "8080:80",
        "--backend",
        "web",
    ]));
    assert_eq!(out, "web: created on front, vip 10.60.0.48, 2 backends\n");
    refused(
        &run(&["service", "create", "bad", "--network", "front", "--publish", "8080"]),
        "invalid value '8080' for '--publish <PUBLISH>': --publish \"8080\": is neither key=value nor P:T (Docker's \
         `published=8080,target=80[,protocol=udp][,mode=host]`, or `8080:80[/udp]`)\n\nFor more information, try \
         '--help'.",
    );
    refused(
        &run(&["service", "create", "dup", "--network", "front", "--publish", "8080:81", "--backend", "web1"]),
        &format!(
            "{url}/overlay-bpf: services[1] (dup).ports[0]: published port 8080/tcp is already published by \
             services[0] (web)"
        ),
    );
    let out = assert_ok(&run(&[
        "service",
        "update",
        "web",
        "--backend-rm",
        "web",
        "--backend-add",
        "web2",
        "--publish-add",
        "published=53,target=53,protocol=udp,mode=host",
    ]));
    assert_eq!(out, "web: updated; backends web2\n");
    let v = json(&assert_ok(&run(&["service", "inspect", "web"])));
    assert_eq!(v["endpoints"][0]["ip"], "10.60.3.3", "{v}");
    assert_eq!(v["ports"][1]["mode"], "host", "{v}");
    let ls = assert_ok(&run(&["service", "ls"]));
    let table = [
        "NAME                 NETWORK          MODE   VIP              BACKENDS  PORTS",
        "web                  front            vip    10.60.0.48       1         *:8080->80/tcp, 53->53/udp (host)",
    ];
    assert_eq!(ls.lines().collect::<Vec<_>>(), table);
    // Removing web2 takes it out of the service; ambiguity asks for the network.
    refused(&run(&["endpoint", "rm", "web1"]), "endpoint web1 is on networks front, back: say which with --network");
    assert_ok(&run(&["endpoint", "rm", "web2"]));
    let v = json(&assert_ok(&run(&["service", "inspect", "web"])));
    assert_eq!(v["backends"], serde_json::json!([]), "{v}");
    assert_ok(&run(&["service", "rm", "web"]));
    refused(&run(&["service", "inspect", "web"]), "service web not found");

    drop(etcd);
}

#[test]
fn three_writers_at_once_give_every_endpoint_its_own_address() {
    require_root();
    let base = "version: 1\nhosts:\n  - {name: h1, address: 192.168.9.1}\n  - {name: h2, address: 192.168.9.2}\n  \
                - {name: h3, address: 192.168.9.3}\nnetworks:\n  - {name: front, attachable: true, subnets: [{subnet: 10.60.0.0/22}]}\n";
    let (ns, etcd) = etcd_holding("obsw", base);
    let url = etcd.url.clone();
    let s = ["--store", url.as_str()];
    let run = |args: &[&str]| ob(&ns, &[args, &s[..]].concat());
    // Three writers, 200 endpoints each, all at once: 600 distinct addresses.
    let writers: Vec<std::thread::JoinHandle<Vec<Output>>> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| {
            let (ns, url, h) = (ns.name.clone(), url.clone(), h.to_string());
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| {
                        Command::new("ip")
                            .args(["netns", "exec", &ns])
                            .arg(bin())
                            .args(["endpoint", "create", &format!("{h}-e{i}"), "--network", "front"])
                            .args(["--container-netns", &format!("{h}-c{i}"), "--host", &h, "--store", &url])
                            .output()
                            .unwrap()
                    })
                    .collect()
            })
        })
        .collect();
    for w in writers {
        for o in w.join().unwrap() {
            assert!(o.status.success(), "{}", text(&o));
        }
    }
    let eps = json(&assert_ok(&run(&["endpoint", "ls", "--network", "front", "-o", "json"])));
    let ips: std::collections::BTreeSet<&str> =
        eps.as_array().unwrap().iter().map(|e| e["ip"].as_str().unwrap()).collect();
    assert_eq!((eps.as_array().unwrap().len(), ips.len()), (600, 600), "every endpoint its own address");
    let h2 = json(&assert_ok(&run(&["endpoint", "ls", "--host", "h2", "-o", "json"])));
    assert_eq!(h2.as_array().unwrap().len(), 200);
    drop(etcd);
}

#[test]
fn etcd_members_lost_and_all_of_etcd_stopped_leave_the_data_path_alone() {
    require_root();
    let p = "obsf";
    let u = underlay(p, 3);
    let cs = containers(p, &["w1", "w2", "w3", "w4", "w5"]);
    // A member of a 3-member etcd cluster on each host's underlay address.
    let members: Vec<(String, String)> = (1..=3).map(|i| (format!("{p}{i}"), format!("192.168.200.1{i}"))).collect();
    let mut etcds: Vec<Etcd> =
        (0..3).map(|i| Etcd::member(u.host(&format!("n{}", i + 1)), &members[i].1, &members[i].0, &members)).collect();
    let url = format!("etcd://{}", members.iter().map(|(_, a)| format!("{a}:2379")).collect::<Vec<_>>().join(","));
    let n1 = u.host("n1");
    etcds[0].wait(n1, &url);
    let st = StateFile::new(
        p,
        &state(
            p,
            &[
                ("w1", "n1", "front", "10.10.0.3"),
                ("w2", "n2", "front", "10.10.0.4"),
                ("w3", "n3", "front", "10.10.0.5"),
            ],
            3,
        ),
    );
    assert_ok(&ob(n1, &["store", "import", st.0.to_str().unwrap(), "--store", &url]));
    let mut dep = Deployment::new(&bin());
    let agents = agents_on(&mut dep, p, &["n1", "n2", "n3"], &url, &["--no-health", "--lease-ttl", "3"]);
    let logs = || agents.iter().map(|a| a.log_text()).collect::<Vec<_>>().join("\n---\n");
    let ping = |from: &Netns, to: &str| from.run("ping", &["-c", "1", "-W", "1", to]).status.success();
    let reach = |what: &str, from: &Netns, to: &str| {
        let t = Instant::now();
        while !ping(from, to) {
            assert!(t.elapsed() < Duration::from_secs(60), "{what}: {to} not reached; the agents' logs:\n{}", logs());
        }
    };
    reach("start", &cs[0], "10.10.0.5");
    let endpoint = |name: &str, host: &str, ip: &str| {
        let ns = format!("{p}-{name}");
        let h = format!("{p}{host}");
        assert_ok(&ob(
            n1,
            &[
                "endpoint",
                "create",
                name,
                "--network",
                "front",
                "--container-netns",
                &ns,
                "--host",
                &h,
                "--ip",
                ip,
                "--store",
                &url,
            ],
        ));
    };

    // One member lost: the store still takes changes, the agents still apply them.
    etcds[2].kill();
    endpoint("w4", "n2", "10.10.0.6");
    reach("one member down", &cs[0], "10.10.0.6");

    // All of etcd stopped for 30 s under a steady ping and an open TCP
    // connection: nothing lost, each agent says so once.
    let _echo = testbed::tcp_echo(&cs[1], "w2", 7600);
    testbed::wait_listening(&cs[1], 7600).unwrap();
    let mut talk = testbed::Talk::open(&cs[0].name, "10.10.0.4:7600".parse().unwrap(), "w1 to w2").unwrap();
    assert_eq!(talk.exchange(0).unwrap(), "w2");
    let pinger = Pinger::start(&cs[0].name, "10.10.0.5", 50);
    let before: Vec<usize> = agents.iter().map(|a| a.log_text().len()).collect();
    etcds[0].kill();
    etcds[1].kill();
    std::thread::sleep(Duration::from_secs(30));
    let (sent, got) = pinger.stop();
    assert_eq!(talk.exchange(1).unwrap(), "w2", "the TCP connection through the outage");
    assert!(sent >= 1000 && sent == got, "{got} of {sent} pings answered while etcd was down");
    for (a, from) in agents.iter().zip(before) {
        let log = a.log_text();
        let outage = &log[from..];
        assert_eq!(outage.matches("lost the watch").count(), 1, "said once: {outage}");
        assert!(outage.matches("forwarding continues").count() <= 2, "once for the watch, once for the read: {outage}");
    }

    // Back (the same members, the same data): the agents read the store
    // again, and what changes now reaches them.
    for i in 0..3 {
        etcds[i]._proc =
            Etcd::spawn(u.host(&format!("n{}", i + 1)), &members[i].1, &members[i].0, &members, &etcds[i].dir.clone());
    }
    etcds[0].wait(n1, &url);
    endpoint("w5", "n3", "10.10.0.7");
    reach("after the outage", &cs[0], "10.10.0.7");
    assert!(agents.iter().all(|a| a.log_text().contains("again")), "{}", logs());
    drop(agents);
    dep.down_all();
    drop(etcds);
}

#[test]
fn an_agent_cut_off_past_a_compaction_reads_the_store_whole() {
    require_root();
    let p = "obsg";
    let u = underlay(p, 2);
    let cs = containers(p, &["w1", "w2", "w3"]);
    let (n1, n2) = (u.host("n1"), u.host("n2"));
    let etcd = Etcd::start(n1, "192.168.200.11", p);
    let url = etcd.url.clone();
    let st = StateFile::new(p, &state(p, &[("w1", "n1", "front", "10.10.0.3"), ("w2", "n2", "front", "10.10.0.4")], 2));
    assert_ok(&ob(n1, &["store", "import", st.0.to_str().unwrap(), "--store", &url]));
    let mut dep = Deployment::new(&bin());
    let agents = agents_on(&mut dep, p, &["n1", "n2"], &url, &["--no-health", "--lease-ttl", "2"]);
    let logs = || agents.iter().map(|a| a.log_text()).collect::<Vec<_>>().join("\n---\n");
    let ping = |from: &Netns, to: &str| from.run("ping", &["-c", "1", "-W", "1", to]).status.success();
    let t = Instant::now();
    while !ping(&cs[1], "10.10.0.3") {
        assert!(t.elapsed() < Duration::from_secs(60), "w2 never reached w1:\n{}", logs());
    }

    // n2 cut off from etcd (its connections reset), the data path untouched.
    let nft = |args: &str| assert!(n2.run("nft", &[args]).status.success(), "nft {args}");
    nft("add table inet obsg");
    nft("add chain inet obsg out { type filter hook output priority 0 ; }");
    nft("add rule inet obsg out tcp dport 2379 reject with tcp reset");

    wait_until("n2's agent failing to read etcd", 30, || {
        agents[1].log_text().contains("forwarding continues on the applied state")
    });

    // Meanwhile: w3 joins, and etcd is compacted past what n2 has seen.
    assert_ok(&ob(
        n1,
        &[
            "endpoint",
            "create",
            "w3",
            "--network",
            "front",
            "--container-netns",
            &format!("{p}-w3"),
            "--host",
            &format!("{p}n1"),
            "--ip",
            "10.10.0.5",
            "--store",
            &url,
        ],
    ));
    let rev = n1.run("etcdctl", &["--endpoints", "http://192.168.200.11:2379", "get", "/", "-w", "json"]);
    let rev = json(&String::from_utf8_lossy(&rev.stdout))["header"]["revision"].as_u64().expect("a revision");
    let o = n1.run("etcdctl", &["--endpoints", "http://192.168.200.11:2379", "compact", &rev.to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(ping(&cs[1], "10.10.0.3"), "n2 forwards while cut off");

    // Back: n2 reads the store whole before it watches again (from the
    // revision it reads, so the compaction cannot bite), and w3 is reached.
    nft("delete table inet obsg");
    let t = Instant::now();
    while !ping(&cs[1], "10.10.0.5") {
        assert!(t.elapsed() < Duration::from_secs(60), "w3 not reached from n2 after the cut:\n{}", logs());
    }
    let log = agents[1].log_text();
    assert!(log.contains("answers again: read it whole") && log.contains("watching"), "{log}");
    assert_eq!(log.matches("lost the watch").count(), 1, "said once: {log}");
    drop(agents);
    dep.down_all();
    drop(etcd);
}

/// A CA, a server certificate for `ip` and a client certificate, made with
/// openssl in `dir`: (ca, server cert, server key, client cert, client key).
fn certificates(dir: &Path, ip: &str) -> [PathBuf; 5] {
    let sh = |script: &str| {
        let o = Command::new("sh").arg("-c").arg(script).current_dir(dir).output().unwrap();
        assert!(o.status.success(), "{script}: {}", text(&o));
    };
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca-key.pem -out ca.pem \
        -days 2 -subj /CN=obsh-ca");
    for (name, ext) in
        [("server", format!("subjectAltName=IP:{ip}")), ("client", "extendedKeyUsage=clientAuth".to_string())]
    {
        sh(&format!(
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}-key.pem -out {name}.csr \
             -subj /CN=obsh-{name} && printf '%s\\n' '{ext}' > {name}.ext && openssl x509 -req -in {name}.csr -CA ca.pem \
             -CAkey ca-key.pem -CAcreateserial -days 2 -out {name}.pem -extfile {name}.ext"
        ));
    }
    ["ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem"].map(|f| dir.join(f))
}

#[test]
fn etcd_over_tls_with_client_certificates() {
    require_root();
    let ns = Netns::new("obsh-etcd");
    let dir = std::env::temp_dir().join("obsh-tls");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let [ca, cert, key, ccert, ckey] = certificates(&dir, "127.0.0.1");
    let data = dir.join("data");
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let child = ns
        .cmd("etcd")
        .args(["--name", "obsh", "--data-dir"])
        .arg(&data)
        .args(["--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls", "https://127.0.0.1:2379"])
        .args(["--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
        .args(["--initial-cluster", "obsh=http://127.0.0.1:2380", "--client-cert-auth", "--trusted-ca-file"])
        .arg(&ca)
        .arg("--cert-file")
        .arg(&cert)
        .arg("--key-file")
        .arg(&key)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _etcd = Proc(child);
    let s = |v: &Path| v.to_str().unwrap().to_string();
    let tls = [
        "--store".to_string(),
        "etcd://127.0.0.1:2379".into(),
        "--etcd-cacert".into(),
        s(&ca),
        "--etcd-cert".into(),
        s(&ccert),
        "--etcd-key".into(),
        s(&ckey),
    ];
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let ex = example();
    let t = Instant::now();
    loop {
        let o = ob(&ns, &[&["store", "import", ex.to_str().unwrap()][..], &tls].concat());
        if o.status.success() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no TLS etcd: {}\n{}",
            text(&o),
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = assert_ok(&ob(&ns, &[&["validate"][..], &tls].concat()));
    let first = "etcd://127.0.0.1:2379/overlay-bpf: ok: 3 hosts, 4 networks, 8 endpoints, 1 services";
    assert_eq!(out.lines().next(), Some(first), "{out}");
    // Without the client certificate the server refuses; plain HTTP reaches nothing.
    let o = ob(&ns, &["validate", "--store", "etcd://127.0.0.1:2379", "--etcd-cacert", &s(&ca)]);
    assert_eq!(o.status.code(), Some(2), "{:?} {}", o.status, text(&o));
    let o = ob(&ns, &["validate", "--store", "etcd://127.0.0.1:2379"]);
    unreachable(&o, "127.0.0.1:2379");
    refused(
        &ob(&ns, &["validate", "--store", "etcd://127.0.0.1:2379", "--etcd-cert", &s(&ccert)]),
        "--etcd-cert and --etcd-key go together: --etcd-cert given alone",
    );
    refused(
        &ob(&ns, &["validate", "--store", "etcd://127.0.0.1:2379", "--etcd-cacert", "/nonexistent/ca.pem"]),
        "--etcd-cacert /nonexistent/ca.pem: No such file or directory (os error 2)",
    );
    // The environment works as the flags do.
    let o = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(bin())
        .args(["validate", "--store", "etcd://127.0.0.1:2379"])
        .env("OVERLAY_BPF_ETCD_CACERT", &ca)
        .env("OVERLAY_BPF_ETCD_CERT", &ccert)
        .env("OVERLAY_BPF_ETCD_KEY", &ckey)
        .output()
        .unwrap();
    assert_ok(&o);
    drop(_etcd);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_store_bigger_than_one_grpc_message_is_read_in_pages() {
    require_root();
    let ns = Netns::new("obsi-etcd");
    let etcd = Etcd::start(&ns, "127.0.0.1", "obsi");
    // 30,000 endpoints: about 5.6 MB of keys, past gRPC's 4 MiB message.
    let mut y = String::from("version: 1\nhosts:\n  - {name: h1, address: 192.168.9.1}\nnetworks:\n");
    y += "  - {name: big, attachable: true, subnets: [{subnet: 10.80.0.0/16}]}\nendpoints:\n";
    for i in 0..30_000u32 {
        y += &format!("  - {{name: e{i}, host: h1, network: big, netns: e{i}}}\n");
    }
    let st = StateFile::new("obsi", &y);
    assert_ok(&ob(&ns, &["store", "import", st.0.to_str().unwrap(), "--store", &etcd.url]));
    let out = assert_ok(&ob(&ns, &["validate", "--store", &etcd.url]));
    let first = format!("{}/overlay-bpf: ok: 1 hosts, 1 networks, 30000 endpoints, 0 services", etcd.url);
    assert_eq!(out.lines().next(), Some(first.as_str()));
    let exported = assert_ok(&ob(&ns, &["store", "export", "-o", "json", "--store", &etcd.url]));
    assert_eq!(json(&exported)["endpoints"].as_array().unwrap().len(), 30_000);
    drop(etcd);
}
