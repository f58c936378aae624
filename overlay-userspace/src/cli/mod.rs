//! The command line: clap definitions here, one file per verb.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use overlay_bpf::state::store::{EtcdTls, Store, StoreUrl};

mod agent;
mod cni;
mod down;
mod endpoint;
mod host;
mod network;
mod service;
mod status;
mod store;
mod up;
mod validate;

pub use agent::agent;

#[derive(Parser, Debug)]
#[command(
    name = "overlay-bpf",
    version,
    about = "Docker-style multi-host overlay networks with the data path in eBPF",
    long_about = "overlay-bpf does the job of Docker's overlay driver and swarm routing mesh: VXLAN \
networks across hosts (one VNI per network), published ports on every host, and service VIPs. \
XDP and TC programs do the encapsulation and NAT in the kernel; this command fills their maps \
from the cluster state: a file (the default) or an etcd store (--store etcd://...).\n\n\
Every host runs the same file. `sudo overlay-bpf up` applies it for this host (found by its \
address or hostname) and exits; the data path stays in the kernel, pinned under \
/sys/fs/bpf/overlay-bpf/<host>, until `overlay-bpf down`.",
    after_help = "Examples:\n  \
overlay-bpf validate --state cluster.yaml\n  \
sudo overlay-bpf up --state cluster.yaml --host node1\n  \
sudo overlay-bpf status --host node1 -o json\n  \
sudo bpftool map dump pinned /sys/fs/bpf/overlay-bpf/node1/maps/OB_ENDPOINTS_V1\n  \
overlay-bpf network create --state cluster.yaml --subnet 10.0.9.0/24 --attachable backend\n  \
overlay-bpf store import cluster.yaml --store etcd://127.0.0.1:2379\n  \
sudo overlay-bpf agent --store etcd://10.0.0.1:2379,10.0.0.2:2379\n\n\
Exit codes: 0 success, 1 user error (bad file, unknown host), 2 system error (kernel refused, missing privilege)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Cluster state file (YAML, `version: 1`): the file store. Default
    /// /etc/overlay-bpf/cluster.yaml; $OVERLAY_BPF_STATE. Another spelling of
    /// --store FILE: give one of the two.
    #[arg(long, global = true, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Where the cluster state lives: a file (`file:///path` or a plain path)
    /// or etcd (`etcd://h1:2379,h2:2379[/prefix]`, keys under /overlay-bpf or
    /// the prefix); $OVERLAY_BPF_STORE. A flag wins over the environment.
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,
    /// CA certificate (PEM) that etcd's server certificate must chain to; turns on TLS.
    #[arg(long, global = true, env = "OVERLAY_BPF_ETCD_CACERT", value_name = "FILE")]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd, with --etcd-key.
    #[arg(long, global = true, env = "OVERLAY_BPF_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key (PEM) for etcd, with --etcd-cert.
    #[arg(long, global = true, env = "OVERLAY_BPF_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// Which host of the state file this is. Default: the host whose address is
    /// configured on a local interface, else the one named like this machine.
    #[arg(long, global = true)]
    pub host: Option<String>,
    /// Run for a host that lives in this network namespace (a name under
    /// /run/netns or a path). The command enters it itself; do not use
    /// `ip netns exec`, which hides /sys/fs/bpf.
    #[arg(long, global = true, value_name = "NAME")]
    pub netns: Option<String>,
    /// Where maps and links are pinned. Default: /sys/fs/bpf/overlay-bpf/<host>.
    #[arg(long, global = true, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// More log output (-v info, -vv debug). RUST_LOG works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply the state for this host: load and attach the programs, create the
    /// local endpoints' veths, fill the maps, pin everything. Re-running with a
    /// changed file applies only the difference.
    #[command(
        after_help = "Examples:\n  sudo overlay-bpf up --state cluster.yaml\n  sudo overlay-bpf up --ct-size 1048576\n  sudo overlay-bpf up --bpf-log        # then: sudo overlay-bpf agent --bpf-log, to read the logs"
    )]
    Up {
        #[command(flatten)]
        table: TableArgs,
    },
    /// Detach everything `up` attached, remove its veths and its pins.
    Down,
    /// Show attached programs, map fill levels and per-reason packet counters.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Stay in the foreground: apply, re-apply whenever the state file changes, and
    /// health-check the backends.
    ///
    /// Every --health-interval seconds the agent probes each backend on this host (a TCP
    /// connect to its target port from inside its namespace) and fetches the other agents'
    /// reports (GET http://<host address>:<health-port>/health; /metrics has every counter of
    /// `status` and the health verdicts, for Prometheus). A backend that fails --health-fails probes in a row leaves every
    /// host's Maglev tables (its established flows are re-balanced, new ones never reach it)
    /// until it passes --health-passes in a row; an agent unreachable for --health-fails
    /// rounds takes its host's backends out. Every transition is logged. Backends of
    /// UDP-only services are not probed.
    ///
    /// The agent also answers DNS for every network with an endpoint on this host, at the
    /// network's gateway address (UDP and TCP 53): endpoint names and aliases, services
    /// (their VIP; dnsrr: the healthy backends), tasks.<service>, <name>.<network>, PTR;
    /// anything else goes to --dns-upstream. Named namespaces get it in /etc/netns/NAME/resolv.conf.
    ///
    /// SIGINT/SIGTERM stop the agent and leave the data path in place; a restarted agent
    /// adopts it.
    Agent {
        /// How often to check the state file for changes, in seconds.
        #[arg(long, default_value_t = 2)]
        interval: u64,
        #[command(flatten)]
        table: TableArgs,
        #[command(flatten)]
        health: agent::HealthArgs,
        #[command(flatten)]
        docker: agent::DockerArgs,
        #[command(flatten)]
        dns: agent::DnsArgs,
    },
    /// Check the state file against every rule; print each error; exit 1 if any.
    /// On success, print what every host will compute: VNIs, addresses, MACs.
    Validate {
        /// Output format of the resolved cluster.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Create, list, inspect and remove networks in the state file, with Docker's flags.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Move the whole state into or out of a store (file or etcd).
    #[command(subcommand)]
    Store(StoreCmd),
    /// Let podman, containerd, CRI-O and every CNI runtime attach containers:
    /// install or remove the CNI plugin's conflist (the same binary is the plugin).
    #[command(subcommand)]
    Cni(CniCmd),
    /// Join, list and remove the cluster's hosts (Docker: swarm join, node ls, node rm).
    #[command(subcommand)]
    Host(HostCmd),
    /// Register, list and remove endpoints: container interfaces on a network.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Create, change, list and remove services: VIPs, published ports, backends.
    #[command(subcommand)]
    Service(ServiceCmd),
}

