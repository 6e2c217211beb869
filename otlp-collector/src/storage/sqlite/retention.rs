//! Retention: the age cutoff (deleted in small transactions), eviction of the
//! oldest data for the disk budget (giving the space back on a full disk),
//! disk usage, the journal sized to the budget, and the export of old spans
//! to the cold tier.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{from_i64, map_err, postings, to_i64, wal_pages, SqliteStore, WAL_UNIT};
use crate::rollup::MINUTE_NS;
use crate::storage::span_codec::decode_span;
use crate::storage::{
    DiskUsage, EvictionReport, ExportCursor, ExportPage, Retention, RetentionReport, StorageResult,
};

/// [`Retention::export_before`]: one page in `(start_ns, id)` order, read
/// along the `spans_start` index (which ends in the row id).
fn export_before_tx(
    conn: &Connection,
    cutoff_ns: u64,
    after: Option<ExportCursor>,
    limit: usize,
) -> StorageResult<ExportPage> {
    let (a_start, a_row) = match after {
        Some(c) => (to_i64(c.start_ns), c.row),
        None => (i64::MIN, i64::MIN),
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, start_ns, data FROM spans WHERE start_ns < ?1 \
             AND (start_ns > ?2 OR (start_ns = ?2 AND id > ?3)) \
             ORDER BY start_ns, id LIMIT ?4",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map(
            params![to_i64(cutoff_ns), a_start, a_row, limit.max(1) as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            },
        )
        .map_err(map_err)?;
    let mut page = ExportPage::default();
    let mut last = None;
    for row in rows {
        let (id, start, data) = row.map_err(map_err)?;
        page.spans.push(decode_span(&data)?);
        last = Some(ExportCursor {
            start_ns: start.max(0) as u64,
            row: id,
            ..ExportCursor::default()
        });
    }
    if page.spans.len() >= limit.max(1) {
        page.next = last;
    }
    Ok(page)
}

fn retention_tx(
    conn: &mut Connection,
    cutoff_ns: u64,
    chunk: usize,
) -> StorageResult<RetentionReport> {
    let mut report = RetentionReport::default();
    retention_into(conn, cutoff_ns, chunk, &mut report)?;
    Ok(report)
}

/// [`retention_tx`], counting into `report` as it goes: when a later chunk
/// fails (a full disk), what the committed chunks deleted is still known.
fn retention_into(
    conn: &mut Connection,
    cutoff_ns: u64,
    chunk: usize,
    report: &mut RetentionReport,
) -> StorageResult<()> {
    let cutoff = to_i64(cutoff_ns);
    loop {
        // Small transactions: the writer is released between chunks so ingest
        // keeps flowing while a large backlog is deleted.
        let tx = conn.transaction().map_err(map_err)?;
        let victims: Vec<i64> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id FROM spans WHERE start_ns < ?1 ORDER BY start_ns LIMIT ?2",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![cutoff, chunk.max(1) as i64], |r| r.get(0))
                .map_err(map_err)?;
            rows.collect::<Result<_, _>>().map_err(map_err)?
        };
        if victims.is_empty() {
            tx.commit().map_err(map_err)?;
            break;
        }
        let mut deleted = 0;
        {
            let mut del_span = tx
                .prepare_cached("DELETE FROM spans WHERE rowid = ?1")
                .map_err(map_err)?;
            for rowid in &victims {
                deleted += del_span.execute(params![rowid]).map_err(map_err)? as u64;
            }
        }
        tx.commit().map_err(map_err)?;
        report.spans_deleted += deleted;
    }
    // Then the posting lists all of whose spans are gone now (a list that
    // also names a kept span stays: see `postings`), in chunks as well.
    loop {
        let tx = conn.transaction().map_err(map_err)?;
        let gone = postings::delete_expired(&tx, cutoff, chunk)?;
        tx.commit().map_err(map_err)?;
        if gone < chunk.max(1) {
            break;
        }
    }
    // A minute bucket goes only when all of it is older than the cutoff.
    if cutoff_ns >= MINUTE_NS {
        let last_minute = to_i64(cutoff_ns - MINUTE_NS);
        let tx = conn.transaction().map_err(map_err)?;
        report.rollups_deleted += tx
            .execute(
                "DELETE FROM op_rollups WHERE minute_ns <= ?1",
                params![last_minute],
            )
            .map_err(map_err)? as u64;
        report.rollups_deleted += tx
            .execute(
                "DELETE FROM edge_rollups WHERE minute_ns <= ?1",
                params![last_minute],
            )
            .map_err(map_err)? as u64;
        // Backstop for WALs that are gone (their origins are never pruned by
        // segment); origins are bookkeeping, not counted as rollup rows.
        tx.execute(
            "DELETE FROM rollup_origins WHERE minute_ns <= ?1",
            params![last_minute],
        )
        .map_err(map_err)?;
        tx.commit().map_err(map_err)?;
    }
    Ok(())
}

