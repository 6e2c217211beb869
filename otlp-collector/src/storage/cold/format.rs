//! The cold tier's file format: one Parquet file per flush, written and read
//! through the `parquet` crate's low-level column API (no Arrow).
//!
//! Columns (all required): `trace_id` (16-byte fixed), `span_id` (8-byte
//! fixed), `start_ns`, `duration_ns` (int64), `service`, `name` (UTF-8,
//! dictionary encoded), `kind`, `status` (int32), and `span`: the whole span
//! as the [`span_codec`](crate::storage::span_codec) blob, so a cold span
//! reads back exactly as it was stored hot. Rows are sorted by trace id, so
//! each row group's min/max statistics on `trace_id` cover a narrow slice of
//! the id space, and every row group has a bloom filter on `trace_id`: a
//! lookup by id reads one row group's filter per file and opens only the
//! files whose filter may hold the id.

use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::{Compression, ZstdLevel};
use parquet::bloom_filter::Sbbf;
use parquet::column::reader::get_typed_column_reader;
use parquet::data_type::{
    ByteArray, ByteArrayType, DataType, FixedLenByteArray, FixedLenByteArrayType, Int32Type,
    Int64Type,
};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{ChunkReader, FileReader, Length};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::model::{Span, StatusCode, TraceId};
use crate::storage::span_codec::{decode_span, encode_span_into};
use crate::storage::{StorageError, StorageResult};

const SCHEMA: &str = "message span {
    required fixed_len_byte_array(16) trace_id;
    required fixed_len_byte_array(8) span_id;
    required int64 start_ns;
    required int64 duration_ns;
    required binary service (UTF8);
    required binary name (UTF8);
    required int32 kind;
    required int32 status;
    required binary span;
}";

/// Column positions in [`SCHEMA`].
pub(crate) mod col {
    pub const TRACE_ID: usize = 0;
    pub const START: usize = 2;
    pub const DURATION: usize = 3;
    pub const SERVICE: usize = 4;
    pub const NAME: usize = 5;
    pub const KIND: usize = 6;
    pub const STATUS: usize = 7;
    pub const SPAN: usize = 8;
}

/// The columns a search reads (everything but the span blob).
pub const KEY_COLUMNS: [usize; 6] = [
    col::TRACE_ID,
    col::START,
    col::DURATION,
    col::SERVICE,
    col::NAME,
    col::STATUS,
];

/// Rows per row group: small enough that a lookup decodes little beyond the
/// trace it wants, large enough that the footer stays small.
pub const ROW_GROUP_ROWS: usize = 8_192;

/// The columns a services/operations listing reads from a file whose
/// footer has no operations summary, or that its time range cuts.
pub const OPERATION_COLUMNS: [usize; 4] = [col::START, col::SERVICE, col::NAME, col::KIND];

/// Footer key of a file's distinct `(service, span name, kind)` triples
/// (JSON), so that a services/operations listing over a range that covers
/// the file whole reads only its (cached) footer.
pub const OPERATIONS_KEY: &str = "ferrotrace.operations";

/// Most distinct triples a footer summary holds; a file with more has none
/// (its listing reads the columns instead), so the footer stays small.
pub const MAX_FOOTER_OPERATIONS: usize = 2_048;

/// One distinct `(service, span name, span kind number)` of a file.
pub type OperationKey = (String, String, i32);

/// False-positive rate of the per-row-group trace-id bloom filters.
pub const BLOOM_FPP: f64 = 0.001;

fn parquet_err(what: &str) -> impl Fn(parquet::errors::ParquetError) -> StorageError + '_ {
    move |e| StorageError::Backend(format!("cold tier: {what}: {e}"))
}

