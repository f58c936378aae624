//! Service VIPs end to end, as a user tries them: HTTP servers as backends
//! on three hosts, `curl` through the VIP from clients and from a backend.

mod common;

use std::{collections::BTreeMap, net::Ipv4Addr};

use common::*;

const VIP: &str = "10.10.0.100";

/// name, host, ip; w* back the service, c* are clients.
const EPS: [(&str, &str, &str); 5] = [
    ("w1", "n1", "10.10.0.21"),
    ("w2", "n2", "10.10.0.22"),
    ("w3", "n3", "10.10.0.23"),
    ("c1", "n1", "10.10.0.31"),
    ("c3", "n3", "10.10.0.33"),
];

fn svc_state(p: &str, backends: &[&str]) -> String {
    let mut y = front_state(p, &EPS);
    y += &format!(
        "services:\n  - name: web\n    network: front\n    vip: {VIP}\n    ports: [{{protocol: tcp, target: 8080}}]\n    backends: [{}]\n",
        backends.join(", ")
    );
    y
}

struct World {
    p: &'static str,
    dep: Deployment,
    webs: Vec<Web>,
    cs: Vec<Netns>,
    _u: Underlay,
    st: StateFile,
}

impl World {
    fn new(p: &'static str) -> World {
        require_root();
        let st = StateFile::new(p, &svc_state(p, &["w1", "w2", "w3"]));
        let u = Underlay::new(
            p,
            &[
                ("n1", Ipv4Addr::new(192, 168, 200, 11)),
                ("n2", Ipv4Addr::new(192, 168, 200, 12)),
                ("n3", Ipv4Addr::new(192, 168, 200, 13)),
            ],
        );
        let cs: Vec<Netns> = EPS.iter().map(|(n, ..)| Netns::new(&format!("{p}-{n}"))).collect();
        let mut dep = Deployment::new(&bin());
        for h in ["n1", "n2", "n3"] {
            assert_ok(&dep.up(&st.0, &format!("{p}{h}"), &format!("{p}-{h}")));
        }
        let webs = (0..3).map(|i| Web::start(&cs[i], EPS[i].0, 8080)).collect();
        let w = World { p, dep, webs, cs, _u: u, st };
        wait_until("the HTTP servers", 60, || {
            (0..3).all(|i| {
                w.c("c1")
                    .run("curl", &["-s", "--max-time", "1", &format!("http://{}:8080/", EPS[i].2)])
                    .status
                    .success()
            })
        });
        w
    }

    fn c(&self, name: &str) -> &Netns {
        self.cs.iter().find(|c| c.name == format!("{}-{name}", self.p)).unwrap()
    }

    fn reapply(&mut self, backends: &[&str]) {
        self.st.write(&svc_state(self.p, backends));
        let p = self.p;
        for h in ["n1", "n2", "n3"] {
            assert_ok(&self.dep.up(&self.st.0, &format!("{p}{h}"), &format!("{p}-{h}")));
        }
    }
}

/// `n` requests on new connections from `ns`; answers counted by backend.
fn spread(ns: &Netns, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let url = format!("http://{VIP}:8080/");
    for _ in 0..n {
        for body in curl(ns, &[&url]) {
            *seen.entry(body).or_insert(0) += 1;
        }
    }
    seen
}

#[test]
fn a_vip_spreads_keeps_client_addresses_hairpins_and_drops_removed_backends() {
    let mut w = World::new("obts");
    // New connections from a client reach every backend; all are answered.
    let seen = spread(w.c("c3"), 30);
    eprintln!("30 requests from c3 through the VIP: {seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 30, "every request answered: {seen:?}");
    assert_eq!(seen.len(), 3, "every backend answered: {seen:?}");
    // Each backend saw the client's own address.
    for web in &w.webs {
        let clients = web.clients();
        // (c1's direct readiness probe is in the log too.)
        assert!(clients.iter().any(|c| c == "10.10.0.33"), "c3's requests reached it: {clients:?}");
        assert!(clients.iter().all(|c| c == "10.10.0.33" || c == "10.10.0.31"), "a backend saw {clients:?}");
    }
    // One keep-alive connection stays on one backend.
    let url = format!("http://{VIP}:8080/");
    let bodies = curl(w.c("c1"), &[&url, &url, &url, &url]);
    assert_eq!(bodies.len(), 4, "{bodies:?}");
    assert!(bodies.iter().all(|b| *b == bodies[0]), "one connection, one backend: {bodies:?}");
    // Hairpin: a backend calling its own VIP, sometimes picked itself.
    let from_w1 = spread(w.c("w1"), 20);
    assert_eq!(from_w1.values().sum::<usize>(), 20, "hairpin: {from_w1:?}");
    assert!(from_w1.contains_key("w1"), "w1 picked itself at least once in 20: {from_w1:?}");
    // Per-backend counters in status.
    let st = status(&w.dep, w.p, "n3");
    assert!(counter(&st, "tc_endpoint_egress", "encapsulated") > 0);

    // w2 leaves the service: no new flow reaches it.
    w.reapply(&["w1", "w3"]);
    let after = spread(w.c("c3"), 30);
    eprintln!("after removing w2: {after:?}");
    assert_eq!(after.values().sum::<usize>(), 30, "{after:?}");
    assert!(!after.contains_key("w2"), "a removed backend got new flows: {after:?}");
}
