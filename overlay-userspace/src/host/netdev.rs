//! Network devices and namespaces, through rtnetlink: endpoint veth pairs,
//! their addresses and routes, and entering namespaces with `setns`.

use std::{
    ffi::CString,
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use futures::TryStreamExt;
use rtnetlink::{
    packet_route::{
        address::AddressAttribute,
        link::{InfoData, InfoVeth},
    },
    Handle, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::state::model::Mac;

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("network namespace {path}: {source} (create it with `ip netns add NAME`, or fix the endpoint's netns)")]
    Netns { path: String, source: std::io::Error },
    #[error("cannot enter network namespace {path}: {source}")]
    Setns { path: String, source: nix::Error },
    #[error("netlink: {0}")]
    Socket(std::io::Error),
    #[error("{what}: {source}")]
    Netlink { what: String, source: rtnetlink::Error },
    #[error("interface {0} not found")]
    NoSuchInterface(String),
    #[error("cannot turn on GRO for {ifname}: {source}")]
    Ethtool { ifname: String, source: std::io::Error },
    #[error("a thread configuring {0} panicked")]
    Thread(String),
}

pub use crate::state::model::{host_veth_name, is_host_veth_name};

pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    Some(unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The MAC address of interface `name` in this network namespace.
pub fn link_mac(name: &str) -> Option<[u8; 6]> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address?.as_link_addr()?.addr())
}

/// One synchronous rtnetlink request and its first reply, over a socket of
/// its own in this thread's network namespace: for the callers that run
/// where no async runtime may be started. A system call interrupted by a
/// signal is tried again, up to three times in all; what still fails is
/// logged with its reason, so that a caller's "no answer" can be told from
/// an answer that says "none".
fn route_request(
    msg: rtnetlink::packet_route::RouteNetlinkMessage,
) -> Option<rtnetlink::packet_route::RouteNetlinkMessage> {
    let mut last = String::new();
    for _ in 0..3 {
        match route_request_once(msg.clone()) {
            Ok(reply) => return reply,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => last = e.to_string(),
            Err(e) => {
                last = e.to_string();
                break;
            }
        }
    }
    tracing::warn!("rtnetlink request {:?} got no answer: {last}", msg.message_type());
    None
}

fn route_request_once(
    msg: rtnetlink::packet_route::RouteNetlinkMessage,
) -> std::io::Result<Option<rtnetlink::packet_route::RouteNetlinkMessage>> {
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    sock.send(&buf, 0)?;
    let mut reply = vec![0u8; 64 * 1024];
    let n = sock.recv(&mut &mut reply[..], 0)?;
    let reply = NetlinkMessage::<rtnetlink::packet_route::RouteNetlinkMessage>::deserialize(&reply[..n])
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(match reply.payload {
        NetlinkPayload::InnerMessage(m) => Some(m),
        // An error reply (no such device, no such namespace) is an answer.
        _ => None,
    })
}

/// RTM_GETLINK's attributes of device `ifindex` of this network namespace.
fn link_attributes(ifindex: u32) -> Option<Vec<rtnetlink::packet_route::link::LinkAttribute>> {
    use rtnetlink::packet_route::{link::LinkMessage, RouteNetlinkMessage};
    let mut get = LinkMessage::default();
    get.header.index = ifindex;
    match route_request(RouteNetlinkMessage::GetLink(get))? {
        RouteNetlinkMessage::NewLink(link) => Some(link.attributes),
        _ => None,
    }
}

/// The MTU of device `ifindex` of this network namespace.
pub fn link_mtu(ifindex: u32) -> Option<u32> {
    use rtnetlink::packet_route::link::LinkAttribute;
    link_attributes(ifindex)?.into_iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(m),
        _ => None,
    })
}

/// The ID of the XDP program attached to device `ifindex` of this network
/// namespace, if any (RTM_GETLINK's IFLA_XDP).
pub fn xdp_prog_id(ifindex: u32) -> Option<u32> {
    use rtnetlink::packet_route::link::{LinkAttribute, LinkXdp};
    link_attributes(ifindex)?.into_iter().find_map(|a| match a {
        LinkAttribute::Xdp(x) => x.into_iter().find_map(|x| match x {
            LinkXdp::ProgId(id) if id != 0 => Some(id),
            _ => None,
        }),
        _ => None,
    })
}

