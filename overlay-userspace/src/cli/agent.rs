use std::time::Duration;

use super::{load_cluster_and_host, pins_for, Global};
use overlay_bpf::{apply, error::require_root};

/// Applies, then re-applies whenever the state file's content changes. A bad
/// edit is reported and skipped: the data path keeps the last good state.
pub async fn agent(g: &Global, interval: u64) -> anyhow::Result<i32> {
    let (cluster, h) = load_cluster_and_host(g)?;
    require_root("agent")?;
    let host = cluster.hosts[h].name.clone();
    let pins = pins_for(g, &host);
    let log = |m: &str| tracing::info!("{host}: {m}");
    let r = apply::up(&cluster, h, &pins, &log).await?;
    tracing::info!(host, written = r.entries_written, deleted = r.entries_deleted, "applied; watching {}", g.state.display());
    let mut last = std::fs::read(&g.state).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(interval.max(1)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        let now = std::fs::read(&g.state).ok();
        if now == last {
            continue;
        }
        last = now;
        match load_cluster_and_host(g) {
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
