//! What bringing a host's kernel to a plan fails with.

use crate::{
    exit,
    host::{
        apply::ApplyError, bpf_log::BpfLogError, kmaps::MapsError, loader::LoaderError, masquerade::MasqueradeError,
        netdev::NetdevError, pins::PinsError, wireguard::WgError,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Netdev(#[from] NetdevError),
    #[error(transparent)]
    Pins(#[from] PinsError),
    #[error(transparent)]
    Masquerade(#[from] MasqueradeError),
    #[error(transparent)]
    BpfLog(#[from] BpfLogError),
    #[error(transparent)]
    Wireguard(#[from] WgError),
    #[error("{what} needs root (CAP_BPF, CAP_NET_ADMIN); run it with sudo")]
    NotRoot { what: &'static str },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// 1 for what the user can fix, 2 for the rest.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Apply(e) => e.exit_code(),
            Error::Maps(e) => e.exit_code(),
            // A key file with the wrong mode is the user's to fix.
            Error::Wireguard(WgError::BadKeyFile { .. }) => exit::USER,
            Error::Wireguard(_)
            | Error::Loader(_)
            | Error::Netdev(_)
            | Error::Pins(_)
            | Error::Masquerade(_)
            | Error::BpfLog(_)
            | Error::NotRoot { .. }
            | Error::Io { .. } => exit::SYSTEM,
        }
    }

    /// An I/O error, with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Root is needed to load programs and create devices.
pub fn require_root(what: &'static str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot { what });
    }
    Ok(())
}