/// Where the other end of a veth lives, seen from this namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerNetns {
    /// This namespace.
    Here,
    /// A namespace `ip netns` knows by this name (/run/netns).
    Named(String),
    /// The initial network namespace (PID 1's).
    Init,
    /// A namespace with no name here: its id as this namespace knows it.
    Unnamed(i32),
}

impl PeerNetns {
    /// `cmd` as run in the namespace: prefixed with `ip netns exec NAME` or
    /// `nsenter --net=/proc/1/ns/net`.
    pub fn command(&self, cmd: &str) -> String {
        match self {
            PeerNetns::Here => cmd.to_string(),
            PeerNetns::Named(n) => format!("ip netns exec {n} {cmd}"),
            PeerNetns::Init => format!("nsenter --net=/proc/1/ns/net {cmd}"),
            PeerNetns::Unnamed(_) => format!("<in the peer's namespace> {cmd}"),
        }
    }

    fn path(&self) -> Option<PathBuf> {
        match self {
            PeerNetns::Named(n) => Some(Path::new("/run/netns").join(n)),
            PeerNetns::Init => Some(PathBuf::from("/proc/1/ns/net")),
            PeerNetns::Here | PeerNetns::Unnamed(_) => None,
        }
    }
}

/// The other end of a veth and what decides whether a host can use its end
/// as an underlay: frames native XDP sends out of a veth (XDP_TX, redirect)
/// arrive only where the peer runs NAPI (GRO on, or an XDP program of its
/// own), and a peer with TX checksum offload on hands over the partial
/// checksums of whatever it forwards, which XDP cannot finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPeer {
    pub ifindex: u32,
    pub netns: PeerNetns,
    /// Read in the peer's namespace; `None` where it has no name here.
    pub state: Option<PeerState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub ifname: String,
    pub gro: bool,
    pub tx_checksum: bool,
    pub xdp: bool,
}

impl PeerState {
    /// What the peer needs changed for an XDP underlay, as ethtool's
    /// `-K` arguments: empty when nothing.
    pub fn needs(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.gro && !self.xdp {
            v.extend(["gro", "on"]);
        }
        if self.tx_checksum {
            v.extend(["tx", "off"]);
        }
        v
    }
}

/// The peer of veth `ifindex` of this namespace (IFLA_LINK and
/// IFLA_LINK_NETNSID), its namespace found among /run/netns and PID 1's by
/// namespace id, and its GRO, TX checksum and XDP state read there.
pub fn veth_peer(ifindex: u32) -> Option<VethPeer> {
    use rtnetlink::packet_route::link::LinkAttribute;
    let attrs = link_attributes(ifindex)?;
    let peer = attrs.iter().find_map(|a| match a {
        LinkAttribute::Link(i) => Some(*i),
        _ => None,
    })?;
    let nsid = attrs.iter().find_map(|a| match a {
        LinkAttribute::LinkNetNsId(id) if *id >= 0 => Some(*id),
        _ => None,
    });
    let netns = match nsid {
        None => PeerNetns::Here,
        Some(id) => {
            let named = std::fs::read_dir("/run/netns")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| (PeerNetns::Named(e.file_name().to_string_lossy().into_owned()), e.path()));
            let init = std::iter::once((PeerNetns::Init, PathBuf::from("/proc/1/ns/net")));
            named.chain(init).find(|(_, p)| netns_id(p) == Some(id)).map(|(n, _)| n).unwrap_or(PeerNetns::Unnamed(id))
        }
    };
    let read = move || -> Option<PeerState> {
        const ETHTOOL_GTXCSUM: u32 = 0x16;
        const ETHTOOL_GGRO: u32 = 0x2b;
        let ifname = ifname(peer)?;
        Some(PeerState {
            gro: ethtool_get(&ifname, ETHTOOL_GGRO).ok()? != 0,
            tx_checksum: ethtool_get(&ifname, ETHTOOL_GTXCSUM).ok()? != 0,
            xdp: xdp_prog_id(peer).is_some(),
            ifname,
        })
    };
    let state = match (&netns, netns.path()) {
        (PeerNetns::Here, _) => read(),
        (_, Some(path)) => std::thread::scope(|s| {
            s.spawn(|| {
                enter_netns(&path).ok()?;
                read()
            })
            .join()
            .ok()
            .flatten()
        }),
        _ => None,
    };
    Some(VethPeer { ifindex: peer, netns, state })
}

