//! Exit codes: 0 success, 1 a user error (bad file, unknown host, bad flag, a
//! state bigger than the maps), 2 a system error (kernel refused, missing
//! privilege).

/// A mistake the user can fix: exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

pub const EXIT_USER: i32 = 1;
pub const EXIT_SYSTEM: i32 = 2;

/// The exit code for an error: 1 for user errors, 2 for everything else.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    let too_big = matches!(e.downcast_ref::<crate::kmaps::MapsError>(), Some(crate::kmaps::MapsError::Full { .. }));
    if too_big || e.downcast_ref::<UserError>().is_some() || e.downcast_ref::<crate::model::StateError>().is_some() {
        EXIT_USER
    } else {
        EXIT_SYSTEM
    }
}

/// Root is needed to load programs and create devices.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("{what} needs root (CAP_BPF, CAP_NET_ADMIN); run it with sudo");
    }
    Ok(())
}
