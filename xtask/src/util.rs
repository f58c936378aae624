use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{bail, Context, Result};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A progress line, prefixed so it stands out among cargo's output.
pub fn step(msg: &str) {
    eprintln!("==> {msg}");
}

/// Runs a command with inherited output; fails naming it.
pub fn run(cmd: &mut Command) -> Result<()> {
    let t = Instant::now();
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status}) after {:.1}s", t.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Runs a command and returns its stdout; fails naming it and showing stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.stderr(Stdio::piped()).output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when the command runs and exits 0 (output discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `~/.cargo/bin`, where cargo installs tools.
pub fn cargo_bin_dir() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"));
    home.join("bin")
}

/// PATH with cargo's bin dir first, so freshly installed tools are found.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let bin = cargo_bin_dir();
    let mut paths = vec![bin.clone()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p).filter(|p| *p != bin));
    }
    std::env::join_paths(paths).expect("PATH")
}

/// (passed, failed) of a libtest "test result:" line.
pub fn test_counts(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let num = |word: &str| -> u64 {
        rest.split(';')
            .find_map(|part| part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(word))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    Some((num(" passed"), num(" failed")))
}

/// Runs `cargo test`, streaming its output, and returns (passed, failed)
/// summed over its "test result:" lines. Fails when the run fails.
pub fn run_tests(cmd: &mut Command) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.stdout(Stdio::piped()).spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = test_counts(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed ({status}): {passed} passed, {failed} failed");
    }
    Ok((passed, failed))
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM set a flag instead of killing us: long tasks check it at
/// each step and their guards tear down what they made.
pub fn catch_signals() {
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once Ctrl-C or SIGTERM arrived.
pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted; tearing down");
    }
    Ok(())
}