/// The id this namespace gives the namespace at `path` (RTM_GETNSID), if
/// it gave it one.
fn netns_id(path: &Path) -> Option<i32> {
    use rtnetlink::packet_route::{
        nsid::{NsidAttribute, NsidMessage},
        RouteNetlinkMessage,
    };
    let f = File::open(path).ok()?;
    let mut get = NsidMessage::default();
    get.attributes.push(NsidAttribute::Fd(f.as_raw_fd() as u32));
    match route_request(RouteNetlinkMessage::GetNsId(get))? {
        RouteNetlinkMessage::NewNsId(m) => m.attributes.iter().find_map(|a| match a {
            NsidAttribute::Id(id) if *id >= 0 => Some(*id),
            _ => None,
        }),
        _ => None,
    }
}

/// Turns GRO on for `ifname` in this network namespace. A veth whose peer is
/// the target of a native XDP_REDIRECT drops the frames silently unless it has
/// GRO (NAPI) or an XDP program of its own.
pub fn enable_gro(ifname: &str) -> std::io::Result<()> {
    const ETHTOOL_SGRO: u32 = 0x2c;
    ethtool_set(ifname, ETHTOOL_SGRO, 1)
}

/// Turns TX checksum offload on or off for `ifname`. Off, the kernel
/// completes checksums when it transmits, as a NIC would. Needed on a veth
/// underlay in the XDP data path: a veth hands partial checksums to its
/// peer, and the receiving host's native XDP redirect loses the "checksum
/// still to do" state with the skb.
pub fn set_tx_checksum(ifname: &str, on: bool) -> std::io::Result<()> {
    const ETHTOOL_STXCSUM: u32 = 0x17;
    ethtool_set(ifname, ETHTOOL_STXCSUM, on as u32)
}

/// Whether TX checksum offload is on for `ifname`; `None` if unreadable.
pub fn tx_checksum(ifname: &str) -> Option<bool> {
    const ETHTOOL_GTXCSUM: u32 = 0x16;
    ethtool_get(ifname, ETHTOOL_GTXCSUM).ok().map(|v| v != 0)
}

/// The kernel driver behind `ifname` (ETHTOOL_GDRVINFO), e.g. "veth".
pub fn driver(ifname: &str) -> Option<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    let mut info = DrvInfo { cmd: ETHTOOL_GDRVINFO, driver: [0; 32], rest: [0; 160] };
    ethtool(ifname, &mut info as *mut DrvInfo as *mut libc::c_char).ok()?;
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// The features that segment UDP-tunnelled GSO packets in the device.
pub const TUNNEL_SEGMENTATION: [&str; 2] = ["tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation"];

