//! `overlay-bpf cni install` and `cni uninstall`: the binary linked into the
//! runtime's plugin directory as `overlay-bpf`, and one conflist a network.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::{Error, Result};

/// What `cni install` writes.
#[derive(Debug, Clone)]
pub struct Install {
    pub network: String,
    /// The store, as the plugin will open it (runtimes start plugins with
    /// an empty environment: the conflist must say it).
    pub store: String,
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub etcd_cacert: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    pub host: Option<String>,
}

/// The conflist of `i`, as docs/cni.md shows it (plus TLS and host when given).
pub fn conflist(i: &Install) -> serde_json::Value {
    let mut plugin = json!({"type": "overlay-bpf", "network": i.network, "store": i.store});
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string();
    for (k, v) in [("etcd_cacert", &i.etcd_cacert), ("etcd_cert", &i.etcd_cert), ("etcd_key", &i.etcd_key)] {
        if let Some(p) = v {
            plugin[k] = json!(abs(p));
        }
    }
    if let Some(h) = &i.host {
        plugin["host"] = json!(h);
    }
    json!({"cniVersion": "1.0.0", "name": i.network, "plugins": [plugin]})
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    Error::io(what)
}

/// Links `exe` as `<bin_dir>/overlay-bpf` and writes the conflist
/// (atomically: a runtime reading the directory never sees half a file).
/// Returns (link, conflist).
pub fn install(i: &Install, exe: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(&i.bin_dir).map_err(io(format!("create {}", i.bin_dir.display())))?;
    std::fs::create_dir_all(&i.conf_dir).map_err(io(format!("create {}", i.conf_dir.display())))?;
    let link = i.bin_dir.join("overlay-bpf");
    if std::fs::read_link(&link).ok().as_deref() != Some(exe) {
        if link.symlink_metadata().is_ok_and(|m| !m.file_type().is_symlink()) {
            return Err(Error::NotOurLink { path: link.display().to_string() });
        }
        let tmp = i.bin_dir.join(".overlay-bpf.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(exe, &tmp).map_err(io(format!("link {}", tmp.display())))?;
        std::fs::rename(&tmp, &link).map_err(io(format!("replace {}", link.display())))?;
    }
    let path = super::conflist_path(&i.conf_dir, &i.network);
    let tmp = i.conf_dir.join(format!(".{}.conflist.tmp", i.network));
    let text = serde_json::to_string_pretty(&conflist(i)).expect("serializes") + "\n";
    std::fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io(format!("write {}", path.display())))?;
    Ok((link, path))
}

/// Whether the conflist at `path` uses overlay-bpf.
fn uses_us(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
    v["plugins"].as_array().into_iter().flatten().any(|p| p["type"] == "overlay-bpf")
}

/// What `cni uninstall` removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub conflist: Option<PathBuf>,
    pub link: Option<PathBuf>,
}

/// Removes `network`'s conflist and, when no other conflist of `conf_dir`
/// uses overlay-bpf, the link.
pub fn uninstall(network: &str, bin_dir: &Path, conf_dir: &Path) -> Result<Removed> {
    let mut r = Removed::default();
    let path = super::conflist_path(conf_dir, network);
    match std::fs::remove_file(&path) {
        Ok(()) => r.conflist = Some(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("remove {}", path.display()))(e)),
    }
    let others = std::fs::read_dir(conf_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
                .any(|p| uses_us(&p))
        })
        .unwrap_or(false);
    let link = bin_dir.join("overlay-bpf");
    if !others && link.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(&link).map_err(io(format!("remove {}", link.display())))?;
        r.link = Some(link);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path, network: &str) -> Install {
        Install {
            network: network.into(),
            store: "etcd://10.0.0.1:2379".into(),
            bin_dir: dir.join("bin"),
            conf_dir: dir.join("net.d"),
            etcd_cacert: None,
            etcd_cert: None,
            etcd_key: None,
            host: None,
        }
    }

    #[test]
    fn install_writes_the_specs_conflist_and_uninstall_removes_it_and_then_the_link() {
        let dir = std::env::temp_dir().join(format!("ob-cni-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let exe = Path::new("/usr/local/bin/overlay-bpf");
        let (link, path) = install(&opts(&dir, "app"), exe).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), exe);
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "1.0.0", "name": "app",
                   "plugins": [{"type": "overlay-bpf", "network": "app", "store": "etcd://10.0.0.1:2379"}]})
        );
        install(&opts(&dir, "db"), exe).unwrap();
        install(&opts(&dir, "db"), exe).expect("again: same result");
        let r = uninstall("app", &dir.join("bin"), &dir.join("net.d")).unwrap();
        assert_eq!((r.conflist.is_some(), r.link.is_some()), (true, false), "db still uses the link");
        let r = uninstall("db", &dir.join("bin"), &dir.join("net.d")).unwrap();
        assert_eq!((r.conflist.is_some(), r.link.is_some()), (true, true));
        assert!(std::fs::read_dir(dir.join("net.d")).unwrap().next().is_none(), "no file left");
        assert!(!link.exists() && link.symlink_metadata().is_err());
        let r = uninstall("db", &dir.join("bin"), &dir.join("net.d")).unwrap();
        assert!(r.conflist.is_none() && r.link.is_none(), "twice is fine");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
