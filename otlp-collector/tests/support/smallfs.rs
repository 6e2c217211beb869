//! A small file system of its own for disk-full tests: a tmpfs of the given
//! size, or where tmpfs cannot be mounted a loop-mounted ext4 image (made
//! with `-m 0`, so root has no reserved blocks to write into). Both need
//! root (CAP_SYS_ADMIN). It is unmounted and removed on drop. Without root
//! or mount support the test is skipped with a printed reason, except under
//! `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::missing;

/// A mounted small file system; unmounted on drop.
pub struct SmallFs {
    mount: PathBuf,
    /// `tmpfs` or `ext4 (loop)`.
    pub kind: &'static str,
    _dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{cmd:?}: {e}")),
    }
}

impl SmallFs {
    /// Mounts a `size_mib` MiB file system, or reports why it cannot (a
    /// failure under CI) and returns `None`.
    pub fn mount(size_mib: u64) -> Option<SmallFs> {
        let dir = tempfile::Builder::new()
            .prefix("ferrotrace-smallfs-")
            .tempdir()
            .expect("temp dir");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("mount point");
        let tmpfs = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_mib}m,mode=0755"))
            .arg("tmpfs")
            .arg(&mount));
        if tmpfs.is_ok() {
            return Some(SmallFs {
                mount,
                kind: "tmpfs",
                _dir: dir,
            });
        }
        let image = dir.path().join("fs.img");
        let ext4 = std::fs::File::create(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .map_err(|e| format!("creating {}: {e}", image.display()))
            .and_then(|()| {
                run(Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-m", "0"])
                    .arg(&image))
            })
            .and_then(|()| {
                run(Command::new("mount")
                    .args(["-o", "loop"])
                    .arg(&image)
                    .arg(&mount))
            });
        match ext4 {
            Ok(()) => Some(SmallFs {
                mount,
                kind: "ext4 (loop)",
                _dir: dir,
            }),
            Err(e) => {
                missing(&format!(
                    "cannot mount a small file system for a disk-full test (needs root): \
                     tmpfs: {}; loop ext4: {e}",
                    tmpfs.unwrap_err()
                ));
                None
            }
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Fills every free byte with `filler` files (1 MiB writes, then 4 KiB,
    /// then single bytes, until the file system says ENOSPC), so that the
    /// next write anywhere on it fails. Returns the bytes written.
    pub fn fill(&self) -> u64 {
        use std::io::Write;
        let mut total = 0u64;
        for (i, chunk) in [1usize << 20, 4096, 1].into_iter().enumerate() {
            let path = self.mount.join(format!("filler-{i}"));
            let Ok(mut f) = std::fs::File::create(&path) else {
                break;
            };
            let buf = vec![0x5au8; chunk];
            while f.write_all(&buf).is_ok() {
                total += chunk as u64;
            }
            let _ = f.sync_all();
        }
        total
    }

    /// Removes the filler files written by [`fill`](Self::fill).
    pub fn unfill(&self) {
        for i in 0..3 {
            let _ = std::fs::remove_file(self.mount.join(format!("filler-{i}")));
        }
    }

    /// Bytes available on it now.
    pub fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.mount)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output")
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        if run(Command::new("umount").arg(&self.mount)).is_err() {
            // Something still holds it open: detach it now, freed when released.
            let _ = run(Command::new("umount").arg("-l").arg(&self.mount));
        }
    }
}
