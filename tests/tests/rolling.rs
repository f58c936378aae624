//! A rolling upgrade's middle: an agent of the previous release (commit
//! 4faeb4b, which refuses fields it does not know) and an agent of this
//! release share one etcd. Each release's CLI writes changes; both agents
//! apply every one of them and keep running, and the previous release's CLI
//! reads the whole store as this release left it. Host tier only: the VMs
//! carry no etcd.

mod common;

use std::{path::Path, process::Command, process::Output};

use common::{etcd::*, *};
use testbed::{tcp_echo, wait_listening, Talk};

const P: &str = "obrl";

/// The previous release's `overlay-bpf ARGS` inside namespace `ns`.
fn previous(ns: &Netns, args: &[&str]) -> Output {
    ob_as(&previous_bin(), ns, args)
}

fn ping(from: &Netns, to: &str) -> bool {
    from.run("ping", &["-c", "1", "-W", "1", to]).status.success()
}

#[test]
fn agents_of_two_releases_share_a_store_while_each_writes() {
    require_root();
    let u = underlay_wire_like(P, 2);
    let cs = containers(P, &["w1", "w2", "x1", "y1"]);
    let n1 = u.host("n1");
    let etcd = Etcd::start(n1, "192.168.200.11", P);
    let url = etcd.url.clone();
    let start = state(P, &[("w1", "n1", "front", "10.10.0.3"), ("w2", "n2", "front", "10.10.0.4")], 2);
    let start = StateFile::new(P, &start);
    // The cluster as the previous release made it.
    assert_ok(&previous(n1, &["store", "import", start.0.to_str().unwrap(), "--store", &url]));

    // n1 still runs the previous release; n2 was upgraded.
    let flags = ["--health-interval", "1", "--lease-ttl", "2"];
    let (h1, h2) = (format!("{P}n1"), format!("{P}n2"));
    let mut old = Deployment::new(&previous_bin());
    let mut new = Deployment::new(&bin());
    let mut old_agent = Agent::start_with(&mut old, &["--store", &url], &h1, &format!("{P}-n1"), &flags);
    let mut new_agent = Agent::start_with(&mut new, &["--store", &url], &h2, &format!("{P}-n2"), &flags);
    let logs = |a: &Agent, b: &Agent| format!("previous:\n{}\n---\nthis release:\n{}", a.log_text(), b.log_text());
    wait_until("w1 and w2 reach each other", 60, || ping(&cs[0], "10.10.0.4") && ping(&cs[1], "10.10.0.3"));

    // This release writes: an endpoint on n2 and a service over it. The
    // previous release's agent applies both: w1 on n1 reaches x1, directly
    // and through the VIP its maps now hold.
    let create = |host: &str, name: &str, ip: &str| {
        let ns = format!("{P}-{name}");
        let h = format!("{P}{host}");
        ["endpoint", "create", name, "--network", "front", "--container-netns", &ns, "--ip", ip, "--host", &h]
            .map(str::to_string)
            .to_vec()
    };
    let args = |v: &[String], url: &str| -> Vec<String> {
        v.iter().cloned().chain(["--store".to_string(), url.to_string()]).collect()
    };
    let run = |out: fn(&Netns, &[&str]) -> Output, v: Vec<String>| {
        assert_ok(&out(n1, &v.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    run(ob, args(&create("n2", "x1", "10.10.0.6"), &url));
    let service = ["service", "create", "api", "--network", "front", "--vip", "10.10.0.100"];
    let service = [&service[..], &["--publish", "target=9000", "--backend", "x1"]].concat();
    run(ob, args(&service.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &url));
    wait_until("w1 on the previous release's host reaches x1", 30, || ping(&cs[0], "10.10.0.6"));
    let _server = tcp_echo(&cs[2], "x1", 9000);
    wait_listening(&cs[2], 9000).unwrap();
    let mut talk = None;
    wait_until("w1 reaches the VIP the previous release's agent applied", 30, || {
        talk = Talk::open(&cs[0].name, "10.10.0.100:9000".parse().unwrap(), "w1 to api's VIP").ok();
        talk.is_some()
    });
    assert_eq!(talk.unwrap().exchange(0).unwrap(), "x1");

    // The previous release writes: an endpoint on n1, which this release's
    // agent applies (x1 on n2 reaches y1).
    run(previous, args(&create("n1", "y1", "10.10.0.7"), &url));
    wait_until("x1 on this release's host reaches y1", 30, || ping(&cs[2], "10.10.0.7"));

    // Both agents run on; the previous release's CLI reads the store whole,
    // this release's agent's presence included.
    assert!(old_agent.running() && new_agent.running(), "{}", logs(&old_agent, &new_agent));
    let hosts = json(&assert_ok(&previous(n1, &["host", "ls", "-o", "json", "--store", &url])));
    let alive: Vec<(&str, bool)> =
        hosts.as_array().unwrap().iter().map(|h| (h["name"].as_str().unwrap(), h["alive"] == true)).collect();
    assert_eq!(alive, [(h1.as_str(), true), (h2.as_str(), true)], "{hosts}");
    let export = assert_ok(&previous(n1, &["store", "export", "--store", &url]));
    let exported = StateFile::new(&format!("{P}-export"), &export);
    let endpoints: Vec<String> = endpoint_names(&exported.0);
    assert_eq!(endpoints, ["w1", "w2", "x1", "y1"]);
    drop((old_agent, new_agent));
    old.down_all();
    new.down_all();
    drop(etcd);
}

/// The endpoints' names in a state file, as `validate -o json` of this
/// release resolves them.
fn endpoint_names(state: &Path) -> Vec<String> {
    let v =
        json(&assert_ok(&Command::new(bin()).args(["validate", "-o", "json", "--state"]).arg(state).output().unwrap()));
    let mut names: Vec<String> =
        v["endpoints"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}
