//! The cold tier's store: a catalog of immutable Parquet files (from the
//! location's listing), a cache of their trace-id indexes, and the reads a
//! query needs (spans of trace ids, searches), bounded per query.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::{Mutex, RwLock};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::ParquetMetaData;

use super::config::ColdConfig;
use super::format::{self, OpenFile, OperationKey, Pieces};
use super::location::{self, FileEntry};
use super::stats::ColdStats;
use crate::model::{Span, TraceId};
use crate::storage::{AttrFilter, StorageError, StorageResult, TimeRange, TraceQuery};

/// A file's trace-id index, fetched once and cached: its footer (with
/// per-row-group min/max trace id) and each row group's bloom filter.
struct FileIndex {
    tail_off: u64,
    tail: Bytes,
    meta: Arc<ParquetMetaData>,
    blooms: Vec<Option<Sbbf>>,
}

impl FileIndex {
    /// Row groups that may hold `id`: in the min/max range and passing the bloom filter.
    fn row_groups(&self, id: &TraceId) -> Vec<usize> {
        format::row_groups_for(&self.meta, id)
            .into_iter()
            .filter(|&rg| match self.blooms.get(rg) {
                Some(Some(b)) => format::bloom_may_hold(b, id),
                _ => true,
            })
            .collect()
    }
}

/// What one cold query may still read: `cold.max_files_per_query` and
/// `cold.max_bytes_per_query`, counted down.
pub struct ReadBudget {
    files: usize,
    bytes: u64,
    max_files: usize,
    max_bytes: u64,
}

impl ReadBudget {
    fn new(c: &ColdConfig) -> Self {
        ReadBudget {
            files: 0,
            bytes: 0,
            max_files: c.max_files_per_query,
            max_bytes: c.max_bytes_per_query,
        }
    }

    fn open(&mut self, stats: &ColdStats, what: &str) -> StorageResult<()> {
        if self.files >= self.max_files {
            stats.limit_errors.fetch_add(1, Relaxed);
            return Err(StorageError::InvalidQuery(format!(
                "{what} would open more than {} cold files (cold.max_files_per_query): \
                 narrow the time range",
                self.max_files
            )));
        }
        self.files += 1;
        stats.files_opened.fetch_add(1, Relaxed);
        Ok(())
    }

    fn read(&mut self, stats: &ColdStats, n: u64, what: &str) -> StorageResult<()> {
        if self.bytes.saturating_add(n) > self.max_bytes {
            stats.limit_errors.fetch_add(1, Relaxed);
            return Err(StorageError::InvalidQuery(format!(
                "{what} would read more than {} bytes of cold files (cold.max_bytes_per_query): \
                 narrow the time range",
                self.max_bytes
            )));
        }
        self.bytes += n;
        stats.bytes_read.fetch_add(n, Relaxed);
        Ok(())
    }

    /// Files opened so far.
    pub fn files_opened(&self) -> usize {
        self.files
    }
}

/// The cold tier.
pub struct ColdStore {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) prefix: Path,
    config: ColdConfig,
    pub(super) catalog: RwLock<BTreeMap<String, FileEntry>>,
    index: Mutex<HashMap<String, Arc<FileIndex>>>,
    pub(super) nonce: AtomicU64,
    /// Held (shared) by every read from its catalog snapshot to its last
    /// fetch; a file removed from the catalog (compaction, age retention)
    /// is deleted only after taking it exclusively once, so no read that
    /// chose the file finds it gone.
    pub(super) reads: tokio::sync::RwLock<()>,
    /// Metrics.
    pub stats: Arc<ColdStats>,
    /// Late spans during a tiering pass ([`super::fence::Fence`]).
    pub fence: super::fence::Fence,
    /// Held by a tiering pass or an eviction's copy: one fence at a time.
    pub pass: tokio::sync::Mutex<()>,
    /// Held by a compaction pass: one at a time.
    pub(super) compacting: tokio::sync::Mutex<()>,
}

pub(super) fn os_err(what: &str, path: &Path, e: object_store::Error) -> StorageError {
    StorageError::Unavailable(format!("cold tier: {what} {path}: {e}"))
}