#[derive(Subcommand, Debug)]
pub enum EndpointCmd {
    /// Register an endpoint and print its allocation (address, MAC, host).
    /// Names are unique within a network; a container on two networks has an
    /// endpoint of the same name on each.
    #[command(after_help = "Examples:\n  \
overlay-bpf endpoint create web.4 --network uber-svc --container-netns web4 --store etcd://10.0.0.1:2379\n  \
overlay-bpf endpoint create db.2 --network backend --container-netns db2 --host node2 --ip 10.0.1.20 --alias db\n\n\
The endpoint runs on --host, by default this host (found by its address or hostname). `up` (or the agent) \
on that host then creates its interface in the namespace.")]
    Create {
        name: String,
        #[arg(long)]
        network: String,
        /// The container's network namespace: a name under /run/netns or an absolute path.
        #[arg(long, value_name = "NS")]
        container_netns: String,
        /// Its address. Default: allocated from the network's pool.
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// Its MAC. Default: 02:42 and the address, as Docker does.
        #[arg(long)]
        mac: Option<overlay_bpf::state::model::Mac>,
        /// The interface's name in the namespace. Default: eth0, then eth1, ...
        #[arg(long)]
        ifname: Option<String>,
        /// Another name on the network (repeatable); services may name it as a backend.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Remove an endpoint, and its places as a service backend.
    #[command(alias = "remove", after_help = "Example:\n  overlay-bpf endpoint rm web.4 --store etcd://10.0.0.1:2379")]
    Rm {
        name: String,
        /// The endpoint's network: needed when the name is on several.
        #[arg(long)]
        network: Option<String>,
    },
    /// List endpoints with their allocations.
    /// With --host, only that host's.
    #[command(
        alias = "list",
        after_help = "Examples:\n  overlay-bpf endpoint ls --network uber-svc\n  overlay-bpf endpoint ls --host node1 -o json"
    )]
    Ls {
        #[arg(long)]
        network: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Create a service: a VIP (or DNS round robin) over backends, with
    /// published ports (Docker's --publish syntax).
    #[command(after_help = "Examples:\n  \
overlay-bpf service create web --network uber-svc --publish 8080:80 --backend web.1 --backend web.2\n  \
overlay-bpf service create api --network uber-svc --publish published=9090,target=80,mode=host --backend api\n  \
overlay-bpf service create dns --network uber-svc --endpoint-mode dnsrr --publish target=53,protocol=udp\n\n\
A backend is an endpoint name or an alias, which stands for every endpoint carrying it.")]
    Create {
        name: String,
        #[arg(long)]
        network: String,
        /// The virtual IP. Default: allocated from the network's pool.
        #[arg(long)]
        vip: Option<std::net::Ipv4Addr>,
        /// vip (a virtual IP, load-balanced) or dnsrr (no VIP).
        #[arg(long, value_enum, default_value_t = ModeArg::Vip)]
        endpoint_mode: ModeArg,
        /// A port: `published=P,target=T[,protocol=udp][,mode=host]`, `P:T[/udp]`,
        /// or `target=T` alone (not published). Repeatable.
        #[arg(long, value_parser = overlay_bpf::state::ops::service::parse_publish)]
        publish: Vec<overlay_bpf::state::model::PortSpec>,
        /// An endpoint name or alias on the network (repeatable).
        #[arg(long)]
        backend: Vec<String>,
    },
    /// Change a service's backends and published ports.
    #[command(
        after_help = "Example:\n  overlay-bpf service update web --backend-add web.3 --backend-rm web.1 --publish-add 8443:443"
    )]
    Update {
        name: String,
        #[arg(long)]
        backend_add: Vec<String>,
        #[arg(long)]
        backend_rm: Vec<String>,
        #[arg(long, value_parser = overlay_bpf::state::ops::service::parse_publish)]
        publish_add: Vec<overlay_bpf::state::model::PortSpec>,
        /// A published port to stop publishing.
        #[arg(long, value_name = "PUBLISHED")]
        publish_rm: Vec<u16>,
    },
    /// Remove a service.
    #[command(alias = "remove")]
    Rm { name: String },
    /// List services.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// A service as JSON: its fields, VIP and the endpoints its backends stand for.
    Inspect { name: String },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    Vip,
    Dnsrr,
}

