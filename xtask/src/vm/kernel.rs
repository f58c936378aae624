//! Debian's cloud kernels for the VMs: the newest package of each series from
//! the package registry, downloaded once and unpacked under `target/vm/kernels`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::util::{is_root, output, root, run, step};

/// The series `cargo xtask run` and the VM test tier boot by default.
pub const DEFAULT_SERIES: &[&str] = &["6.1", "6.12"];

/// Modules the guests load, dependencies first (found in each module's
/// `.modinfo`): the NIC, the endpoints' veths, a kernel vxlan peer, the TC
/// attach path of kernels without TCX, nftables masquerade, the bridge
/// the tests' underlays use, WireGuard (encrypted networks), and IPsec ESP
/// with AES-GCM (Docker's encrypted overlay, the encrypted bench's baseline;
/// the kernel asks for crypto algorithms by name, which no guest modprobe
/// answers, so they are listed: the generic ones and the AES-NI/CLMUL ones
/// the emulated CPU has; esp4_offload, ESP's GSO and GRO, is what a Debian
/// host's kernel loads by itself when the first SA is added).
const WANTED_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "veth",
    "vxlan",
    // macvlan networks' sub-interfaces.
    "macvlan",
    "bridge",
    "sch_ingress",
    "cls_bpf",
    "nf_tables",
    "nft_chain_nat",
    "nft_masq",
    // The traffic rows' nftables DNAT (the kernel baseline's mesh).
    "nft_nat",
    // IPVS in NAT mode, Docker's routing mesh: the baseline of the VM
    // bench's connection-rate row.
    "ip_vs",
    "ip_vs_rr",
    "wireguard",
    "xfrm_user",
    "esp4",
    "ctr",
    // 6.1's IV generators copy through ecb(cipher_null) and seed their
    // salt from the default RNG (the DRBG with HMAC-SHA512): modules there,
    // built into 6.12. (The DRBG goes on without jitterentropy, whose
    // start-up test fails under emulation.)
    "ecb",
    "sha512_generic",
    "drbg",
    "gcm",
    "ghash_generic",
    "seqiv",
    "echainiv",
    "aesni_intel",
    "ghash_clmulni_intel",
];

#[derive(Debug, Clone)]
pub struct Kernel {
    /// "6.1"
    pub series: String,
    /// `uname -r` of the kernel: "6.1.0-56-cloud-amd64"
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the unpacked package.
    pub modules: PathBuf,
}

/// Numeric-aware ordering of package names ("6.12.99" < "6.12.117").
fn version_key(name: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let text: String = rest[digits.len()..].chars().take_while(|c| !c.is_ascii_digit()).collect();
        key.push((digits.parse().unwrap_or(0), text.clone()));
        rest = &rest[digits.len() + text.len()..];
    }
    key
}

/// The newest `linux-image-<series>.*-cloud-amd64` package among `names`.
pub fn newest_package<'a>(series: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let prefix = format!("linux-image-{series}.");
    names.into_iter().filter(|n| n.starts_with(&prefix) && n.ends_with("-cloud-amd64")).max_by_key(|n| version_key(n))
}

fn cache_dir() -> PathBuf {
    root().join("target/vm/kernels")
}

/// The cloud kernel packages the package lists know (one `apt-cache search`).
pub fn packages_in_registry() -> Result<Vec<String>> {
    let list = || -> Result<Vec<String>> {
        Ok(output(Command::new("apt-cache").args(["search", "--names-only", "^linux-image-[0-9.]+.*-cloud-amd64$"]))?
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect())
    };
    let names = list()?;
    if !names.is_empty() || !is_root() {
        return Ok(names);
    }
    step("vm: the package lists know no cloud kernels; running apt-get update");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    list()
}

/// The newest kernel of `series` among `names` (the registry's packages),
/// downloaded and unpacked once. Without the registry (offline), the newest
/// already unpacked one is used.
pub fn fetch(series: &str, names: &[String]) -> Result<Kernel> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache)?;
    let cached: Vec<String> = std::fs::read_dir(&cache)?
        .flatten()
        .filter(|e| e.path().join(".unpacked").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let pkg = match newest_package(series, names.iter().map(String::as_str)) {
        Some(p) => p.to_string(),
        None => match newest_package(series, cached.iter().map(String::as_str)) {
            Some(p) => {
                step(&format!("vm: no {series} cloud kernel in the package lists; using the cached {p}"));
                p.to_string()
            }
            None => bail!(
                "no Debian cloud kernel of series {series} (linux-image-{series}.*-cloud-amd64) in the package \
                 lists; check `apt-cache search linux-image-{series}` and the --kernel flag"
            ),
        },
    };
    let dir = cache.join(&pkg);
    if !dir.join(".unpacked").exists() {
        download(&pkg, &dir)?;
    }
    let release = pkg.trim_start_matches("linux-image-").to_string();
    let kernel = Kernel {
        series: series.to_string(),
        vmlinuz: dir.join(format!("boot/vmlinuz-{release}")),
        modules: dir.join(format!("lib/modules/{release}")),
        release,
    };
    if !kernel.vmlinuz.exists() || !kernel.modules.is_dir() {
        bail!("{} has no {} or no modules; remove {} and try again", pkg, kernel.vmlinuz.display(), dir.display());
    }
    Ok(kernel)
}

