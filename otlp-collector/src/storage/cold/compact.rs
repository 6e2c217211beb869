//! Compaction of small cold files: each UTC hour's files holding fewer than
//! half of `cold.max_spans_per_file` spans are merged into files of up to
//! `max_spans_per_file` spans, sorted by trace id (one index to check and
//! one file to open per lookup instead of several).
//!
//! Why small files happen: PostgreSQL and ClickHouse hand a day over in
//! trace-id order, so each flush of `max_spans_per_file` spans writes one
//! file per hour of the day; late spans and size evictions add more. Files
//! are merged within their hour only, so a merged file keeps the time range
//! a search prunes by and stops early on (`ColdStore::search`).
//!
//! One merge, in this order:
//!
//! 1. a **manifest** `<prefix>/compactions/<nonce>.manifest` naming the new
//!    file and its inputs is written;
//! 2. the **merged file** is written (one `put`: a local directory writes a
//!    temporary file and renames it, S3 shows the object whole or not at
//!    all) — this is the commit point;
//! 3. the catalog swaps the inputs for it under one lock, then waits for the
//!    reads that chose files before the swap (`ColdStore::reads`);
//! 4. the inputs are deleted, then the manifest.
//!
//! A listing ([`ColdStore::refresh`]) leaves out the inputs of every
//! manifest whose merged file exists, so a crash after step 2 shows each
//! span once, and the next pass finishes the deletes. A crash before step 2
//! leaves the inputs as they were; the next pass removes the manifest. A
//! read in this process sees the inputs or the merged file, never both and
//! never neither; the spans are the same (duplicates by
//! `(trace id, span id)` among the inputs are dropped in the merge).
//!
//! One compactor per location: the tiering task runs it after each run
//! (one pass at a time per process; not under the pass lock, which size
//! evictions wait for: it removes only the files it picked).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::format::{OpenFile, Pieces};
use super::location::{self, FileEntry};
use super::store::{join_err, os_err, ColdStore};
use crate::model::{Span, SpanId, TraceId};
use crate::storage::{StorageError, StorageResult};

const HOUR_NS: u64 = 3_600_000_000_000;

/// What one compaction pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Merged files written.
    pub files_written: u64,
    /// Small files they replaced (deleted).
    pub files_replaced: u64,
    /// Spans in the merged files.
    pub spans: u64,
    /// Duplicate spans dropped by the merges.
    pub duplicates_dropped: u64,
    /// Interrupted compactions found and finished (or undone).
    pub recovered: u64,
}

/// Where a merge stops: `Done` in production; the others leave the
/// location as a crash at that point would (crash-safety tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAfter {
    /// The whole merge.
    Done,
    /// After writing the manifest (before the merged file).
    Manifest,
    /// After writing the merged file (before the catalog swap and deletes).
    Output,
}

/// Which small files to merge: per UTC hour, files under half of
/// `max_spans_per_file` spans, oldest first, packed into groups of at most
/// `max_spans_per_file` spans; groups of one are left alone; at most
/// `max_files` inputs in all.
pub fn plan(
    files: &[FileEntry],
    max_spans_per_file: usize,
    max_files: usize,
) -> Vec<Vec<FileEntry>> {
    let max = max_spans_per_file.max(2) as u64;
    let mut hours: BTreeMap<u64, Vec<&FileEntry>> = BTreeMap::new();
    for e in files {
        if e.spans < max / 2 && e.min_ns / HOUR_NS == e.max_ns / HOUR_NS {
            hours.entry(e.min_ns / HOUR_NS).or_default().push(e);
        }
    }
    let mut groups = Vec::new();
    let mut budget = max_files;
    for (_, mut hour) in hours {
        hour.sort_by_key(|e| (e.min_ns, e.max_ns));
        let mut cur: Vec<FileEntry> = Vec::new();
        let mut spans = 0;
        for e in hour {
            if !cur.is_empty() && spans + e.spans > max {
                if cur.len() >= 2 {
                    budget = budget.saturating_sub(cur.len());
                    groups.push(std::mem::take(&mut cur));
                }
                cur.clear();
                spans = 0;
            }
            if budget < 2 {
                return groups;
            }
            if cur.len() < budget {
                spans += e.spans;
                cur.push(e.clone());
            }
        }
        if cur.len() >= 2 {
            budget = budget.saturating_sub(cur.len());
            groups.push(cur);
        }
    }
    groups
}

impl ColdStore {
    /// One compaction pass: finishes interrupted ones, then merges small
    /// files (bounded by `cold.compaction_max_files`).
    pub async fn compact(&self) -> StorageResult<CompactReport> {
        self.compact_until(StopAfter::Done).await
    }

    /// [`compact`](Self::compact), stopping every merge at `stop` (tests
    /// leave the location as a crash there would).
    pub async fn compact_until(&self, stop: StopAfter) -> StorageResult<CompactReport> {
        let _one = self.compacting.lock().await;
        let mut report = CompactReport {
            recovered: self.recover().await?,
            ..CompactReport::default()
        };
        let groups = plan(
            &self.files(),
            self.config().max_spans_per_file,
            self.config().compaction_max_files,
        );
        for g in groups {
            let (spans, dropped) = self.merge(&g, stop).await?;
            report.files_written += 1;
            report.files_replaced += g.len() as u64;
            report.spans += spans;
            report.duplicates_dropped += dropped;
        }
        self.stats
            .compactions
            .fetch_add(report.files_written, Relaxed);
        self.stats
            .compaction_files_replaced
            .fetch_add(report.files_replaced, Relaxed);
        self.stats.compaction_spans.fetch_add(report.spans, Relaxed);
        Ok(report)
    }