#[derive(Subcommand, Debug)]
pub enum HostCmd {
    /// Add this host (or --name) to the cluster with its underlay address.
    /// Running it again changes nothing.
    #[command(after_help = "Examples:\n  \
overlay-bpf host join --address 192.168.100.11 --store etcd://10.0.0.1:2379\n  \
overlay-bpf host join --name node4 --address 192.168.100.14 --interface eth1 --state cluster.yaml")]
    Join {
        /// The host's data-path (underlay) IPv4 address (Docker: --datapath-addr).
        #[arg(long)]
        address: std::net::Ipv4Addr,
        /// The host's name. Default: this machine's hostname.
        #[arg(long)]
        name: Option<String>,
        /// The underlay device. Default: the device holding --address.
        #[arg(long)]
        interface: Option<String>,
    },
    /// Each host: name, address, whether its agent is alive, when it was last seen.
    ///
    /// On etcd, an agent is alive while its lease is (agent --lease-ttl); on a
    /// file, while it answers GET /health on its --health-port.
    #[command(
        alias = "list",
        after_help = "Examples:\n  overlay-bpf host ls --store etcd://10.0.0.1:2379\n  overlay-bpf host ls -o json"
    )]
    Ls {
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
        /// File store: the agents' health port to ask.
        #[arg(long, default_value_t = 7947, value_name = "PORT")]
        health_port: u16,
    },
    /// Print this host's WireGuard public key (making its key pair the first
    /// time) and put it in the store, where the other hosts take it from.
    ///
    /// Encrypted networks (`encrypted: true`) run over WireGuard between the
    /// hosts. Each host's private key stays in a root-only file on it
    /// (/etc/overlay-bpf/keys/<host>.key, or under $OVERLAY_BPF_KEY_DIR); the
    /// public key goes into the host's entry (`wireguard_key`). With etcd the
    /// agents pick a new key up within a second; with a file, copy the file to
    /// the hosts and run `up` there. --rotate replaces the key pair: the other
    /// hosts reach this one again once they have the new public key.
    /// --set puts a key printed on another host into the store, touching no
    /// key file here (the way to gather every host's key into one file).
    #[command(after_help = "Examples:\n  \
