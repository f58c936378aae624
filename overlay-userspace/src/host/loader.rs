//! Loading the embedded eBPF object with its maps pinned, and attaching the
//! programs with pinned links so the data path outlives the command.

use std::path::Path;

use aya::{
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcAttachType, TcError, TcHandle},
        xdp::XdpLink,
        ProgramError, SchedClassifier, Xdp, XdpMode,
    },
    util::KernelVersion,
    Ebpf, EbpfError, EbpfLoader,
};
use overlay_common::{
    ALL_MAPS, MAP_CT, MAP_LOG_RING, PROG_TC_ENDPOINT, PROG_TC_UNDERLAY, PROG_TC_WIREGUARD, PROG_XDP_UNDERLAY,
};

/// The TC programs, each attached at TC ingress: on endpoints' veths, on
/// the WireGuard device and its veth (encrypted networks), and on the
/// underlay device in the TC data path.
pub const TC_PROGS: [&str; 3] = [PROG_TC_ENDPOINT, PROG_TC_WIREGUARD, PROG_TC_UNDERLAY];

use crate::host::pins::Pins;

/// The eBPF object, embedded at build time (empty when built without it).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay-ebpf.o"));

/// Names a file to load the programs from instead of the embedded object:
/// for trying another build of the programs, and for the upgrade test, which
/// starts from the previous release's.
pub const OBJECT_ENV: &str = "OVERLAY_BPF_OBJECT";

