//! The guest's root filesystem, written as an initramfs (cpio "newc"): busybox,
//! the init, the kernel's modules, overlay-bpf, and host programs copied with
//! the shared libraries `ldd` names. The layout is Debian's merged /usr, so a
//! program finds its libraries where it was linked to look.

use std::{
    collections::BTreeMap,
    io::{BufWriter, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::util::output;

/// Where busybox lives in the guest; its applets are links in APPLETS, last
/// on PATH so real programs copied from the host win.
pub const BUSYBOX: &str = "/usr/bin/busybox";
const APPLETS: &str = "/usr/libexec/busybox";

enum Node {
    Dir,
    File { mode: u32, data: Data },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

enum Data {
    Bytes(Vec<u8>),
    Host(PathBuf),
}

/// A root filesystem being assembled; paths are absolute.
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

/// /bin, /sbin, /lib and /lib64 are links into /usr, as on the host.
fn merged_usr(path: &str) -> String {
    for top in ["/bin/", "/sbin/", "/lib/", "/lib64/"] {
        if path.starts_with(top) {
            return format!("/usr{path}");
        }
    }
    path.to_string()
}

impl Tree {
    /// The skeleton: merged-/usr links, mount points, /dev/console (the
    /// kernel opens it for init before anything is mounted), busybox and its
    /// applets, and the few /etc files libc and the tools read.
    pub fn new(busybox: &Path) -> Result<Tree> {
        let mut t = Tree { nodes: BTreeMap::new() };
        for top in ["bin", "sbin", "lib", "lib64"] {
            t.nodes.insert(format!("/{top}"), Node::Symlink(format!("usr/{top}")));
        }
        for d in ["/proc", "/sys", "/dev", "/run", "/tmp", "/etc", "/root", "/usr/lib64", "/usr/sbin"] {
            t.dir(d);
        }
        t.symlink("/var/run", "../run");
        t.nodes.insert("/dev/console".into(), Node::CharDev { major: 5, minor: 1 });
        t.copy(BUSYBOX, busybox)?;
        let list = output(Command::new(busybox).arg("--list"))?;
        for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
            t.symlink(&format!("{APPLETS}/{applet}"), BUSYBOX);
        }
        // tcpdump -w drops to its own user, as Debian's package sets it up.
        t.file(
            "/etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\ntcpdump:x:101:101::/nonexistent:/bin/false\n".to_vec(),
        );
        t.file("/etc/group", 0o644, b"root:x:0:\ntcpdump:x:101:\n".to_vec());
        t.file("/etc/hosts", 0o644, b"127.0.0.1 localhost\n".to_vec());
        t.file("/etc/nsswitch.conf", 0o644, b"passwd: files\ngroup: files\nhosts: files\n".to_vec());
        for f in ["/etc/protocols", "/etc/services"] {
            if Path::new(f).exists() {
                t.copy(f, Path::new(f))?;
            }
        }
        Ok(t)
    }

    fn parents(&mut self, path: &str) {
        let mut p = Path::new(path).parent();
        while let Some(d) = p {
            let s = d.to_string_lossy().into_owned();
            if s == "/" || self.nodes.contains_key(&s) {
                break;
            }
            self.nodes.insert(s, Node::Dir);
            p = d.parent();
        }
    }

    /// Inserts `node` at `path` (moved under /usr when it names /lib/...,
    /// which is a link), with its parent directories.
    fn put(&mut self, path: &str, node: Node) {
        let path = merged_usr(path);
        self.parents(&path);
        self.nodes.insert(path, node);
    }

    pub fn dir(&mut self, path: &str) {
        self.put(path, Node::Dir);
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.put(path, Node::File { mode, data: Data::Bytes(data) });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.put(path, Node::Symlink(target.to_string()));
    }

    /// A host file's content (symlinks followed) at `path`, with its mode.
    pub fn copy(&mut self, path: &str, from: &Path) -> Result<()> {
        let meta = std::fs::metadata(from).with_context(|| format!("{} (for the guest's {path})", from.display()))?;
        self.put(path, Node::File { mode: meta.permissions().mode() & 0o7777, data: Data::Host(from.to_path_buf()) });
        Ok(())
    }

    /// A dynamically linked host program at its own path, with every shared
    /// library `ldd` lists for it.
    pub fn host_program(&mut self, program: &Path) -> Result<()> {
        self.program(&program.to_string_lossy(), program)
    }

    /// A dynamically linked program at `path`, with its shared libraries.
    pub fn program(&mut self, path: &str, from: &Path) -> Result<()> {
        self.copy(path, from)?;
        self.libraries_of(from)
    }

    fn libraries_of(&mut self, elf: &Path) -> Result<()> {
        let out = Command::new("ldd").arg(elf).output().with_context(|| format!("ldd {}", elf.display()))?;
        // "not a dynamic executable" (a static binary) exits 1: nothing to copy.
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let lib = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            let Some(lib) = lib.filter(|l| l.starts_with('/')) else {
                if line.contains("not found") {
                    bail!("{}: ldd cannot find {}", elf.display(), line.trim());
                }
                continue;
            };
            let at = merged_usr(lib);
            if !self.nodes.contains_key(&at) {
                self.copy(&at, Path::new(lib))?;
            }
        }
        Ok(())
    }

    /// A host directory tree at its own path (merged /usr), leaving out the
    /// entries named in `skip`; the shared libraries of any `.so` in it too.
    pub fn host_tree(&mut self, dir: &Path, skip: &[&str]) -> Result<()> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            self.dir(&d.to_string_lossy());
            for e in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))?.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if skip.contains(&name.as_str()) {
                    continue;
                }
                let p = e.path();
                let ft = e.file_type()?;
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() || ft.is_symlink() && p.is_file() {
                    self.copy(&p.to_string_lossy(), &p)?;
                    if name.ends_with(".so") {
                        self.libraries_of(&p)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the initramfs; returns its size in bytes.
    pub fn write_cpio(&self, out: &Path) -> Result<u64> {
        let tmp = out.with_extension("tmp");
        let mut w = BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?);
        let mut n = 0u64;
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let name = path.trim_start_matches('/');
            let (mode, data, rdev): (u32, std::borrow::Cow<[u8]>, (u32, u32)) = match node {
                Node::Dir => (0o040755, (&[][..]).into(), (0, 0)),
                Node::File { mode, data: Data::Bytes(b) } => (0o100000 | mode, b.as_slice().into(), (0, 0)),
                Node::File { mode, data: Data::Host(p) } => {
                    (0o100000 | mode, std::fs::read(p).with_context(|| format!("read {}", p.display()))?.into(), (0, 0))
                }
                Node::Symlink(target) => (0o120777, target.as_bytes().into(), (0, 0)),
                Node::CharDev { major, minor } => (0o020600, (&[][..]).into(), (*major, *minor)),
            };
            n += newc_entry(&mut w, ino as u32 + 1, name, mode, &data, rdev)?;
        }
        n += newc_entry(&mut w, 0, "TRAILER!!!", 0, &[], (0, 0))?;
        w.flush()?;
        drop(w);
        std::fs::rename(&tmp, out)?;
        Ok(n)
    }
}