sudo overlay-bpf host key --state cluster.yaml\n  \
sudo overlay-bpf host key --rotate --store etcd://10.0.0.1:2379\n  \
overlay-bpf host key node2 --set hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo= --state cluster.yaml")]
    Key {
        /// The host. Default: --host, else this machine's hostname.
        name: Option<String>,
        /// Make a new key pair, replacing the old one.
        #[arg(long, conflicts_with = "set")]
        rotate: bool,
        /// The host's public key, as `host key` printed it on that host.
        #[arg(long, value_name = "PUBLIC_KEY")]
        set: Option<String>,
    },
    /// Remove a host: refused while it has endpoints, unless --force (which removes them).
    #[command(alias = "remove", after_help = "Example:\n  overlay-bpf host rm node4 --store etcd://10.0.0.1:2379")]
    Rm {
        name: String,
        /// Remove the host's endpoints (and their places as service backends) too.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CniCmd {
    /// Link this binary into the runtime's plugin directory as `overlay-bpf`
    /// and write NAME.conflist, so containers started on network NAME join
    /// the store's network NAME. The conflist names the store (--store, else
    /// $OVERLAY_BPF_STORE): runtimes start plugins with an empty environment.
    #[command(after_help = "Example, podman on two hosts (Debian's podman with the CNI backend):\n  \
# once, anywhere: the network in the store\n  \
overlay-bpf network create --attachable --subnet 10.0.9.0/24 app --store etcd://10.0.0.1:2379\n  \
# on each host\n  \
sudo overlay-bpf cni install --network app --store etcd://10.0.0.1:2379\n  \
grep -q 'network_backend' /etc/containers/containers.conf || \\\n    \
printf '[network]\\nnetwork_backend = \"cni\"\\n' | sudo tee -a /etc/containers/containers.conf\n  \
sudo podman run -d --network app --name web1 docker.io/library/nginx\n  \
overlay-bpf endpoint ls --network app --store etcd://10.0.0.1:2379   # web1, its address and host\n\n\
The container talks as soon as `podman run` returns: the plugin applies this host itself.\n\
Run `overlay-bpf agent` on every host too, so that each learns of the others' containers.\n\
Remove with `overlay-bpf cni uninstall --network app`.")]
    Install(CniTarget),
    /// Remove NAME.conflist and, when no other conflist uses overlay-bpf, the link.
    #[command(after_help = "Example:\n  sudo overlay-bpf cni uninstall --network app")]
    Uninstall(CniTarget),
}

/// Which network's conflist, and where runtimes look.
#[derive(clap::Args, Debug)]
pub struct CniTarget {
    /// The store's network the containers join; also the conflist's name.
    #[arg(long)]
    pub network: String,
    /// Where runtimes look for plugins (podman: `cni_plugin_dirs` in containers.conf).
    #[arg(long, default_value = overlay_bpf::cni::DEFAULT_BIN_DIR)]
    pub bin_dir: PathBuf,
    /// Where runtimes read conflists (podman: `network_config_dir`).
    #[arg(long, default_value = overlay_bpf::cni::DEFAULT_CONF_DIR)]
    pub conf_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum StoreCmd {
    /// Check FILE against every rule, then write it into the store in one
    /// transaction, every allocation (VNI, address, MAC, VIP) written out.
    #[command(after_help = "Examples:\n  \
overlay-bpf store import examples/cluster.yaml --store etcd://127.0.0.1:2379\n  \
overlay-bpf store export --store etcd://127.0.0.1:2379 > backup.yaml\n  \
overlay-bpf store import backup.yaml --replace --store etcd://10.0.0.1:2379,10.0.0.2:2379/team-a\n\n\
Refused (exit 1, nothing written) when the store already holds a cluster, unless --replace.")]
    Import {
        /// A state file (YAML, `version: 1`).
        file: PathBuf,
        /// Overwrite the cluster the store holds.
        #[arg(long)]
        replace: bool,
    },
    /// Print the whole state as a file, every allocation written out: `validate`
    /// accepts it and `store import` of it gives the same store.
    #[command(
        after_help = "Example:\n  overlay-bpf store export --store etcd://127.0.0.1:2379 -o yaml > cluster.yaml"
    )]
    Export {
        #[arg(short, long, value_enum, default_value_t = ExportFormat::Yaml)]
        output: ExportFormat,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Yaml,
    Json,
}

