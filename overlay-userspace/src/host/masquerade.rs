//! Traffic leaving the overlay (Docker's docker_gwbridge role): the host routes
//! it and masquerades it behind its own address, with one nftables table per
//! host network namespace, replaced atomically on every `up`.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use ipnet::Ipv4Net;

/// The nftables table overlay-bpf owns (family ip).
pub const TABLE: &str = "overlay_bpf";

#[derive(Debug, thiserror::Error)]
pub enum MasqueradeError {
    #[error("nft is not installed; install nftables (`apt-get install nftables`)")]
    NoNft,
    #[error("nft -f: {0}")]
    Nft(String),
    #[error("nft: {0}")]
    Io(#[from] std::io::Error),
}

/// The ruleset: masquerade what the `subnets` send anywhere but into our veths.
pub fn ruleset(subnets: &[Ipv4Net]) -> String {
    // Declaring then deleting the table makes the replacement one transaction
    // that works whether or not the table exists.
    let mut s = format!("table ip {TABLE}\ndelete table ip {TABLE}\n");
    if !subnets.is_empty() {
        let set: Vec<String> = subnets.iter().map(|n| n.to_string()).collect();
        s += &format!(
            "table ip {TABLE} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {{ {} }} oifname != \"ob*\" masquerade\n  }}\n}}\n",
            set.join(", ")
        );
    }
    s
}

fn nft(script: &str) -> Result<(), MasqueradeError> {
    let mut child = match Command::new("nft")
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(MasqueradeError::NoNft),
        Err(e) => return Err(e.into()),
    };
    child.stdin.take().expect("piped").write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(MasqueradeError::Nft(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(())
}

/// Installs (or replaces) the masquerade rule for `subnets`; removes it when empty.
pub fn apply(subnets: &[Ipv4Net]) -> Result<(), MasqueradeError> {
    match nft(&ruleset(subnets)) {
        Err(MasqueradeError::NoNft) if subnets.is_empty() => Ok(()),
        r => r,
    }
}

/// Removes the table; nothing to do is fine.
pub fn remove() -> Result<(), MasqueradeError> {
    apply(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_replaces_the_table_atomically() {
        let r = ruleset(&["10.0.0.0/24".parse().unwrap(), "10.0.9.0/24".parse().unwrap()]);
        assert!(r.starts_with("table ip overlay_bpf\ndelete table ip overlay_bpf\ntable ip overlay_bpf {"));
        assert!(r.contains("ip saddr { 10.0.0.0/24, 10.0.9.0/24 } oifname != \"ob*\" masquerade"), "{r}");
        assert_eq!(ruleset(&[]), "table ip overlay_bpf\ndelete table ip overlay_bpf\n");
    }
}
