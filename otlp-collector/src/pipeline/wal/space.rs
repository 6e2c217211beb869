//! Running out of space on the WAL's file system (the `statvfs` readings and
//! the sink's reserve are `crate::disk`'s, shared with the store's budget).

pub(super) fn is_out_of_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::EDQUOT)
}