/// Spans deleted per transaction by an eviction on a full disk.
const FULL_DISK_CHUNK: usize = 500;
/// Chunks of `sqlite.retention_chunk` spans one eviction call deletes at most.
const MAX_EVICTION_CHUNKS: usize = 10;

/// Bytes of the pages that hold data: `(page_count - freelist_count) * page_size`.
fn live_bytes(conn: &Connection) -> StorageResult<u64> {
    let get = |p: &str| -> StorageResult<u64> {
        conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0))
            .map(from_i64)
            .map_err(map_err)
    };
    let pages = get("page_count")?;
    let free = get("freelist_count")?;
    Ok(pages.saturating_sub(free).saturating_mul(get("page_size")?))
}

/// The size of the database file and its `-wal` and `-shm` companions.
fn file_bytes(path: &Path) -> u64 {
    let mut total = 0;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    }
    total
}

fn disk_usage_tx(conn: &Connection, path: &Path) -> StorageResult<DiskUsage> {
    let oldest: Option<i64> = conn
        .query_row("SELECT MIN(start_ns) FROM spans", [], |r| r.get(0))
        .map_err(map_err)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(DiskUsage {
        dir: Some(dir),
        file_bytes: file_bytes(path),
        live_bytes: live_bytes(conn)?,
        oldest_ns: oldest.map(from_i64),
    })
}

/// Deletes about `bytes` of the oldest data (see [`Retention::evict_oldest`]).
/// The cutoff is a span start time: the stored bytes per span (live bytes
/// over the span count, rollups and attributes included) give how many of
/// the oldest spans to delete, and the start time of the last of them is
/// where the age retention's delete ([`retention_tx`]) is told to stop. So
/// eviction deletes a whole time range, never a span newer than one it keeps.
fn evict_tx(
    conn: &mut Connection,
    bytes: u64,
    give_back: bool,
    chunk: usize,
) -> StorageResult<EvictionReport> {
    if give_back {
        // First return what is free already (free pages, the journal): on a
        // full disk the deletes below need room in the journal. Best effort:
        // a checkpoint that cannot grow the file fails, and is tried again.
        if let Err(e) = give_back_space(conn) {
            tracing::debug!(error = %e, "sqlite: giving space back before the eviction failed");
        }
    }
    let cutoff = if bytes > 0 {
        eviction_cutoff_tx(conn, bytes, give_back, chunk)?
    } else {
        None
    };
    evict_before_tx(conn, cutoff, give_back, chunk)
}

/// Small transactions on a full disk: each one's pages must fit in the
/// journal's room.
fn eviction_chunk(give_back: bool, chunk: usize) -> usize {
    if give_back {
        chunk.min(FULL_DISK_CHUNK)
    } else {
        chunk
    }
}