/// Encodes `spans` as one Parquet file (sorted by trace id, then start).
pub fn write_file(spans: &mut [Span]) -> StorageResult<Vec<u8>> {
    spans.sort_by(|a, b| {
        (a.trace_id, a.start_ns, a.span_id).cmp(&(b.trace_id, b.start_ns, b.span_id))
    });
    let schema = Arc::new(parse_message_type(SCHEMA).map_err(parquet_err("schema"))?);
    let tid = parquet::schema::types::ColumnPath::from("trace_id");
    let blob = parquet::schema::types::ColumnPath::from("span");
    // Distinct trace ids per row group sizes each filter (at most one per row).
    let ndv = spans
        .chunks(ROW_GROUP_ROWS)
        .map(|c| {
            c.windows(2)
                .filter(|w| w[0].trace_id != w[1].trace_id)
                .count() as u64
                + 1
        })
        .max()
        .unwrap_or(1);
    let ops: std::collections::BTreeSet<(&str, &str, i32)> = spans
        .iter()
        .map(|s| (s.service_name.as_str(), s.name.as_str(), s.kind as i32))
        .collect();
    let summary = (ops.len() <= MAX_FOOTER_OPERATIONS)
        .then(|| serde_json::to_string(&ops).ok())
        .flatten()
        .map(|v| {
            vec![parquet::file::metadata::KeyValue::new(
                OPERATIONS_KEY.to_string(),
                v,
            )]
        });
    let props = WriterProperties::builder()
        .set_key_value_metadata(summary)
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).map_err(parquet_err("zstd level"))?,
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        // The blob column is opaque: no dictionary, no statistics.
        .set_column_dictionary_enabled(blob.clone(), false)
        .set_column_statistics_enabled(blob, EnabledStatistics::None)
        .set_column_dictionary_enabled(tid.clone(), false)
        .set_column_bloom_filter_enabled(tid.clone(), true)
        .set_column_bloom_filter_fpp(tid.clone(), BLOOM_FPP)
        .set_column_bloom_filter_max_ndv(tid, ndv)
        .build();
    let mut out = Vec::new();
    let mut w = SerializedFileWriter::new(&mut out, schema, Arc::new(props))
        .map_err(parquet_err("writer"))?;
    let mut blob_buf = Vec::with_capacity(512);
    for chunk in spans.chunks(ROW_GROUP_ROWS) {
        let mut rg = w.next_row_group().map_err(parquet_err("row group"))?;
        let mut i = 0;
        while let Some(mut c) = rg.next_column().map_err(parquet_err("column"))? {
            let r = match i {
                0 => write_col::<FixedLenByteArrayType>(&mut c, fixed(chunk, |s| &s.trace_id)),
                1 => write_col::<FixedLenByteArrayType>(&mut c, fixed(chunk, |s| &s.span_id)),
                2 => write_col::<Int64Type>(&mut c, ints(chunk, |s| s.start_ns as i64)),
                3 => write_col::<Int64Type>(&mut c, ints(chunk, |s| s.duration_ns() as i64)),
                4 => write_col::<ByteArrayType>(&mut c, texts(chunk, |s| &s.service_name)),
                5 => write_col::<ByteArrayType>(&mut c, texts(chunk, |s| &s.name)),
                6 => write_col::<Int32Type>(&mut c, ints(chunk, |s| s.kind as i32)),
                7 => write_col::<Int32Type>(&mut c, ints(chunk, |s| s.status_code as i32)),
                _ => write_col::<ByteArrayType>(
                    &mut c,
                    chunk
                        .iter()
                        .map(|s| {
                            blob_buf.clear();
                            encode_span_into(s, &mut blob_buf);
                            ByteArray::from(blob_buf.clone())
                        })
                        .collect(),
                ),
            };
            r?;
            c.close().map_err(parquet_err("column close"))?;
            i += 1;
        }
        rg.close().map_err(parquet_err("row group close"))?;
    }
    w.close().map_err(parquet_err("file close"))?;
    Ok(out)
}

/// A fixed-length byte column's values.
fn fixed(chunk: &[Span], f: impl Fn(&Span) -> &[u8]) -> Vec<FixedLenByteArray> {
    chunk
        .iter()
        .map(|s| FixedLenByteArray::from(f(s).to_vec()))
        .collect()
}

/// A UTF-8 column's values.
fn texts(chunk: &[Span], f: impl Fn(&Span) -> &str) -> Vec<ByteArray> {
    chunk.iter().map(|s| ByteArray::from(f(s))).collect()
}

