//! `cargo xtask`: everything a fresh machine needs, in one place.
//!
//! - `cargo xtask run`   installs what is missing, builds, and shows a 3-host cluster working in VMs on
//!   Debian's 6.1 and 6.12 kernels (`--netns`: namespaces on this kernel)
//! - `cargo xtask test`  installs what is missing, builds, and runs every test, on this kernel and then in
//!   one VM per Debian kernel (`--no-vm` skips those)
//! - `cargo xtask bench`  measures overlay-bpf against the kernel's own paths (docs/benchmarks.md)
//! - `cargo xtask fuzz`   runs millions of generated packets through both programs with a new seed
//! - `cargo xtask soak`   minutes of endpoint and backend churn every second under traffic, with agents
//! - `cargo xtask build` builds the eBPF object and the `overlay-bpf` binary that embeds it
//! - `cargo xtask setup` only installs what is missing
//! - `cargo xtask fresh-check` proves setup's package list in a bare Debian 12
//! - `cargo xtask layers` draws the userspace crate's modules by layer, and checks that none uses a higher one

use clap::{Parser, Subcommand};

mod bench;
mod build;
mod demo;
#[cfg(test)]
mod docs;
mod fresh;
mod layers;
mod setup;
mod soak;
mod test;
#[path = "../../tests/src/testbed.rs"]
mod testbed;
mod util;
mod vm;

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
        /// Also build the previous release's binary (target/previous/), which the upgrade tests start from.
        #[arg(long)]
        previous: bool,
    },
    /// Set up, build, and run every test: unit tests, kernel tests on this kernel, then the kernel tests again
    /// inside one VM per Debian kernel (root).
    Test {
        /// Only the host-side unit tests (no root, no kernel).
        #[arg(long)]
        unit_only: bool,
        /// Skip the VM tier (quick local runs: this kernel only).
        #[arg(long)]
        no_vm: bool,
        /// Debian kernel series for the VM tier, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = default_kernels())]
        kernel: Vec<String>,
        /// Extra arguments for the test runner, e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Release builds, then measurements, overlay-bpf against what Docker would run: TCP throughput, small-UDP
    /// packet rate and TCP request/response between containers on two hosts (vs a bridge plus kernel vxlan),
    /// new connections per second through a published port (vs nftables DNAT); per-packet cost of the decap,
    /// mesh and encap paths through BPF_PROG_TEST_RUN against empty programs, how it grows with 10 to 10,000
    /// endpoints and 1 to 1,000 services, and `overlay-bpf up` times. Prints a table; writes
    /// target/bench/report.json. Takes about 4.5 minutes (root).
    ///
    /// With --vm: the rows that need kernel modules this kernel lacks, in a VM of a Debian kernel under the same
    /// emulation for both sides: TCP throughput over an encrypted network (WireGuard) against Docker's encrypted
    /// overlay (kernel vxlan with IPsec ESP, AES-GCM) and against overlay-bpf's plain network; and the traffic
    /// rows, the mesh's connection rate also against IPVS in NAT mode (Docker's routing mesh). Writes
    /// target/bench/report-vm.json. Examples: `cargo xtask bench --vm --rounds 3 --secs 5`;
    /// `cargo xtask bench --vm --only traffic --kernel 6.1,6.12`.
    Bench {
        /// Packets per per-packet measurement (one BPF_PROG_TEST_RUN each).
        #[arg(long, default_value_t = 1_000_000)]
        packets: u32,
        /// Rounds of every measurement (the table shows the median and the spread).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds of traffic per traffic measurement (after a 0.5 s warm-up).
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        /// Only these groups of rows, comma-separated: traffic, packets (BPF_PROG_TEST_RUN), up, dns (dnsperf);
        /// and store (etcd, three agents, 1,000 to 100,000 endpoints: several minutes), which
        /// runs only when named.
        /// With --vm: encrypted (WireGuard against IPsec ESP) and traffic (with IPVS), both by default.
        #[arg(long, value_delimiter = ',', value_parser = ["traffic", "packets", "up", "dns", "store", "encrypted"])]
        only: Vec<String>,
        /// The store rows' sizes: endpoints in the store, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        store_endpoints: Vec<u32>,
        /// Measure inside a VM of each --kernel (the encrypted and traffic rows).
        #[arg(long)]
        vm: bool,
        /// With --vm: Debian kernel series, comma-separated, one VM after another.
        #[arg(long, value_delimiter = ',', default_value = "6.12", requires = "vm")]
        kernel: Vec<String>,
        /// First a `perf record -a -g` of one run of each path of the traffic and encrypted rows, its top
        /// symbols printed (overlay-bpf's and each baseline's).
        #[arg(long)]
        profile: bool,
    },
    /// Inside a `bench --vm` guest: measure the named groups and print each row as an OBROW JSON line.
    #[command(hide = true)]
    GuestBench {
        #[arg(long)]
        bin: std::path::PathBuf,
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        #[arg(long)]
        rounds: u32,
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        profile: bool,
    },
    /// Fuzz the eBPF programs: generated and mutated packets (truncations, bad IHL and lengths, IP options,
    /// fragments, VLAN tags, IPv6, VXLAN flags and VNIs, other networks, ARP oddities, forged sources) through
    /// BPF_PROG_TEST_RUN, each checked against the data path's invariants (root). `cargo xtask test` runs the
    /// same tests with 100,000 packets and a fixed seed.
    Fuzz {
        /// Packets per program.
        #[arg(long, default_value_t = 5_000_000)]
        packets: u64,
        /// Seed (a new one when not given; a failure prints it for replay).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// A bounded run of a 3-host namespace cluster whose state changes every second under
    /// traffic (an endpoint comes or goes, the service gets other backends), with one agent
    /// per host. Reports loss, stale backends, counters and memory; exits 1 on loss, a stale
    /// backend, a failed apply, or kernel state or open files that differ from the start
    /// once the first state is back. Report: target/soak/report.json.
    Soak {
        /// How long the churn lasts, in seconds.
        #[arg(long, default_value_t = 120)]
        secs: u64,
        /// Seed of the churn (printed; a new one by default).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Prove setup's package list on a bare Debian 12: build a minimal root file system from Debian's archive
    /// (mmdebstrap), clone this repository's HEAD into it, and run `cargo xtask setup` and `cargo xtask build`
    /// there, then setup once more (which must find nothing to do). Shares only the Rust toolchains (the
    /// components setup adds removed again), rustup's proxies and what cargo itself needs (gcc, libc6-dev,
    /// CA certificates); packages installed there start no services. Prints the time of each step (root).
    FreshCheck {
        /// Build the bare system anew from the archive (it is cached for a week in target/fresh-check).
        #[arg(long)]
        rebuild: bool,
        /// Leave the root file system in target/fresh-check/root for a look inside.
        #[arg(long)]
        keep: bool,
    },
    /// Draw overlay-userspace's modules by layer (base, state, plan, host, agent, front ends) and who uses whom,
    /// and fail when a module uses one of a higher layer or two modules use each other. Examples:
    /// `cargo xtask layers`; `cargo xtask layers --dot | dot -Tsvg > layers.svg`.
    Layers {
        /// Graphviz instead of text.
        #[arg(long)]
        dot: bool,
        /// The longest files and functions instead of the graph.
        #[arg(long)]
        sizes: bool,
        /// With --sizes: this source folder instead of overlay-userspace/src (an older checkout's, to compare).
        #[arg(long, requires = "sizes")]
        src: Option<std::path::PathBuf>,
        /// With --sizes: how many of each.
        #[arg(long, default_value_t = 5, requires = "sizes")]
        top: usize,
    },
    /// Set up, build, and show the example cluster working: 3 VMs per Debian kernel (6.1 and 6.12), each VM one
    /// cluster host on a shared L2, checking the overlay (connectivity, isolation) and the routing mesh (every
    /// host, client address kept, the internal VIP). Prints one result line per kernel and check; exits 0 only
    /// when all passed. Kernels are downloaded once into target/vm/kernels; consoles go to target/vm/logs.
    Run {
        /// Debian kernel series to boot, comma-separated (the newest package of each is used).
        #[arg(long, value_delimiter = ',', default_values_t = default_kernels(), conflicts_with = "netns")]
        kernel: Vec<String>,
        /// The fast mode: hosts as network namespaces on this machine's own kernel, no VMs.
        #[arg(long)]
        netns: bool,
        /// With --netns: leave the cluster running (remove it later with `cargo xtask run --netns --clean`).
        #[arg(long, requires = "netns")]
        keep: bool,
        /// With --netns: only tear down a cluster left by --keep.
        #[arg(long, requires = "netns")]
        clean: bool,
    },
}

fn default_kernels() -> Vec<String> {
    vm::kernel::DEFAULT_SERIES.iter().map(|s| s.to_string()).collect()
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Build { release, previous } => setup::setup()
            .and_then(|_| if previous { build::build_previous().map(|_| ()) } else { Ok(()) })
            .and_then(|_| build::build(release).map(|_| ())),
        Cmd::Test { unit_only, no_vm, kernel, args } => test::test(unit_only, (!no_vm).then_some(&kernel[..]), &args),
        Cmd::Fuzz { packets, seed } => test::fuzz(packets, seed),
        Cmd::Soak { secs, seed } => soak::soak(secs, seed),
        Cmd::Bench { packets, rounds, secs, only, store_endpoints, vm, kernel, profile } => {
            bench::bench(packets, rounds, secs, &only, &store_endpoints, vm.then_some(&kernel[..]), profile)
        }
        Cmd::GuestBench { bin, only, rounds, secs, profile } => bench::guest(&bin, &only, rounds, secs, profile),
        Cmd::FreshCheck { rebuild, keep } => fresh::fresh_check(rebuild, keep),
        Cmd::Layers { sizes: true, src, top, .. } => layers::print_sizes(src.as_deref(), top),
        Cmd::Layers { dot, .. } => layers::print(dot),
        Cmd::Run { netns: true, keep, clean, .. } => demo::run(keep, clean),
        Cmd::Run { kernel, .. } => vm::cluster::run(&kernel),
    };
    if let Err(e) = res {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}