/// The names of `ifname`'s features (ETH_SS_FEATURES), in bit order.
fn feature_names(ifname: &str) -> std::io::Result<Vec<String>> {
    const ETHTOOL_GSSET_INFO: u32 = 0x37;
    const ETHTOOL_GSTRINGS: u32 = 0x1b;
    const ETH_SS_FEATURES: u32 = 4;
    const ETH_GSTRING_LEN: usize = 32;
    // struct ethtool_sset_info: cmd, reserved, sset_mask (u64), data[1].
    let mut info = [0u32; 5];
    info[0] = ETHTOOL_GSSET_INFO;
    info[2] = 1 << ETH_SS_FEATURES;
    ethtool(ifname, info.as_mut_ptr() as *mut libc::c_char)?;
    let count = info[4] as usize;
    // struct ethtool_gstrings: cmd, string_set, len, then the names.
    let mut buf = vec![0u8; 12 + count * ETH_GSTRING_LEN];
    buf[0..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
    buf[4..8].copy_from_slice(&ETH_SS_FEATURES.to_ne_bytes());
    buf[8..12].copy_from_slice(&(count as u32).to_ne_bytes());
    ethtool(ifname, buf.as_mut_ptr() as *mut libc::c_char)?;
    Ok(buf[12..]
        .chunks(ETH_GSTRING_LEN)
        .map(|n| String::from_utf8_lossy(&n[..n.iter().position(|b| *b == 0).unwrap_or(n.len())]).into_owned())
        .collect())
}

/// Turns the features `names` of `ifname` on or off (ETHTOOL_SFEATURES,
/// what `ethtool -K` does); a name the device does not have is skipped.
pub fn set_features(ifname: &str, names: [&str; 2], on: bool) -> std::io::Result<()> {
    const ETHTOOL_SFEATURES: u32 = 0x3b;
    let all = feature_names(ifname)?;
    let blocks = all.len().div_ceil(32);
    // struct ethtool_sfeatures: cmd, size, then {valid, requested} per block.
    let mut req = vec![0u32; 2 + 2 * blocks];
    req[0] = ETHTOOL_SFEATURES;
    req[1] = blocks as u32;
    for bit in all.iter().enumerate().filter(|(_, n)| names.contains(&n.as_str())).map(|(i, _)| i) {
        req[2 + 2 * (bit / 32)] |= 1 << (bit % 32);
        if on {
            req[3 + 2 * (bit / 32)] |= 1 << (bit % 32);
        }
    }
    ethtool(ifname, req.as_mut_ptr() as *mut libc::c_char)
}

/// struct ethtool_value: one feature's command and setting.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// An ethtool_value read (ETHTOOL_G*).
fn ethtool_get(ifname: &str, cmd: u32) -> std::io::Result<u32> {
    let mut ev = EthtoolValue { cmd, data: 0 };
    ethtool(ifname, &mut ev as *mut EthtoolValue as *mut libc::c_char)?;
    Ok(ev.data)
}

fn ethtool_set(ifname: &str, cmd: u32, data: u32) -> std::io::Result<()> {
    let mut ev = EthtoolValue { cmd, data };
    ethtool(ifname, &mut ev as *mut EthtoolValue as *mut libc::c_char)
}

/// One SIOCETHTOOL request on `ifname` in this network namespace.
fn ethtool(ifname: &str, data: *mut libc::c_char) -> std::io::Result<()> {
    // The request's type differs between glibc (c_ulong) and musl (c_int).
    const SIOCETHTOOL: libc::Ioctl = 0x8946;
    // SAFETY: ifreq is plain data; the name fits (IFNAMSIZ checked by the model).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes().take(libc::IF_NAMESIZE - 1)) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = data;
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let r = unsafe { libc::ioctl(fd, SIOCETHTOOL, &mut ifr) };
    let err = std::io::Error::last_os_error();
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(err);
    }
    Ok(())
}

/// Turns on IPv4 forwarding in this network namespace, as Docker does, so
/// traffic leaving the overlay is routed (and masqueraded) by the host.
pub fn enable_ip_forward() -> std::io::Result<()> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(p)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(p, "1")
}

/// The host's way back to a local endpoint, for traffic that left the overlay
/// and returns de-masqueraded: `ip/32 dev veth mtu <network MTU>` and a
/// permanent neighbour entry. The route carries the MTU because the host-side
/// veth itself has a large one (see [`HOST_VETH_MTU`]).
pub async fn host_route(handle: &Handle, veth: u32, ip: Ipv4Addr, mac: Mac, mtu: u32) -> Result<(), NetdevError> {
    use rtnetlink::packet_route::route::{RouteAttribute, RouteMetric, RouteScope};
    let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .output_interface(veth)
        .scope(RouteScope::Link)
        .build();
    route.attributes.push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
    handle.route().add(route).replace().execute().await.map_err(nl(format!("route {ip}/32 to its veth")))?;
    handle
        .neighbours()
        .add(veth, IpAddr::V4(ip))
        .link_layer_address(&mac.0)
        .state(rtnetlink::packet_route::neighbour::NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(nl(format!("neighbour {ip} {mac}")))
}

/// IPv4 addresses configured in this network namespace, as (ifname, address).
pub fn local_ipv4_addresses() -> Vec<(String, Ipv4Addr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            Some((a.interface_name, ip))
        })
        .collect()
}