/// An integer column's values.
fn ints<T>(chunk: &[Span], f: impl Fn(&Span) -> T) -> Vec<T> {
    chunk.iter().map(f).collect()
}

fn write_col<T: DataType>(
    c: &mut parquet::file::writer::SerializedColumnWriter<'_>,
    values: Vec<T::T>,
) -> StorageResult<()> {
    c.typed::<T>()
        .write_batch(&values, None, None)
        .map_err(parquet_err("write column"))?;
    Ok(())
}

/// Bytes of a file that were fetched: the footer, bloom filters and row
/// groups a read needs, not the whole file. Implements [`ChunkReader`] so
/// the `parquet` reader can run over a partly-fetched object; asking for a
/// range that was not fetched is an error, never a silent fetch.
#[derive(Clone, Debug)]
pub struct Pieces {
    len: u64,
    pieces: Vec<(u64, Bytes)>,
}

impl Pieces {
    /// A file of `len` bytes of which nothing is fetched yet.
    pub fn new(len: u64) -> Self {
        Pieces {
            len,
            pieces: Vec::new(),
        }
    }

    /// Adds the bytes at `offset`.
    pub fn add(&mut self, offset: u64, data: Bytes) {
        self.pieces.push((offset, data));
    }

    /// A whole file held in memory.
    pub fn whole(data: Bytes) -> Self {
        Pieces {
            len: data.len() as u64,
            pieces: vec![(0, data)],
        }
    }

    fn find(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let end = start.saturating_add(length as u64);
        for (off, data) in &self.pieces {
            let piece_end = off + data.len() as u64;
            if *off <= start && end <= piece_end {
                let a = (start - off) as usize;
                return Ok(data.slice(a..a + length));
            }
        }
        Err(parquet::errors::ParquetError::General(format!(
            "bytes {start}..{end} of the file were not fetched"
        )))
    }
}

impl Length for Pieces {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Pieces {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        // Sequential reads start at a page header; serve up to the end of the
        // piece that reaches furthest past `start` (pieces may touch or overlap:
        // one ending exactly at `start` has nothing to give).
        let best = self
            .pieces
            .iter()
            .filter(|(off, data)| *off <= start && start < off + data.len() as u64)
            .max_by_key(|(off, data)| off + data.len() as u64);
        if let Some((off, data)) = best {
            use bytes::Buf;
            return Ok(data.slice((start - off) as usize..).reader());
        }
        Err(parquet::errors::ParquetError::General(format!(
            "byte {start} of the file was not fetched"
        )))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.find(start, length)
    }
}

/// How many bytes at the end of a file to fetch first: the footer of a
/// cold file (a few row groups' metadata) fits in it, so one read suffices.
pub const FOOTER_GUESS: u64 = 64 * 1024;

/// The length of the metadata from the last 8 bytes of a file, or an error
/// for a file that is not Parquet.
pub fn footer_len(tail: &[u8]) -> StorageResult<u64> {
    if tail.len() < 8 || &tail[tail.len() - 4..] != b"PAR1" {
        return Err(StorageError::Backend(
            "cold tier: not a Parquet file (no PAR1 footer)".into(),
        ));
    }
    let n = &tail[tail.len() - 8..tail.len() - 4];
    Ok(u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as u64 + 8)
}

/// Runs a decoder step, turning a panic into an error: the `parquet`
/// crate asserts on some corrupt inputs (negative column offsets), and a
/// damaged cold file must fail its read, never the collector.
fn guard<T>(what: &str, f: impl FnOnce() -> StorageResult<T>) -> StorageResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(StorageError::Backend(format!(
            "cold tier: {what}: the file is corrupt (the decoder gave up)"
        )))
    })
}

/// Columns in [`SCHEMA`].
const COLUMNS: usize = 9;

