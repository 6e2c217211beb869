//! The file system under a directory: its size and the bytes still free
//! (`statvfs`), and the free-space reserve kept for the sink. Shared by the
//! write-ahead log (its out-of-space checks and spare segments) and the
//! store's size budget (`storage::budget`), which both resolve
//! `wal.min_free_bytes` the same way; neither owns the other's file system.

use std::path::Path;

/// One `statvfs` of the file system holding `dir`.
#[cfg(unix)]
fn statvfs(dir: &Path) -> std::io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and outlives the call; statvfs fills
    // the struct when it returns 0.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call above.
    Ok(unsafe { st.assume_init() })
}

/// Bytes available to this process on the file system holding `dir`.
#[cfg(unix)]
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = statvfs(dir)?;
    // The field types differ between platforms (u64 here, u32 on some).
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Size of the file system holding `dir`.
#[cfg(unix)]
pub fn fs_size_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = statvfs(dir)?;
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_blocks as u64).saturating_mul(st.f_frsize as u64))
}

/// Size of the file system holding `dir` (not known here).
#[cfg(not(unix))]
pub fn fs_size_bytes(_dir: &Path) -> std::io::Result<u64> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Bytes available on the file system holding `dir` (not known here).
#[cfg(not(unix))]
pub fn free_bytes(_dir: &Path) -> std::io::Result<u64> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// The free-space reserve for `wal.min_free_bytes` (0: a quarter of the file
/// system, at most 256 MiB; 0 too when the size cannot be read).
pub fn free_space_reserve(configured: u64, fs_size: Option<u64>) -> u64 {
    if configured > 0 {
        return configured;
    }
    fs_size.map_or(0, |size| (size / 4).min(256 << 20))
}
