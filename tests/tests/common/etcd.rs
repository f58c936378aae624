//! A real etcd for the tests (Debian's etcd-server), started in a
//! namespace and killed by PID on drop.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::*;

/// An etcd member in namespace `ns` on `addr` (ports 2379/2380), its data in
/// a temporary directory; killed by PID and removed on drop.
pub struct Etcd {
    pub _proc: Proc,
    pub dir: PathBuf,
    pub url: String,
}

impl Etcd {
    /// A one-member cluster.
    pub fn start(ns: &Netns, addr: &str, name: &str) -> Etcd {
        let etcd = Etcd::member(ns, addr, name, &[(name.to_string(), addr.to_string())]);
        etcd.wait(ns, &etcd.url);
        etcd
    }

    /// Member `name` of the cluster `members` (name, address); not waited
    /// for: a member answers once a majority runs.
    pub fn member(ns: &Netns, addr: &str, name: &str, members: &[(String, String)]) -> Etcd {
        let dir = std::env::temp_dir().join(format!("{name}-etcd"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let etcd = Etcd { _proc: Etcd::spawn(ns, addr, name, members, &dir), dir, url: format!("etcd://{addr}:2379") };
        etcd
    }

    pub fn spawn(ns: &Netns, addr: &str, name: &str, members: &[(String, String)], dir: &Path) -> Proc {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("log")).unwrap();
        let (client, peer) = (format!("http://{addr}:2379"), format!("http://{addr}:2380"));
        let cluster: Vec<String> = members.iter().map(|(n, a)| format!("{n}=http://{a}:2380")).collect();
        let child = ns
            .cmd("etcd")
            .args(["--name", name, "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster.join(",")])
            // Imports are one transaction: let a big one through.
            .args(["--max-txn-ops", "100000", "--max-request-bytes", "33554432"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian etcd-server; `cargo xtask setup` installs it)");
        Proc(child)
    }

    /// Up when the store `url` answers: empty (exit 1) or holding a cluster
    /// (exit 0), not unreachable (exit 2).
    pub fn wait(&self, ns: &Netns, url: &str) {
        let t = Instant::now();
        loop {
            let o = ob(ns, &["store", "export", "--store", url]);
            if o.status.code() != Some(2) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "etcd did not answer: {}\n{}", text(&o), self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the member (SIGKILL, as a crash).
    pub fn kill(&mut self) {
        let _ = self._proc.0.kill();
        let _ = self._proc.0.wait();
    }

    pub fn log(&self) -> String {
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
pub fn ob(ns: &Netns, args: &[&str]) -> Output {
    ob_as(&bin(), ns, args)
}

/// `ob` with another `overlay-bpf` binary (the previous release's).
pub fn ob_as(binary: &Path, ns: &Netns, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", &ns.name]).arg(binary).args(args).stdin(Stdio::null()).output().unwrap()
}
