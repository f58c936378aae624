//! What an edit or a read of the state fails with: one typed error for every
//! front end, whose variants say what a front end needs (the rule broken,
//! the object missing or in use) and which exit code it is.

use crate::{
    exit,
    state::{
        model::StateError,
        ops::{endpoint::EndpointError, host::HostError, network::NetworkError, service::ServiceError},
        store::StoreError,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule of the state is broken (the state is refused whole).
    #[error(transparent)]
    State(#[from] StateError),
    /// Boxed: an etcd error is large, and every `Result` here carries an `Error`.
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::Store(Box::new(e))
    }
}

impl Error {
    /// 1 for what the user can fix, 2 for the rest.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::State(_) | Error::Network(_) | Error::Host(_) | Error::Endpoint(_) | Error::Service(_) => exit::USER,
            Error::Store(e) => e.exit_code(),
            Error::Io { .. } => exit::SYSTEM,
        }
    }

    /// An I/O error, with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
