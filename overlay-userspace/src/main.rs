use std::io::IsTerminal;

use clap::Parser;

mod cli;

use overlay_bpf::{error, host::netdev};

fn main() {
    // `overlay-bpf store export | head` ends quietly when the reader goes, as
    // other command-line tools do (exit 141, as after SIGPIPE), rather than
    // panicking on the closed pipe. SIGPIPE itself stays ignored: with its
    // default action, a TLS write to an etcd that has just closed the
    // connection (a refused client certificate) killed the process without a
    // word, where the error should say what happened.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload.downcast_ref::<String>().map(String::as_str).or(payload.downcast_ref::<&str>().copied());
        if msg.is_some_and(|m| m.starts_with("failed printing to stdout") && m.contains("Broken pipe")) {
            std::process::exit(141);
        }
        default_hook(info)
    }));
    // Started by a container runtime: a CNI plugin, which speaks only CNI.
    if std::env::var_os("CNI_COMMAND").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("OVERLAY_BPF_CNI_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
        std::process::exit(overlay_bpf::cni::main());
    }
    // A bad flag is a user error (exit 1), like a bad file; --help and
    // --version print and exit 0.
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            std::process::exit(error::EXIT_USER);
        }
        Err(e) => e.exit(),
    };
    let level = match cli.global.verbose {
        0 => "warn,overlay_bpf=info",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .with_ansi(colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR")))
        .init();
    // Enter the host's namespace before any runtime thread exists, so every
    // thread inherits it. setns changes only the network namespace: /sys/fs/bpf
    // stays the host's.
    if let Some(ns) = &cli.global.netns {
        let path = overlay_bpf::state::model::netns_path(ns);
        if !path.exists() {
            eprintln!("error: --netns {ns}: {} does not exist (create it with `ip netns add {ns}`)", path.display());
            std::process::exit(error::EXIT_USER);
        }
        if let Err(e) = netdev::enter_netns(&path) {
            eprintln!("error: {e}");
            std::process::exit(error::EXIT_SYSTEM);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let code = match rt.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error::chain(&e));
            e.exit_code()
        }
    };
    drop(rt);
    std::process::exit(code);
}

/// Colour in the logs only for a person at a terminal: never into a file, a
/// pipe or journald (a systemd unit's stderr), and never with `NO_COLOR`
/// set to anything (no-color.org).
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_at_a_terminal_and_never_with_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None), "a file, a pipe, journald");
        assert!(!colour(true, Some("1".into())));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR counts as unset");
    }
}
