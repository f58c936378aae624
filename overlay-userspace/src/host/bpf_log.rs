//! The data path's debug logs (aya-log records, `up --bpf-log`), read from
//! the ring buffer every program of a host shares and printed through
//! `tracing` (target `overlay_bpf::bpf`).

use std::os::fd::AsRawFd;

use aya::programs::{
    links::{FdLink, PinnedLink},
    SchedClassifier, Xdp,
};
use aya_log::EbpfLogger;
use aya_obj::programs::XdpAttachType;
use overlay_common::PROG_XDP_UNDERLAY;

use crate::host::pins::Pins;

#[derive(Debug, thiserror::Error)]
pub enum BpfLogError {
    #[error("no attached program under {0} to read the logs of; run `overlay-bpf up` first")]
    NothingAttached(String),
    #[error("cannot read the programs' logs: {0}")]
    Attach(#[from] aya_log::Error),
    #[error("cannot watch the programs' log buffer: {0}")]
    Watch(#[source] std::io::Error),
}

/// Hands aya-log's records to `tracing`.
pub struct Tracing;

impl log::Log for Tracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        tracing::info!(target: "overlay_bpf::bpf", "{}", record.args());
    }

    fn flush(&self) {}
}

/// The reader of host `pins`' log records: the ring buffer of the program
/// behind its first live pinned link, or else of a program `up` pinned (all
/// of the host's programs share it). Before TCX (6.6) a host in the TC data
/// path may have no pinned link at all: its TC programs are clsact filters.
pub fn reader(pins: &Pins) -> Result<EbpfLogger<Tracing>, BpfLogError> {
    let linked = pins
        .links()
        .into_iter()
        .filter_map(|l| PinnedLink::from_pin(&l.path).ok())
        .find_map(|l| FdLink::from(l).info().ok().map(|i| i.program_id()));
    let pinned = || {
        pins.progs().into_iter().find_map(|(name, path)| {
            let info = match name.as_str() {
                PROG_XDP_UNDERLAY => Xdp::from_pin(&path, XdpAttachType::Interface).ok()?.info(),
                _ => SchedClassifier::from_pin(&path).ok()?.info(),
            };
            info.ok().map(|i| i.id())
        })
    };
    let prog_id = linked.or_else(pinned).ok_or_else(|| BpfLogError::NothingAttached(pins.dir.display().to_string()))?;
    Ok(EbpfLogger::init_from_id_with_logger(prog_id, Tracing)?)
}

/// Prints the records as they come, until the task is dropped.
pub async fn follow(logger: EbpfLogger<Tracing>) -> Result<(), BpfLogError> {
    struct Fd(EbpfLogger<Tracing>);
    impl AsRawFd for Fd {
        fn as_raw_fd(&self) -> std::os::fd::RawFd {
            self.0.as_raw_fd()
        }
    }
    // SAFETY: the ring buffer's descriptor is owned by the logger, which the
    // AsyncFd owns for its whole life, and as_raw_fd always returns it.
    let mut fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(Fd(logger), tokio::io::Interest::READABLE) }
        .map_err(|e| BpfLogError::Watch(e.into()))?;
    loop {
        let mut guard = fd.readable_mut().await.map_err(BpfLogError::Watch)?;
        guard.get_inner_mut().0.flush();
        guard.clear_ready();
    }
}