/// What `ensure_*` did to an attach point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// The program there is the one loaded now (same kernel tag).
    Kept,
    /// Nothing was there; attached now.
    Attached,
    /// Another program was there (an older or newer build): replaced in one
    /// step, the link and the maps kept, so no packet sees neither.
    Replaced,
}

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("this overlay-bpf binary was built without its eBPF object; build it with `cargo xtask build`")]
    NotEmbedded,
    #[error("the kernel refused the eBPF object: {0}")]
    Load(#[source] EbpfError),
    #[error("program {prog}: {what}: {source}")]
    Program { prog: &'static str, what: String, source: ProgramError },
    #[error("link {path}: {what}: {source}")]
    Link { path: String, what: &'static str, source: LinkError },
    #[error("cannot pin link at {path}: {source}")]
    Pin { path: String, source: aya::pin::PinError },
    #[error("cannot read the programs from {path} (${OBJECT_ENV}): {source}")]
    Object { path: String, source: std::io::Error },
}

/// Where the programs of a `Loaded` came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Loaded from the object and verified by the kernel now.
    #[default]
    Verified,
    /// This build's programs, pinned by an earlier `up`: opened, not verified again.
    Pinned,
}

enum Progs {
    Object(Ebpf),
    /// The TC programs in [`TC_PROGS`] order.
    Pinned {
        xdp: Box<Xdp>,
        tc: Vec<SchedClassifier>,
    },
}

/// Loaded programs, ready to attach. Maps are pinned under the pin dir and
/// shared with whatever an earlier `up` attached.
pub struct Loaded {
    progs: Progs,
    pub origin: Origin,
    /// Program id -> kernel tag of every program loaded in the kernel, read
    /// in one walk the first time a link's program is compared.
    tags: Option<std::collections::HashMap<u32, u64>>,
    /// Our programs' tags as loaded now, read once.
    own: Vec<(&'static str, u64)>,
    /// Our programs' ids.
    ids: Vec<(&'static str, u32)>,
}

/// Loads the object. With `pins`, reuses pinned maps where they exist and
/// creates and pins them otherwise; without, the maps are private (tests).
/// A connection table created now gets `ct_entries` entries, and the other
/// maps the sizes `sizes` names (`apply::map_sizes`); pinned ones keep
/// theirs.
///
/// With `pins`, the programs of this very object (by digest) that an earlier
/// `up` pinned are opened instead when they still use the pinned maps: the
/// kernel verified them then, and verifying again costs each re-apply a
/// second or more (much more under emulation) for the same instructions.
/// Programs loaded now are pinned for the next time, and the pins of other
/// builds' programs go (their links keep them alive while attached).
pub fn load(
    pins: Option<&Pins>,
    ct_entries: u32,
    sizes: &std::collections::BTreeMap<&'static str, u32>,
) -> Result<Loaded, LoaderError> {
    let object = object()?;
    let Some(pins) = pins else {
        return load_object(&object, None, ct_entries, sizes);
    };
    let digest = digest(&object);
    if let Some(loaded) = open_pinned(pins, &digest) {
        return Ok(loaded);
    }
    let mut loaded = load_object(&object, Some(pins), ct_entries, sizes)?;
    pin_programs(&mut loaded, pins, &digest)?;
    Ok(loaded)
}

/// The object with its maps created (unpinned, the connection table of
/// `ct_entries`) and no program verified: for packet tests, which verify
/// only the programs they run.
pub fn open_unverified(ct_entries: u32) -> Result<Ebpf, LoaderError> {
    let object = object()?;
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(MAP_CT, ct_entries);
    loader.load(&object).map_err(LoaderError::Load)
}

/// The object's bytes: the file `$OVERLAY_BPF_OBJECT` names, or the embedded one.
fn object() -> Result<std::borrow::Cow<'static, [u8]>, LoaderError> {
    let object = match std::env::var_os(OBJECT_ENV) {
        Some(path) => std::borrow::Cow::Owned(
            std::fs::read(&path)
                .map_err(|source| LoaderError::Object { path: path.to_string_lossy().into_owned(), source })?,
        ),
        None => std::borrow::Cow::Borrowed(EBPF_OBJECT),
    };
    if object.is_empty() {
        return Err(LoaderError::NotEmbedded);
    }
    Ok(object)
}

/// What names this object's pinned programs: the first 16 hex digits of its SHA-256.
pub fn digest(object: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(object);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// This object's programs from their pins, when both are there and every
/// pinned map is one they use (a map removed and created again by hand would
/// leave them writing to the old one).
fn open_pinned(pins: &Pins, digest: &str) -> Option<Loaded> {
    let xdp = Xdp::from_pin(pins.prog(PROG_XDP_UNDERLAY, digest), aya_obj::programs::XdpAttachType::Interface).ok()?;
    let tc: Vec<SchedClassifier> =
        TC_PROGS.iter().map(|name| SchedClassifier::from_pin(pins.prog(name, digest)).ok()).collect::<Option<_>>()?;
    let mut used = std::collections::HashSet::new();
    let mut own = Vec::new();
    let infos =
        std::iter::once((PROG_XDP_UNDERLAY, xdp.info())).chain(TC_PROGS.into_iter().zip(tc.iter().map(|p| p.info())));
    for (name, info) in infos {
        let info = info.ok()?;
        own.push((name, info.id()));
        used.extend(info.map_ids().ok()??);
    }
    for name in ALL_MAPS.iter().chain([&MAP_LOG_RING]) {
        let map = aya::maps::MapData::from_pin(pins.map(name)).ok()?;
        if !used.contains(&map.info().ok()?.id()) {
            return None;
        }
    }
    Some(Loaded {
        progs: Progs::Pinned { xdp: Box::new(xdp), tc },
        origin: Origin::Pinned,
        tags: None,
        own: Vec::new(),
        ids: own,
    })
}

/// Pins the programs just loaded under this object's digest, and unpins
/// other builds' programs.
fn pin_programs(loaded: &mut Loaded, pins: &Pins, digest: &str) -> Result<(), LoaderError> {
    let dir = pins.progs_dir();
    std::fs::create_dir_all(&dir).map_err(|source| LoaderError::Object { path: dir.display().to_string(), source })?;
    for (name, path) in pins.progs() {
        if !path.ends_with(format!("{name}@{digest}")) {
            let _ = std::fs::remove_file(&path);
        }
    }
    let pin_err =
        |path: std::path::PathBuf| move |source| LoaderError::Pin { path: path.display().to_string(), source };
    let path = pins.prog(PROG_XDP_UNDERLAY, digest);
    let _ = std::fs::remove_file(&path);
    loaded.xdp()?.pin(&path).map_err(pin_err(path))?;
    for name in TC_PROGS {
        let path = pins.prog(name, digest);
        let _ = std::fs::remove_file(&path);
        if loaded.ids.iter().any(|(n, _)| *n == name) {
            loaded.tc(name)?.pin(&path).map_err(pin_err(path))?;
        }
    }
    Ok(())
}

fn load_object(
    object: &[u8],
    pins: Option<&Pins>,
    ct_entries: u32,
    sizes: &std::collections::BTreeMap<&'static str, u32>,
) -> Result<Loaded, LoaderError> {
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(MAP_CT, ct_entries);
    // Maps created now get these sizes; pinned ones keep theirs.
    for (name, entries) in sizes {
        loader.map_max_entries(name, *entries);
    }
    if let Some(pins) = pins {
        for name in ALL_MAPS.iter().chain([&MAP_LOG_RING]) {
            loader.map_pin_path(name, pins.map(name));
        }
    }
    let mut ebpf = loader.load(object).map_err(LoaderError::Load)?;
    let xdp: &mut Xdp = prog(&mut ebpf, PROG_XDP_UNDERLAY)?;
    verify(|| xdp.load()).map_err(|source| LoaderError::Program {
        prog: PROG_XDP_UNDERLAY,
        what: "verify".into(),
        source,
    })?;
    // An object older than encrypted networks or the TC data path (the
    // upgrade test's previous release) lacks those programs: it serves
    // every other network, in XDP.
    let present: Vec<&'static str> =
        TC_PROGS.into_iter().filter(|n| *n == PROG_TC_ENDPOINT || ebpf.program(n).is_some()).collect();
    for name in &present {
        let tc: &mut SchedClassifier = prog(&mut ebpf, name)?;
        verify(|| tc.load()).map_err(|source| LoaderError::Program { prog: name, what: "verify".into(), source })?;
    }
    let mut loaded =
        Loaded { progs: Progs::Object(ebpf), origin: Origin::Verified, tags: None, own: Vec::new(), ids: Vec::new() };
    loaded.ids = vec![(PROG_XDP_UNDERLAY, loaded.xdp()?.info().map_err(info_err(PROG_XDP_UNDERLAY))?.id())];
    for name in present {
        let id = loaded.tc(name)?.info().map_err(info_err(name))?.id();
        loaded.ids.push((name, id));
    }
    Ok(loaded)
}

/// Runs `load` (a program's `load()`, which has the kernel verify it) again
/// when the verifier was interrupted: it gives up with EAGAIN when a signal
/// is pending for the loading thread, and a second under emulation is long
/// enough for one to arrive. libbpf retries the same way, 5 attempts.
pub fn verify(load: impl FnMut() -> Result<(), ProgramError>) -> Result<(), ProgramError> {
    again_if(
        load,
        |e| matches!(e, ProgramError::LoadError { io_error, .. } if io_error.raw_os_error() == Some(libc::EAGAIN)),
    )
}

/// Runs `f` until it succeeds, fails otherwise than `interrupted` says, or
/// has run [`VERIFY_ATTEMPTS`] times; its last result.
fn again_if<E>(mut f: impl FnMut() -> Result<(), E>, interrupted: impl Fn(&E) -> bool) -> Result<(), E> {
    let mut attempts = VERIFY_ATTEMPTS;
    loop {
        match f() {
            Err(e) if interrupted(&e) && attempts > 1 => attempts -= 1,
            r => return r,
        }
    }
}

/// How many times [`verify`] asks the kernel.
pub const VERIFY_ATTEMPTS: u32 = 5;

fn info_err(prog: &'static str) -> impl Fn(ProgramError) -> LoaderError {
    move |source| LoaderError::Program { prog, what: "info".into(), source }
}

fn prog<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoaderError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or(LoaderError::Program {
        prog: name,
        what: "missing from the object".into(),
        source: ProgramError::NotLoaded,
    })?;
    p.try_into().map_err(|source| LoaderError::Program { prog: name, what: "wrong program type".into(), source })
}

/// A pinned XDP or TCX link as the kernel describes it
/// (`BPF_OBJ_GET_INFO_BY_FD`: aya's `LinkInfo` does not expose the union that
/// holds the device).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PinnedLinkInfo {
    pub id: u32,
    pub prog_id: u32,
    /// The device it is attached to (0 once that device is gone): an index
    /// in the namespace of that device, which need not be this one.
    pub ifindex: u32,
    pub xdp: bool,
}

fn bpf<T>(cmd: aya_obj::generated::bpf_cmd, attr: &mut T) -> libc::c_long {
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] prefix of
    // `union bpf_attr` for `cmd`, and its size is passed with it.
    unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_int, attr as *mut T, std::mem::size_of::<T>()) }
}

