//! `cargo xtask`: everything a fresh machine needs, in one place.
//!
//! - `cargo xtask run`   installs what is missing, builds, and shows a 3-host cluster working
//! - `cargo xtask test`  installs what is missing, builds, and runs every test
//! - `cargo xtask build` builds the eBPF object and the `overlay-bpf` binary that embeds it
//! - `cargo xtask setup` only installs what is missing

use clap::{Parser, Subcommand};

mod build;
mod demo;
mod setup;
mod test;
mod util;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "overlay-bpf's build, set-up, test and demo tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: apt packages, the nightly's rust-src, bpf-linker, bpffs.
    Setup,
    /// Build the eBPF object and the overlay-bpf binary that embeds it.
    Build {
        /// Build the binary in release mode (the eBPF object is always optimised).
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, and run every test: unit tests, then kernel tests (root).
    Test {
        /// Only the host-side unit tests (no root, no kernel).
        #[arg(long)]
        unit_only: bool,
        /// Extra arguments for the test runner, e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build, and show a 3-host cluster on this machine (network namespaces).
    Run {
        /// Leave the cluster running instead of tearing it down (remove it later with `cargo xtask run --clean`).
        #[arg(long)]
        keep: bool,
        /// Only tear down a cluster left by --keep.
        #[arg(long)]
        clean: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Build { release } => setup::setup().and_then(|_| build::build(release).map(|_| ())),
        Cmd::Test { unit_only, args } => test::test(unit_only, &args),
        Cmd::Run { keep, clean } => demo::run(keep, clean),
    };
    if let Err(e) = res {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}
