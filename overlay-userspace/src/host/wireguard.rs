//! Encrypted networks (`encrypted: true`): WireGuard between the hosts.
//!
//! The overlay's VXLAN is built as for every network; for an encrypted one
//! the programs hand it to WireGuard instead of the underlay
//! (`tc_wireguard`), which encrypts and authenticates it to the peer host.
//! Each host has one WireGuard device ([`DEVICE`]), its own key pair (the
//! private key in a root-only file, never in the state), and every other
//! host with a published key as a peer whose one allowed address is its
//! underlay address: the outer destination of our VXLAN. Configured over
//! generic netlink, as Cilium does. Why WireGuard and not IPsec ESP: one
//! cipher suite and no negotiation (nothing to misconfigure), keys that are
//! 32 bytes in the state, rekeying by itself every two minutes, and a
//! device the programs can redirect into (ESP's xfrm policies would sit
//! beside the programs' own path).

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute, WireguardCmd,
    WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, LinkWireguard};

/// The WireGuard device `up` creates for encrypted networks.
pub const DEVICE: &str = "ob-wg";
/// The veth pair beside it: decrypted VXLAN leaves TC through [`VETH_TC`]
/// and reaches the XDP program on [`VETH_XDP`]; XDP sends what it
/// encapsulates for an encrypted network the other way.
pub const VETH_TC: &str = "ob-wg-tc";
pub const VETH_XDP: &str = "ob-wg-xdp";
/// The devices `tc_wireguard` runs on (TC ingress).
pub const TC_DEVICES: [&str; 2] = [DEVICE, VETH_TC];
/// Where the private keys live, one file per host (`<host>.key`).
pub const KEY_DIR: &str = "/etc/overlay-bpf/keys";
/// Overrides [`KEY_DIR`] (tests; several hosts on one machine).
pub const KEY_DIR_ENV: &str = "OVERLAY_BPF_KEY_DIR";

/// Why `encrypted: true` cannot be honoured on this machine.
pub use crate::state::model::ENCRYPTION_UNSUPPORTED as UNSUPPORTED;

#[derive(Debug, thiserror::Error)]
pub enum WgError {
    #[error("{path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
    #[error("{path}: {why}")]
    BadKeyFile { path: String, why: String },
    #[error("cannot make a key: the system's random source failed: {0}")]
    Random(String),
    #[error("WireGuard: {0}")]
    Kernel(&'static str),
    #[error("WireGuard device {DEVICE}: {what}: {why}")]
    Netlink { what: String, why: String },
}

pub use crate::state::model::Key;

/// A host's key pair. The private half is only ever in its file and in the
/// kernel; it is not printed, not logged, not put in the state.
pub struct KeyPair {
    secret: [u8; 32],
    pub public: Key,
}

impl KeyPair {
    pub fn generate() -> Result<KeyPair, WgError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| WgError::Random(e.to_string()))?;
        Ok(KeyPair::from_secret(secret))
    }

    fn from_secret(secret: [u8; 32]) -> KeyPair {
        let s = x25519_dalek::StaticSecret::from(secret);
        let public = Key(x25519_dalek::PublicKey::from(&s).to_bytes());
        // The clamped form, as the kernel and wg(8) keep it.
        KeyPair { secret: s.to_bytes(), public }
    }
}

/// The file holding host `host`'s private key.
pub fn key_file(host: &str) -> PathBuf {
    let dir = std::env::var_os(KEY_DIR_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(KEY_DIR));
    dir.join(format!("{host}.key"))
}

/// Host `host`'s key pair from its file, made (and the file written, root
/// only) when there is none: true when made now.
pub fn load_or_create(host: &str) -> Result<(KeyPair, bool), WgError> {
    let path = key_file(host);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let err = |why: String| WgError::BadKeyFile { path: path.display().to_string(), why };
            let mode = std::fs::metadata(&path)
                .map_err(|source| WgError::KeyFile { path: path.display().to_string(), source })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "a private key readable by others (mode {:o}): `chmod 600 {}`, and rotate it \
                     (`overlay-bpf host key --rotate --host {host}`) if others may have read it",
                    mode & 0o777,
                    path.display()
                )));
            }
            let key = Key::parse(&text)
                .map_err(|why| err(format!("not a WireGuard private key: {why}; remove it to have a new one made")))?;
            Ok((KeyPair::from_secret(key.0), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let kp = KeyPair::generate()?;
            write_secret(&path, &kp)?;
            Ok((kp, true))
        }
        Err(source) => Err(WgError::KeyFile { path: path.display().to_string(), source }),
    }
}

/// A new key pair for host `host`, replacing its file (atomically).
pub fn rotate(host: &str) -> Result<KeyPair, WgError> {
    let kp = KeyPair::generate()?;
    write_secret(&key_file(host), &kp)?;
    Ok(kp)
}