/// The IPv4 networks configured on `ifname` (address with prefix).
pub fn ipv4_networks(ifname: &str) -> Vec<ipnet::Ipv4Net> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter(|a| a.interface_name == ifname)
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            let mask = a.netmask?.as_sockaddr_in()?.ip();
            ipnet::Ipv4Net::with_netmask(ip, mask).ok()
        })
        .collect()
}

/// Asks the kernel to resolve the MAC of each peer on the underlay's link
/// (`NTF_USE`: an ARP request now, the entry kept up to date). XDP's FIB
/// lookups only read the neighbour table, so the routing mesh's first packet
/// to a host this one has not talked to yet would find no MAC. Peers behind
/// a router need no entry of their own (the router's is used).
pub async fn prime_neighbours(
    handle: &Handle,
    ifname: &str,
    ifindex: u32,
    peers: &[Ipv4Addr],
) -> Result<(), NetdevError> {
    use rtnetlink::packet_route::neighbour::{NeighbourFlags, NeighbourState};
    let nets = ipv4_networks(ifname);
    for p in peers.iter().filter(|p| nets.iter().any(|n| n.contains(*p) && n.addr() != **p)) {
        handle
            .neighbours()
            .add(ifindex, IpAddr::V4(*p))
            .state(NeighbourState::None)
            .flags(NeighbourFlags::Use)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("resolve the MAC of cluster host {p} on {ifname}")))?;
    }
    Ok(())
}

/// Enters the network namespace at `path` for the calling thread.
pub fn enter_netns(path: &Path) -> Result<(), NetdevError> {
    let f = File::open(path).map_err(|source| NetdevError::Netns { path: path.display().to_string(), source })?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|source| NetdevError::Setns { path: path.display().to_string(), source })
}

/// An rtnetlink handle bound to the calling thread's network namespace. The
/// connection runs on the current tokio runtime.
pub fn connect() -> Result<Handle, NetdevError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetdevError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Runs `f` on a thread inside the network namespace at `netns`, with its own
/// single-threaded runtime and netlink socket.
pub fn in_netns<T, F, Fut>(netns: &Path, f: F) -> Result<T, NetdevError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, NetdevError>>,
{
    let path = netns.to_path_buf();
    let label = path.display().to_string();
    std::thread::spawn(move || -> Result<T, NetdevError> {
        enter_netns(&path)?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(NetdevError::Socket)?;
        rt.block_on(async move {
            let handle = connect()?;
            f(handle).await
        })
    })
    .join()
    .map_err(|_| NetdevError::Thread(label))?
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetdevError {
    let what = what.into();
    move |source| NetdevError::Netlink { what, source }
}

/// What the container end of an endpoint's veth should look like.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerIf {
    pub netns: PathBuf,
    pub ifname: String,
    pub mac: Mac,
    pub mtu: u32,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// Whether this interface carries the netns's default route.
    pub default_route: bool,
}

/// Creates the veth pair `host_name` <-> `c.ifname`, the container end made
/// directly inside `c.netns` with its MAC and MTU. Returns false when the
/// host end already exists (nothing created).
pub async fn create_veth(handle: &Handle, host_name: &str, c: &ContainerIf) -> Result<bool, NetdevError> {
    if ifindex(host_name).is_some() {
        return Ok(false);
    }
    let ns =
        File::open(&c.netns).map_err(|source| NetdevError::Netns { path: c.netns.display().to_string(), source })?;
    let peer =
        LinkUnspec::new_with_name(&c.ifname).address(c.mac.0.to_vec()).mtu(c.mtu).setns_by_fd(ns.as_raw_fd()).build();
    let msg = LinkVeth::new(host_name, &c.ifname)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .mtu(HOST_VETH_MTU)
        .up()
        .build();
    handle.link().add(msg).execute().await.map_err(nl(format!(
        "create veth {host_name} with peer {} in {} (is {} already used there?)",
        c.ifname,
        c.netns.display(),
        c.ifname
    )))?;
    Ok(true)
}