/// Parses the footer from `pieces` (which must hold the file's tail) and
/// checks what later reads rely on: the schema's column count, and every
/// column chunk inside the file (so computing a row group's byte range
/// cannot fail later).
pub fn parse_metadata(pieces: &Pieces) -> StorageResult<ParquetMetaData> {
    let len = pieces.len();
    guard("footer", || {
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(pieces)
            .map_err(parquet_err("footer"))?;
        let bad = |why: &str| StorageError::Backend(format!("cold tier: footer: {why}"));
        if meta.file_metadata().schema_descr().num_columns() != COLUMNS {
            return Err(bad("not a cold-tier file (wrong columns)"));
        }
        for rg in meta.row_groups() {
            if rg.num_columns() != COLUMNS || rg.num_rows() < 0 {
                return Err(bad("row group with the wrong columns"));
            }
            for c in rg.columns() {
                let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
                let size = c.compressed_size();
                if start < 0 || size < 0 || (start as u64).saturating_add(size as u64) > len {
                    return Err(bad("column chunk outside the file"));
                }
            }
        }
        Ok(meta)
    })
}

/// The row groups of a file that may hold `trace_id` by their min/max
/// statistics (rows are sorted by trace id, so usually one).
pub fn row_groups_for(meta: &ParquetMetaData, trace_id: &TraceId) -> Vec<usize> {
    meta.row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| match rg.column(col::TRACE_ID).statistics() {
            Some(Statistics::FixedLenByteArray(s)) => {
                match (s.min_bytes_opt(), s.max_bytes_opt()) {
                    (Some(lo), Some(hi)) => lo <= &trace_id[..] && &trace_id[..] <= hi,
                    _ => true,
                }
            }
            _ => true,
        })
        .map(|(i, _)| i)
        .collect()
}

/// Byte range `[start, end)` of row group `rg`'s column chunks.
pub fn row_group_range(meta: &ParquetMetaData, rg: usize) -> (u64, u64) {
    let g = meta.row_group(rg);
    let mut lo = u64::MAX;
    let mut hi = 0u64;
    for c in g.columns() {
        let (s, l) = c.byte_range();
        lo = lo.min(s);
        hi = hi.max(s + l);
    }
    (lo.min(hi), hi)
}

/// Byte range of the trace-id bloom filter of row group `rg`, if it has one.
pub fn bloom_range(meta: &ParquetMetaData, rg: usize) -> Option<(u64, u64)> {
    let c = meta.row_group(rg).column(col::TRACE_ID);
    let off = u64::try_from(c.bloom_filter_offset()?).ok()?;
    let len = u64::try_from(c.bloom_filter_length()?).ok()?;
    Some((off, off + len))
}

/// The trace-id bloom filter of row group `rg` from fetched `pieces`.
pub fn read_bloom(
    meta: &ParquetMetaData,
    rg: usize,
    pieces: &Pieces,
) -> StorageResult<Option<Sbbf>> {
    guard("bloom filter", || {
        Sbbf::read_from_column_chunk(meta.row_group(rg).column(col::TRACE_ID), pieces)
            .map_err(parquet_err("bloom filter"))
    })
}

/// True when `bloom` may hold `trace_id`.
pub fn bloom_may_hold(bloom: &Sbbf, trace_id: &TraceId) -> bool {
    bloom.check(&FixedLenByteArray::from(trace_id.to_vec()))
}

/// The footer's operations summary ([`OPERATIONS_KEY`]); `None` for a file
/// without one (written before it existed, or with too many operations).
pub fn footer_operations(meta: &ParquetMetaData) -> Option<Vec<OperationKey>> {
    let kv = meta.file_metadata().key_value_metadata()?;
    let v = kv
        .iter()
        .find(|k| k.key == OPERATIONS_KEY)?
        .value
        .as_deref()?;
    serde_json::from_str(v).ok()
}

/// The searchable columns of one row, plus its index in the row group.
#[derive(Clone, Debug)]
pub struct RowKeys {
    /// Trace id.
    pub trace_id: TraceId,
    /// Start (ns).
    pub start_ns: u64,
    /// Duration (ns).
    pub duration_ns: u64,
    /// Service.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Status code number.
    pub status: i32,
}

