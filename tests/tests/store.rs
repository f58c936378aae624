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

use common::*;

/// An etcd member in namespace `ns` on `addr` (ports 2379/2380), its data in
/// a temporary directory; killed by PID and removed on drop.
struct Etcd {
    _proc: Proc,
    dir: PathBuf,
    url: String,
}

impl Etcd {
    fn start(ns: &Netns, addr: &str, name: &str) -> Etcd {
        let dir = std::env::temp_dir().join(format!("{name}-etcd"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let (client, peer) = (format!("http://{addr}:2379"), format!("http://{addr}:2380"));
        let child = ns
            .cmd("etcd")
            .args(["--name", name, "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("{name}={peer}")])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian etcd-server; `cargo xtask setup` installs it)");
        let etcd = Etcd { _proc: Proc(child), dir, url: format!("etcd://{addr}:2379") };
        // Up when the store answers: empty (exit 1), not unreachable (exit 2).
        let t = Instant::now();
        loop {
            let o = ob(ns, &["store", "export", "--store", &etcd.url]);
            if o.status.code() == Some(1) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "etcd did not answer: {}\n{}", text(&o), etcd.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        etcd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // The process before its data (Proc's own drop runs after this body).
        let _ = self._proc.0.kill();
        let _ = self._proc.0.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `overlay-bpf ARGS` inside namespace `ns`.
fn ob(ns: &Netns, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", &ns.name]).arg(bin()).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Exit 1 and stderr holding every piece of `want`.
fn refused(o: &Output, want: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", text(o));
    for w in want {
        assert!(err.contains(w), "missing {w:?} in:\n{err}");
    }
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

    refused(&ob(&ns, &["store", "export", "--store", url]), &["holds no cluster yet", "store import FILE --store"]);
    let out = assert_ok(&ob(&ns, &["store", "import", ex, "--store", url]));
    assert!(out.contains("imported") && out.contains("3 hosts, 3 networks, 6 endpoints, 1 services"), "{out}");
    refused(
        &ob(&ns, &["store", "import", ex, "--store", url]),
        &["already holds a cluster (3 hosts, 3 networks, 6 endpoints, 1 services)", "--replace"],
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
    assert!(ls.lines().any(|l| l.contains("extra") && l.contains("4099") && l.contains("10.0.9.0/24")), "{ls}");
    refused(
        &ob(&ns, &["network", "create", "--subnet", "10.0.9.128/25", "other", "--store", url]),
        &["10.0.9.128/25", "10.0.9.0/24"],
    );
    assert_ok(&ob(&ns, &["network", "rm", "extra", "--store", url]));
    assert_eq!(assert_ok(&ob(&ns, &["store", "export", "--store", url])), exported, "back to the import");

    // The flags: one store option; a store that is not there; a scheme that is not a store.
    refused(&ob(&ns, &["validate", "--state", ex, "--store", url]), &["not both"]);
    let o = ob(&ns, &["validate", "--store", "etcd://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach etcd at 127.0.0.1:1"), "{}", text(&o));
    refused(&ob(&ns, &["validate", "--store", "consul://127.0.0.1:8500"]), &["consul:// is not a store"]);
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
    let ns = Netns::new("obsb-etcd");
    let etcd = Etcd::start(&ns, "127.0.0.1", "obsb");
    let url = etcd.url.clone();
    let base = StateFile::new("obsb", "version: 1\nhosts:\n  - {name: h1, address: 192.168.9.1}\n");
    assert_ok(&ob(&ns, &["store", "import", base.0.to_str().unwrap(), "--store", &url]));

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
    refused(&lost.1, &["10.60.0.0/2"]);

    let v = json(&assert_ok(&ob(&ns, &["store", "export", "-o", "json", "--store", &url])));
    let nets = v["networks"].as_array().unwrap();
    assert_eq!(nets.len(), 9, "{v}");
    let vnis: std::collections::BTreeSet<u64> = nets.iter().map(|n| n["vni"].as_u64().unwrap()).collect();
    assert_eq!(vnis.len(), 9, "every VNI once: {vnis:?}");
    drop(etcd);
}

#[test]
fn agents_apply_what_the_store_says_as_it_changes() {
    require_root();
    let p = "obsc";
    let u = underlay(p, 3);
    let cs = containers(p, &["w1", "w2", "w3"]);
    let etcd = Etcd::start(u.host("n1"), "192.168.200.11", p);
    let n1 = u.host("n1");
    let two = state(p, &[("w1", "n1", "front", "10.10.0.3"), ("w2", "n2", "front", "10.10.0.4")], 3);
    let three = state(
        p,
        &[("w1", "n1", "front", "10.10.0.3"), ("w2", "n2", "front", "10.10.0.4"), ("w3", "n3", "front", "10.10.0.5")],
        3,
    );
    let (two, three) = (StateFile::new(p, &two), StateFile::new(&format!("{p}-3"), &three));
    assert_ok(&ob(n1, &["store", "import", two.0.to_str().unwrap(), "--store", &etcd.url]));

    let mut dep = Deployment::new(&bin());
    let agents: Vec<Agent> = ["n1", "n2", "n3"]
        .iter()
        .map(|h| {
            Agent::start_with(
                &mut dep,
                &["--store", &etcd.url],
                &format!("{p}{h}"),
                &format!("{p}-{h}"),
                &["--no-health"],
            )
        })
        .collect();
    let ping = |from: &Netns, to: &str| from.run("ping", &["-c", "1", "-W", "1", to]).status.success();
    let logs = || agents.iter().map(|a| a.log_text()).collect::<Vec<_>>().join("\n---\n");
    let t = Instant::now();
    while !ping(&cs[0], "10.10.0.4") {
        assert!(t.elapsed() < Duration::from_secs(60), "w1 never reached w2; the agents' logs:\n{}", logs());
    }
    assert!(!ping(&cs[0], "10.10.0.5"), "w3 is not in the store yet");

    // A change to the store reaches every agent through its watch.
    assert_ok(&ob(n1, &["store", "import", three.0.to_str().unwrap(), "--replace", "--store", &etcd.url]));
    let t = Instant::now();
    while !(ping(&cs[0], "10.10.0.5") && ping(&cs[1], "10.10.0.5")) {
        assert!(t.elapsed() < Duration::from_secs(30), "w3 not reached from w1 and w2; the agents' logs:\n{}", logs());
    }
    assert!(agents[2].log_text().contains("re-applied"), "{}", logs());
    drop(agents);
    dep.down_all();
    drop(etcd);
}