/// Data-path settings that are not in the state file.
#[derive(Args, Debug, Clone, Copy)]
pub struct TableArgs {
    /// Switch the programs' debug logs on: a line for every dropped packet (reason,
    /// device, length, addresses), every failed FIB lookup and refused redirect, for
    /// when a counter says too little. `up` without it switches them off again. The
    /// agent with --bpf-log prints them (target overlay_bpf::bpf, at info level);
    /// without an agent reading, the last 128 KiB of records wait in a pinned ring
    /// buffer. Off, they cost nothing on the forwarding paths.
    #[arg(long, env = "OVERLAY_BPF_LOG")]
    pub bpf_log: bool,
    /// Entries in the connection table (OB_CT_V2), which keeps every load-balanced
    /// flow on its backend: a VIP or routing-mesh flow takes 2 entries on the host
    /// that balances it, and a mesh flow to a backend on another host 1 more there.
    /// The table is an LRU: when full, a new flow evicts entries (docs/data-path.md,
    /// "The connection table", tells which flows survive). About 160 bytes per entry. Default 262144 for a new table; an
    /// existing table keeps its size, and a different --ct-size is refused (a table
    /// cannot be resized in place: `down`, then `up --ct-size N`).
    #[arg(long, env = "OVERLAY_BPF_CT_SIZE", value_name = "N",
          value_parser = clap::value_parser!(u32).range(overlay_common::CT_MIN_SIZE as i64..=overlay_common::CT_MAX_SIZE as i64))]
    pub ct_size: Option<u32>,
    /// Where the underlay program runs: `tc` (TC ingress: GSO packets and partial
    /// checksums go through whole, no offload is turned off), `xdp` (before the kernel
    /// makes an skb: cheapest drops; on a veth underlay TX checksum offload is turned
    /// off), or `auto`: XDP on NICs whose drivers run it natively, TC on veth,
    /// virtio_net and anything else. Switching runs both for a moment, so no packet is
    /// lost. `status` shows the mode and why.
    #[arg(long, env = "OVERLAY_BPF_DATAPATH", value_enum, default_value_t = overlay_bpf::host::datapath::Datapath::Auto)]
    pub datapath: overlay_bpf::host::datapath::Datapath,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Add a network to the state file (the file is created if missing).
    #[command(after_help = "Like `docker network create -d overlay`: each --gateway, --ip-range and \
--aux-address belongs to the --subnet that contains it. Without --subnet, the first free \
10.0.N.0/24 is taken.\n\nWith -d macvlan (like `docker network create -d macvlan`), containers sit on the \
hosts' own LAN: each gets a macvlan sub-interface of the host device `-o parent=` names (it must exist \
on every host with an endpoint of the network), in `-o macvlan_mode=` bridge (the default), private, \
vepa or passthru; no VXLAN, no VNI, no services or DNS names. --subnet and --gateway are the LAN's.\n\n\
Examples:\n  overlay-bpf network create --state cluster.yaml \\\n    \
--subnet 10.0.0.0/24 --gateway 10.0.0.1 --ip-range 10.0.0.128/25 \\\n    \
--aux-address my-router=10.0.0.5 --opt mtu=1400 --attachable uber-svc\n  \
overlay-bpf network create --state cluster.yaml -d macvlan -o parent=eth0 \\\n    \
--subnet 192.168.246.0/24 --gateway 192.168.246.1 --ip-range 192.168.246.192/27 lan\n\n\
Note: the file is rewritten from its parsed form, so YAML comments are not kept.")]
    Create(CreateArgs),
    /// List the networks (`docker network ls` columns).
    #[command(alias = "list")]
    Ls {
        /// Only print network IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print networks as JSON shaped like `docker network inspect`.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks no endpoint or service uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Network name.
    pub name: String,
    /// Driver: `overlay` (VXLAN across hosts) or `macvlan` (the hosts' own LAN; needs -o parent=DEVICE).
    #[arg(short, long, default_value = "overlay")]
    pub driver: String,
    /// Subnet in CIDR form (repeatable).
    #[arg(long)]
    pub subnet: Vec<ipnet::Ipv4Net>,
    /// Gateway of the subnet that contains it (repeatable). Default: the first usable address.
    #[arg(long)]
    pub gateway: Vec<std::net::Ipv4Addr>,
    /// Allocate endpoint addresses from this sub-range of a subnet (repeatable).
    #[arg(long)]
    pub ip_range: Vec<ipnet::Ipv4Net>,
    /// Reserve an address: name=ip (repeatable).
    #[arg(long, value_parser = overlay_bpf::state::ops::network::parse_aux)]
    pub aux_address: Vec<(String, std::net::Ipv4Addr)>,
    /// Driver option key=value: mtu=N (or com.docker.network.driver.mtu=N), encrypted,
    /// com.docker.network.driver.overlay.vxlanid_list=VNI; for macvlan parent=DEVICE and
    /// macvlan_mode=bridge|private|vepa|passthru.
    #[arg(short, long, value_parser = overlay_bpf::state::ops::network::parse_opt)]
    pub opt: Vec<(String, String)>,
    /// Let endpoints that back no service join.
    #[arg(long)]
    pub attachable: bool,
    /// No traffic leaves the overlay.
    #[arg(long)]
    pub internal: bool,
    /// Make this the routing-mesh network (at most one).
    #[arg(long)]
    pub ingress: bool,
    /// VXLAN network identifier. Default: the lowest free from 4096 up.
    #[arg(long)]
    pub vni: Option<u32>,
}