/// The XDP or TCX link pinned at `path`; None if it holds no such link.
pub fn pinned_link_info(path: &Path) -> Option<PinnedLinkInfo> {
    use aya_obj::generated::{bpf_cmd, bpf_link_info, bpf_link_type};
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};

    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }

    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut get = ObjGet { pathname: c.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    let fd = bpf(bpf_cmd::BPF_OBJ_GET, &mut get);
    if fd < 0 {
        return None;
    }
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: bpf_link_info is plain data; all zeroes is a valid value.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFd {
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        info_len: std::mem::size_of::<bpf_link_info>() as u32,
        info: &mut info as *mut bpf_link_info as u64,
    };
    if bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr) < 0 {
        return None;
    }
    let (id, prog_id) = (info.id, info.prog_id);
    // SAFETY: the kernel filled the union member that `type_` names.
    let (ifindex, xdp) = unsafe {
        match info.type_ {
            t if t == bpf_link_type::BPF_LINK_TYPE_XDP as u32 => (info.__bindgen_anon_1.xdp.ifindex, true),
            t if t == bpf_link_type::BPF_LINK_TYPE_TCX as u32 => (info.__bindgen_anon_1.tcx.ifindex, false),
            _ => return None,
        }
    };
    Some(PinnedLinkInfo { id, prog_id, ifindex, xdp })
}

