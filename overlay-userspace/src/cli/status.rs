use super::{pins_for, Format, Global};
use overlay_bpf::{
    error::{require_root, UserError},
    status,
};

pub async fn status(g: &Global, output: Format) -> anyhow::Result<i32> {
    // The state file names services and backends; without it, ids and addresses.
    let (host, cluster) = match &g.host {
        Some(h) => (h.clone(), super::load_cluster_and_host(g).ok().map(|(c, _)| c)),
        None => {
            let (c, h) = super::load_cluster_and_host(g)?;
            (c.hosts[h].name.clone(), Some(c))
        }
    };
    require_root("status")?;
    let pins = pins_for(g, &host);
    if !pins.exists() {
        return Err(UserError(format!(
            "host {host} is not up: no pins at {} (run `overlay-bpf up`)",
            pins.dir.display()
        ))
        .into());
    }
    let s = status::gather(&host, &pins, cluster.as_ref()).await?;
    match output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        Format::Text => status::print_text(&s),
    }
    Ok(0)
}