fn read_col<T: DataType>(
    rg: &dyn parquet::file::reader::RowGroupReader,
    i: usize,
    rows: usize,
) -> StorageResult<Vec<T::T>> {
    let mut r =
        get_typed_column_reader::<T>(rg.get_column_reader(i).map_err(parquet_err("column"))?);
    let mut out = Vec::with_capacity(rows);
    loop {
        let (records, _, _) = r
            .read_records(rows.max(1), None, None, &mut out)
            .map_err(parquet_err("read column"))?;
        if records == 0 || out.len() >= rows {
            break;
        }
    }
    Ok(out)
}

/// A file (or the fetched parts of one) opened for reading rows.
pub struct OpenFile {
    reader: SerializedFileReader<Pieces>,
}

impl OpenFile {
    /// Opens `pieces` (footer plus whatever row groups will be read).
    pub fn open(pieces: Pieces) -> StorageResult<Self> {
        parse_metadata(&pieces)?;
        guard("open", || {
            Ok(OpenFile {
                reader: SerializedFileReader::new(pieces).map_err(parquet_err("open"))?,
            })
        })
    }

    /// Row groups in the file.
    pub fn row_groups(&self) -> usize {
        self.reader.metadata().num_row_groups()
    }

    /// The spans of row group `rg` whose trace id is in `ids` (sorted).
    pub fn spans_of(&self, rg: usize, ids: &[TraceId]) -> StorageResult<Vec<Span>> {
        guard("read", || self.spans_of_inner(rg, ids))
    }

    fn spans_of_inner(&self, rg: usize, ids: &[TraceId]) -> StorageResult<Vec<Span>> {
        let (g, rows) = self.row_group(rg)?;
        let tids = read_col::<FixedLenByteArrayType>(&*g, col::TRACE_ID, rows)?;
        let hits: Vec<usize> = tids
            .iter()
            .enumerate()
            .filter(|(_, t)| ids.binary_search_by(|id| id[..].cmp(t.data())).is_ok())
            .map(|(i, _)| i)
            .collect();
        if hits.is_empty() {
            return Ok(Vec::new());
        }
        decode_rows(&*g, rows, &hits)
    }

    /// Row group `rg`'s reader and its number of rows.
    fn row_group(
        &self,
        rg: usize,
    ) -> StorageResult<(Box<dyn parquet::file::reader::RowGroupReader + '_>, usize)> {
        let g = self
            .reader
            .get_row_group(rg)
            .map_err(parquet_err("row group"))?;
        let rows = self.reader.metadata().row_group(rg).num_rows() as usize;
        Ok((g, rows))
    }

    /// The searchable columns of every row of row group `rg`.
    pub fn keys(&self, rg: usize) -> StorageResult<Vec<RowKeys>> {
        guard("read", || self.keys_inner(rg))
    }