pub(super) fn join_err(e: tokio::task::JoinError) -> StorageError {
    StorageError::Backend(format!("cold tier worker failed: {e}"))
}

impl ColdStore {
    /// Opens the configured location and lists its files.
    pub async fn open(config: &ColdConfig) -> StorageResult<Self> {
        let (store, prefix) = location::open(config)?;
        Self::with_store(store, prefix, config).await
    }

    /// A cold store over an already-built object store (tests, benches).
    pub async fn with_store(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        config: &ColdConfig,
    ) -> StorageResult<Self> {
        let s = ColdStore {
            store,
            prefix,
            config: config.clone(),
            catalog: RwLock::new(BTreeMap::new()),
            index: Mutex::new(HashMap::new()),
            nonce: AtomicU64::new(crate::model::now_ns()),
            reads: tokio::sync::RwLock::new(()),
            stats: Arc::new(ColdStats::default()),
            fence: Default::default(),
            pass: tokio::sync::Mutex::new(()),
            compacting: tokio::sync::Mutex::new(()),
        };
        s.refresh().await?;
        Ok(s)
    }

    /// The configuration.
    pub fn config(&self) -> &ColdConfig {
        &self.config
    }

    /// Re-reads the catalog from the location's listing (files written or
    /// deleted by another process show up). The inputs of a compaction
    /// whose merged file exists are left out (a compaction interrupted
    /// before deleting them: `compact.rs`), so the listing never holds a
    /// span twice.
    pub async fn refresh(&self) -> StorageResult<()> {
        let dir = location::spans_dir(&self.prefix);
        let mut listing = self.store.list(Some(&dir));
        let mut files = BTreeMap::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| os_err("listing", &dir, e))?;
            if let Some(e) = location::parse_name(&meta.location, meta.size) {
                files.insert(e.path.to_string(), e);
            }
        }
        for m in location::manifests(&*self.store, &self.prefix).await? {
            if files.contains_key(m.output.as_ref()) {
                for i in &m.inputs {
                    files.remove(i.as_ref());
                }
            }
        }
        *self.catalog.write() = files;
        self.update_gauges();
        Ok(())
    }

    pub(super) fn update_gauges(&self) {
        let c = self.catalog.read();
        self.stats.files.store(c.len() as u64, Relaxed);
        self.stats
            .bytes
            .store(c.values().map(|e| e.size).sum(), Relaxed);
        self.stats
            .spans
            .store(c.values().map(|e| e.spans).sum(), Relaxed);
        self.stats
            .oldest_ns
            .store(c.values().map(|e| e.min_ns).min().unwrap_or(0), Relaxed);
    }

    /// The files, oldest first.
    pub fn files(&self) -> Vec<FileEntry> {
        let mut v: Vec<FileEntry> = self.catalog.read().values().cloned().collect();
        v.sort_by_key(|e| (e.min_ns, e.max_ns));
        v
    }

    /// One past the latest span start in the cold tier (0 when empty): the
    /// hot store holds what starts from here on.
    pub fn covered_until(&self) -> u64 {
        self.catalog
            .read()
            .values()
            .map(|e| e.max_ns.saturating_add(1))
            .max()
            .unwrap_or(0)
    }

    fn candidates(&self, range: Option<TimeRange>) -> Vec<FileEntry> {
        self.catalog
            .read()
            .values()
            .filter(|e| range.is_none_or(|r| e.max_ns >= r.start_ns && e.min_ns < r.end_ns))
            .cloned()
            .collect()
    }

    /// Writes `spans` as new files: one per UTC hour of span start, split at
    /// `max_spans_per_file`. Returns the files written.
    pub async fn write(&self, spans: Vec<Span>) -> StorageResult<Vec<FileEntry>> {
        let mut by_hour: BTreeMap<u64, Vec<Span>> = BTreeMap::new();
        for s in spans {
            by_hour
                .entry(s.start_ns / 3_600_000_000_000)
                .or_default()
                .push(s);
        }
        let mut written = Vec::new();
        for (_, hour) in by_hour {
            let mut rest = hour;
            while !rest.is_empty() {
                let tail = if rest.len() > self.config.max_spans_per_file {
                    rest.split_off(self.config.max_spans_per_file)
                } else {
                    Vec::new()
                };
                written.push(self.write_file(std::mem::replace(&mut rest, tail)).await?);
            }
        }
        self.update_gauges();
        Ok(written)
    }

    /// Encodes `spans` as a new file (on a blocking thread) under a fresh
    /// name: (its catalog entry, its bytes, the nonce in its name).
    pub(super) async fn encode(
        &self,
        mut spans: Vec<Span>,
    ) -> StorageResult<(FileEntry, Vec<u8>, u64)> {
        let min_ns = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let max_ns = spans.iter().map(|s| s.start_ns).max().unwrap_or(0);
        let count = spans.len() as u64;
        let data = tokio::task::spawn_blocking(move || format::write_file(&mut spans))
            .await
            .map_err(join_err)??;
        let nonce = self.nonce.fetch_add(1, Relaxed);
        let entry = FileEntry {
            path: location::file_path(&self.prefix, min_ns, max_ns, count, nonce),
            min_ns,
            max_ns,
            spans: count,
            size: data.len() as u64,
        };
        Ok((entry, data, nonce))
    }

    async fn write_file(&self, spans: Vec<Span>) -> StorageResult<FileEntry> {
        let (entry, data, _) = self.encode(spans).await?;
        let (path, count, size) = (entry.path.clone(), entry.spans, entry.size);
        self.store
            .put(&path, PutPayload::from(data))
            .await
            .map_err(|e| os_err("writing", &path, e))?;
        self.catalog.write().insert(path.to_string(), entry.clone());
        self.stats.files_written.fetch_add(1, Relaxed);
        self.stats.bytes_written.fetch_add(size, Relaxed);
        self.stats.spans_written.fetch_add(count, Relaxed);
        Ok(entry)
    }

    /// Deletes the files whose spans all started before `cutoff_ns`; returns
    /// (files, spans) deleted.
    pub async fn evict_before(&self, cutoff_ns: u64) -> StorageResult<(u64, u64)> {
        let old: Vec<FileEntry> = self
            .catalog
            .read()
            .values()
            .filter(|e| e.max_ns < cutoff_ns)
            .cloned()
            .collect();
        let (mut files, mut spans) = (0, 0);
        // Out of the catalog first, then wait for the reads that may have
        // chosen these files: none of them finds one gone. A failed delete
        // leaves the file for the next listing (and the next run).
        self.forget(&old);
        drop(self.reads.write().await);
        for e in old {
            match self.store.delete(&e.path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(os_err("deleting", &e.path, err)),
            }
            files += 1;
            spans += e.spans;
        }
        self.stats.files_evicted.fetch_add(files, Relaxed);
        self.stats.spans_evicted.fetch_add(spans, Relaxed);
        self.update_gauges();
        Ok((files, spans))
    }

    /// Removes `files` from the catalog and the index cache (not from the location).
    pub(super) fn forget(&self, files: &[FileEntry]) {
        let mut c = self.catalog.write();
        let mut idx = self.index.lock();
        for e in files {
            c.remove(e.path.as_ref());
            idx.remove(e.path.as_ref());
        }
    }

    async fn get_range(&self, path: &Path, r: std::ops::Range<u64>) -> StorageResult<Bytes> {
        self.store
            .get_range(path, r)
            .await
            .map_err(|e| os_err("reading", path, e))
    }

    /// The index of `e`, from the cache or fetched (footer, then the bloom
    /// filters, which the writer puts together just before the footer).
    async fn index_of(
        &self,
        e: &FileEntry,
        budget: &mut ReadBudget,
    ) -> StorageResult<Arc<FileIndex>> {
        if let Some(i) = self.index.lock().get(e.path.as_ref()) {
            return Ok(i.clone());
        }
        let guess = e.size.min(format::FOOTER_GUESS);
        budget.read(&self.stats, guess, "a cold lookup")?;
        let mut tail_off = e.size - guess;
        let mut tail = self.get_range(&e.path, tail_off..e.size).await?;
        let need = format::footer_len(&tail)?;
        if need > e.size {
            return Err(StorageError::Backend(format!(
                "cold tier: {}: footer longer than the file",
                e.path
            )));
        }
        if need > tail.len() as u64 {
            budget.read(&self.stats, need, "a cold lookup")?;
            tail_off = e.size - need;
            tail = self.get_range(&e.path, tail_off..e.size).await?;
        }
        let mut pieces = Pieces::new(e.size);
        pieces.add(tail_off, tail.clone());
        // Parsed on a blocking thread: a file corrupt enough to panic the
        // decoder fails this read (a join error), never the collector.
        let (meta, pieces) = tokio::task::spawn_blocking(move || {
            format::parse_metadata(&pieces).map(|m| (m, pieces))
        })
        .await
        .map_err(join_err)??;
        let mut pieces = pieces;
        let ranges: Vec<(u64, u64)> = (0..meta.num_row_groups())
            .filter_map(|rg| format::bloom_range(&meta, rg))
            .collect();
        if let (Some(lo), Some(hi)) = (
            ranges.iter().map(|r| r.0).min(),
            ranges.iter().map(|r| r.1).max(),
        ) {
            if lo < tail_off && hi <= e.size && lo < hi {
                budget.read(&self.stats, hi - lo, "a cold lookup")?;
                pieces.add(lo, self.get_range(&e.path, lo..hi).await?);
            }
        }
        let (meta, blooms) = tokio::task::spawn_blocking(move || {
            let blooms = (0..meta.num_row_groups())
                .map(|rg| format::read_bloom(&meta, rg, &pieces))
                .collect::<StorageResult<Vec<_>>>()?;
            Ok::<_, StorageError>((meta, blooms))
        })
        .await
        .map_err(join_err)??;
        let idx = Arc::new(FileIndex {
            tail_off,
            tail,
            meta: Arc::new(meta),
            blooms,
        });
        self.stats.index_loads.fetch_add(1, Relaxed);
        let mut cache = self.index.lock();
        if cache.len() >= self.config.index_cache_files {
            // Bounded: drop an arbitrary entry (refetched on its next use).
            if let Some(k) = cache.keys().next().cloned() {
                cache.remove(&k);
            }
        }
        cache.insert(e.path.to_string(), idx.clone());
        Ok(idx)
    }

    /// The cold spans of `ids` (each with its trace id), reading only the
    /// row groups whose min/max and bloom filter may hold one of them, in the
    /// files overlapping `range`. Returns the spans and the files opened.
    pub async fn spans_of(
        &self,
        ids: &[TraceId],
        range: Option<TimeRange>,
    ) -> StorageResult<(Vec<Span>, usize)> {
        let _reading = self.reads.read().await;
        let files = self.candidates(range);
        if files.is_empty() || ids.is_empty() {
            return Ok((Vec::new(), 0));
        }
        self.stats.lookups.fetch_add(1, Relaxed);
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut budget = ReadBudget::new(&self.config);
        let mut out = Vec::new();
        for e in files {
            let idx = self.index_of(&e, &mut budget).await?;
            let mut rgs: Vec<usize> = sorted.iter().flat_map(|id| idx.row_groups(id)).collect();
            rgs.sort_unstable();
            rgs.dedup();
            if rgs.is_empty() {
                continue;
            }
            budget.open(&self.stats, "a cold trace lookup")?;
            let ranges: Vec<std::ops::Range<u64>> = rgs
                .iter()
                .map(|&rg| {
                    let (a, b) = format::row_group_range(&idx.meta, rg);
                    a..b
                })
                .collect();
            let pieces = self
                .fetch(&e, &idx, &ranges, &mut budget, "a cold trace lookup")
                .await?;
            let want = sorted.clone();
            let spans = tokio::task::spawn_blocking(move || {
                let f = OpenFile::open(pieces)?;
                let mut v = Vec::new();
                for rg in rgs {
                    v.extend(f.spans_of(rg, &want)?);
                }
                Ok::<_, StorageError>(v)
            })
            .await
            .map_err(join_err)??;
            out.extend(spans.into_iter().filter(|s| {
                range.is_none_or(|r| s.start_ns >= r.start_ns && s.start_ns < r.end_ns)
            }));
        }
        Ok((out, budget.files_opened()))
    }

    /// Fetches `ranges` of file `e` (charged to `budget`) and returns them
    /// with the file's cached tail, ready to open.
    async fn fetch(
        &self,
        e: &FileEntry,
        idx: &FileIndex,
        ranges: &[std::ops::Range<u64>],
        budget: &mut ReadBudget,
        what: &str,
    ) -> StorageResult<Pieces> {
        let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        budget.read(&self.stats, total, what)?;
        let parts = self
            .store
            .get_ranges(&e.path, ranges)
            .await
            .map_err(|err| os_err("reading", &e.path, err))?;
        let mut pieces = Pieces::new(e.size);
        pieces.add(idx.tail_off, idx.tail.clone());
        for (r, b) in ranges.iter().zip(parts) {
            pieces.add(r.start, b);
        }
        Ok(pieces)
    }

    /// Traces with a span in the cold files that matches `q` (every
    /// condition, start in `q.range`), as `(trace id, start of its newest
    /// matching cold span)`, newest first, after `cursor`; at most `limit`,
    /// and whether more match.
    ///
    /// Files are read newest first (by their latest span start) and the
    /// search stops as soon as `limit + 1` traces are settled: a trace whose
    /// key is above every unread file's latest start cannot change (unread
    /// spans are all older) and outranks every trace still unsettled, so
    /// the page is known. A trace's key is its *newest* matching span for
    /// exactly this reason (an oldest-span key could still drop when an
    /// older file is read). Every file overlapping the window is read only
    /// when fewer traces match; a later page re-reads the files newer than
    /// its cursor (to know which traces earlier pages listed).
    pub async fn search(
        &self,
        q: &TraceQuery,
        cursor: Option<(u64, TraceId)>,
        limit: usize,
    ) -> StorageResult<(Vec<(TraceId, u64)>, bool)> {
        let _reading = self.reads.read().await;
        let mut files = self.candidates(Some(q.range));
        if files.is_empty() {
            return Ok((Vec::new(), false));
        }
        files.sort_unstable_by_key(|e| std::cmp::Reverse((e.max_ns, e.min_ns)));
        self.stats.searches.fetch_add(1, Relaxed);
        let mut budget = ReadBudget::new(&self.config);
        let mut keys: HashMap<TraceId, u64> = HashMap::new();
        let listed = |id: &TraceId, s: u64| cursor.is_none_or(|(cs, cid)| (s, *id) < (cs, cid));
        // Only the searchable columns are fetched; the span blobs only when
        // an attribute condition needs them.
        let mut cols = format::KEY_COLUMNS.to_vec();
        if !q.attributes.is_empty() {
            cols.push(format::col::SPAN);
        }
        for (i, e) in files.iter().enumerate() {
            budget.open(&self.stats, "a cold search")?;
            let idx = self.index_of(e, &mut budget).await?;
            let ranges: Vec<std::ops::Range<u64>> = (0..idx.meta.num_row_groups())
                .flat_map(|rg| {
                    let g = idx.meta.row_group(rg);
                    cols.iter()
                        .map(|&c| {
                            let (a, n) = g.column(c).byte_range();
                            a..a + n
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            let pieces = self
                .fetch(e, &idx, &ranges, &mut budget, "a cold search")
                .await?;
            let q = q.clone();
            let found = tokio::task::spawn_blocking(move || scan_file(pieces, &q))
                .await
                .map_err(join_err)??;
            for (id, start) in found {
                let k = keys.entry(id).or_insert(start);
                *k = (*k).max(start);
            }
            let Some(next) = files.get(i + 1) else {
                break;
            };
            if keys.len() > limit {
                let settled = keys
                    .iter()
                    .filter(|(id, s)| **s > next.max_ns && listed(id, **s))
                    .count();
                if settled > limit {
                    self.stats
                        .search_files_skipped
                        .fetch_add((files.len() - i - 1) as u64, Relaxed);
                    break;
                }
            }
        }
        let mut v: Vec<(TraceId, u64)> =
            keys.into_iter().filter(|(id, s)| listed(id, *s)).collect();
        v.sort_unstable_by_key(|b| std::cmp::Reverse((b.1, b.0)));
        let more = v.len() > limit;
        v.truncate(limit);
        Ok((v, more))
    }
}

impl ColdStore {
    /// The distinct `(service, span name, kind)` of the cold spans starting
    /// in `range`. A file the range covers whole answers from its footer
    /// summary (cached with its index: no column is read); a file the range
    /// cuts, or one without a summary, has its four columns read and
    /// filtered by start, so the answer is exact.
    pub async fn operations(&self, range: TimeRange) -> StorageResult<BTreeSet<OperationKey>> {
        let mut out = BTreeSet::new();
        let mut budget = ReadBudget::new(&self.config);
        let _reading = self.reads.read().await;
        for e in self.candidates(Some(range)) {
            let idx = self.index_of(&e, &mut budget).await?;
            if e.min_ns >= range.start_ns && e.max_ns < range.end_ns {
                if let Some(ops) = format::footer_operations(&idx.meta) {
                    out.extend(ops);
                    continue;
                }
            }
            budget.open(&self.stats, "a cold service or operation listing")?;
            let ranges: Vec<std::ops::Range<u64>> = (0..idx.meta.num_row_groups())
                .flat_map(|rg| {
                    let g = idx.meta.row_group(rg);
                    format::OPERATION_COLUMNS.map(|c| {
                        let (a, n) = g.column(c).byte_range();
                        a..a + n
                    })
                })
                .collect();
            let pieces = self
                .fetch(
                    &e,
                    &idx,
                    &ranges,
                    &mut budget,
                    "a cold service or operation listing",
                )
                .await?;
            let found = tokio::task::spawn_blocking(move || {
                let f = OpenFile::open(pieces)?;
                let mut v = BTreeSet::new();
                for rg in 0..f.row_groups() {
                    v.extend(f.operations(rg, range.start_ns, range.end_ns)?);
                }
                Ok::<_, StorageError>(v)
            })
            .await
            .map_err(join_err)??;
            out.extend(found);
        }
        Ok(out)
    }
}

/// The matching rows of one file: `(trace id, span start)`.
fn scan_file(pieces: Pieces, q: &TraceQuery) -> StorageResult<Vec<(TraceId, u64)>> {
    let f = OpenFile::open(pieces)?;
    let mut out = Vec::new();
    for rg in 0..f.row_groups() {
        let keys = f.keys(rg)?;
        let rows: Vec<usize> = keys
            .iter()
            .enumerate()
            .filter(|(_, k)| row_matches(k, q))
            .map(|(i, _)| i)
            .collect();
        if rows.is_empty() {
            continue;
        }
        if q.attributes.is_empty() {
            out.extend(rows.iter().map(|&i| (keys[i].trace_id, keys[i].start_ns)));
            continue;
        }
        for s in f.spans_at(rg, &rows)? {
            if q.attributes.iter().all(|a| attr_matches(&s, a)) {
                out.push((s.trace_id, s.start_ns));
            }
        }
    }
    Ok(out)
}

fn row_matches(k: &format::RowKeys, q: &TraceQuery) -> bool {
    k.start_ns >= q.range.start_ns
        && k.start_ns < q.range.end_ns
        && q.service.as_deref().is_none_or(|s| s == k.service)
        && q.operation.as_deref().is_none_or(|o| o == k.name)
        && q.min_duration_ns.is_none_or(|d| k.duration_ns >= d)
        && q.max_duration_ns.is_none_or(|d| k.duration_ns <= d)
        && (!q.errors_only || k.status == format::STATUS_ERROR)
}

/// True when span `s` satisfies every condition of `q` (start in its range
/// included), as the hot stores decide it.
pub(crate) fn span_matches(s: &Span, q: &TraceQuery) -> bool {
    let k = format::RowKeys {
        trace_id: s.trace_id,
        start_ns: s.start_ns,
        duration_ns: s.duration_ns(),
        service: s.service_name.to_string(),
        name: s.name.to_string(),
        status: s.status_code as i32,
    };
    row_matches(&k, q) && q.attributes.iter().all(|a| attr_matches(s, a))
}

/// A span attribute matches the filter as the hot stores match it: same key,
/// and a value equal to one of the filter's candidates (type included).
pub(crate) fn attr_matches(s: &Span, f: &AttrFilter) -> bool {
    let c = f.candidates();
    s.attributes
        .iter()
        .any(|kv| kv.key == f.key && c.iter().any(|v| v == &kv.value))
}
