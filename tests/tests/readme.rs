//! The README's tour, run as it is written: its shell blocks, in order,
//! with this build's binary. A tour that no longer works fails here before
//! a newcomer meets it. Host tier only (the VMs carry no README tools).

mod common;

use std::process::Command;

use common::*;

/// The shell blocks of the README between two headings.
fn blocks(readme: &str, from: &str, to: &str) -> Vec<String> {
    let section = &readme[readme.find(from).expect(from)..readme.find(to).expect(to)];
    section.split("```sh\n").skip(1).map(|b| b[..b.find("```").expect("a closed block")].to_string()).collect()
}

/// Runs the tour's last block (its clean-up) when the test ends, passed or not.
struct CleanUp(String);

impl Drop for CleanUp {
    fn drop(&mut self) {
        // The tour's web server, by its PID in the tour's namespace.
        let _ = Command::new("bash").args(["-c", "ip netns pids tour-c2 2>/dev/null | xargs -r kill"]).output();
        let _ = Command::new("bash").arg("-c").arg(&self.0).output();
        let _ = std::fs::remove_file("/tmp/tour.yaml");
        let _ = std::fs::remove_dir_all("/tmp/tour-www");
    }
}

#[test]
fn the_readme_tour_runs_as_written() {
    require_root();
    let readme = include_str!("../../README.md");
    let mut b = blocks(readme, "### Two hosts in namespaces", "### Docker on two hosts");
    assert_eq!(b.len(), 6, "the tour's blocks: set-up, state, traffic, inspection, scale to zero, clean-up");
    let ob = format!("OB={}", bin().display());
    let set_ob = b[0].lines().next().expect("the tour starts by naming the binary").to_string();
    assert!(set_ob.starts_with("OB="), "{set_ob}");
    for x in b.iter_mut() {
        *x = x.replace(&set_ob, &ob);
    }
    // The clean-up kills the web server it started, which `kill %1` names
    // in an interactive shell: here, the script's own jobs.
    let clean = format!("{ob}\n{}", b[5].replace("kill %1", "kill $(jobs -p) 2>/dev/null"));
    let _guard = CleanUp(clean.replace("kill $(jobs -p) 2>/dev/null;", ""));
    let script = format!("{}\n{clean}", b[..5].join("\n"));
    let out = Command::new("bash").arg("-c").arg(&script).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let seen = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("2 packets transmitted, 2 received"), "c1 pings c2 across hosts:\n{seen}");
    assert_eq!(stdout.matches("hello from c2").count(), 2, "through the VIP and the mesh:\n{seen}");
    assert!(stdout.contains("OB_ENDPOINTS_V1") || stdout.contains("\"vni\""), "bpftool's dump:\n{seen}");
    let warning = "backend \"web\" matches no endpoint or alias on network \"app\"";
    assert!(stderr.contains(&format!("warning: /tmp/tour.yaml: services[0] (web): {warning}")), "{seen}");
    assert!(stderr.contains("curl: (7) Failed to connect to 192.168.77.11 port 8080"), "refused at once:\n{seen}");
    assert!(
        !String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout)
            .contains("tour-"),
        "the clean-up left namespaces"
    );
}
