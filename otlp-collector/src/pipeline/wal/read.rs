//! Reading records back: a whole segment at replay, one record for the WAL-only path.

use std::fs::File;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::{io_err, Record, Wal, WalError, WalPos, HEADER_LEN};
use crate::receiver::format::RecordFormat;

impl Wal {
    /// Reads every intact record of a segment. A torn or corrupt tail (a crash
    /// mid-write) ends the segment; it is counted, not an error. A rest of
    /// zero bytes is the unwritten part of a prepared segment (`wal/spare.rs`):
    /// the segment's clean end.
    pub fn read_segment(&self, id: u64) -> Result<Vec<Record>, WalError> {
        let path = self.shared.path(id);
        let data = Bytes::from(std::fs::read(&path).map_err(io_err(&path))?);
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos + HEADER_LEN <= data.len() {
            let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]])
                as usize;
            let crc =
                u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
            let body_start = pos + 8;
            let end = pos + HEADER_LEN + len;
            if end > data.len() || crc32fast::hash(&data[body_start..end]) != crc {
                break;
            }
            let Some(format) = RecordFormat::from_u8(data[pos + 8]) else {
                break;
            };
            let spans = u32::from_le_bytes([
                data[pos + 9],
                data[pos + 10],
                data[pos + 11],
                data[pos + 12],
            ]);
            out.push(Record {
                format,
                spans,
                payload: data.slice(pos + HEADER_LEN..end),
            });
            pos = end;
        }
        if pos != data.len() && data[pos..].iter().any(|&b| b != 0) {
            self.shared
                .metrics
                .wal_corrupt_records
                .fetch_add(1, Relaxed);
            tracing::warn!(
                segment = id,
                offset = pos,
                len = data.len(),
                "WAL segment has a torn or corrupt tail; ignoring the rest"
            );
        }
        Ok(out)
    }

    /// Reads back the one record an append acknowledged at `pos` (for spans
    /// kept in the WAL only, see `pipeline::wal_only`). Reads just that
    /// record, so memory is bounded by its size; the segment may still be
    /// being written. A record that is not intact there is an error (the
    /// caller leaves its spans in the WAL for the next start's replay).
    pub fn read_record_at(&self, pos: WalPos) -> Result<Record, WalError> {
        use std::os::unix::fs::FileExt;
        let path = self.shared.path(pos.segment);
        let corrupt = |what: &str| WalError::Io {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no intact record at offset {}: {what}", pos.offset),
            ),
        };
        let file = File::open(&path).map_err(io_err(&path))?;
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, pos.offset)
            .map_err(io_err(&path))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let format = RecordFormat::from_u8(header[8]).ok_or_else(|| corrupt("format"))?;
        let spans = u32::from_le_bytes([header[9], header[10], header[11], header[12]]);
        // A record never exceeds one group of appends (or the file).
        let file_len = file.metadata().map_err(io_err(&path))?.len();
        if pos.offset + (HEADER_LEN + len) as u64 > file_len {
            return Err(corrupt("length beyond the end of the segment"));
        }
        let mut payload = vec![0u8; len];
        file.read_exact_at(&mut payload, pos.offset + HEADER_LEN as u64)
            .map_err(io_err(&path))?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..HEADER_LEN]);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            return Err(corrupt("checksum"));
        }
        Ok(Record {
            format,
            spans,
            payload: Bytes::from(payload),
        })
    }
}
