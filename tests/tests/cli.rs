//! The command line as a shell uses it.

mod common;

use std::{
    io::Read,
    process::{Command, Stdio},
};

use common::*;

/// `overlay-bpf validate -o json | head -c 10`: the reader goes, the writer
/// ends quietly with 141 (as after SIGPIPE), no panic. SIGPIPE itself is
/// ignored (a TLS write to an etcd that closed the connection must come back
/// as an error, not kill the process).
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let mut y = String::from(
        "version: 1\nhosts:\n  - {name: a, address: 192.168.0.1}\nnetworks:\n  \
         - {name: n, attachable: true, subnets: [{subnet: 10.0.0.0/16}]}\nendpoints:\n",
    );
    for i in 0..5000 {
        y += &format!("  - {{name: e{i}, host: a, network: n, netns: e{i}}}\n");
    }
    let st = StateFile::new(&format!("obcli-{}", std::process::id()), &y);
    let mut child = Command::new(bin())
        .args(["validate", "-o", "json", "--state"])
        .arg(&st.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's reader is gone now.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(first.starts_with(b"{"), "{first:?}");
}
