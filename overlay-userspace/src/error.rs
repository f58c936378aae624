//! Errors: one `thiserror` enum per subsystem, each knowing its exit code,
//! and [`Error`], any of them, which the command line prints and exits with.
//! Exit codes: 0 success, 1 a user error (bad file, unknown host, bad flag, a
//! state bigger than the maps), 2 a system error (kernel refused, missing
//! privilege).

pub const EXIT_USER: i32 = 1;
pub const EXIT_SYSTEM: i32 = 2;

/// Anything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    State(#[from] crate::model::StateError),
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    #[error(transparent)]
    Maps(#[from] crate::kmaps::MapsError),
    #[error(transparent)]
    Loader(#[from] crate::loader::LoaderError),
    #[error(transparent)]
    Netdev(#[from] crate::netdev::NetdevError),
    #[error(transparent)]
    Pins(#[from] crate::pins::PinsError),
    #[error(transparent)]
    Masquerade(#[from] crate::masquerade::MasqueradeError),
    #[error(transparent)]
    Network(#[from] crate::network_cmd::NetworkError),
    #[error(transparent)]
    Host(#[from] crate::host_cmd::HostError),
    #[error(transparent)]
    Endpoint(#[from] crate::endpoint_cmd::EndpointError),
    #[error(transparent)]
    Service(#[from] crate::service_cmd::ServiceError),
    #[error(transparent)]
    BpfLog(#[from] crate::bpf_log::BpfLogError),
    #[error(transparent)]
    Wireguard(#[from] crate::wireguard::WgError),
    /// Boxed: an etcd error is large, and every `Result` here carries an `Error`.
    #[error(transparent)]
    Store(Box<crate::store::StoreError>),
    #[error("{what} needs root (CAP_BPF, CAP_NET_ADMIN); run it with sudo")]
    NotRoot { what: &'static str },
    /// What a runtime plugin refuses, in the words its runtime shows the user.
    #[error("{0}")]
    Runtime(String),
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
            | Error::Runtime(_) => EXIT_USER,
            Error::Apply(e) => e.exit_code(),
            // A key file with the wrong mode is the user's to fix.
            Error::Wireguard(crate::wireguard::WgError::BadKeyFile { .. }) => EXIT_USER,
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
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot { what });
    }
    Ok(())
}

/// An error and its causes, as one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s += &format!(": {text}");
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_knows_its_exit_code() {
        let user: Error = crate::apply::ApplyError::UnknownHost { name: "x".into(), known: "a".into() }.into();
        let full: Error = crate::kmaps::MapsError::Full { map: "OB_MAGLEV_V1", need: 2, limit: 1 }.into();
        let root = Error::NotRoot { what: "up" };
        let io = Error::io("read x")(std::io::Error::other("boom"));
        assert_eq!([user.exit_code(), full.exit_code(), root.exit_code(), io.exit_code()], [1, 1, 2, 2]);
        assert_eq!(io.to_string(), "read x: boom");
    }
}