    /// Finishes what interrupted compactions left: where the merged file
    /// exists, its inputs are deleted (and left out of the catalog); where
    /// it does not, the merge never committed and only its manifest goes.
    async fn recover(&self) -> StorageResult<u64> {
        let mut n = 0;
        for m in location::manifests(&*self.store, &self.prefix).await? {
            let committed = match self.store.head(&m.output).await {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => return Err(os_err("checking", &m.output, e)),
            };
            if committed {
                let gone: Vec<FileEntry> = {
                    let c = self.catalog.read();
                    m.inputs
                        .iter()
                        .filter_map(|p| c.get(p.as_ref()).cloned())
                        .collect()
                };
                self.forget(&gone);
                drop(self.reads.write().await);
                for p in &m.inputs {
                    delete(&*self.store, p).await?;
                }
                if self.catalog.read().get(m.output.as_ref()).is_none() {
                    // Listed before the merged file landed: add it now.
                    let size = self
                        .store
                        .head(&m.output)
                        .await
                        .map_err(|e| os_err("checking", &m.output, e))?
                        .size;
                    if let Some(e) = location::parse_name(&m.output, size) {
                        self.catalog.write().insert(e.path.to_string(), e);
                    }
                }
            }
            delete(&*self.store, &m.path).await?;
            n += 1;
        }
        self.update_gauges();
        self.stats.compaction_recoveries.fetch_add(n, Relaxed);
        Ok(n)
    }

    /// Merges `group` into one file; returns (spans written, duplicates dropped).
    async fn merge(&self, group: &[FileEntry], stop: StopAfter) -> StorageResult<(u64, u64)> {
        let mut spans: Vec<Span> = Vec::new();
        let mut seen: HashSet<(TraceId, SpanId)> = HashSet::new();
        let mut dropped = 0;
        for e in group {
            let data = match self.store.get(&e.path).await {
                Ok(r) => r,
                Err(err) => {
                    if matches!(err, object_store::Error::NotFound { .. }) {
                        // Deleted behind the catalog's back: forget it, so
                        // the next pass plans without it.
                        self.forget(std::slice::from_ref(e));
                        self.update_gauges();
                    }
                    return Err(os_err("reading", &e.path, err));
                }
            }
            .bytes()
            .await
            .map_err(|err| os_err("reading", &e.path, err))?;
            self.stats.bytes_read.fetch_add(data.len() as u64, Relaxed);
            let file = tokio::task::spawn_blocking(move || {
                let f = OpenFile::open(Pieces::whole(data))?;
                let mut v = Vec::new();
                for rg in 0..f.row_groups() {
                    v.extend(f.all_spans(rg)?);
                }
                Ok::<_, StorageError>(v)
            })
            .await
            .map_err(join_err)??;
            for s in file {
                if seen.insert((s.trace_id, s.span_id)) {
                    spans.push(s);
                } else {
                    dropped += 1;
                }
            }
        }
        let (entry, data, nonce) = self.encode(spans).await?;
        let (output, count, size) = (entry.path.clone(), entry.spans, entry.size);
        let manifest = location::manifests_dir(&self.prefix).join(format!("{nonce:016x}.manifest"));
        let mut body = format!("{output}\n");
        for e in group {
            body.push_str(e.path.as_ref());
            body.push('\n');
        }
        self.store
            .put(&manifest, PutPayload::from(body.into_bytes()))
            .await
            .map_err(|e| os_err("writing", &manifest, e))?;
        if stop == StopAfter::Manifest {
            return Ok((count, dropped));
        }
        self.store
            .put(&output, PutPayload::from(data))
            .await
            .map_err(|e| os_err("writing", &output, e))?;
        self.stats.bytes_written.fetch_add(size, Relaxed);
        if stop == StopAfter::Output {
            return Ok((count, dropped));
        }
        {
            // One lock: a read's snapshot has the inputs or the merged file.
            let mut c = self.catalog.write();
            for e in group {
                c.remove(e.path.as_ref());
            }
            c.insert(output.to_string(), entry);
        }
        self.forget(group);
        self.update_gauges();
        // Reads that chose the inputs before the swap finish first.
        drop(self.reads.write().await);
        for e in group {
            delete(&*self.store, &e.path).await?;
        }
        delete(&*self.store, &manifest).await?;
        Ok((count, dropped))
    }
}

async fn delete(store: &dyn ObjectStore, path: &Path) -> StorageResult<()> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(os_err("deleting", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hour: u64, at: u64, spans: u64) -> FileEntry {
        let min = hour * HOUR_NS + at;
        FileEntry {
            path: location::file_path(&Path::from("p"), min, min + 10, spans, at),
            min_ns: min,
            max_ns: min + 10,
            spans,
            size: 1,
        }
    }

    #[test]
    fn plan_packs_small_files_per_hour_within_bounds() {
        let files = vec![
            entry(10, 1, 30),
            entry(10, 2, 30),
            entry(10, 3, 30),
            entry(10, 4, 30),
            entry(10, 5, 80), // large: left alone
            entry(11, 1, 10), // alone in its hour: left alone
            entry(12, 1, 10),
            entry(12, 2, 10),
        ];
        let g = plan(&files, 100, 100);
        let sizes: Vec<Vec<u64>> = g
            .iter()
            .map(|g| g.iter().map(|e| e.spans).collect())
            .collect();
        assert_eq!(sizes, vec![vec![30, 30, 30], vec![10, 10]]);
        // The bound on inputs: the first group only, cut to fit.
        let g = plan(&files, 100, 2);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].len(), 2);
        assert!(plan(&files, 100, 1).is_empty());
        // A file crossing an hour (not written by this tier) is left alone.
        let mut odd = entry(13, 1, 5);
        odd.max_ns = 14 * HOUR_NS + 1;
        assert!(plan(&[odd, entry(13, 2, 5)], 100, 100).is_empty());
    }
}