/// Writes the private key as wg(8) does (base64 and a newline), mode 0600 in
/// a 0700 directory, through a temporary file renamed into place.
fn write_secret(path: &Path, kp: &KeyPair) -> Result<(), WgError> {
    let io = |source| WgError::KeyFile { path: path.display().to_string(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    let tmp = path.with_extension("key.new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
    writeln!(f, "{}", Key(kp.secret)).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Whether this kernel has WireGuard: the module loaded, loadable, or built in.
pub fn kernel_support() -> bool {
    static SUPPORT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORT.get_or_init(|| {
        let loaded = || Path::new("/sys/module/wireguard").exists();
        if loaded() {
            return true;
        }
        let _ = std::process::Command::new("modprobe")
            .args(["-q", "wireguard"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if loaded() {
            return true;
        }
        // Built in: no module to load, and no /sys/module entry without parameters.
        let release =
            nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
        std::fs::read_to_string(format!("/boot/config-{release}"))
            .is_ok_and(|c| c.lines().any(|l| l.trim() == "CONFIG_WIREGUARD=y"))
    })
}

/// A peer: another host with a published key.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub public: Key,
    pub address: Ipv4Addr,
}

/// The devices of this host's encrypted hop, by ifindex.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Devices {
    pub wg: u32,
    pub tc: u32,
    pub xdp: u32,
}

/// Makes this host's WireGuard device and its veth pair, and configures the
/// device: `kp`'s private key, `port`, and exactly `peers`. Peers that stay
/// keep their sessions (a re-apply interrupts nothing); the MTU is
/// `underlay_mtu` less WireGuard's overhead.
pub async fn ensure(
    handle: &Handle,
    kp: &KeyPair,
    port: u16,
    underlay_mtu: u32,
    peers: &[Peer],
) -> Result<Devices, WgError> {
    let nl = |what: &str| {
        let what = what.to_string();
        move |e: rtnetlink::Error| WgError::Netlink { what: what.clone(), why: e.to_string() }
    };
    let wg_mtu = underlay_mtu - overlay_common::WIREGUARD_OVERHEAD as u32;
    match crate::host::netdev::ifindex(DEVICE) {
        None => handle.link().add(LinkWireguard::new(DEVICE).mtu(wg_mtu).up().build()).execute().await.map_err(
            |e| match e {
                rtnetlink::Error::NetlinkError(ref m) if m.raw_code() == -libc::EOPNOTSUPP => {
                    WgError::Kernel(UNSUPPORTED)
                }
                e => nl("create")(e),
            },
        )?,
        Some(i) => handle
            .link()
            .set(LinkUnspec::new_with_index(i).mtu(wg_mtu).up().build())
            .execute()
            .await
            .map_err(nl("set up"))?,
    }
    configure(kp, port, peers).await?;
    if crate::host::netdev::ifindex(VETH_TC).is_none() {
        let peer = LinkUnspec::new_with_name(VETH_XDP).mtu(underlay_mtu).build();
        let msg = LinkVeth::new(VETH_TC, VETH_XDP)
            .set_info_data(rtnetlink::packet_route::link::InfoData::Veth(
                rtnetlink::packet_route::link::InfoVeth::Peer(peer),
            ))
            .mtu(underlay_mtu)
            .up()
            .build();
        handle.link().add(msg).execute().await.map_err(nl(&format!("create the veth pair {VETH_TC}/{VETH_XDP}")))?;
    }
    let xdp = crate::host::netdev::ifindex(VETH_XDP)
        .ok_or_else(|| WgError::Netlink { what: format!("find {VETH_XDP}"), why: "gone".into() })?;
    handle.link().set(LinkUnspec::new_with_index(xdp).up().build()).execute().await.map_err(nl("set the veth up"))?;
    // XDP redirects into VETH_XDP arrive at VETH_TC, which needs NAPI for them.
    crate::host::netdev::enable_gro(VETH_TC)
        .map_err(|e| WgError::Netlink { what: format!("GRO on {VETH_TC}"), why: e.to_string() })?;
    let (Some(wg), Some(tc)) = (crate::host::netdev::ifindex(DEVICE), crate::host::netdev::ifindex(VETH_TC)) else {
        return Err(WgError::Netlink { what: "find the devices".into(), why: "gone meanwhile".into() });
    };
    Ok(Devices { wg, tc, xdp })
}

/// Removes the WireGuard device and the veth pair (when there).
pub async fn remove(handle: &Handle) -> Result<bool, crate::host::netdev::NetdevError> {
    let a = crate::host::netdev::delete_link(handle, DEVICE).await?;
    let b = crate::host::netdev::delete_link(handle, VETH_TC).await?;
    Ok(a || b)
}

fn allowed(ip: Ipv4Addr) -> WireguardAllowedIp {
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
        WireguardAllowedIpAttr::IpAddr(IpAddr::V4(ip)),
        WireguardAllowedIpAttr::Cidr(32),
    ])
}

/// What the kernel says about one peer.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PeerState {
    pub public_key: String,
    pub endpoint: Option<String>,
    /// Seconds since the Unix epoch of the last handshake; None before the first.
    pub last_handshake: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

async fn request(msg: WireguardMessage, flags: u16) -> Result<Vec<WireguardMessage>, WgError> {
    let err = |what: &str, e: String| WgError::Netlink { what: what.to_string(), why: e };
    let (conn, mut handle, _) = genetlink::new_connection().map_err(|e| err("netlink socket", e.to_string()))?;
    let task = tokio::spawn(conn);
    let mut nlmsg = NetlinkMessage::from(GenlMessage::from_payload(msg));
    nlmsg.header.flags = flags;
    let mut replies = Vec::new();
    let result = async {
        let mut res = handle.request(nlmsg).await.map_err(|e| err("request", e.to_string()))?;
        while let Some(r) = res.next().await {
            let r = r.map_err(|e| err("reply", e.to_string()))?;
            match r.payload {
                NetlinkPayload::InnerMessage(g) => replies.push(g.payload),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(err("kernel", e.to_io().to_string())),
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    task.abort();
    result.map(|()| replies)
}

/// The device's peers as the kernel has them.
pub async fn peers() -> Result<Vec<PeerState>, WgError> {
    let get =
        WireguardMessage { cmd: WireguardCmd::GetDevice, attributes: vec![WireguardAttribute::IfName(DEVICE.into())] };
    let mut out = Vec::new();
    for m in request(get, NLM_F_REQUEST | NLM_F_DUMP).await? {
        for a in m.attributes {
            let WireguardAttribute::Peers(ps) = a else { continue };
            for p in ps {
                let mut s = PeerState::default();
                for a in p.0 {
                    match a {
                        WireguardPeerAttribute::PublicKey(k) => s.public_key = Key(k).to_string(),
                        WireguardPeerAttribute::Endpoint(e) => s.endpoint = Some(e.to_string()),
                        WireguardPeerAttribute::LastHandshake(t) => {
                            s.last_handshake = (t.seconds > 0).then_some(t.seconds as u64);
                        }
                        WireguardPeerAttribute::RxBytes(b) => s.rx_bytes = b,
                        WireguardPeerAttribute::TxBytes(b) => s.tx_bytes = b,
                        _ => {}
                    }
                }
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// Sets the private key and port, removes the peers not in `want` and sets
/// those in it (endpoint, allowed address), leaving the sessions of the
/// peers that stay alone.
async fn configure(kp: &KeyPair, port: u16, want: &[Peer]) -> Result<(), WgError> {
    let have = peers().await?;
    let mut list: Vec<WireguardPeer> = have
        .iter()
        .filter_map(|h| Key::parse(&h.public_key).ok())
        .filter(|k| !want.iter().any(|w| w.public == *k))
        .map(|k| {
            WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(k.0),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ])
        })
        .collect();
    for p in want {
        list.push(WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey(p.public.0),
            WireguardPeerAttribute::Endpoint(SocketAddr::new(IpAddr::V4(p.address), port)),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
            WireguardPeerAttribute::AllowedIps(vec![allowed(p.address)]),
        ]));
    }
    let set = WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfName(DEVICE.into()),
            WireguardAttribute::PrivateKey(kp.secret),
            WireguardAttribute::ListenPort(port),
            WireguardAttribute::Peers(list),
        ],
    };
    request(set, NLM_F_REQUEST | NLM_F_ACK).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_base64_and_the_public_half_is_x25519s() {
        // RFC 7748, section 6.1: Alice's private key and its public key.
        let secret = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let kp = KeyPair::from_secret(secret);
        assert_eq!(kp.public.0, hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
        assert_eq!(Key::parse(&kp.public.to_string()).unwrap(), kp.public);
        assert!(Key::parse("not base64!").unwrap_err().contains("not base64"));
        assert!(Key::parse("AAAA").unwrap_err().contains("holds 3 bytes"));
    }

    #[test]
    fn a_key_file_is_made_root_only_kept_and_refused_when_others_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var(KEY_DIR_ENV, dir.path().join("keys"));
        let (a, made) = load_or_create("n1").unwrap();
        assert!(made);
        let path = key_file("n1");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let (b, made) = load_or_create("n1").unwrap();
        assert!(!made && a.public == b.public, "the same key again");
        let c = rotate("n1").unwrap();
        assert_ne!(c.public, a.public);
        assert_eq!(load_or_create("n1").unwrap().0.public, c.public);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create("n1").err().unwrap().to_string();
        assert!(e.contains("chmod 600") && e.contains("--rotate"), "{e}");
        std::env::remove_var(KEY_DIR_ENV);
    }

    fn hex(s: &str) -> [u8; 32] {
        let v: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect();
        v.try_into().unwrap()
    }
}