/// The cutoff an eviction of about `bytes` deletes before (`None`: the
/// store is empty): one past the start of the `k`-th oldest span, `k` from
/// the bytes per span.
fn eviction_cutoff_tx(
    conn: &Connection,
    bytes: u64,
    give_back: bool,
    chunk: usize,
) -> StorageResult<Option<u64>> {
    let chunk = eviction_chunk(give_back, chunk);
    let live = live_bytes(conn)?;
    // Row ids grow with arrival and retention deletes the oldest, so the id
    // range is the span count (an overestimate if rows were deleted out of
    // order, which makes the eviction a little larger): O(log n), where
    // COUNT(*) would read a whole index.
    let (lo, hi): (Option<i64>, Option<i64>) = conn
        .query_row("SELECT MIN(id), MAX(id) FROM spans", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(map_err)?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(None);
    };
    let n = from_i64(hi.saturating_sub(lo)).saturating_add(1);
    let per_span = (live / n).max(1);
    // At most MAX_EVICTION_CHUNKS chunks per call, so that the writer
    // (and ingest) waits for one eviction call at most that long; the
    // size task calls again while there is more to delete.
    let k = bytes
        .max(1)
        .div_ceil(per_span)
        .clamp(1, n)
        .min((chunk.max(1) * MAX_EVICTION_CHUNKS) as u64);
    let last: Option<i64> = conn
        .query_row(
            "SELECT start_ns FROM spans ORDER BY start_ns LIMIT 1 OFFSET ?1",
            params![to_i64(k - 1)],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?;
    let last = match last {
        Some(l) => l,
        None => conn
            .query_row("SELECT MAX(start_ns) FROM spans", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map_err(map_err)?
            .unwrap_or(0),
    };
    Ok(Some(from_i64(last).saturating_add(1)))
}

/// Deletes every span (and rollup minute) before `cutoff` (none when
/// `None`), then with `give_back` returns the space to the file system.
fn evict_before_tx(
    conn: &mut Connection,
    cutoff: Option<u64>,
    give_back: bool,
    chunk: usize,
) -> StorageResult<EvictionReport> {
    let chunk = eviction_chunk(give_back, chunk);
    let mut report = EvictionReport::default();
    if let Some(cutoff) = cutoff {
        let mut deleted = RetentionReport::default();
        let outcome = retention_into(conn, cutoff, chunk, &mut deleted);
        report = EvictionReport {
            spans_deleted: deleted.spans_deleted,
            rollups_deleted: deleted.rollups_deleted,
            cutoff_ns: cutoff,
        };
        match outcome {
            Ok(()) => {}
            // Nothing deleted: the caller retries.
            Err(e) if deleted.spans_deleted == 0 => return Err(e),
            // Some chunks were committed (oldest first): report them, so the
            // cutoff (an upper bound of what is gone) is published.
            Err(e) => {
                tracing::warn!(error = %e, spans = deleted.spans_deleted, "sqlite: eviction stopped part-way; the rest at the next check");
            }
        }
    }
    if give_back {
        if let Err(e) = give_back_space(conn) {
            if report.spans_deleted == 0 {
                return Err(e);
            }
            tracing::warn!(error = %e, "sqlite: could not give the evicted space back yet; retried at the next check");
        }
    }
    Ok(report)
}

/// Returns free pages to the file system: moves pages from the end of the
/// file into free slots and truncates it (incremental auto-vacuum; nothing
/// happens on a file created without it), then copies the journal back and
/// truncates it to zero bytes.
fn give_back_space(conn: &Connection) -> StorageResult<()> {
    // Stepped to the end: each step of the pragma frees pages.
    {
        let mut stmt = conn.prepare("PRAGMA incremental_vacuum").map_err(map_err)?;
        let mut rows = stmt.query([]).map_err(map_err)?;
        while rows.next().map_err(map_err)?.is_some() {}
    }
    // (busy, frames in the log, frames copied); busy = 1 when a reader kept
    // the log from being reset: it is truncated at the next eviction.
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .map_err(map_err)?;
    if busy != 0 {
        tracing::debug!("sqlite journal not truncated (a reader holds it); retried later");
    }
    Ok(())
}

/// The journal size for a store with a size budget of `budget` bytes (the
/// size task passes `storage::budget::journal_budget`, which is also bounded
/// by the free-space reserve): at most a sixteenth of it (at least 1 MiB),
/// so that on a small disk
/// the `-wal` file (which holds every write until a checkpoint copies it
/// into the database) does not take the room the budget leaves. In units of
/// `WAL_UNIT` (4 KiB), like `sqlite.wal_autocheckpoint_pages`.
fn autocheckpoint_pages(configured: u32, budget: u64) -> u32 {
    let cap = (budget / 16 / WAL_UNIT).max(256);
    u32::try_from(cap)
        .unwrap_or(u32::MAX)
        .min(configured.max(1))
}

#[async_trait]
impl Retention for SqliteStore {
    async fn apply_retention(&self, cutoff_ns: u64) -> StorageResult<RetentionReport> {
        self.with_writer(move |c, cfg| retention_tx(c, cutoff_ns, cfg.retention_chunk))
            .await
    }
    async fn disk_usage(&self) -> StorageResult<Option<DiskUsage>> {
        let path = self.inner.path.clone();
        self.with_reader(move |c, _| disk_usage_tx(c, &path).map(Some))
            .await
    }
    async fn export_before(
        &self,
        cutoff_ns: u64,
        after: Option<ExportCursor>,
        limit: usize,
    ) -> StorageResult<ExportPage> {
        self.with_reader(move |c, _| export_before_tx(c, cutoff_ns, after, limit))
            .await
    }
    fn set_disk_budget(&self, bytes: u64) {
        let units = autocheckpoint_pages(self.inner.config.wal_autocheckpoint_pages, bytes);
        let conn = self.inner.writer.lock();
        // A checkpoint resets the journal to this size, so it also bounds the
        // file between checkpoints (PERSIST_WAL otherwise keeps its peak).
        let limit = i64::from(units).saturating_mul(2 * WAL_UNIT as i64);
        if let Err(e) = conn
            .pragma_update(
                None,
                "wal_autocheckpoint",
                wal_pages(units, self.inner.page_size),
            )
            .and_then(|()| conn.pragma_update(None, "journal_size_limit", limit))
        {
            tracing::warn!(error = %e, "cannot size the sqlite journal for the disk budget");
        }
    }
    async fn evict_oldest(&self, bytes: u64, give_back: bool) -> StorageResult<EvictionReport> {
        self.with_writer(move |c, cfg| evict_tx(c, bytes, give_back, cfg.retention_chunk))
            .await
    }
    async fn eviction_cutoff(&self, bytes: u64, give_back: bool) -> StorageResult<Option<u64>> {
        self.with_reader(move |c, cfg| eviction_cutoff_tx(c, bytes, give_back, cfg.retention_chunk))
            .await
    }
    async fn evict_before(&self, cutoff_ns: u64, give_back: bool) -> StorageResult<EvictionReport> {
        self.with_writer(move |c, cfg| {
            if give_back {
                if let Err(e) = give_back_space(c) {
                    tracing::debug!(error = %e, "sqlite: giving space back before the eviction failed");
                }
            }
            evict_before_tx(c, Some(cutoff_ns), give_back, cfg.retention_chunk)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrValue, Span};
    use crate::storage::span_codec::tests::full_span;
    use crate::storage::SpanWriter;
    use crate::storage::TraceReader;

    /// `n` spans of trace `t`, one per millisecond from `t`'s second.
    fn spans_of(t: u32, n: u32) -> Vec<Span> {
        (0..n)
            .map(|i| {
                let mut s = full_span();
                s.trace_id = [0; 16];
                s.trace_id[12..].copy_from_slice(&t.to_be_bytes());
                s.span_id = [0; 8];
                s.span_id[4..].copy_from_slice(&i.to_be_bytes());
                s.start_ns = 1_700_000_000_000_000_000
                    + u64::from(t) * 1_000_000_000
                    + u64::from(i) * 1_000_000;
                s.end_ns = s.start_ns + 1_000;
                s.attributes.push(crate::model::KeyValue::new(
                    "payload",
                    AttrValue::Str("x".repeat(300).into()),
                ));
                s
            })
            .collect()
    }

    #[tokio::test]
    async fn eviction_deletes_the_oldest_time_range_and_keeps_everything_newer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("t.db")).expect("open");
        for t in 0..40 {
            store.write_spans(&spans_of(t, 50)).await.expect("write");
        }
        let before = store
            .disk_usage()
            .await
            .expect("usage")
            .expect("sqlite measures");
        assert_eq!(before.oldest_ns, Some(1_700_000_000_000_000_000));
        assert!(before.live_bytes > 0 && before.file_bytes >= before.live_bytes / 2);
        // About a quarter of the data.
        let report = store
            .evict_oldest(before.live_bytes / 4, false)
            .await
            .expect("evict");
        assert!(report.spans_deleted > 0, "{report:?}");
        let after = store
            .disk_usage()
            .await
            .expect("usage")
            .expect("sqlite measures");
        assert!(after.live_bytes < before.live_bytes, "{before:?} {after:?}");
        assert!(after.oldest_ns.expect("not empty") >= report.cutoff_ns);
        // Between a tenth and a half of the spans went (the estimate counts
        // rollups and attribute rows too).
        assert!(
            (200..=1000).contains(&report.spans_deleted),
            "{}",
            report.spans_deleted
        );
        // Every span before the cutoff is gone, every span at or after it kept.
        for t in 0..40u32 {
            let want: Vec<_> = spans_of(t, 50)
                .into_iter()
                .filter(|s| s.start_ns >= report.cutoff_ns)
                .map(|s| s.span_id)
                .collect();
            let mut trace = [0u8; 16];
            trace[12..].copy_from_slice(&t.to_be_bytes());
            let got: Vec<_> = store
                .get_trace(trace, None)
                .await
                .expect("get")
                .into_iter()
                .map(|s| s.span_id)
                .collect();
            assert_eq!(got, want, "trace {t}");
        }
        // The posting lists all of whose spans were deleted went with them;
        // every kept span is still listed once per searchable attribute.
        let per_span = spans_of(0, 1)[0]
            .attributes
            .iter()
            .filter(|kv| postings::indexed(&kv.value).is_some())
            .count() as i64;
        let (dead_lists, listed, live): (i64, i64, i64) = store
            .with_writer(|c, _| {
                c.query_row(
                    "SELECT (SELECT COUNT(*) FROM span_postings p WHERE NOT EXISTS                        (SELECT 1 FROM json_each(p.rowids) j JOIN spans s ON s.id = j.value)),                      (SELECT COUNT(*) FROM span_postings p, json_each(p.rowids) j                        WHERE j.value IN (SELECT id FROM spans)),                      (SELECT COUNT(*) FROM spans)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(map_err)
            })
            .await
            .expect("count");
        assert_eq!(dead_lists, 0);
        assert_eq!(listed, live * per_span);
        // The next eviction goes further, never back.
        let next = store.evict_oldest(1, false).await.expect("evict");
        assert!(next.cutoff_ns > report.cutoff_ns);
        // Nothing to ask for, nothing deleted.
        assert_eq!(
            store
                .evict_oldest(0, false)
                .await
                .expect("evict")
                .spans_deleted,
            0
        );
    }

    #[tokio::test]
    async fn eviction_with_give_back_shrinks_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("t.db")).expect("open");
        for t in 0..40 {
            store.write_spans(&spans_of(t, 50)).await.expect("write");
        }
        // Deleted pages stay in the file without give_back...
        store.evict_oldest(1, false).await.expect("evict");
        store
            .with_writer(|c, _| give_back_space(c))
            .await
            .expect("checkpoint");
        let before = store.disk_usage().await.expect("usage").expect("sqlite");
        let kept = store
            .evict_oldest(before.live_bytes / 2, false)
            .await
            .expect("evict");
        assert!(kept.spans_deleted > 0);
        let mid = store.disk_usage().await.expect("usage").expect("sqlite");
        assert!(mid.file_bytes >= before.file_bytes, "{before:?} {mid:?}");
        // ...and go back to the file system with it.
        store.evict_oldest(0, true).await.expect("give back");
        let after = store.disk_usage().await.expect("usage").expect("sqlite");
        assert!(
            after.file_bytes < before.file_bytes * 3 / 4,
            "{before:?} {after:?}"
        );
    }

    #[test]
    fn the_journal_shrinks_with_a_small_budget_only() {
        assert_eq!(autocheckpoint_pages(16_384, 32 << 20), 512);
        assert_eq!(autocheckpoint_pages(16_384, 1 << 20), 256);
        assert_eq!(autocheckpoint_pages(16_384, 100 << 30), 16_384);
        assert_eq!(autocheckpoint_pages(1_000, 100 << 30), 1_000);
    }
}