/// A veth pair in this namespace for a Docker container (the plugin's
/// `Join`): the host end `host_name`, and the container end `peer_name` with
/// the endpoint's MAC and the network's MTU, which Docker moves into the
/// container and renames. Idempotent: an existing host end is kept (a
/// replayed `Join`). True when created.
pub async fn create_docker_veth(
    handle: &Handle,
    host_name: &str,
    peer_name: &str,
    mac: Mac,
    mtu: u32,
) -> Result<bool, NetdevError> {
    if ifindex(host_name).is_some() {
        return Ok(false);
    }
    let peer = LinkUnspec::new_with_name(peer_name).address(mac.0.to_vec()).mtu(mtu).build();
    let msg = LinkVeth::new(host_name, peer_name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .mtu(HOST_VETH_MTU)
        .build();
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(nl(format!("create veth {host_name} with peer {peer_name} for a Docker container")))?;
    // The XDP program redirects to the host end: the container's end needs
    // GRO to take the frames (kept when Docker moves it).
    enable_gro(peer_name).map_err(|e| NetdevError::Ethtool { ifname: peer_name.to_string(), source: e })?;
    Ok(true)
}

/// MTU of the host end of an endpoint's veth. The container end has the
/// network MTU; the host end takes anything, so a frame from a container that
/// raised its own MTU reaches our TC program (which answers ICMP "fragmentation
/// needed" or counts the drop) instead of vanishing in the veth: the MTU black
/// hole Docker users know.
pub const HOST_VETH_MTU: u32 = 65535;

/// Brings the host end up with [`HOST_VETH_MTU`] (idempotent).
pub async fn set_host_end(handle: &Handle, host_name: &str) -> Result<u32, NetdevError> {
    let idx = ifindex(host_name).ok_or_else(|| NetdevError::NoSuchInterface(host_name.into()))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(idx).mtu(HOST_VETH_MTU).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {host_name} up")))?;
    Ok(idx)
}

/// Inside the endpoint's netns: MAC, MTU, up, exactly the one IPv4 address,
/// lo up, default route via the gateway. Idempotent.
pub fn configure_container(c: &ContainerIf) -> Result<(), NetdevError> {
    let c = c.clone();
    in_netns(&c.netns.clone(), move |h| async move {
        let idx = ifindex(&c.ifname)
            .ok_or_else(|| NetdevError::NoSuchInterface(format!("{} in {}", c.ifname, c.netns.display())))?;
        // Only what differs is set: setting a MAC, even the same one, makes
        // the kernel flush the interface's neighbour entries, and a packet
        // waiting there for its ARP answer (a reply under way) is lost.
        let (mut same_mac, mut same_mtu, mut up) = (false, false, false);
        let mut links = h.link().get().match_index(idx).execute();
        if let Some(m) = links.try_next().await.map_err(nl(format!("read {}", c.ifname)))? {
            use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
            up = m.header.flags.contains(LinkFlags::Up);
            for a in &m.attributes {
                match a {
                    LinkAttribute::Address(a) => same_mac = a[..] == c.mac.0[..],
                    LinkAttribute::Mtu(m) => same_mtu = *m == c.mtu,
                    _ => {}
                }
            }
        }
        if !(same_mac && same_mtu && up) {
            let mut link = LinkUnspec::new_with_index(idx).up();
            if !same_mac {
                link = link.address(c.mac.0.to_vec());
            }
            if !same_mtu {
                link = link.mtu(c.mtu);
            }
            h.link().set(link.build()).execute().await.map_err(nl(format!("configure {}", c.ifname)))?;
        }
        // A veth: GRO takes the frames XDP redirects to it. (A macvlan
        // sub-interface gets its frames from its parent.)
        if driver(&c.ifname).as_deref() == Some("veth") {
            enable_gro(&c.ifname).map_err(|e| NetdevError::Ethtool { ifname: c.ifname.clone(), source: e })?;
            // What the container forwards back into the overlay of the GSO
            // packets the TC data path decapsulated (they keep their tunnel
            // GSO type: no kernel here can clear it from BPF) is cut here,
            // so that it can be encapsulated again. Its own TCP stays whole.
            set_features(&c.ifname, TUNNEL_SEGMENTATION, false)
                .map_err(|e| NetdevError::Ethtool { ifname: c.ifname.clone(), source: e })?;
        }
        if let Some(lo) = ifindex("lo") {
            h.link().set(LinkUnspec::new_with_index(lo).up().build()).execute().await.map_err(nl("set lo up"))?;
        }
        // Exactly one IPv4 address: drop stale ones from an earlier state.
        let mut addrs = h.address().get().set_link_index_filter(idx).execute();
        let mut stale = Vec::new();
        let mut present = false;
        while let Some(msg) = addrs.try_next().await.map_err(nl("list addresses"))? {
            let ip = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            match ip {
                Some(ip) if ip == c.ip && msg.header.prefix_len == c.prefix_len => present = true,
                Some(_) => stale.push(msg),
                None => {}
            }
        }
        for m in stale {
            h.address().del(m).execute().await.map_err(nl("remove stale address"))?;
        }
        if !present {
            h.address()
                .add(idx, IpAddr::V4(c.ip), c.prefix_len)
                .execute()
                .await
                .map_err(nl(format!("add {}/{} to {}", c.ip, c.prefix_len, c.ifname)))?;
        }
        if c.default_route {
            let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(c.gateway).output_interface(idx).build();
            h.route().add(route).replace().execute().await.map_err(nl(format!("default route via {}", c.gateway)))?;
        }
        Ok(())
    })
}

/// Deletes a link by name; a missing link is fine.
/// The program id of the bpf filter named `prog` on the clsact ingress of
/// device `ifindex` (how TC programs attach on kernels without TCX).
pub async fn ingress_bpf_filter(handle: &Handle, ifindex: u32, prog: &str) -> Result<Option<u32>, NetdevError> {
    use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};
    let mut filters = handle.traffic_filter(ifindex as i32).get().ingress().execute();
    while let Some(m) =
        filters.try_next().await.map_err(nl(format!("list the ingress filters of ifindex {ifindex}")))?
    {
        let opts = m.attributes.iter().filter_map(|a| match a {
            TcAttribute::Options(o) => Some(o),
            _ => None,
        });
        let (mut name, mut id) = (None, None);
        for o in opts.flatten() {
            match o {
                TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => name = Some(n.clone()),
                TcOption::Bpf(TcFilterBpfOption::ProgId(i)) => id = Some(*i),
                _ => {}
            }
        }
        if name.as_deref().is_some_and(|n| same_prog_name(n, prog)) {
            return Ok(id);
        }
    }
    Ok(None)
}