pub async fn run(cli: Cli) -> overlay_bpf::error::Result<i32> {
    let g = cli.global;
    match cli.command {
        Command::Up { table } => up::up(&g, table).await,
        Command::Down => down::down(&g).await,
        Command::Status { output } => status::status(&g, output).await,
        Command::Agent { interval, table, health, docker, dns } => {
            agent(&g, interval, table, health, docker, dns).await
        }
        Command::Validate { output } => validate::validate(&g, output).await,
        Command::Network(n) => network::network(&g, n).await,
        Command::Store(s) => store::store(&g, s).await,
        Command::Cni(c) => cni::cni(&g, c).await,
        Command::Host(h) => host::host(&g, h).await,
        Command::Endpoint(e) => endpoint::endpoint(&g, e).await,
        Command::Service(s) => service::service(&g, s).await,
    }
}

/// The pin dir for `host`: --pin-dir, else the default under /sys/fs/bpf.
pub fn pins_for(g: &Global, host: &str) -> overlay_bpf::host::pins::Pins {
    match &g.pin_dir {
        Some(d) => overlay_bpf::host::pins::Pins::new(d),
        None => overlay_bpf::host::pins::Pins::for_host(host),
    }
}

/// The store the flags and the environment name (`store::choose`).
pub fn store_url(g: &Global) -> overlay_bpf::error::Result<StoreUrl> {
    let env = |k: &str| std::env::var(k).ok();
    Ok(overlay_bpf::state::store::choose(
        g.state.clone(),
        g.store.clone(),
        env("OVERLAY_BPF_STATE"),
        env("OVERLAY_BPF_STORE"),
    )?)
}

/// Opens the store the flags name (etcd is connected to now).
pub async fn open_store(g: &Global) -> overlay_bpf::error::Result<Store> {
    let tls = EtcdTls { cacert: g.etcd_cacert.clone(), cert: g.etcd_cert.clone(), key: g.etcd_key.clone() };
    Ok(Store::open(&store_url(g)?, &tls, overlay_bpf::host::capabilities()).await?)
}

/// Loads the state from the store and picks this host.
pub async fn load_cluster_and_host(
    g: &Global,
) -> overlay_bpf::error::Result<(overlay_bpf::state::model::Cluster, usize)> {
    let cluster = open_store(g).await?.load().await?;
    let h = overlay_bpf::host::apply::select_host(&cluster, g.host.as_deref())?;
    Ok((cluster, h))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command and subcommand the binary has, as `overlay-bpf a b`.
    fn commands(c: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for sub in c.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            let path = format!("{prefix} {}", sub.get_name());
            out.push(path.clone());
            commands(sub, &path, out);
        }
    }

    /// docs/cli.md has a heading for every command `overlay-bpf --help` lists
    /// (and their subcommands), and none for a command that does not exist.
    #[test]
    fn the_command_line_page_describes_exactly_the_commands_there_are() {
        let mut have = Vec::new();
        commands(&super::Cli::command(), "overlay-bpf", &mut have);
        have.sort();
        let doc = include_str!("../../../docs/cli.md");
        let mut described: Vec<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("### ")))
            .filter(|h| h.starts_with("overlay-bpf "))
            .map(str::to_string)
            .collect();
        described.sort();
        assert_eq!(described, have, "docs/cli.md's headings against `overlay-bpf --help`");
    }
}