/// The IDs of the links on the TCX ingress of device `ifindex` of this
/// network namespace (`BPF_PROG_QUERY`).
fn tcx_ingress_links(ifindex: u32) -> Vec<u32> {
    tcx_ingress(ifindex).into_iter().map(|(_, link)| link).collect()
}

/// The IDs of the programs on the TCX ingress of device `ifindex` of this
/// network namespace (empty before TCX).
pub fn tcx_ingress_progs(ifindex: u32) -> Vec<u32> {
    tcx_ingress(ifindex).into_iter().map(|(prog, _)| prog).collect()
}

/// (program ID, link ID) of what runs on the TCX ingress of device `ifindex`.
fn tcx_ingress(ifindex: u32) -> Vec<(u32, u32)> {
    use aya_obj::generated::{bpf_attach_type, bpf_cmd};
    #[repr(C)]
    struct Query {
        target_ifindex: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        count: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    // The kernel fills the link IDs only when it is given the program IDs' too.
    let (mut progs, mut ids) = ([0u32; 64], [0u32; 64]);
    let mut q = Query {
        target_ifindex: ifindex,
        attach_type: bpf_attach_type::BPF_TCX_INGRESS as u32,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: progs.as_mut_ptr() as u64,
        count: ids.len() as u32,
        _pad: 0,
        prog_attach_flags: 0,
        link_ids: ids.as_mut_ptr() as u64,
        link_attach_flags: 0,
        revision: 0,
    };
    if bpf(bpf_cmd::BPF_PROG_QUERY, &mut q) < 0 {
        return Vec::new();
    }
    let n = (q.count as usize).min(ids.len());
    progs[..n].iter().copied().zip(ids[..n].iter().copied()).collect()
}

/// Whether the link pinned at `path` runs on device `ifname` of this network
/// namespace. A link stays pinned after its device is deleted: a host's pins
/// outlive a deleted network namespace, or a veth someone removed, and such
/// a link runs our program nowhere. Its ifindex alone does not tell: until
/// the kernel has finished tearing a deleted namespace down, its devices keep
/// their indexes, which the devices of a new namespace reuse. So the device
/// here is asked which link (TCX) or program (XDP) it runs.
pub fn runs_on(path: &Path, ifname: &str) -> bool {
    let (Some(link), Some(here)) = (pinned_link_info(path), crate::host::netdev::ifindex(ifname)) else { return false };
    if link.ifindex != here {
        return false;
    }
    if link.xdp {
        crate::host::netdev::xdp_prog_id(here) == Some(link.prog_id)
    } else {
        tcx_ingress_links(here).contains(&link.id)
    }
}

/// The link pinned at `path` if it is attached to `ifname` in this network
/// namespace; a stale pin (its device gone, or another device now holding
/// the name) is removed so that the caller attaches afresh.
fn pinned_on(path: &Path, ifname: &str) -> Option<PinnedLink> {
    let pinned = PinnedLink::from_pin(path).ok()?;
    if runs_on(path, ifname) {
        return Some(pinned);
    }
    tracing::warn!(
        "{}: a pinned link from a device no longer here (its netns or device was deleted); attaching afresh",
        path.display()
    );
    let _ = std::fs::remove_file(path);
    None
}

fn pin(link: FdLink, path: &Path) -> Result<(), LoaderError> {
    link.pin(path).map_err(|source| LoaderError::Pin { path: path.display().to_string(), source })?;
    Ok(())
}

impl Loaded {
    /// The loaded object, for packet tests through BPF_PROG_TEST_RUN (loaded
    /// without pins, so always from the object).
    pub fn ebpf_mut(&mut self) -> Option<&mut Ebpf> {
        match &mut self.progs {
            Progs::Object(ebpf) => Some(ebpf),
            Progs::Pinned { .. } => None,
        }
    }

    fn xdp(&mut self) -> Result<&mut Xdp, LoaderError> {
        match &mut self.progs {
            Progs::Object(ebpf) => prog(ebpf, PROG_XDP_UNDERLAY),
            Progs::Pinned { xdp, .. } => Ok(xdp),
        }
    }

    /// TC program `name`, one of [`TC_PROGS`].
    fn tc(&mut self, name: &'static str) -> Result<&mut SchedClassifier, LoaderError> {
        match &mut self.progs {
            Progs::Object(ebpf) => prog(ebpf, name),
            Progs::Pinned { tc, .. } => {
                let i = TC_PROGS.iter().position(|n| *n == name).expect("one of TC_PROGS");
                Ok(&mut tc[i])
            }
        }
    }

    /// The kernel tag of our program `name` as loaded now.
    fn tag(&mut self, name: &'static str) -> Result<u64, LoaderError> {
        if let Some((_, t)) = self.own.iter().find(|(n, _)| *n == name) {
            return Ok(*t);
        }
        let info = match name {
            PROG_XDP_UNDERLAY => self.xdp()?.info(),
            _ => self.tc(name)?.info(),
        }
        .map_err(info_err(name))?;
        self.own.push((name, info.tag()));
        Ok(info.tag())
    }

    /// The kernel's tag (a hash of the instructions, map references left
    /// out) of program `id`: equal for two loads of the same build. One walk
    /// of the kernel's programs serves every link of an `up`.
    fn tag_of(&mut self, id: u32) -> Option<u64> {
        let tags = self.tags.get_or_insert_with(|| {
            aya::programs::loaded_programs().filter_map(Result::ok).map(|p| (p.id(), p.tag())).collect()
        });
        tags.get(&id).copied()
    }

    /// Whether program `id` is the program `name` loaded now: the very
    /// program (opened from its pin), or another load of the same build.
    fn is_ours(&mut self, id: u32, name: &'static str) -> Result<bool, LoaderError> {
        if self.ids.iter().any(|&(n, i)| n == name && i == id) {
            return Ok(true);
        }
        let ours = self.tag(name)?;
        Ok(self.tag_of(id) == Some(ours))
    }

    /// Whether the link pinned at `path` runs the program `name` loaded now.
    fn runs_ours(&mut self, link: &FdLink, name: &'static str) -> Result<bool, LoaderError> {
        match link.info() {
            Ok(i) => self.is_ours(i.program_id(), name),
            Err(_) => Ok(false),
        }
    }

    /// Attaches XDP to `ifname` unless a live pinned link is there already;
    /// a link running another build of the program gets this one, atomically
    /// (`bpf_link_update`): same link, same maps, no packet unhandled.
    pub fn ensure_xdp(&mut self, pins: &Pins, ifname: &str) -> Result<Attach, LoaderError> {
        let path = pins.link(crate::host::pins::LinkKind::Xdp, ifname);
        if let Some(pinned) = pinned_on(&path, ifname) {
            let fd = FdLink::from(pinned);
            if self.runs_ours(&fd, PROG_XDP_UNDERLAY)? {
                return Ok(Attach::Kept);
            }
            let link_err = |source| LoaderError::Link { path: path.display().to_string(), what: "as XDP link", source };
            let link: XdpLink = fd.try_into().map_err(link_err)?;
            let xdp = self.xdp()?;
            let err = |what: String| move |source| LoaderError::Program { prog: PROG_XDP_UNDERLAY, what, source };
            let id = xdp.attach_to_link(link).map_err(err(format!("replace the program on {ifname}")))?;
            // Ours now; closing it leaves the pinned link (and its new program) in place.
            drop(xdp.take_link(id).map_err(err("take link".into()))?);
            return Ok(Attach::Replaced);
        }
        let _ = std::fs::remove_file(&path);
        let xdp = self.xdp()?;
        let err = |what: String| move |source| LoaderError::Program { prog: PROG_XDP_UNDERLAY, what, source };
        let id = xdp.attach(ifname, XdpMode::Default).map_err(err(format!(
            "attach to {ifname} (another XDP program may own it: check `bpftool net show dev {ifname}`)"
        )))?;
        let link = xdp.take_link(id).map_err(err("take link".into()))?;
        let fd: FdLink = link.try_into().map_err(|source| LoaderError::Link {
            path: path.display().to_string(),
            what: "as fd link",
            source,
        })?;
        pin(fd, &path)?;
        Ok(Attach::Attached)
    }

    /// Attaches TC program `name` (one of [`TC_PROGS`]) at the ingress of
    /// `ifname` unless a live pinned link is there already, replacing another
    /// build's program like `ensure_xdp`. Kernels without TCX get a clsact
    /// filter instead (see `ensure_tc_filter`), whose program, if any, is
    /// `filter_prog`.
    pub fn ensure_tc(
        &mut self,
        pins: &Pins,
        ifname: &str,
        name: &'static str,
        filter_prog: Option<u32>,
    ) -> Result<Attach, LoaderError> {
        if !has_tcx() {
            return self.ensure_tc_filter(ifname, name, filter_prog);
        }
        let path = pins.link(crate::host::pins::LinkKind::Tc, ifname);
        if let Some(pinned) = pinned_on(&path, ifname) {
            let fd = FdLink::from(pinned);
            if self.runs_ours(&fd, name)? {
                return Ok(Attach::Kept);
            }
            let link_err = |source| LoaderError::Link { path: path.display().to_string(), what: "as TCX link", source };
            let link: SchedClassifierLink = fd.try_into().map_err(link_err)?;
            let tc = self.tc(name)?;
            let err = |what: String| move |source| LoaderError::Program { prog: name, what, source };
            let id = tc.attach_to_link(link).map_err(err(format!("replace the program on {ifname}")))?;
            drop(tc.take_link(id).map_err(err("take link".into()))?);
            return Ok(Attach::Replaced);
        }
        let _ = std::fs::remove_file(&path);
        let tc = self.tc(name)?;
        let err = |what: String| move |source| LoaderError::Program { prog: name, what, source };
        let id = tc.attach(ifname, TcAttachType::Ingress).map_err(err(format!("attach to {ifname} ingress")))?;
        let link = tc.take_link(id).map_err(err("take link".into()))?;
        let fd: FdLink = link.try_into().map_err(|source| LoaderError::Link {
            path: path.display().to_string(),
            what: "as fd link (TCX needs kernel 6.6+)",
            source,
        })?;
        pin(fd, &path)?;
        Ok(Attach::Attached)
    }

    /// Before TCX (kernel < 6.6): a direct-action cls_bpf filter on the
    /// device's clsact qdisc, at a fixed priority and handle. A filter is not
    /// a link and cannot be pinned; it stays until the device is deleted,
    /// which is how `down` and `up` remove an endpoint anyway. The fixed
    /// handle makes attaching idempotent: the kernel answers EEXIST when our
    /// filter is there already. A filter running another build's program
    /// (`filter_prog`) gets this one in place (a cls_bpf change, which swaps
    /// the program atomically).
    fn ensure_tc_filter(
        &mut self,
        ifname: &str,
        name: &'static str,
        filter_prog: Option<u32>,
    ) -> Result<Attach, LoaderError> {
        if let Some(id) = filter_prog {
            if self.is_ours(id, name)? {
                return Ok(Attach::Kept);
            }
            let err = |what: String| move |source| LoaderError::Program { prog: name, what, source };
            let link = SchedClassifierLink::attached(
                ifname,
                TcAttachType::Ingress,
                TC_FILTER_PRIORITY,
                TcHandle::new(0, 1),
                None,
            )
            .map_err(|e| err(format!("the filter on {ifname}"))(e.into()))?;
            let tc = self.tc(name)?;
            let id = tc.attach_to_link(link).map_err(err(format!("replace the filter's program on {ifname}")))?;
            let link = tc.take_link(id).map_err(err("take link".into()))?;
            // Dropping an owned filter link detaches it; the filter must outlive us.
            std::mem::forget(link);
            return Ok(Attach::Replaced);
        }
        let err = |what: String| move |source| LoaderError::Program { prog: name, what, source };
        match tc::qdisc_add_clsact(ifname) {
            Ok(()) => {}
            Err(e) if tc_eexist(&e) => {}
            Err(e) => return Err(err(format!("add the clsact qdisc to {ifname}"))(ProgramError::TcError(e))),
        }
        let tc = self.tc(name)?;
        let opts = NlOptions { priority: TC_FILTER_PRIORITY, handle: TcHandle::new(0, 1), ..Default::default() };
        match tc.attach_with_options(ifname, TcAttachType::Ingress, TcAttachOptions::Netlink(opts)) {
            Ok(id) => {
                let link = tc.take_link(id).map_err(err("take link".into()))?;
                // Dropping an owned link detaches it; the filter must outlive us.
                std::mem::forget(link);
                Ok(Attach::Attached)
            }
            Err(ProgramError::TcError(e)) if tc_eexist(&e) => Ok(Attach::Kept),
            Err(e) => Err(err(format!("attach a clsact ingress filter to {ifname}"))(e)),
        }
    }
}

/// Detaches our clsact ingress filter from `ifname` (kernels without TCX,
/// where a filter is not a pinned link that removing its pin detaches).
pub fn detach_tc_filter(ifname: &str) -> Result<(), LoaderError> {
    use aya::programs::links::Link as _;
    let err = |what: String| move |source| LoaderError::Program { prog: PROG_TC_UNDERLAY, what, source };
    let link =
        SchedClassifierLink::attached(ifname, TcAttachType::Ingress, TC_FILTER_PRIORITY, TcHandle::new(0, 1), None)
            .map_err(|e| err(format!("the filter on {ifname}"))(e.into()))?;
    link.detach().map_err(err(format!("detach the filter on {ifname}")))
}

/// The priority of the clsact filter on kernels without TCX (lower runs first).
pub const TC_FILTER_PRIORITY: u16 = 1;

/// TCX links arrived in kernel 6.6 (aya's own test for choosing them).
pub fn has_tcx() -> bool {
    KernelVersion::current().map(|v| v >= KernelVersion::new(6, 6, 0)).unwrap_or(false)
}

fn tc_eexist(e: &TcError) -> bool {
    match e {
        TcError::AlreadyAttached => true,
        TcError::NetlinkError(n) => n.raw_os_error() == Some(libc::EEXIST),
        TcError::IoError(io) => io.raw_os_error() == Some(libc::EEXIST),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eagain() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::EAGAIN)
    }

    fn is_eagain(e: &std::io::Error) -> bool {
        e.raw_os_error() == Some(libc::EAGAIN)
    }

    #[test]
    fn an_interrupted_verification_is_asked_again_up_to_five_times() {
        // Interrupted twice, then verified: three calls, success.
        let mut calls = 0;
        let r = again_if(
            || {
                calls += 1;
                if calls < 3 {
                    Err(eagain())
                } else {
                    Ok(())
                }
            },
            is_eagain,
        );
        assert!(r.is_ok());
        assert_eq!(calls, 3);
        // Interrupted every time: VERIFY_ATTEMPTS calls, then the EAGAIN.
        let mut calls = 0;
        let r = again_if(
            || {
                calls += 1;
                Err(eagain())
            },
            is_eagain,
        );
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EAGAIN));
        assert_eq!(calls, VERIFY_ATTEMPTS);
        // A refusal is final at once.
        let mut calls = 0;
        let r = again_if(
            || {
                calls += 1;
                Err(std::io::Error::from_raw_os_error(libc::EACCES))
            },
            is_eagain,
        );
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EACCES));
        assert_eq!(calls, 1);
    }
}
