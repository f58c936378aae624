//! qemu guests on a private L2: a namespace of our own holding a bridge and
//! one tap per VM. Each VM's serial console is qemu's stdin/stdout: the host
//! writes steps, the guest's init answers with result lines (see init.sh).

use std::{
    io::{BufRead, BufReader, Write},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{channel, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::kernel::Kernel;
use crate::{testbed::Netns, util::interrupted};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG (software emulation: KVM is absent or its probe boot did not finish)",
        }
    }
}

/// KVM when /dev/kvm opens and a probe guest boots under it within a few
/// seconds (some hosts offer /dev/kvm but cannot run such guests); TCG
/// otherwise.
pub fn detect_accel(kernel: &Kernel, probe_image: &Path, logs: &Path) -> Accel {
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return Accel::Tcg;
    }
    let spec = VmSpec {
        name: "kvm-probe".into(),
        kernel: kernel.clone(),
        image: probe_image.to_path_buf(),
        accel: Accel::Kvm,
        memory_mb: 256,
        cpus: 1,
        net: None,
        extra_cmdline: "ob.probe=1".into(),
        log: logs.join("kvm-probe.log"),
    };
    match Vm::boot(&spec, Duration::from_secs(8)) {
        Ok(_) => Accel::Kvm,
        Err(_) => Accel::Tcg,
    }
}

/// A guest's NIC: a tap in `lab`, and its address on the L2.
pub struct NetSpec {
    pub lab: String,
    pub tap: String,
    pub mac: String,
    pub ip_cidr: String,
}

pub struct VmSpec {
    pub name: String,
    pub kernel: Kernel,
    pub image: PathBuf,
    pub accel: Accel,
    pub memory_mb: u32,
    pub cpus: u32,
    pub net: Option<NetSpec>,
    pub extra_cmdline: String,
    /// Everything the console printed goes here too.
    pub log: PathBuf,
}

/// A running guest; killed by PID when dropped.
pub struct Vm {
    pub name: String,
    /// `uname -r` as the guest reported it.
    pub release: String,
    pub boot_secs: f64,
    started: Instant,
    log: PathBuf,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    token: String,
    seq: u32,
}

/// How a step ended, and what it printed.
pub struct StepOutcome {
    pub passed: bool,
    pub status: String,
    pub output: Vec<String>,
}

