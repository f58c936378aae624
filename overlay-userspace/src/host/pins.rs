//! Where overlay-bpf pins its maps and links, and the bpffs mount.
//!
//! ```text
//! <pin dir>/maps/<MAP_NAME>        every map, by its versioned name
//! <pin dir>/links/xdp@<ifname>     the XDP link on the underlay device
//! <pin dir>/links/tc@<ifname>      the TC link on each endpoint's host-side veth
//! <pin dir>/progs/<PROG>@<digest>   this build's programs, verified once, by the
//!                                  first 16 hex digits of the object's SHA-256
//! ```

use std::path::{Path, PathBuf};

pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/overlay-bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum PinsError {
    #[error("cannot check {path}: {source}")]
    Stat { path: String, source: nix::Error },
    #[error("cannot mount bpffs on {path}: {source} (mount it with `mount -t bpf bpf {path}`)")]
    Mount { path: String, source: nix::Error },
    #[error("{path} is not on a bpffs mount; pins must live on bpffs (use a --pin-dir under /sys/fs/bpf)")]
    NotBpffs { path: String },
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
}

/// What a pinned link attaches: its pin's name is `<kind>@<ifname>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// The XDP program on the underlay device (and WireGuard's veth).
    Xdp,
    /// A TC (TCX) ingress program: an endpoint's host-side veth, WireGuard's.
    Tc,
}

impl LinkKind {
    pub const ALL: [LinkKind; 2] = [LinkKind::Xdp, LinkKind::Tc];

    /// The pin name's prefix, and the label `status` and /metrics show.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Xdp => "xdp",
            LinkKind::Tc => "tc",
        }
    }

    fn parse(s: &str) -> Option<LinkKind> {
        LinkKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A link pinned under `<pin dir>/links`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PinnedLinkEntry {
    pub kind: LinkKind,
    pub ifname: String,
    pub path: PathBuf,
}

impl std::fmt::Display for PinnedLinkEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.kind, self.ifname)
    }
}

/// Where the host locks live (a tmpfs: a lock outlives no reboot).
pub const LOCK_DIR: &str = "/run/overlay-bpf/locks";