    fn keys_inner(&self, rg: usize) -> StorageResult<Vec<RowKeys>> {
        let (g, rows) = self.row_group(rg)?;
        let tids = read_col::<FixedLenByteArrayType>(&*g, col::TRACE_ID, rows)?;
        let starts = read_col::<Int64Type>(&*g, col::START, rows)?;
        let durs = read_col::<Int64Type>(&*g, col::DURATION, rows)?;
        let services = read_col::<ByteArrayType>(&*g, col::SERVICE, rows)?;
        let names = read_col::<ByteArrayType>(&*g, col::NAME, rows)?;
        let status = read_col::<Int32Type>(&*g, col::STATUS, rows)?;
        let n = [
            starts.len(),
            durs.len(),
            services.len(),
            names.len(),
            status.len(),
        ]
        .into_iter()
        .fold(tids.len(), usize::min);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut trace_id = [0u8; 16];
            let t = tids[i].data();
            if t.len() != 16 {
                return Err(StorageError::Backend(
                    "cold tier: trace id is not 16 bytes".into(),
                ));
            }
            trace_id.copy_from_slice(t);
            out.push(RowKeys {
                trace_id,
                start_ns: starts[i] as u64,
                duration_ns: durs[i] as u64,
                service: String::from_utf8_lossy(services[i].data()).into_owned(),
                name: String::from_utf8_lossy(names[i].data()).into_owned(),
                status: status[i],
            });
        }
        Ok(out)
    }

    /// The distinct `(service, name, kind)` of row group `rg`'s rows that
    /// start in `[from_ns, to_ns)`.
    pub fn operations(
        &self,
        rg: usize,
        from_ns: u64,
        to_ns: u64,
    ) -> StorageResult<std::collections::BTreeSet<OperationKey>> {
        guard("read", || {
            let (g, rows) = self.row_group(rg)?;
            let starts = read_col::<Int64Type>(&*g, col::START, rows)?;
            let services = read_col::<ByteArrayType>(&*g, col::SERVICE, rows)?;
            let names = read_col::<ByteArrayType>(&*g, col::NAME, rows)?;
            let kinds = read_col::<Int32Type>(&*g, col::KIND, rows)?;
            Ok(starts
                .iter()
                .zip(&services)
                .zip(&names)
                .zip(&kinds)
                .filter(|(((s, _), _), _)| (from_ns..to_ns).contains(&(**s as u64)))
                .map(|(((_, svc), name), kind)| {
                    (
                        String::from_utf8_lossy(svc.data()).into_owned(),
                        String::from_utf8_lossy(name.data()).into_owned(),
                        *kind,
                    )
                })
                .collect())
        })
    }

    /// The decoded spans at `rows` (indices) of row group `rg`.
    pub fn spans_at(&self, rg: usize, rows: &[usize]) -> StorageResult<Vec<Span>> {
        guard("read", || self.spans_at_inner(rg, rows))
    }

    fn spans_at_inner(&self, rg: usize, rows: &[usize]) -> StorageResult<Vec<Span>> {
        let (g, n) = self.row_group(rg)?;
        decode_rows(&*g, n, rows)
    }

    /// Every span of row group `rg` (compaction reads whole files).
    pub fn all_spans(&self, rg: usize) -> StorageResult<Vec<Span>> {
        guard("read", || {
            let (g, n) = self.row_group(rg)?;
            decode_rows(&*g, n, &(0..n).collect::<Vec<_>>())
        })
    }
}

/// The spans at `rows` (indices) of a row group of `n` rows, decoded from
/// their blobs (indices past the end are skipped).
fn decode_rows(
    g: &dyn parquet::file::reader::RowGroupReader,
    n: usize,
    rows: &[usize],
) -> StorageResult<Vec<Span>> {
    let blobs = read_col::<ByteArrayType>(g, col::SPAN, n)?;
    rows.iter()
        .filter_map(|&i| blobs.get(i))
        .map(|b| decode_span(b.data()))
        .collect()
}

