//! [`Error`]: anything the library can fail with, which the command line
//! prints and exits with. Each layer has its own error (`state::error`,
//! `host::error`, and one `thiserror` enum per subsystem below them), each
//! knowing its exit code ([`crate::exit`]); this is their sum, for the agent
//! and the front ends, flat so that a front end matches one level.

pub use crate::exit::{chain, SYSTEM as EXIT_SYSTEM, USER as EXIT_USER};
use crate::{host, state};

/// Anything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    State(#[from] crate::state::model::StateError),
    #[error(transparent)]
    Apply(#[from] crate::host::apply::ApplyError),
    #[error(transparent)]
    Maps(#[from] crate::host::kmaps::MapsError),
    #[error(transparent)]
    Loader(#[from] crate::host::loader::LoaderError),
    #[error(transparent)]
    Netdev(#[from] crate::host::netdev::NetdevError),
    #[error(transparent)]
    Pins(#[from] crate::host::pins::PinsError),
    #[error(transparent)]
    Masquerade(#[from] crate::host::masquerade::MasqueradeError),
    #[error(transparent)]
    Network(#[from] crate::state::ops::network::NetworkError),
    #[error(transparent)]
    Host(#[from] crate::state::ops::host::HostError),
    #[error(transparent)]
    Endpoint(#[from] crate::state::ops::endpoint::EndpointError),
    #[error(transparent)]
    Service(#[from] crate::state::ops::service::ServiceError),
    #[error(transparent)]
    BpfLog(#[from] crate::host::bpf_log::BpfLogError),
    #[error(transparent)]
    Wireguard(#[from] crate::host::wireguard::WgError),
    /// Boxed: an etcd error is large, and every `Result` here carries an `Error`.
    #[error(transparent)]
    Store(Box<crate::state::store::StoreError>),
    #[error("{what} needs root (CAP_BPF, CAP_NET_ADMIN); run it with sudo")]
    NotRoot { what: &'static str },
    #[error("{path} is a file, not a link to overlay-bpf; move it away or pass --bin-dir")]
    NotOurLink { path: String },
    #[error(
        "network {network} is not in {store} (it has: {known}); create it first: overlay-bpf network create \
         --subnet 10.0.9.0/24 {network}"
    )]
    NoNetwork { network: String, store: String, known: String },
    #[error("--set: {0}")]
    BadKey(String),
    #[error("this build has no Docker plugin (built without the `docker` feature)")]
    NoDockerPlugin,
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
            Error::State(_)
            | Error::Network(_)
            | Error::Host(_)
            | Error::Endpoint(_)
            | Error::Service(_)
            | Error::NotOurLink { .. }
            | Error::NoNetwork { .. }
            | Error::BadKey(_)
            | Error::NoDockerPlugin => EXIT_USER,
            Error::Apply(e) => e.exit_code(),
            // A key file with the wrong mode is the user's to fix.
            Error::Wireguard(crate::host::wireguard::WgError::BadKeyFile { .. }) => EXIT_USER,
            Error::Wireguard(_) => EXIT_SYSTEM,
            Error::Maps(e) => e.exit_code(),
            Error::Store(e) => e.exit_code(),
            Error::Loader(_)
            | Error::Netdev(_)
            | Error::Pins(_)
            | Error::Masquerade(_)
            | Error::BpfLog(_)
            | Error::NotRoot { .. }
            | Error::Io { .. } => EXIT_SYSTEM,
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
    Ok(host::error::require_root(what)?)
}

impl From<state::error::Error> for Error {
    fn from(e: state::error::Error) -> Error {
        use state::error::Error as E;
        match e {
            E::State(e) => Error::State(e),
            E::Store(e) => Error::Store(e),
            E::Network(e) => Error::Network(e),
            E::Host(e) => Error::Host(e),
            E::Endpoint(e) => Error::Endpoint(e),
            E::Service(e) => Error::Service(e),
            E::Io { context, source } => Error::Io { context, source },
        }
    }
}

impl From<host::error::Error> for Error {
    fn from(e: host::error::Error) -> Error {
        use host::error::Error as E;
        match e {
            E::Apply(e) => Error::Apply(e),
            E::Maps(e) => Error::Maps(e),
            E::Loader(e) => Error::Loader(e),
            E::Netdev(e) => Error::Netdev(e),
            E::Pins(e) => Error::Pins(e),
            E::Masquerade(e) => Error::Masquerade(e),
            E::BpfLog(e) => Error::BpfLog(e),
            E::Wireguard(e) => Error::Wireguard(e),
            E::NotRoot { what } => Error::NotRoot { what },
            E::Io { context, source } => Error::Io { context, source },
        }
    }
}

impl From<state::store::StoreError> for Error {
    fn from(e: state::store::StoreError) -> Error {
        Error::Store(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_knows_its_exit_code() {
        let user: Error = crate::host::apply::ApplyError::UnknownHost { name: "x".into(), known: "a".into() }.into();
        let full: Error = crate::host::kmaps::MapsError::Full { map: "OB_MAGLEV_V1", need: 2, limit: 1 }.into();
        let root = Error::NotRoot { what: "up" };
        let io = Error::io("read x")(std::io::Error::other("boom"));
        assert_eq!([user.exit_code(), full.exit_code(), root.exit_code(), io.exit_code()], [1, 1, 2, 2]);
        assert_eq!(io.to_string(), "read x: boom");
    }
}
