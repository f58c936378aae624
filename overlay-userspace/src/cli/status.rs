use super::{pins_for, Format, Global};
use overlay_bpf::{
    agent::status,
    error::{require_root, Error},
    host::apply::ApplyError,
};

pub async fn status(g: &Global, output: Format) -> overlay_bpf::error::Result<i32> {
    // The state file names services and backends; without it, ids and addresses.
    let (host, cluster) = match &g.host {
        Some(h) => (h.clone(), super::load_cluster_and_host(g).await.ok().map(|(c, _)| c)),
        None => {
            let (c, h) = super::load_cluster_and_host(g).await?;
            (c.hosts[h].name.clone(), Some(c))
        }
    };
    require_root("status")?;
    let pins = pins_for(g, &host);
    if !pins.exists() {
        return Err(ApplyError::NotUp { host, dir: pins.dir.display().to_string() }.into());
    }
    let s = status::gather(&host, &pins, cluster.as_ref()).await?;
    match output {
        Format::Json => println!("{}", json(&s)?),
        Format::Text => status::print_text(&s),
    }
    Ok(0)
}

/// Pretty JSON, for `-o json`.
pub fn json(v: &impl serde::Serialize) -> Result<String, Error> {
    serde_json::to_string_pretty(v).map_err(|e| Error::io("print JSON")(e.into()))
}