/// Whether a filter's name is program `prog`'s: aya names a filter after
/// the program it attaches, and a program opened from its pin knows only
/// the kernel's copy of its name, cut to 15 characters.
fn same_prog_name(filter: &str, prog: &str) -> bool {
    let f = filter.trim_end_matches('\0');
    f == prog || (f.len() == 15 && prog.starts_with(f))
}

pub async fn delete_link(handle: &Handle, name: &str) -> Result<bool, NetdevError> {
    let Some(idx) = ifindex(name) else { return Ok(false) };
    match handle.link().del(idx).execute().await {
        Ok(()) => Ok(true),
        // Gone meanwhile (its peer's namespace was deleted): fine.
        Err(_) if ifindex(name).is_none() => Ok(false),
        Err(source) => Err(NetdevError::Netlink { what: format!("delete {name}"), source }),
    }
}

/// What an interface inside a container's netns looks like now (CNI CHECK).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
    pub addresses: Vec<ipnet::Ipv4Net>,
    /// The gateway of the netns's default route through this interface.
    pub default_gateway: Option<Ipv4Addr>,
}

/// Reads interface `ifname` in the netns at `netns`; None when it is not there.
pub fn observe_container(netns: &Path, ifname: &str) -> Result<Option<Observed>, NetdevError> {
    let name = ifname.to_string();
    in_netns(netns, move |handle| async move {
        use rtnetlink::packet_route::link::LinkAttribute;
        let Some(index) = ifindex(&name) else { return Ok(None) };
        let mut links = handle.link().get().match_index(index).execute();
        let mut o = Observed { addresses: ipv4_networks(&name), ..Default::default() };
        if let Some(m) = links.try_next().await.map_err(nl(format!("read {name}")))? {
            for a in m.attributes {
                match a {
                    LinkAttribute::Mtu(m) => o.mtu = Some(m),
                    LinkAttribute::Address(a) if a.len() == 6 => {
                        o.mac = Some(Mac([a[0], a[1], a[2], a[3], a[4], a[5]]))
                    }
                    _ => {}
                }
            }
        }
        // This thread's netns: /proc/thread-self, not /proc/self.
        let routes = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
        o.default_gateway = default_gateway(&routes, &name);
        Ok(Some(o))
    })
}

