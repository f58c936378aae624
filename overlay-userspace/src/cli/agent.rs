use std::time::Duration;

use super::{Global, TableArgs};
use overlay_bpf::{
    agent::{self, AgentOptions, HealthOptions, StoreSource},
    error::{Error, Result},
};

/// Health-check settings (`overlay-bpf agent --health-*`).
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Seconds between health-check rounds (probes of the local backends and
    /// fetches of the peers' reports).
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    pub health_interval: u64,
    /// How long a probe (TCP connect) or a peer fetch may take.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub health_timeout: u64,
    /// Consecutive failed probes that take a backend out of the load balancing.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub health_fails: u32,
    /// Consecutive good probes that bring it back.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub health_passes: u32,
    /// TCP port on the host's underlay address where the agent serves its
    /// backends' health to the other agents (GET /health) and metrics
    /// (GET /metrics).
    #[arg(long, default_value_t = 7947, value_name = "PORT")]
    pub health_port: u16,
    /// No health checks: every configured backend is used. /health (empty)
    /// and /metrics are still served on --health-port.
    #[arg(long)]
    pub no_health: bool,
    /// With an etcd store: the lease, in seconds, that keeps this agent
    /// present (`host ls` shows it alive). When it expires (agent killed, or
    /// cut off from etcd), every host takes this host's backends out of its
    /// Maglev tables until the agent is back; no data path is touched.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_ttl: u64,
}

/// The resolver (`agent --dns-*`, docs/dns.md).
#[derive(Debug, Clone, clap::Args)]
pub struct DnsArgs {
    /// Where names that are not the cluster's go (IP or IP:PORT; repeat for
    /// several, asked at once, the first answer wins within 2 s). Default:
    /// the nameservers of this host's /etc/resolv.conf.
    #[arg(long, value_name = "IP[:PORT]", value_parser = overlay_bpf::agent::dns::parse_upstream)]
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// No resolver: containers' queries to their gateway go unanswered.
    #[arg(long)]
    pub no_dns: bool,
}

/// The Docker plugin (`agent --docker-plugin`).
#[derive(Debug, Clone, clap::Args)]
pub struct DockerArgs {
    /// Also serve Docker's remote network and IPAM drivers, both named
    /// `overlay-bpf`, on this socket (default /run/docker/plugins/overlay-bpf.sock,
    /// where Docker looks). Docker then runs containers on overlay-bpf networks:
    /// `docker network create -d overlay-bpf --ipam-driver overlay-bpf --subnet S NAME`.
    #[arg(long, num_args = 0..=1, default_missing_value = "/run/docker/plugins/overlay-bpf.sock", value_name = "SOCKET")]
    pub docker_plugin: Option<std::path::PathBuf>,
    /// Docker's API, read for network and container names (unix:///var/run/docker.sock
    /// or tcp://H:P). Default: $DOCKER_HOST, else /var/run/docker.sock.
    #[arg(long, value_name = "URL")]
    pub docker_host: Option<String>,
}

/// `overlay-bpf agent`: the library's agent on the state file, stopped by
/// SIGINT or SIGTERM (the data path stays).
pub async fn agent(
    g: &Global,
    interval: u64,
    table: TableArgs,
    args: HealthArgs,
    docker: DockerArgs,
    dns: DnsArgs,
) -> Result<i32> {
    let opts = AgentOptions {
        host: g.host.clone(),
        pin_dir: g.pin_dir.clone(),
        ct_size: table.ct_size,
        bpf_log: table.bpf_log,
        datapath: table.datapath,
        health: HealthOptions {
            interval: Duration::from_secs(args.health_interval),
            timeout: Duration::from_millis(args.health_timeout),
            fails: args.health_fails,
            passes: args.health_passes,
            port: args.health_port,
            off: args.no_health,
            lease_ttl: Duration::from_secs(args.lease_ttl),
        },
        dns: (!dns.no_dns).then(|| {
            if dns.dns_upstream.is_empty() {
                overlay_bpf::agent::dns::system_upstreams()
            } else {
                dns.dns_upstream.clone()
            }
        }),
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::io("watch for SIGTERM"))?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let source = StoreSource { store: super::open_store(g).await?, interval: Duration::from_secs(interval) };
    let plugin: Option<agent::Attach> = match docker.docker_plugin {
        #[cfg(feature = "docker")]
        Some(socket) => {
            let opts = overlay_bpf::docker::PluginOptions { socket, docker_host: docker.docker_host };
            // Its own connection: its writes do not wait on the agent's watch.
            let store = super::open_store(g).await?;
            Some(Box::new(move |host, apply| {
                Box::pin(async move { overlay_bpf::docker::serve(&opts, store, host, apply).await })
            }))
        }
        #[cfg(not(feature = "docker"))]
        Some(_) => return Err(Error::NoDockerPlugin),
        None => None,
    };
    agent::run(source, opts, plugin, stop).await?;
    Ok(0)
}
