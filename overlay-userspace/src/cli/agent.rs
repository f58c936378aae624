use std::time::Duration;

use super::{pins_for, Global};
use overlay_bpf::{
    apply,
    error::require_root,
    model::{self, Capabilities, Cluster},
};

/// Parses the exact bytes that will be applied, so change detection compares
/// against what is in the kernel, not against a later read of the file.
fn load(g: &Global, bytes: &[u8]) -> anyhow::Result<(Cluster, usize)> {
    let file = g.state.display().to_string();
    let cluster = model::resolve(&file, &model::parse_state(&file, bytes)?, Capabilities::default())?;
    let h = apply::select_host(&cluster, g.host.as_deref())?;
    Ok((cluster, h))
}

fn read(g: &Global) -> anyhow::Result<Vec<u8>> {
    std::fs::read(&g.state)
        .map_err(|e| overlay_bpf::error::UserError(format!("{}: cannot read: {e}", g.state.display())).into())
}

/// Applies, then re-applies whenever the state file's content changes. A bad
/// edit is reported and skipped: the data path keeps the last good state.
pub async fn agent(g: &Global, interval: u64) -> anyhow::Result<i32> {
    let mut applied = read(g)?;
    let (cluster, h) = load(g, &applied)?;
    require_root("agent")?;
    let host = cluster.hosts[h].name.clone();
    let pins = pins_for(g, &host);
    let log = |m: &str| tracing::info!("{host}: {m}");
    let r = apply::up(&cluster, h, &pins, &log).await?;
    tracing::info!(
        host,
        written = r.entries_written,
        deleted = r.entries_deleted,
        "applied; watching {}",
        g.state.display()
    );
    let mut tick = tokio::time::interval(Duration::from_secs(interval.max(1)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        let now = match read(g) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("{e:#}; keeping the applied state");
                continue;
            }
        };
        if now == applied {
            continue;
        }
        // Whatever happens, this content has been dealt with: a bad file is
        // reported once, not every tick.
        applied = now;
        match load(g, &applied) {
            Ok((c, h2)) if c.hosts[h2].name == host => match apply::up(&c, h2, &pins, &log).await {
                Ok(r) => tracing::info!(host, written = r.entries_written, deleted = r.entries_deleted, "re-applied"),
                Err(e) => tracing::error!("re-apply failed, keeping the previous state: {e:#}"),
            },
            Ok(_) => tracing::error!("the state file no longer selects host {host}; ignoring it"),
            Err(e) => tracing::error!("state file rejected, keeping the previous state: {e:#}"),
        }
    }
    tracing::info!("agent stopping; the data path stays pinned (use `overlay-bpf down` to remove it)");
    Ok(0)
}
