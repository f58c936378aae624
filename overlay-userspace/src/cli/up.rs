use super::{load_cluster_and_host, pins_for, Global, TableArgs};
use overlay_bpf::{error::require_root, host::apply};

pub async fn up(g: &Global, table: TableArgs) -> overlay_bpf::error::Result<i32> {
    let (cluster, h) = load_cluster_and_host(g).await?;
    require_root("up")?;
    let host = &cluster.hosts[h].name;
    let pins = pins_for(g, host);
    let opts = apply::UpOptions {
        ct_size: table.ct_size,
        bpf_log: table.bpf_log,
        datapath: table.datapath,
        ..Default::default()
    };
    let r = apply::up(&cluster, h, &pins, &opts, &|m| eprintln!("{host}: {m}")).await?;
    for w in &r.warnings {
        eprintln!("{host}: warning: {}", w.message);
    }
    if let Some(c) = &r.datapath {
        eprintln!("{host}: data path: {} on {} ({})", c.mode.name(), r.underlay, c.why);
    }
    let programs = match r.programs {
        apply::Origin::Verified => "programs loaded and verified",
        apply::Origin::Pinned => "programs reused from their pins",
    };
    let macvlans = match (r.macvlans_created.len(), r.macvlans_removed.len()) {
        (0, 0) => String::new(),
        (c, d) => format!("{c} macvlan sub-interfaces created, {d} removed; "),
    };
    if r.changed() {
        println!(
            "{host}: up on {} ({}): {} veths created, {} removed; {macvlans}{} links attached, {} replaced, {} removed; {} map entries written, {} deleted; {programs}",
            r.underlay,
            pins.dir.display(),
            r.veths_created.len(),
            r.veths_removed.len(),
            r.links_attached.len(),
            r.links_replaced.len(),
            r.links_removed.len(),
            r.entries_written,
            r.entries_deleted
        );
    } else {
        println!("{host}: up to date on {} ({}): nothing changed; {programs}", r.underlay, pins.dir.display());
    }
    Ok(0)
}
