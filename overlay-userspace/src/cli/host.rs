use std::{collections::BTreeMap, time::Duration};

use super::{Format, Global, HostCmd};
use overlay_bpf::{
    agent::health,
    error::Result,
    state::ops::host,
    state::store::{AgentView, Store},
};

pub async fn host(g: &Global, cmd: HostCmd) -> Result<i32> {
    let mut store = super::open_store(g).await?;
    match cmd {
        HostCmd::Join { address, name, interface } => {
            let name = match name {
                Some(n) => n,
                None => host::default_name()?,
            };
            let (added, _) = store.edit(|s| Ok(host::join(s, &name, address, interface.clone())?)).await?;
            match added {
                true => println!("{name}: joined {} at {address}", store.describe()),
                false => println!("{name}: in {} already at {address}: nothing changed", store.describe()),
            }
        }
        HostCmd::Ls { output, health_port } => {
            let state = store.read().await?;
            let agents = agents(&mut store, &state, health_port).await?;
            let rows = host::rows(&state, &agents);
            match output {
                Format::Json => println!("{}", super::status::json(&rows)?),
                Format::Text => print!("{}", host::table(&rows)),
            }
        }
        HostCmd::Key { name, rotate, set } => {
            let name = match name.or_else(|| g.host.clone()) {
                Some(n) => n,
                None => host::default_name()?,
            };
            let (key, private) = match set {
                Some(k) => {
                    let k = overlay_bpf::host::wireguard::Key::parse(&k)
                        .map_err(|why| overlay_bpf::error::Error::BadKey(why.to_string()))?;
                    (k.to_string(), None)
                }
                None => {
                    let kp = match rotate {
                        true => overlay_bpf::host::wireguard::rotate(&name)?,
                        false => overlay_bpf::host::wireguard::load_or_create(&name)?.0,
                    };
                    (kp.public.to_string(), Some(overlay_bpf::host::wireguard::key_file(&name)))
                }
            };
            let (changed, _) = store.edit(|s| Ok(host::set_key(s, &name, &key)?)).await?;
            println!("{key}");
            eprintln!(
                "{name}: WireGuard public key {} {}{}",
                if changed { "put in" } else { "already in" },
                store.describe(),
                private.map(|p| format!(" (private key: {})", p.display())).unwrap_or_default()
            );
        }
        HostCmd::Rm { name, force } => {
            let (gone, _) = store.edit(|s| Ok(host::remove(s, &name, force)?)).await?;
            if gone.is_empty() {
                println!("{name}: removed");
            } else {
                println!("{name}: removed, with its endpoints {}", gone.join(", "));
            }
        }
    }
    Ok(0)
}

/// The agents as the store knows them; with a file, each host's agent asked
/// for its health report (an answer means alive, now).
async fn agents(
    store: &mut Store,
    state: &overlay_bpf::state::model::State,
    port: u16,
) -> Result<BTreeMap<String, AgentView>> {
    if let Some(e) = store.etcd() {
        return Ok(e.agents().view().await?);
    }
    let asks = state.hosts.iter().map(|h| health::fetch(h.address, port, Duration::from_millis(500)));
    let answers = futures::future::join_all(asks).await;
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    Ok(state
        .hosts
        .iter()
        .zip(answers)
        .map(|(h, a)| {
            let alive = a.is_ok();
            (h.name.clone(), AgentView { alive, last_seen: alive.then(|| now.clone()), report: a.ok() })
        })
        .collect())
}
