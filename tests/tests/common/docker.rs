//! Docker engines for the tests (Debian's docker.io 20.10), one per host of a
//! namespace cluster: dockerd with its own data root, exec root and API
//! socket, no bridge and no iptables, inside the host's network namespace
//! and a private mount namespace whose tmpfs on /run/docker/plugins is its
//! own (the agent serving its plugin runs in that mount namespace too).
//! Images: a busybox-static tree, `docker import`ed (no registry).
//! dockerd runs with `--live-restore`, as the docs ask of hosts with the
//! plugin: containers keep running while dockerd restarts.
//! Processes are stopped by PID on drop.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::*;

/// Debian's client, which matches the engine (another may shadow it on PATH).
pub const DOCKER: &str = "/usr/bin/docker";
pub const IMAGE: &str = "ob-busybox:1";

pub struct DockerEngine {
    /// `sleep` holding the private mount namespace.
    holder: Proc,
    dockerd: Option<Proc>,
    pub dir: PathBuf,
    pub netns: String,
    /// The busybox image is in (imported at dockerd's first start).
    imported: bool,
}

impl DockerEngine {
    /// An engine named `name` (a prefix of its own) in namespace `netns`,
    /// running.
    pub fn start(name: &str, netns: &str) -> DockerEngine {
        let mut e = DockerEngine::new(name, netns);
        e.start_dockerd();
        e
    }

    /// The engine's mount namespace and directories, dockerd not started
    /// yet (`start_dockerd`): how a host boots, the plugin first.
    pub fn new(name: &str, netns: &str) -> DockerEngine {
        let dir = std::env::temp_dir().join(format!("{name}-docker"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mkdir -p /run/docker/plugins && mount -t tmpfs overlay-bpf-test /run/docker/plugins && exec sleep 100000")
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let pid = holder.id();
        let t = Instant::now();
        while !std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap_or_default()
            .contains(" /run/docker/plugins ")
        {
            assert!(t.elapsed() < Duration::from_secs(10), "the mount namespace for {name} did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        DockerEngine { holder: Proc(holder), dockerd: None, dir, netns: netns.to_string(), imported: false }
    }

    /// `nsenter` into the engine's mount namespace: how the agent serving
    /// its plugin is started.
    pub fn nsenter(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.0.id()));
        c
    }

    /// The plugin's socket as this engine's mount namespace shows it.
    pub fn plugin_socket(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/run/docker/plugins/overlay-bpf.sock", self.holder.0.id()))
    }

    pub fn socket(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    pub fn start_dockerd(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("dockerd.log")).unwrap();
        let child = self
            .nsenter()
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("/usr/sbin/dockerd")
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .args(["-H", &self.socket()])
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false", "--live-restore"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("dockerd (Debian docker.io; `cargo xtask setup` installs it)");
        self.dockerd = Some(Proc(child));
        let t = Instant::now();
        while !self.docker(&["version"]).status.success() {
            assert!(t.elapsed() < Duration::from_secs(60), "dockerd did not answer:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        if !self.imported {
            self.import_busybox();
            self.imported = true;
        }
    }

    /// dockerd's PID, while it runs.
    pub fn dockerd_pid(&self) -> Option<i32> {
        self.dockerd.as_ref().map(|d| d.0.id() as i32)
    }

    /// Stops dockerd (SIGTERM, then SIGKILL after 20 s), which stops its
    /// containerd.
    pub fn stop_dockerd(&mut self) {
        if let Some(mut d) = self.dockerd.take() {
            // SAFETY: a signal to the child we started, by its PID.
            unsafe { libc::kill(d.0.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = d.0.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = d.0.kill();
            let _ = d.0.wait();
        }
    }

    /// Kills dockerd with SIGKILL, as a crash would: its containers' shims
    /// and processes stay. Returns once its containerd, which dies with it,
    /// is gone: a dockerd started before that finds it "still running" and
    /// waits for a socket that never comes.
    pub fn kill_dockerd(&mut self) {
        let containerd = self.containerd_pid();
        if let Some(mut d) = self.dockerd.take() {
            let _ = d.0.kill();
            let _ = d.0.wait();
        }
        if let Some(pid) = containerd {
            wait_until("dockerd's containerd to exit", 30, || !Path::new(&format!("/proc/{pid}")).exists());
        }
    }

    /// The containerd this engine's dockerd started, while it runs.
    fn containerd_pid(&self) -> Option<i32> {
        let pid = std::fs::read_to_string(self.dir.join("exec/containerd/containerd.pid")).ok()?.trim().parse().ok()?;
        // Only ours: its command line names this engine's directory.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline).contains(&*self.dir.to_string_lossy()).then_some(pid)
    }

    /// `docker ARGS` against this engine, cut off after 2 minutes (a call
    /// Docker retries against a plugin that is gone would hang the test).
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["120", DOCKER, "-H", &self.socket()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `docker ARGS`, which must succeed; its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        assert_ok(&self.docker(args)).trim().to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// The busybox-static tree as an image.
    fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("www")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
        for a in [
            "sh", "ping", "ip", "nc", "wget", "httpd", "sleep", "cat", "echo", "ls", "hostname", "true", "ifconfig",
            "timeout",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
        }
        let mut tar =
            Command::new("tar").arg("-C").arg(&root).args(["-c", "."]).stdout(Stdio::piped()).spawn().unwrap();
        let o = Command::new(DOCKER)
            .args(["-H", &self.socket(), "import", "-", IMAGE])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar of the busybox tree");
        assert_ok(&o);
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        if self.dockerd.is_some() {
            // Containers first (their sandboxes leave the plugin's networks),
            // then dockerd, which stops its containerd.
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.stop_dockerd();
        // With --live-restore, a stopped dockerd may leave its containerd.
        if let Some(pid) = self.containerd_pid() {
            // SAFETY: a signal to this engine's containerd, by its PID.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.holder.0.kill();
        let _ = self.holder.0.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