/// One cpio "newc" record: a 110-byte header of hex fields, the name, the
/// data, each padded to 4 bytes.
fn newc_entry(w: &mut impl Write, ino: u32, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) -> Result<u64> {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0,
        0,
        0,
        data.len(),
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() + 1,
        0
    );
    let pad = |n: usize| (4 - n % 4) % 4;
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0u8; 4][..1 + pad(header.len() + name.len() + 1)])?;
    w.write_all(data)?;
    w.write_all(&[0u8; 3][..pad(data.len())])?;
    Ok((header.len() + name.len() + 1 + pad(header.len() + name.len() + 1) + data.len() + pad(data.len())) as u64)
}

/// A copy of `elf` without debug information, for a smaller image.
pub fn stripped(elf: &Path, into: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(into)?;
    let out = into.join(elf.file_name().context("file name")?);
    let status =
        Command::new("objcopy").arg("--strip-debug").arg(elf).arg(&out).status().context("objcopy (binutils)")?;
    if !status.success() {
        bail!("objcopy --strip-debug {} failed", elf.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_records_are_padded_to_four_bytes() {
        let mut buf = Vec::new();
        let n = newc_entry(&mut buf, 1, "init", 0o100755, b"#!/bin/sh\n", (0, 0)).unwrap();
        assert_eq!(n as usize, buf.len());
        assert_eq!(buf.len() % 4, 0);
        assert!(buf.starts_with(b"07070100000001000081ed"));
        // name "init\0" after the 110-byte header, then padding to 116.
        assert_eq!(&buf[110..115], b"init\0");
        assert_eq!(&buf[116..126], b"#!/bin/sh\n");
    }

    #[test]
    fn merged_usr_moves_top_level_dirs_under_usr() {
        assert_eq!(merged_usr("/lib/x86_64-linux-gnu/libc.so.6"), "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(merged_usr("/lib64/ld-linux-x86-64.so.2"), "/usr/lib64/ld-linux-x86-64.so.2");
        assert_eq!(merged_usr("/usr/sbin/nft"), "/usr/sbin/nft");
        assert_eq!(merged_usr("/libexec/x"), "/libexec/x");
    }
}
