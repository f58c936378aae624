use super::{CniCmd, CniTarget, Global};
use overlay_bpf::{
    cni::install::{self, Install},
    error::{Error, Result},
};

pub async fn cni(g: &Global, cmd: CniCmd) -> Result<i32> {
    match cmd {
        CniCmd::Install(CniTarget { network, bin_dir, conf_dir }) => {
            // The network must exist: a conflist naming no network would
            // fail every container's start.
            let mut store = super::open_store(g).await?;
            let state = store.read().await?;
            if !state.networks.iter().any(|n| n.name == network) {
                let known: Vec<&str> = state.networks.iter().map(|n| n.name.as_str()).collect();
                return Err(Error::NoNetwork {
                    network: network.clone(),
                    store: store.describe(),
                    known: if known.is_empty() { "none".to_string() } else { known.join(", ") },
                });
            }
            if state.networks.iter().any(|n| n.name == network && !n.attachable) {
                eprintln!(
                    "note: network {network} is not attachable: a container joins it only when a service lists it \
                     as a backend; networks for containers are made with `overlay-bpf network create --attachable`"
                );
            }
            let exe = std::env::current_exe()
                .and_then(std::fs::canonicalize)
                .map_err(Error::io("find this binary (/proc/self/exe)"))?;
            let i = Install {
                network,
                store: super::store_url(g)?.to_string(),
                bin_dir,
                conf_dir,
                etcd_cacert: g.etcd_cacert.clone(),
                etcd_cert: g.etcd_cert.clone(),
                etcd_key: g.etcd_key.clone(),
                host: g.host.clone(),
            };
            let (link, path) = install::install(&i, &exe)?;
            println!(
                "{}: network {} of {}; {} -> {}",
                path.display(),
                i.network,
                i.store,
                link.display(),
                exe.display()
            );
        }
        CniCmd::Uninstall(CniTarget { network, bin_dir, conf_dir }) => {
            let r = install::uninstall(&network, &bin_dir, &conf_dir)?;
            match (&r.conflist, &r.link) {
                (None, None) => println!("{network}: nothing to remove"),
                _ => {
                    for p in r.conflist.iter().chain(r.link.iter()) {
                        println!("removed {}", p.display());
                    }
                }
            }
        }
    }
    Ok(0)
}
