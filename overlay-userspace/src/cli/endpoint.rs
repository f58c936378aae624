use super::{EndpointCmd, Format, Global};
use overlay_bpf::{
    error::Result,
    state::model::{self},
    state::ops::endpoint::{self, CreateOpts},
};

pub async fn endpoint(g: &Global, cmd: EndpointCmd) -> Result<i32> {
    let mut store = super::open_store(g).await?;
    match cmd {
        EndpointCmd::Create { name, network, container_netns, ip, mac, ifname, aliases, output } => {
            let host = match &g.host {
                Some(h) => h.clone(),
                None => {
                    let c = store.load().await?;
                    c.hosts[overlay_bpf::host::apply::select_host(&c, None)?].name.clone()
                }
            };
            let o = CreateOpts { name, network, host, netns: container_netns, ifname, ip, mac, aliases };
            let (_, state) = store.edit(|s| Ok(endpoint::create(s, &o)?)).await?;
            let c = model::resolve(&store.describe(), &state, overlay_bpf::host::capabilities())?;
            let rows = endpoint::rows(&state, &c, Some(&o.network), Some(&o.host));
            let Some(r) = rows.into_iter().find(|r| r.name == o.name) else { return Ok(0) };
            match output {
                Format::Json => println!("{}", super::status::json(&r)?),
                Format::Text => println!(
                    "{} on {}: {}/{} mac {} on host {}, netns {} ({})",
                    r.name, r.network, r.ip, r.prefix_len, r.mac, r.host, r.netns, r.ifname
                ),
            }
        }
        EndpointCmd::Rm { name, network } => {
            let (net, _) = store.edit(|s| Ok(endpoint::remove(s, &name, network.as_deref())?)).await?;
            println!("{name}: removed from {net}");
        }
        EndpointCmd::Ls { network, output } => {
            let state = store.read().await?;
            let c = model::resolve(&store.describe(), &state, overlay_bpf::host::capabilities())?;
            let rows = endpoint::rows(&state, &c, network.as_deref(), g.host.as_deref());
            match output {
                Format::Json => println!("{}", super::status::json(&rows)?),
                Format::Text => print!("{}", endpoint::table(&rows)),
            }
        }
    }
    Ok(0)
}