fn download(pkg: &str, dir: &Path) -> Result<()> {
    if !is_root() {
        bail!("downloading {pkg} needs apt-get as root: run `sudo -E cargo xtask ...`");
    }
    let t = std::time::Instant::now();
    step(&format!("vm: downloading {pkg} (once; cached in {})", dir.display()));
    let dl = dir.with_extension("download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    // apt's sandbox user cannot write into a root-owned work tree.
    let get =
        || run(Command::new("apt-get").current_dir(&dl).args(["-q", "-o", "APT::Sandbox::User=root", "download", pkg]));
    if get().is_err() {
        // Stale package lists name a version the mirror no longer has.
        step("vm: download failed; refreshing the package lists (apt-get update) and trying again");
        run(Command::new("apt-get").args(["update", "-q"]))?;
        get()?;
    }
    let deb = std::fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download {pkg} left no .deb in {}", dl.display()))?;
    let tmp = dir.with_extension("unpacking");
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    std::fs::write(tmp.join(".unpacked"), pkg)?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir)?;
    std::fs::remove_dir_all(&dl)?;
    step(&format!("vm: {pkg} unpacked ({:.1}s)", t.elapsed().as_secs_f64()));
    Ok(())
}

fn module_name(file: &str) -> Option<String> {
    let base = file.strip_suffix(".ko.xz").or_else(|| file.strip_suffix(".ko"))?;
    Some(base.replace('-', "_"))
}

/// The `depends=` field of a module's `.modinfo`.
fn depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else { return Vec::new() };
    let rest = &ko[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).split(',').filter(|s| !s.is_empty()).map(|s| s.replace('-', "_")).collect()
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_some_and(|x| x == "xz") {
        let out =
            Command::new("xz").arg("-dc").arg(path).output().with_context(|| format!("xz -dc {}", path.display()))?;
        if !out.status.success() {
            bail!("xz -dc {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        }
        return Ok(out.stdout);
    }
    Ok(std::fs::read(path)?)
}

impl Kernel {
    /// The modules the guest loads, in load order (dependencies first), as
    /// (name, uncompressed .ko). Modules built into this kernel are left out.
    pub fn modules_to_load(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let builtin: BTreeSet<String> = std::fs::read_to_string(self.modules.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit('/').next().and_then(module_name))
            .collect();
        let mut index = BTreeMap::new();
        let mut stack = vec![self.modules.join("kernel")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))?.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(n) = module_name(&e.file_name().to_string_lossy()) {
                    index.insert(n, p);
                }
            }
        }
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        fn visit(
            name: &str,
            index: &BTreeMap<String, PathBuf>,
            builtin: &BTreeSet<String>,
            seen: &mut BTreeSet<String>,
            order: &mut Vec<(String, Vec<u8>)>,
            release: &str,
        ) -> Result<()> {
            if builtin.contains(name) || !seen.insert(name.to_string()) {
                return Ok(());
            }
            let path = index.get(name).with_context(|| {
                format!("kernel {release} has no module {name}, neither built in nor as a file: the guest needs it")
            })?;
            let ko = read_module(path)?;
            for dep in depends(&ko) {
                visit(&dep, index, builtin, seen, order, release)?;
            }
            order.push((name.to_string(), ko));
            Ok(())
        }
        for m in WANTED_MODULES {
            visit(m, &index, &builtin, &mut seen, &mut order, &self.release)?;
        }
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_package_compares_numbers_not_text() {
        let names = [
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64-dbg",
            "linux-image-6.12.99+deb12-cloud-amd64",
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
        ];
        assert_eq!(newest_package("6.1", names), Some("linux-image-6.1.0-56-cloud-amd64"));
        assert_eq!(newest_package("6.12", names), Some("linux-image-6.12.117+deb12-cloud-amd64"));
        assert_eq!(newest_package("6.6", names), None);
    }

    #[test]
    fn depends_reads_the_modinfo_field() {
        let ko = b"\x7fELF....\0license=GPL\0depends=udp_tunnel,ip6_udp-tunnel\0retpoline=Y\0";
        assert_eq!(depends(ko), ["udp_tunnel", "ip6_udp_tunnel"]);
        assert!(depends(b"\0license=GPL\0depends=\0").is_empty());
        assert!(depends(b"no modinfo").is_empty());
    }
}