fn token() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Vm {
    /// Starts qemu and waits for the guest's READY line.
    pub fn boot(spec: &VmSpec, timeout: Duration) -> Result<Vm> {
        let mut vm = Vm::spawn(spec)?;
        vm.wait_ready(timeout)?;
        Ok(vm)
    }

    /// Starts qemu. The calling thread must outlive the VM: qemu is killed
    /// when the thread that started it ends (PR_SET_PDEATHSIG), which is what
    /// keeps a killed xtask from leaving VMs behind.
    pub fn spawn(spec: &VmSpec) -> Result<Vm> {
        let token = token();
        let mut cmdline = format!(
            "console=ttyS0 quiet loglevel=4 panic=-1 ob.token={token} ob.host={} {}",
            spec.name, spec.extra_cmdline
        );
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", spec.accel.qemu_name(), "-cpu", "max", "-nodefaults", "-no-reboot", "-display", "none"])
            .args(["-m", &spec.memory_mb.to_string(), "-smp", &spec.cpus.to_string()])
            .args(["-serial", "stdio", "-kernel"])
            .arg(&spec.kernel.vmlinuz)
            .arg("-initrd")
            .arg(&spec.image);
        let netns = match &spec.net {
            Some(n) => {
                cmdline += &format!(" ob.ip={}", n.ip_cidr);
                cmd.args(["-netdev", &format!("tap,id=n0,ifname={},script=no,downscript=no", n.tap)])
                    .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={}", n.mac)]);
                Some(
                    std::fs::File::open(Path::new("/run/netns").join(&n.lab))
                        .with_context(|| format!("open the lab namespace {}", n.lab))?,
                )
            }
            None => None,
        };
        cmd.arg("-append").arg(&cmdline);
        let log = std::fs::File::create(&spec.log).with_context(|| format!("create {}", spec.log.display()))?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log.try_clone()?);
        let ns_fd = netns.as_ref().map(|f| f.as_raw_fd());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // qemu dies with us, even when we are killed.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(fd) = ns_fd {
                    crate::testbed::setns_fd(fd)?;
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("start qemu-system-x86_64 (apt package qemu-system-x86)")?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = channel();
        let mut log = log;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
                let _ = writeln!(log, "{line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Vm {
            name: spec.name.clone(),
            release: String::new(),
            boot_secs: 0.0,
            started: Instant::now(),
            log: spec.log.clone(),
            child,
            stdin,
            lines,
            token,
            seq: 0,
        })
    }

    /// Waits for the init's READY line (its `uname -r`).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let ready = format!("OBVM-{} READY ", self.token);
        let fatal = format!("OBVM-{} FATAL ", self.token);
        let log = self.log.display().to_string();
        loop {
            let line = self
                .next_line(self.started, timeout)
                .with_context(|| format!("{}: no READY from the guest's init (console log: {log})", self.name))?;
            if let Some(r) = line.strip_prefix(&ready) {
                self.release = r.trim().to_string();
                break;
            }
            if let Some(why) = line.strip_prefix(&fatal) {
                bail!("{}: {why} (console log: {log})", self.name);
            }
            if line.contains("Kernel panic") {
                bail!("{}: kernel panic while booting (console log: {log})", self.name);
            }
        }
        self.boot_secs = self.started.elapsed().as_secs_f64();
        Ok(())
    }

    fn next_line(&mut self, since: Instant, timeout: Duration) -> Result<String> {
        loop {
            if interrupted() {
                bail!("interrupted");
            }
            let left = timeout.checked_sub(since.elapsed()).context("timed out")?;
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(l) => return Ok(l),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    bail!("qemu exited ({status:?})");
                }
            }
        }
    }

    /// Runs one shell command line in the guest; `each` sees every line it
    /// prints as it comes.
    pub fn step(&mut self, command: &str, timeout: Duration, mut each: impl FnMut(&str)) -> Result<StepOutcome> {
        assert!(!command.contains('\n'), "a step is one line");
        // The guest reads lines through the tty's canonical mode (4095 bytes).
        if command.len() > 4000 {
            bail!("step too long for the serial console ({} bytes): {}...", command.len(), &command[..80]);
        }
        self.seq += 1;
        let t = Instant::now();
        writeln!(self.stdin, "{} {command}", self.seq).and_then(|_| self.stdin.flush()).context("write to qemu")?;
        let done = format!("OBVM-{} RESULT {} ", self.token, self.seq);
        let mut output = Vec::new();
        loop {
            let line = self
                .next_line(t, timeout)
                .with_context(|| format!("{}: step `{command}` did not finish within {timeout:?}", self.name))?;
            if let Some(status) = line.strip_prefix(&done) {
                return Ok(StepOutcome { passed: status == "PASS", status: status.to_string(), output });
            }
            each(&line);
            output.push(line);
        }
    }

    /// `step` that must pass; its output in the error otherwise.
    pub fn must(&mut self, command: &str, timeout: Duration) -> Result<Vec<String>> {
        let out = self.step(command, timeout, |_| {})?;
        if !out.passed {
            bail!("{}: `{command}` failed ({}):\n{}", self.name, out.status, out.output.join("\n"));
        }
        Ok(out.output)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The VMs' shared L2: namespace `name` holding bridge br0 with `addr` (the
/// host's own foot on it, an "outside" client) and taps tap1..tapN. Dropping
/// it deletes the namespace and with it the bridge and taps.
pub struct Lab {
    /// Held for its Drop: deleting the namespace deletes the bridge and taps.
    _ns: Netns,
    pub taps: Vec<String>,
}

impl Lab {
    pub fn new(name: &str, taps: usize, addr: &str) -> Lab {
        let ns = Netns::new(name);
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["addr", "add", addr, "dev", "br0"]);
        ns.ip(&["link", "set", "br0", "up"]);
        let taps: Vec<String> = (1..=taps).map(|i| format!("tap{i}")).collect();
        for t in &taps {
            ns.ip(&["tuntap", "add", "dev", t, "mode", "tap"]);
            ns.ip(&["link", "set", t, "master", "br0", "up"]);
        }
        Lab { _ns: ns, taps }
    }
}