/// Status code number of an error span in the `status` column.
pub const STATUS_ERROR: i32 = StatusCode::Error as i32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KeyValue, SpanKind};

    fn span(t: u64, i: u64) -> Span {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&t.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        trace_id[8..].copy_from_slice(&t.to_be_bytes());
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&(t * 10 + i + 1).to_be_bytes());
        Span {
            trace_id,
            span_id,
            name: compact_str::format_compact!("op{}", i % 3),
            start_ns: 1_000 + t * 7 + i,
            end_ns: 2_000 + t * 7 + i,
            attributes: vec![KeyValue::new("i", crate::model::AttrValue::Int(i as i64))],
            ..Span::test(0)
        }
    }

    fn file(traces: u64) -> (Vec<Span>, Bytes) {
        let mut spans: Vec<Span> = (0..traces)
            .flat_map(|t| (0..3).map(move |i| span(t, i)))
            .collect();
        let data = write_file(&mut spans).expect("write");
        (spans, Bytes::from(data))
    }

    #[test]
    fn every_span_reads_back_and_the_index_rejects_absent_ids() {
        let (spans, data) = file(3_000);
        let pieces = Pieces::whole(data);
        let meta = parse_metadata(&pieces).expect("footer");
        assert_eq!(
            meta.num_row_groups(),
            2,
            "9,000 rows in groups of {ROW_GROUP_ROWS}"
        );
        let blooms: Vec<Sbbf> = (0..2)
            .map(|rg| {
                read_bloom(&meta, rg, &pieces)
                    .expect("bloom")
                    .expect("present")
            })
            .collect();
        let ops = footer_operations(&meta).expect("footer summary");
        let want: Vec<OperationKey> = (0..3)
            .map(|i| ("svc".to_string(), format!("op{i}"), SpanKind::Server as i32))
            .collect();
        assert_eq!(ops, want);
        let f = OpenFile::open(pieces).expect("open");
        for t in [0u64, 1, 1_499, 2_999] {
            let id = span(t, 0).trace_id;
            let rgs = row_groups_for(&meta, &id);
            assert_eq!(rgs.len(), 1, "sorted ids: one row group by min/max");
            assert!(bloom_may_hold(&blooms[rgs[0]], &id));
            let got = f.spans_of(rgs[0], &[id]).expect("read");
            let want: Vec<&Span> = spans.iter().filter(|s| s.trace_id == id).collect();
            assert_eq!(got.len(), 3);
            for s in &got {
                assert!(want.contains(&s));
            }
        }
        // Absent ids: the filters pass about BLOOM_FPP of them.
        let mut passed = 0;
        for t in 10_000..20_000u64 {
            let id = span(t, 0).trace_id;
            passed += row_groups_for(&meta, &id)
                .into_iter()
                .any(|rg| bloom_may_hold(&blooms[rg], &id)) as u32;
        }
        assert!(
            passed < 300,
            "{passed} of 10,000 absent ids passed the index"
        );
        let keys = f.keys(0).expect("keys");
        assert_eq!(keys.len(), ROW_GROUP_ROWS);
        assert!(
            keys.windows(2).all(|w| w[0].trace_id <= w[1].trace_id),
            "sorted by trace id"
        );
    }

    #[test]
    fn key_columns_read_from_their_own_byte_ranges() {
        for traces in [10u64, 31, 1_000, 3_000] {
            let (_, data) = file(traces);
            let whole = Pieces::whole(data.clone());
            let meta = parse_metadata(&whole).expect("footer");
            let tail_off = data.len() as u64 - footer_len(&data).expect("len");
            let mut p = Pieces::new(data.len() as u64);
            p.add(tail_off, data.slice(tail_off as usize..));
            for rg in 0..meta.num_row_groups() {
                for &c in &KEY_COLUMNS {
                    let (a, n) = meta.row_group(rg).column(c).byte_range();
                    p.add(a, data.slice(a as usize..(a + n) as usize));
                }
            }
            let f = OpenFile::open(p).expect("open");
            let g = OpenFile::open(whole).expect("open");
            for rg in 0..f.row_groups() {
                let a = f
                    .keys(rg)
                    .unwrap_or_else(|e| panic!("{traces} traces rg {rg}: {e}"));
                assert_eq!(a.len(), g.keys(rg).expect("keys").len());
            }
        }
    }

    #[test]
    fn corrupt_and_truncated_files_are_errors_not_panics() {
        assert!(footer_len(b"").is_err());
        assert!(footer_len(b"garbage!").is_err());
        assert!(OpenFile::open(Pieces::whole(Bytes::from_static(b"PAR1nonsense"))).is_err());
        let (_, data) = file(50);
        // Truncations and flipped bytes: each read either fails or returns,
        // on a blocking-pool thread as in the store; a decoder panic would be
        // caught there, but none may happen at all here.
        let mut x: u64 = 0x1234_5678;
        for round in 0..300u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = data.to_vec();
            if round.is_multiple_of(3) {
                b.truncate((x as usize) % b.len());
            } else {
                let at = (x as usize) % b.len();
                b[at] ^= (x >> 32) as u8 | 1;
            }
            let outcome = std::panic::catch_unwind(|| {
                let p = Pieces::whole(Bytes::from(b));
                if let Ok(f) = OpenFile::open(p) {
                    for rg in 0..f.row_groups() {
                        let _ = f.keys(rg);
                        let _ = f.spans_of(rg, &[span(1, 0).trace_id]);
                    }
                }
            });
            assert!(outcome.is_ok(), "round {round} panicked");
        }
        // Asking for bytes that were not fetched is an error.
        let p = Pieces::new(100);
        assert!(p.get_bytes(10, 5).is_err());
        assert!(p.get_read(10).is_err());
    }
}
