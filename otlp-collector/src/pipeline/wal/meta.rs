//! `wal.meta`: the WAL directory's identity and the next segment id never used.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::{io_err, WalError};

/// Name of the file holding the WAL's identity and next segment id.
pub(super) const META_FILE: &str = "wal.meta";

/// A fresh random WAL identity (never 0), from the standard library's
/// randomly keyed hasher mixed with the time and the process id.
pub(super) fn random_instance() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// `wal.meta`: identity and the next segment id never used yet.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) instance: u64,
    pub(super) next_segment: u64,
}

impl Meta {
    pub(super) fn parse(text: &str) -> Option<Meta> {
        let mut lines = text.lines();
        if lines.next()? != "ferrotrace-wal 1" {
            return None;
        }
        let mut field = |name: &str| -> Option<u64> {
            let l = lines.next()?;
            let v = l.strip_prefix(name)?.strip_prefix(' ')?;
            if name == "instance" {
                u64::from_str_radix(v, 16).ok()
            } else {
                v.parse().ok()
            }
        };
        let instance = field("instance")?;
        let next_segment = field("next_segment")?;
        Some(Meta {
            instance,
            next_segment,
        })
    }

    fn render(&self) -> String {
        format!(
            "ferrotrace-wal 1\ninstance {:016x}\nnext_segment {}\n",
            self.instance, self.next_segment
        )
    }

    /// Writes the file atomically (temporary file, fsync, rename, directory fsync).
    pub(super) fn store(&self, dir: &Path) -> Result<(), WalError> {
        let tmp = dir.join("wal.meta.tmp");
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(self.render().as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = written {
            // A partial temporary file (a full disk) is of no use to anyone.
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        let path = dir.join(META_FILE);
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}
