use super::{pins_for, Global};
use overlay_bpf::{error::require_root, host::apply, host::apply::ApplyError, host::pins::DEFAULT_PIN_ROOT};

/// The host to take down: --host, else the state file's pick, else the only
/// host with pins under the default root.
async fn host_name(g: &Global) -> overlay_bpf::error::Result<String> {
    if let Some(h) = &g.host {
        return Ok(h.clone());
    }
    if let Ok((c, h)) = super::load_cluster_and_host(g).await {
        return Ok(c.hosts[h].name.clone());
    }
    let found: Vec<String> = std::fs::read_dir(DEFAULT_PIN_ROOT)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ApplyError::NothingUp { root: DEFAULT_PIN_ROOT.into() }.into()),
        many => Err(ApplyError::SeveralUp { hosts: many.join(", ") }.into()),
    }
}

pub async fn down(g: &Global) -> overlay_bpf::error::Result<i32> {
    let host = host_name(g).await?;
    require_root("down")?;
    let pins = pins_for(g, &host);
    let r = apply::down(&pins).await?;
    if !r.pin_dir_removed && r.links_removed.is_empty() && r.veths_removed.is_empty() && r.macvlans_removed.is_empty() {
        println!("{host}: nothing to take down at {}", pins.dir.display());
    } else {
        println!(
            "{host}: down: {} links detached, {} veths removed, {} macvlan sub-interfaces removed, pins at {} removed",
            r.links_removed.len(),
            r.veths_removed.len(),
            r.macvlans_removed.len(),
            pins.dir.display()
        );
    }
    Ok(0)
}
