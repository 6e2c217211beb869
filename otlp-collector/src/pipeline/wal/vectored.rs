//! Writing a group of records with one `pwritev`: each record's header and
//! its payload (the request body the receiver already holds) go to the
//! kernel as they are, instead of being copied into one group buffer first
//! (a memcpy of every request body on the WAL writer thread, issue 19).

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;

/// Most buffers one `pwritev` takes (Linux's `UIO_MAXIOV`); longer lists
/// are written in several calls.
const MAX_IOV: usize = 1024;

/// Writes every byte of `bufs`, in order, at `offset` of `file`, like
/// [`std::os::unix::fs::FileExt::write_all_at`] for a list of buffers:
/// short writes continue where the kernel stopped, `EINTR` is retried, a
/// write of zero bytes is an error ([`io::ErrorKind::WriteZero`]). On an
/// error, part of the data may have been written (the caller accounts for
/// it as after a failed `write_all_at`).
pub(super) fn write_all_vectored_at(
    file: &File,
    mut bufs: &mut [IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    // Drop leading empty buffers (a zero-length write would look like a
    // full disk).
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let count = bufs.len().min(MAX_IOV);
        let at = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "WAL offset too large"))?;
        // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on Unix
        // (documented by std); the `count` entries point to live buffers
        // borrowed for the call; the fd is open for the call's duration.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                bufs.as_ptr().cast::<libc::iovec>(),
                count as libc::c_int,
                at,
            )
        };
        if written < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "failed to write whole buffer",
            ));
        }
        offset += written as u64;
        IoSlice::advance_slices(&mut bufs, written as usize);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn temp_file() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .expect("open");
        (dir, f)
    }

    /// Many buffers (more than one call's worth), empty ones among them,
    /// land in order at the offset, after what was there.
    #[test]
    fn writes_every_buffer_in_order_at_the_offset() {
        let (_dir, f) = temp_file();
        f.write_all_at(b"head", 0).expect("head");
        let parts: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| {
                if i % 7 == 0 {
                    Vec::new()
                } else {
                    i.to_le_bytes()[..(i % 4 + 1) as usize].to_vec()
                }
            })
            .collect();
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        write_all_vectored_at(&f, &mut slices, 4).expect("write");
        let expected: Vec<u8> = b"head"
            .iter()
            .copied()
            .chain(parts.iter().flatten().copied())
            .collect();
        assert_eq!(
            std::fs::read(_dir.path().join("f")).expect("read"),
            expected
        );
    }

    #[test]
    fn nothing_to_write_is_not_an_error() {
        let (_dir, f) = temp_file();
        let mut none: [IoSlice<'_>; 0] = [];
        write_all_vectored_at(&f, &mut none, 0).expect("no buffers");
        let mut empty = [IoSlice::new(&[]), IoSlice::new(&[])];
        write_all_vectored_at(&f, &mut empty, 0).expect("empty buffers");
        assert_eq!(f.metadata().expect("meta").len(), 0);
    }

    /// A failing device reports the kernel's error (as a full disk does).
    #[test]
    fn a_full_device_fails_with_its_error() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("this test needs /dev/full");
        let data = [1u8; 10];
        let mut slices = [IoSlice::new(&data), IoSlice::new(&data)];
        let e = write_all_vectored_at(&f, &mut slices, 0).expect_err("ENOSPC");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }
}
