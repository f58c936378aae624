//! Hitless operation: a steady ping between containers on two hosts loses
//! nothing while `up` re-applies the same file, re-applies a changed one, is
//! given an invalid one (refused, exit 1, nothing changed), and while the
//! agent is killed with SIGKILL and started again (the pinned data path keeps
//! forwarding; the new agent adopts it: same links, same programs).

mod common;

use std::{thread::sleep, time::Duration};

use common::*;

#[test]
fn steady_traffic_loses_nothing_through_reapplies_a_bad_file_and_an_agent_kill() {
    require_root();
    let p = "obtk";
    let eps = [("a1", "n1", "front", "10.10.0.11"), ("a2", "n2", "front", "10.10.0.12")];
    let mut more = eps.to_vec();
    more.push(("a3", "n1", "front", "10.10.0.13"));
    let (original, changed) = (state(p, &eps, 2), state(p, &more, 2));
    let st = StateFile::new(p, &original);
    let _u = underlay(p, 2);
    let cs = containers(p, &["a1", "a2", "a3"]);
    let mut dep = Deployment::new(&bin());
    let (n1, n2) = (format!("{p}n1"), format!("{p}n2"));
    for h in ["n1", "n2"] {
        assert_ok(&dep.up(&st.0, &format!("{p}{h}"), &format!("{p}-{h}")));
    }
    assert!(cs[0].run("ping", &["-c", "1", "-W", "2", "10.10.0.12"]).status.success());

    // 100 pings a second until stopped.
    let pinger = Pinger::start(&cs[0].name, "10.10.0.12", 100);
    sleep(Duration::from_millis(300));

    // Re-apply the same file, then a changed one (a3 added on n1), on both hosts.
    for yaml in [&original, &changed] {
        st.write(yaml);
        assert_ok(&dep.up(&st.0, &n1, &format!("{p}-n1")));
        assert_ok(&dep.up(&st.0, &n2, &format!("{p}-n2")));
    }
    // An invalid file: refused, exit 1, the maps and links as they were.
    let endpoints = bpftool_dump(&pins(p, "n1").join("maps/OB_ENDPOINTS_V1"));
    let links = link_ids(&status(&dep, p, "n1"));
    st.write(&changed.replace("vni: 5001", "vni: 0"));
    let o = dep.up(&st.0, &n1, &format!("{p}-n1"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(bpftool_dump(&pins(p, "n1").join("maps/OB_ENDPOINTS_V1")), endpoints, "maps changed");
    assert_eq!(link_ids(&status(&dep, p, "n1")), links, "links changed");

    // The agent: started, killed with SIGKILL, started again.
    st.write(&changed);
    let agent = Agent::start(&mut dep, &st.0, &n1, &format!("{p}-n1"), &["-v"]);
    wait_until("the agent's first apply", 30, || agent.log_text().contains("applied; watching"));
    let programs = |st: &serde_json::Value| -> Vec<u64> {
        st["links"].as_array().unwrap().iter().filter_map(|l| l["prog_id"].as_u64()).collect()
    };
    let progs = programs(&status(&dep, p, "n1"));
    drop(agent); // SIGKILL
    sleep(Duration::from_millis(500));
    let agent = Agent::start(&mut dep, &st.0, &n1, &format!("{p}-n1"), &["-v"]);
    wait_until("the new agent's apply", 30, || agent.log_text().contains("applied; watching"));
    let after = status(&dep, p, "n1");
    assert_eq!(link_ids(&after), links, "the new agent adopted the pinned links");
    assert_eq!(programs(&after), progs, "and the programs behind them");
    sleep(Duration::from_millis(300));
    drop(agent);

    let (sent, got) = pinger.stop();
    eprintln!(
        "steady ping through 4 re-applies, a refused file and an agent SIGKILL + restart: {sent} sent, {got} received"
    );
    assert!(sent >= 200, "{sent}");
    assert_eq!(sent, got, "packets lost");
}