/// The gateway of the default route through `ifname` in /proc/net/route's
/// text (addresses in hex, in the kernel's byte order).
fn default_gateway(routes: &str, ifname: &str) -> Option<Ipv4Addr> {
    routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 || f[0] != ifname || f[1] != "00000000" || f[7] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(f[2], 16).ok()?;
        Some(Ipv4Addr::from(gw.to_le_bytes()))
    })
}

/// The label of the gateway addresses `up` puts on `lo`.
pub const GATEWAY_LABEL: &str = "lo:ob";

/// Makes the gateway addresses on `lo` (label [`GATEWAY_LABEL`], /32) be
/// exactly `want`: this host owns the gateways of its networks, where the
/// resolver listens and pings are answered. Returns (added, removed).
pub async fn sync_gateway_addresses(
    handle: &Handle,
    want: &std::collections::BTreeSet<Ipv4Addr>,
) -> Result<(usize, usize), NetdevError> {
    let Some(lo) = ifindex("lo") else { return Ok((0, 0)) };
    let mut addrs = handle.address().get().set_link_index_filter(lo).execute();
    let mut have = std::collections::BTreeSet::new();
    let mut stale = Vec::new();
    while let Some(msg) = addrs.try_next().await.map_err(nl("list the addresses of lo"))? {
        let ours = msg.attributes.iter().any(|a| matches!(a, AddressAttribute::Label(l) if l == GATEWAY_LABEL));
        let ip = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        match ip {
            Some(ip) if ours && want.contains(&ip) => {
                have.insert(ip);
            }
            Some(_) if ours => stale.push(msg),
            _ => {}
        }
    }
    let removed = stale.len();
    for m in stale {
        handle.address().del(m).execute().await.map_err(nl("remove a gateway address from lo"))?;
    }
    let mut added = 0;
    for gw in want.iter().filter(|g| !have.contains(g)) {
        let mut req = handle.address().add(lo, IpAddr::V4(*gw), 32);
        req.message_mut().attributes.push(AddressAttribute::Label(GATEWAY_LABEL.into()));
        match req.execute().await {
            Ok(()) => added += 1,
            // Configured already without our label (by hand): it is the host's anyway.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
            Err(source) => return Err(NetdevError::Netlink { what: format!("add gateway {gw}/32 to lo"), source }),
        }
    }
    Ok((added, removed))
}

#[cfg(test)]
mod route_tests {
    use super::*;

    #[test]
    fn a_filter_named_by_a_pinned_program_is_ours() {
        assert!(same_prog_name("tc_endpoint_egress", "tc_endpoint_egress"));
        assert!(same_prog_name("tc_endpoint_egr", "tc_endpoint_egress"), "the kernel's 15 characters");
        assert!(!same_prog_name("tc_endpoint", "tc_endpoint_egress"));
        assert!(!same_prog_name("xdp_underlay_in", "tc_endpoint_egress"));
    }

    #[test]
    fn the_default_route_is_read_from_proc_net_route() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_gateway(t, "eth0"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(default_gateway(t, "eth1"), None);
    }
}