/// One apply at a time per host on this machine. `up`, `down`, the agent
/// and the CNI plugin (whose ADDs a runtime runs in parallel) all change the
/// same veths, links and maps; each takes this lock first. An flock: the
/// kernel releases it when its holder exits, however it exits.
#[derive(Debug)]
pub struct HostLock(#[allow(dead_code)] std::fs::File);

impl HostLock {
    fn path(pins: &Pins, ext: &str) -> PathBuf {
        Path::new(LOCK_DIR).join(format!("{}.{ext}", pins.flat_name()))
    }

    /// The store revision the host's maps hold (0: unknown), written by
    /// applies that know theirs, read and written under the lock. It only
    /// guards the moments an agent's watch lags behind a CNI ADD, so it
    /// counts for 30 s: a store started afresh (its revisions from 1 again)
    /// cannot hold a host's applies back for longer.
    pub fn applied_revision(pins: &Pins) -> i64 {
        let text = std::fs::read_to_string(HostLock::path(pins, "rev")).unwrap_or_default();
        let mut f = text.split_whitespace().map(|w| w.parse::<i64>().ok());
        match (f.next().flatten(), f.next().flatten()) {
            (Some(rev), Some(at)) if unix_ms() - at < 30_000 => rev,
            _ => 0,
        }
    }

    pub fn set_applied_revision(pins: &Pins, revision: i64) {
        let _ = std::fs::write(HostLock::path(pins, "rev"), format!("{revision} {}\n", unix_ms()));
    }

    /// A file of this host's beside its lock (what `up` records for `down`).
    pub fn run_file(pins: &Pins, ext: &str) -> PathBuf {
        HostLock::path(pins, ext)
    }

    /// Forgets the applied revision (`down`).
    pub fn clear_applied_revision(pins: &Pins) {
        let _ = std::fs::remove_file(HostLock::path(pins, "rev"));
    }

    /// Waits for the lock of the host pinned at `pins`.
    pub async fn acquire(pins: &Pins) -> Result<HostLock, PinsError> {
        let path = HostLock::path(pins, "lock");
        let io = |what: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |source| PinsError::Io { what, path, source }
        };
        std::fs::create_dir_all(LOCK_DIR).map_err(io("create", Path::new(LOCK_DIR)))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("open", &path))?;
        // Blocking, so off the async threads: another process may hold it
        // for the length of its apply.
        let waited = tokio::task::spawn_blocking(move || {
            use std::os::fd::AsRawFd as _;
            // SAFETY: flock on a descriptor this closure owns.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                Ok(file)
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r);
        Ok(HostLock(waited.map_err(io("lock", &path))?))
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The pin layout of one host.
#[derive(Debug, Clone)]
pub struct Pins {
    pub dir: PathBuf,
}

impl Pins {
    pub fn new(dir: impl Into<PathBuf>) -> Pins {
        Pins { dir: dir.into() }
    }
    /// The pin dir as one file name (`/` as `%`): what names the host's
    /// files outside bpffs, its lock and its macvlan record.
    pub fn flat_name(&self) -> String {
        self.dir.to_string_lossy().trim_start_matches('/').replace('/', "%")
    }
    /// The default pin dir of host `host`.
    pub fn for_host(host: &str) -> Pins {
        Pins::new(Path::new(DEFAULT_PIN_ROOT).join(host))
    }
    pub fn maps_dir(&self) -> PathBuf {
        self.dir.join("maps")
    }
    pub fn links_dir(&self) -> PathBuf {
        self.dir.join("links")
    }
    pub fn progs_dir(&self) -> PathBuf {
        self.dir.join("progs")
    }
    /// Where the program `name` of the object with `digest` is pinned.
    pub fn prog(&self, name: &str, digest: &str) -> PathBuf {
        self.progs_dir().join(format!("{name}@{digest}"))
    }
    /// Pinned programs as (name, path), of any build.
    pub fn progs(&self) -> Vec<(String, PathBuf)> {
        let Ok(rd) = std::fs::read_dir(self.progs_dir()) else { return Vec::new() };
        let mut out: Vec<_> = rd
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let (name, _) = file.split_once('@')?;
                Some((name.to_string(), e.path()))
            })
            .collect();
        out.sort();
        out
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }
    /// Where the link of `kind` on `ifname` is pinned.
    pub fn link(&self, kind: LinkKind, ifname: &str) -> PathBuf {
        self.links_dir().join(format!("{kind}@{ifname}"))
    }
    /// True when a previous `up` left pinned maps here.
    pub fn exists(&self) -> bool {
        self.maps_dir().is_dir()
    }

    /// Pinned links, sorted by kind and device.
    pub fn links(&self) -> Vec<PinnedLinkEntry> {
        let mut out: Vec<PinnedLinkEntry> = self
            .link_files()
            .into_iter()
            .filter_map(|(name, path)| {
                let (kind, ifname) = name.split_once('@')?;
                Some(PinnedLinkEntry { kind: LinkKind::parse(kind)?, ifname: ifname.to_string(), path })
            })
            .collect();
        out.sort();
        out
    }

    /// Files under `links/` that name no link this build knows (another
    /// build's kind, or not `<kind>@<ifname>`): `up` and `down` remove them
    /// with the links they no longer want.
    pub fn stray_links(&self) -> Vec<PathBuf> {
        let known = |name: &str| name.split_once('@').is_some_and(|(k, _)| LinkKind::parse(k).is_some());
        let mut out: Vec<PathBuf> =
            self.link_files().into_iter().filter(|(name, _)| !known(name)).map(|(_, path)| path).collect();
        out.sort();
        out
    }

    fn link_files(&self) -> Vec<(String, PathBuf)> {
        let Ok(rd) = std::fs::read_dir(self.links_dir()) else { return Vec::new() };
        rd.flatten().map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())).collect()
    }

    /// Pinned maps of another layout version than this build's (the name
    /// with another `_V<n>`): what an earlier or later build left. Names that
    /// are not ours stay alone.
    pub fn other_versions(&self) -> Vec<String> {
        let ours: Vec<&str> = overlay_common::ALL_MAPS.iter().map(|n| family(n)).collect();
        let Ok(dir) = std::fs::read_dir(self.maps_dir()) else { return Vec::new() };
        let mut out: Vec<String> = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !overlay_common::ALL_MAPS.contains(&n.as_str()) && ours.contains(&family(n)))
            .collect();
        out.sort();
        out
    }

    /// The pinned map of `name`'s family at another layout version, if one
    /// is: the host runs another release's programs.
    pub fn other_version_of(&self, name: &str) -> Option<String> {
        self.other_versions().into_iter().find(|n| family(n) == family(name))
    }

    pub fn create_dirs(&self) -> Result<(), PinsError> {
        for d in [self.maps_dir(), self.links_dir()] {
            std::fs::create_dir_all(&d).map_err(|source| PinsError::Io {
                what: "create",
                path: d.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// Removes every pin and the directory itself. Missing pins are fine.
    pub fn remove_all(&self) -> Result<(), PinsError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(PinsError::Io { what: "remove", path: self.dir.display().to_string(), source }),
        }
    }
}

fn is_bpffs(path: &Path) -> Result<bool, PinsError> {
    let st = nix::sys::statfs::statfs(path)
        .map_err(|source| PinsError::Stat { path: path.display().to_string(), source })?;
    Ok(st.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

/// Makes sure `pin_dir` can hold pins: mounts bpffs on /sys/fs/bpf when the
/// pin dir is under it and nothing is mounted there yet.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), PinsError> {
    let root = Path::new(BPFFS_ROOT);
    if pin_dir.starts_with(root) && !is_bpffs(root)? {
        nix::mount::mount(Some("bpf"), root, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(|source| PinsError::Mount { path: BPFFS_ROOT.into(), source })?;
    }
    // The nearest existing ancestor must be on bpffs.
    let mut p = pin_dir.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            break;
        }
    }
    if !is_bpffs(&p)? {
        return Err(PinsError::NotBpffs { path: pin_dir.display().to_string() });
    }
    Ok(())
}

/// A map's name without its layout version: `OB_CT_V1` -> `OB_CT`.
pub fn family(name: &str) -> &str {
    match name.rsplit_once("_V") {
        Some((f, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => f,
        _ => name,
    }
}

#[cfg(test)]
mod version_tests {
    #[test]
    fn a_maps_family_is_its_name_without_the_version() {
        assert_eq!(super::family("OB_CT_V1"), "OB_CT");
        assert_eq!(super::family("OB_BACKEND_STATS_V12"), "OB_BACKEND_STATS");
        assert_eq!(super::family("AYA_LOGS"), "AYA_LOGS");
        assert_eq!(super::family("OB_V_X"), "OB_V_X");
    }
}

#[cfg(test)]
mod link_tests {
    use super::*;

    #[test]
    fn pinned_links_are_read_by_kind_and_the_rest_is_stray() {
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::new(dir.path());
        std::fs::create_dir_all(pins.links_dir()).unwrap();
        for name in ["xdp@eth0", "tc@ob0123abcd", "tcx-egress@eth0", "notes"] {
            std::fs::write(pins.links_dir().join(name), b"").unwrap();
        }
        let links = pins.links();
        let shown: Vec<String> = links.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["xdp@eth0", "tc@ob0123abcd"], "sorted by kind, then device");
        assert_eq!(links[0].path, pins.link(LinkKind::Xdp, "eth0"));
        assert_eq!(links[1].path, pins.link(LinkKind::Tc, "ob0123abcd"));
        assert_eq!(pins.stray_links(), [pins.links_dir().join("notes"), pins.links_dir().join("tcx-egress@eth0")]);
        assert_eq!(serde_json::to_string(&LinkKind::Xdp).unwrap(), "\"xdp\"", "status shows it as before");
    }

    #[test]
    fn a_map_of_another_layout_version_is_found_by_its_family() {
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::new(dir.path());
        std::fs::create_dir_all(pins.maps_dir()).unwrap();
        for name in ["OB_VTEPS_V1", overlay_common::MAP_CT, "OB_CT_V0", "OTHER_V1"] {
            std::fs::write(pins.maps_dir().join(name), b"").unwrap();
        }
        assert_eq!(pins.other_versions(), ["OB_CT_V0", "OB_VTEPS_V1"], "not ours: OTHER_V1; ours: OB_CT_V2");
        assert_eq!(pins.other_version_of(overlay_common::MAP_VTEPS).as_deref(), Some("OB_VTEPS_V1"));
        assert_eq!(pins.other_version_of(overlay_common::MAP_SERVICES), None);
    }
}
