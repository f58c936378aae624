//! Docker's API as the plugin reaches it: lazily, and without depending on
//! it. Docker starts its plugins before itself and calls them while it
//! starts (and a dockerd may restart under a running plugin), so the plugin
//! serves Docker's calls from its first moment, and reads Docker's API only
//! for what Docker does not send: network and container names, and which
//! containers still exist.
//!
//! Whether Docker answers is a condition, logged when it starts and when it
//! ends: once "not reachable", once "answers again".

use std::{future::Future, sync::Mutex, time::Duration};

use bollard::{
    models::{ContainerInspectResponse, Network},
    query_parameters::{InspectContainerOptions, InspectNetworkOptions, ListNetworksOptions},
    Docker,
};

/// Docker's API at `--docker-host` (else `$DOCKER_HOST`, else the default socket).
pub struct DockerApi {
    host: Option<String>,
    client: Mutex<Option<Docker>>,
    /// Whether the last call reached Docker; `None` before the first.
    reachable: Mutex<Option<bool>>,
}

/// Why a call to Docker's API failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerApiError {
    /// Nothing answers there (no socket yet, dockerd stopped or starting).
    #[error("Docker's API at {at} does not answer: {why}")]
    Unreachable { at: String, why: String },
    /// Docker answered with an error.
    #[error("Docker's API at {at}: {why}")]
    Refused { at: String, why: String },
}

impl DockerApi {
    pub fn new(host: Option<String>) -> DockerApi {
        let host = host.or_else(|| std::env::var("DOCKER_HOST").ok());
        DockerApi { host, client: Mutex::new(None), reachable: Mutex::new(None) }
    }

    /// Where Docker's API is, as the user wrote it.
    pub fn at(&self) -> String {
        self.host.clone().unwrap_or_else(|| "unix:///var/run/docker.sock".into())
    }

    /// A client, made the first time the socket is there (bollard refuses a
    /// socket path that does not exist yet).
    fn client(&self) -> Result<Docker, String> {
        let mut c = self.client.lock().expect("not poisoned");
        if let Some(d) = c.as_ref() {
            return Ok(d.clone());
        }
        let made = match self.host.as_deref() {
            None => Docker::connect_with_unix_defaults(),
            Some(h) if h.starts_with("unix://") || h.starts_with('/') => {
                Docker::connect_with_unix(h, 30, bollard::API_DEFAULT_VERSION)
            }
            Some(h) => Docker::connect_with_http(h, 30, bollard::API_DEFAULT_VERSION),
        };
        let d = made.map_err(|e| e.to_string())?;
        *c = Some(d.clone());
        Ok(d)
    }

    /// One call to Docker's API. A failure to reach it is logged once,
    /// when Docker stops answering, and its return once.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, DockerApiError>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        let at = self.at();
        let d = match self.client() {
            Ok(d) => d,
            Err(why) => {
                self.note(false, &why);
                return Err(DockerApiError::Unreachable { at, why });
            }
        };
        match f(d).await {
            Ok(v) => {
                self.note(true, "");
                Ok(v)
            }
            // Docker answered, with an error of its own (a name not found).
            Err(e @ bollard::errors::Error::DockerResponseServerError { .. }) => {
                self.note(true, "");
                Err(DockerApiError::Refused { at, why: e.to_string() })
            }
            Err(e) => {
                let why = e.to_string();
                self.note(false, &why);
                Err(DockerApiError::Unreachable { at, why })
            }
        }
    }

    /// Docker's networks.
    pub async fn list_networks(&self) -> Result<Vec<Network>, DockerApiError> {
        self.call(|d| async move { d.list_networks(None::<ListNetworksOptions>).await }).await
    }

    /// Docker's network `id`, with its containers.
    pub async fn inspect_network(&self, id: &str) -> Result<Network, DockerApiError> {
        self.call(|d| async move { d.inspect_network(id, None::<InspectNetworkOptions>).await }).await
    }

    /// Docker's container `id`.
    pub async fn inspect_container(&self, id: &str) -> Result<ContainerInspectResponse, DockerApiError> {
        self.call(|d| async move { d.inspect_container(id, None::<InspectContainerOptions>).await }).await
    }

    /// Whether Docker's API answered the last call (false before any).
    pub fn answers(&self) -> bool {
        *self.reachable.lock().expect("not poisoned") == Some(true)
    }

    /// Logs a change of reachability: each start and end of an outage once.
    fn note(&self, ok: bool, why: &str) {
        let mut r = self.reachable.lock().expect("not poisoned");
        match (*r, ok) {
            (Some(false), true) => tracing::info!("Docker's API at {} answers again", self.at()),
            (None, true) => tracing::info!("Docker's API at {} answers", self.at()),
            (None | Some(true), false) => tracing::warn!(
                "Docker's API at {} does not answer ({why}); the plugin serves Docker's calls meanwhile, and reads \
                 container and network names once it answers",
                self.at()
            ),
            _ => {}
        }
        *r = Some(ok);
    }
}

/// Waits that double from `first` up to `max`: retries of a call to a
/// service that is not there yet.
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { next: first, max }
    }

    /// The next wait, and the one after it doubled.
    fn next_wait(&mut self) -> Duration {
        let w = self.next;
        self.next = (self.next * 2).min(self.max);
        w
    }

    /// Sleeps the next wait.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_limit() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let seen: Vec<u128> = (0..6).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(seen, [250, 500, 1000, 2000, 2000, 2000]);
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable_and_named() {
        let api = DockerApi::new(Some("unix:///nonexistent/overlay-bpf-test/docker.sock".into()));
        let r = api.call(|d| async move { d.version().await }).await;
        match r {
            Err(DockerApiError::Unreachable { at, .. }) => {
                assert_eq!(at, "unix:///nonexistent/overlay-bpf-test/docker.sock")
            }
            other => panic!("want Unreachable, got {other:?}"),
        }
        assert_eq!(*api.reachable.lock().unwrap(), Some(false));
    }
}
