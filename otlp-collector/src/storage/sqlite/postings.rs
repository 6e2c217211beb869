//! The attribute index: posting lists in `span_postings` (layout 5).
//!
//! A written batch stores, for each distinct searchable attribute among its
//! new spans (its *term*: see [`term`]), one row keyed by `(term,
//! first span row id)` with the key, type and value and the ascending row
//! ids of the batch's spans that carry it, as a JSON array. Attribute values
//! repeat a lot across spans (methods, routes, status codes, hosts), so a
//! batch of a few hundred spans with ten attributes each writes a few hundred
//! rows, not thousands; a value unique to one span costs one row, as before.
//!
//! - **Search** looks up a condition's terms in the primary key, checks the
//!   stored key, type and value (a hash collision can cost a row read but
//!   never returns a wrong span), and expands the lists with `json_each`.
//! - **Retention** deletes spans first, then the posting rows whose spans
//!   are all older than the cutoff (`max_start_ns`, indexed). A posting row
//!   that also names a newer span stays, naming some deleted ids until that
//!   span goes too; those ids find no span, and are never given to another
//!   one (see `layout::next_span_rowid`).

use std::fmt::Write as _;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params, Connection};

use super::map_err;
use crate::model::{AttrValue, Span};
use crate::storage::{AttrFilter, StorageError, StorageResult};

/// Row ids in one posting row at most: a batch with more spans carrying a
/// term writes several rows, so no row grows past a few overflow pages.
pub(super) const MAX_IDS_PER_ROW: usize = 1024;

/// Attribute type codes in `span_postings.type`.
pub(super) const T_STR: i64 = 0;
pub(super) const T_BOOL: i64 = 1;
pub(super) const T_INT: i64 = 2;
pub(super) const T_DOUBLE: i64 = 3;

/// A searchable attribute value as stored: its type code and the SQL value.
/// Bytes, arrays, maps and NaN are kept in the span blob but not indexed
/// (`None`). Borrows, so the write path copies no strings.
pub(super) fn indexed(v: &AttrValue) -> Option<(i64, ValueRef<'_>)> {
    Some(match v {
        AttrValue::Str(s) => (T_STR, ValueRef::Text(s.as_bytes())),
        AttrValue::Bool(b) => (T_BOOL, ValueRef::Integer(*b as i64)),
        AttrValue::Int(i) => (T_INT, ValueRef::Integer(*i)),
        AttrValue::Double(d) if !d.is_nan() => (T_DOUBLE, ValueRef::Real(*d)),
        _ => return None,
    })
}

/// The term of a searchable attribute: XXH3-64 (seed 0, a fixed, published
/// algorithm, so stored terms stay valid across versions) over the key's
/// length and bytes, the type code and the value's bytes. `-0.0` hashes as
/// `0.0` because SQL compares them equal. `buf` is scratch space.
pub(super) fn term(key: &str, ty: i64, value: ValueRef<'_>, buf: &mut Vec<u8>) -> i64 {
    buf.clear();
    buf.extend_from_slice(&(key.len() as u64).to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
    buf.push(ty as u8);
    match value {
        ValueRef::Text(s) => buf.extend_from_slice(s),
        ValueRef::Integer(i) => buf.extend_from_slice(&i.to_le_bytes()),
        ValueRef::Real(d) => {
            let d = if d == 0.0 { 0.0 } else { d };
            buf.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        // `indexed` produces nothing else.
        ValueRef::Null | ValueRef::Blob(_) => {}
    }
    twox_hash::XxHash3_64::oneshot(buf) as i64
}

/// The terms of `s`'s searchable attributes, with key, type and value.
pub(super) fn span_terms<'s, 'b>(
    s: &'s Span,
    buf: &'b mut Vec<u8>,
) -> impl Iterator<Item = (i64, &'s str, i64, ValueRef<'s>)> + use<'s, 'b> {
    s.attributes.iter().filter_map(move |kv| {
        indexed(&kv.value).map(|(ty, v)| (term(&kv.key, ty, v, buf), kv.key.as_str(), ty, v))
    })
}

/// One searchable attribute of a new span, waiting for its batch's postings.
pub(super) struct AttrRow<'s> {
    pub term: i64,
    pub span_rowid: i64,
    pub start_ns: i64,
    pub key: &'s str,
    pub ty: i64,
    pub value: ValueRef<'s>,
}

impl AttrRow<'_> {
    fn same_attribute(&self, other: &AttrRow<'_>) -> bool {
        self.ty == other.ty && self.key == other.key && self.value == other.value
    }
}

/// Writes the posting rows of `rows` in the transaction `conn` is in. Within
/// a term, `rows` must come in ascending `span_rowid` order (the order spans
/// are written in); a span's row id appears once per term however often the
/// attribute repeats in it.
pub(super) fn write(conn: &Connection, rows: &[AttrRow<'_>]) -> StorageResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // Sorting `(term, position)` keeps each term's rows in span order and
    // moves 16-byte pairs, not the rows.
    let mut order: Vec<(i64, usize)> = rows.iter().enumerate().map(|(i, r)| (r.term, i)).collect();
    order.sort_unstable();
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO span_postings \
             (term, first_rowid, key, type, value, max_start_ns, id_count, rowids) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(map_err)?;
    let mut list = String::new();
    let mut ids: Vec<(i64, i64)> = Vec::new();
    let mut others: Vec<usize> = Vec::new();
    for group in order.chunk_by(|a, b| a.0 == b.0) {
        let first = &rows[group[0].1];
        if group.iter().all(|&(_, i)| rows[i].same_attribute(first)) {
            ids.clear();
            ids.extend(
                group
                    .iter()
                    .map(|&(_, i)| (rows[i].span_rowid, rows[i].start_ns)),
            );
            insert_lists(&mut stmt, first, &ids, &mut list)?;
            continue;
        }
        // Two attributes with one 64-bit term (a hash collision): a list for
        // each, so a search still checks the stored value. Should both lists
        // start at the same span, the second is not stored (`OR IGNORE`):
        // that span cannot be found by the second attribute.
        others.clear();
        others.extend(group.iter().map(|&(_, i)| i));
        while let Some(&lead) = others.first() {
            let head = &rows[lead];
            ids.clear();
            others.retain(|&i| {
                let same = rows[i].same_attribute(head);
                if same {
                    ids.push((rows[i].span_rowid, rows[i].start_ns));
                }
                !same
            });
            insert_lists(&mut stmt, head, &ids, &mut list)?;
        }
    }
    Ok(())
}

/// Inserts `ids` (row id, start; ascending row ids, repeats allowed) as the
/// posting rows of `attr`, [`MAX_IDS_PER_ROW`] ids per row.
fn insert_lists(
    stmt: &mut rusqlite::CachedStatement<'_>,
    attr: &AttrRow<'_>,
    ids: &[(i64, i64)],
    list: &mut String,
) -> StorageResult<()> {
    let mut i = 0;
    while i < ids.len() {
        list.clear();
        list.push('[');
        let first = ids[i].0;
        let mut max_start = i64::MIN;
        let mut count = 0;
        let mut last = None;
        while i < ids.len() && count < MAX_IDS_PER_ROW {
            let (id, start) = ids[i];
            i += 1;
            max_start = max_start.max(start);
            if last == Some(id) {
                continue;
            }
            if last.is_some() {
                list.push(',');
            }
            let _ = write!(list, "{id}");
            last = Some(id);
            count += 1;
        }
        list.push(']');
        stmt.execute(params![
            attr.term,
            first,
            attr.key,
            attr.ty,
            ToSqlOutput::Borrowed(attr.value),
            max_start,
            count as i64,
            list.as_str(),
        ])
        .map_err(map_err)?;
    }
    Ok(())
}

/// How a search checks an attribute condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lookup {
    /// Expand the condition's lists once into a set of row ids that the
    /// span scan probes: the cost follows the spans that match.
    Lists,
    /// Check each span the scan reaches in the one list of the attribute
    /// that can hold its row id: the cost follows the spans read, which for a
    /// common value is the few the search needs, not the whole set.
    PerSpan,
}

/// Spans a condition must list at least before [`Lookup::PerSpan`] is
/// considered: expanding lists costs ~1.5 µs per listed span (1M spans
/// with a 98% value: ~1.5 s, docs/benchmarks.md session 20), so below this
/// the set costs at most ~30 ms.
const PER_SPAN_MIN_IDS: i64 = 20_000;
/// ... and the share of the stored spans it must list, at least 1 in this:
/// a search that stops after n matches then reads about n × this many
/// spans, each checked for ~10–30 µs.
const PER_SPAN_MAX_RARITY: i64 = 20;

/// The candidate values of `f` as `(term, type, value)`, or an error for a
/// value type that is not indexed.
fn candidates(f: &AttrFilter) -> StorageResult<Vec<(i64, i64, Value)>> {
    let mut buf = Vec::new();
    f.candidates()
        .into_iter()
        .map(|candidate| {
            let Some((ty, v)) = indexed(&candidate) else {
                return Err(StorageError::InvalidQuery(format!(
                    "attribute filter on {:?} must be a string, bool, int or double, got {candidate:?}",
                    f.key
                )));
            };
            Ok((term(&f.key, ty, v, &mut buf), ty, Value::from(v)))
        })
        .collect()
}

/// Lists of one term [`choose_lookup`] reads at most: the newest ones (the
/// key's order), so its cost does not grow with the store. A term with more
/// lists is judged by how densely they cover the newest row ids.
const ESTIMATE_LISTS: i64 = 64;

/// Lists, spans listed and the oldest first row id among the newest
/// `?5` lists of an attribute: a walk down its end of the primary key.
const ESTIMATE_SQL: &str = "SELECT COUNT(*), COALESCE(SUM(id_count), 0), MIN(first_rowid) FROM \
     (SELECT first_rowid, id_count FROM span_postings \
      WHERE term = ?1 AND key = ?2 AND type = ?3 AND value = ?4 \
      ORDER BY first_rowid DESC LIMIT ?5)";

/// Picks the cheaper [`Lookup`] for `f` from how many spans its lists hold
/// (`id_count`, no list read) against the row ids stored. At most
/// [`ESTIMATE_LISTS`] lists of each candidate value are read: a value with
/// fewer is counted exactly; one with more is extrapolated from the share of
/// the row ids its newest lists cover, which is also the share a newest-first
/// search meets.
pub(super) fn choose_lookup(conn: &Connection, f: &AttrFilter) -> StorageResult<Lookup> {
    // Two statements: SQLite answers a lone MIN or MAX from the end of the
    // key, but both in one query scan the table.
    let id_end = |sql: &str| -> StorageResult<Option<i64>> {
        conn.prepare_cached(sql)
            .map_err(map_err)?
            .query_row([], |r| r.get(0))
            .map_err(map_err)
    };
    let (Some(newest), Some(oldest)) = (
        id_end("SELECT MAX(id) FROM spans")?,
        id_end("SELECT MIN(id) FROM spans")?,
    ) else {
        return Ok(Lookup::Lists);
    };
    let stored = newest - oldest + 1;
    let mut stmt = conn.prepare_cached(ESTIMATE_SQL).map_err(map_err)?;
    let mut listed = 0i64;
    for (t, ty, v) in candidates(f)? {
        let (lists, ids, first): (i64, i64, Option<i64>) = stmt
            .query_row(params![t, f.key, ty, v, ESTIMATE_LISTS], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(map_err)?;
        listed = listed.saturating_add(match first {
            Some(first) if lists >= ESTIMATE_LISTS => {
                let covered = (newest - first + 1).max(1);
                // ids / covered of the stored row ids, in 128-bit so that
                // no product overflows.
                i64::try_from(i128::from(ids) * i128::from(stored) / i128::from(covered))
                    .unwrap_or(i64::MAX)
            }
            _ => ids,
        });
    }
    Ok(
        if listed >= PER_SPAN_MIN_IDS && listed.saturating_mul(PER_SPAN_MAX_RARITY) >= stored {
            Lookup::PerSpan
        } else {
            Lookup::Lists
        },
    )
}

/// SQL condition (and its bound values, in order) that `span_rowid_expr`,
/// a span's `spans.id`, has an attribute satisfying `f`: a term lookup for
/// each candidate value (a Jaeger text condition has one per type whose text
/// equals it), checked against the stored key, type and value so that a
/// hash collision cannot match, then the lists expanded ([`Lookup::Lists`])
/// or, per span, the one list of each term that can hold its row id read
/// ([`Lookup::PerSpan`]: the lists of one attribute hold ascending, disjoint
/// ranges of row ids, so it is its list with the greatest `first_rowid` not
/// above the span's). With `since_ns`, the caller only asks about spans that
/// started at or after it, so [`Lookup::Lists`] skips the lists whose spans
/// all started before (read, not expanded: a search of the last hour expands
/// that hour's lists, not a week's).
pub(super) fn attr_condition(
    f: &AttrFilter,
    span_rowid_expr: &str,
    lookup: Lookup,
    since_ns: Option<i64>,
) -> StorageResult<(String, Vec<Value>)> {
    let cands = candidates(f)?;
    let mut args = Vec::new();
    let sql = match lookup {
        Lookup::Lists => {
            let alts: Vec<String> = cands
                .iter()
                .map(|(_, ty, _)| format!("(a.type = {ty} AND a.value = ?)"))
                .collect();
            args.extend(cands.iter().map(|(t, ..)| Value::Integer(*t)));
            args.push(f.key.clone().into());
            args.extend(cands.iter().map(|(_, _, v)| v.clone()));
            // Unary `+`: the bound filters rows found by the term, it must
            // not steer SQLite to retention's `max_start_ns` index.
            let since = match since_ns {
                Some(ns) => {
                    args.push(Value::Integer(ns));
                    " AND +a.max_start_ns >= ?"
                }
                None => "",
            };
            format!(
                "{span_rowid_expr} IN (SELECT j.value FROM span_postings a, json_each(a.rowids) j \
                 WHERE a.term IN ({}) AND a.key = ? AND ({}){since})",
                vec!["?"; cands.len()].join(", "),
                alts.join(" OR ")
            )
        }
        Lookup::PerSpan => {
            let mut exists = Vec::new();
            for (t, ty, v) in cands {
                exists.push(format!(
                    "EXISTS (SELECT 1 FROM span_postings a, json_each(a.rowids) j \
                     WHERE a.term = ? AND a.first_rowid = (SELECT MAX(b.first_rowid) \
                     FROM span_postings b WHERE b.term = ? AND b.first_rowid <= {span_rowid_expr} \
                     AND b.key = ? AND b.type = {ty} AND b.value = ?) \
                     AND j.value = {span_rowid_expr})"
                ));
                args.extend([
                    Value::Integer(t),
                    Value::Integer(t),
                    f.key.clone().into(),
                    v,
                ]);
            }
            format!("({})", exists.join(" OR "))
        }
    };
    Ok((sql, args))
}

/// Deletes up to `limit` posting rows whose spans all started before
/// `cutoff_ns` (so retention has deleted them); returns how many went.
pub(super) fn delete_expired(
    conn: &Connection,
    cutoff_ns: i64,
    limit: usize,
) -> StorageResult<usize> {
    conn.prepare_cached(
        "DELETE FROM span_postings WHERE (term, first_rowid) IN \
         (SELECT term, first_rowid FROM span_postings WHERE max_start_ns < ?1 LIMIT ?2)",
    )
    .map_err(map_err)?
    .execute(params![cutoff_ns, limit.max(1) as i64])
    .map_err(map_err)
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::layout::insert_spans;
    use super::super::migrate::prepare;
    use super::*;
    use crate::model::KeyValue;

    fn val(v: &AttrValue) -> (i64, ValueRef<'_>) {
        indexed(v).expect("indexed")
    }

    #[test]
    fn terms_separate_key_type_and_value() {
        let mut buf = Vec::new();
        let mut t = |k: &str, v: AttrValue| {
            let (ty, x) = val(&v);
            term(k, ty, x, &mut buf)
        };
        let a = t("k", AttrValue::Str("500".into()));
        assert_ne!(a, t("k", AttrValue::Int(500)));
        assert_ne!(a, t("k", AttrValue::Double(500.0)));
        assert_ne!(t("k", AttrValue::Int(1)), t("k", AttrValue::Bool(true)));
        // The key length is hashed, so ("ab", "c") and ("a", "bc") differ.
        assert_ne!(
            t("ab", AttrValue::Str("c".into())),
            t("a", AttrValue::Str("bc".into()))
        );
        assert_eq!(
            t("z", AttrValue::Double(0.0)),
            t("z", AttrValue::Double(-0.0))
        );
        assert_eq!(a, t("k", AttrValue::Str("500".into())));
        assert!(indexed(&AttrValue::Double(f64::NAN)).is_none());
        assert!(indexed(&AttrValue::Bytes(vec![1])).is_none());
    }

    #[test]
    fn term_values_are_pinned() {
        // Terms are stored on disk: a change of hash or encoding would make
        // existing files unsearchable, so the exact values are fixed here.
        let mut buf = Vec::new();
        let get = AttrValue::Str("GET".into());
        let (ty, v) = val(&get);
        let got = term("http.request.method", ty, v, &mut buf);
        let mut expect = Vec::new();
        expect.extend_from_slice(&19u64.to_le_bytes());
        expect.extend_from_slice(b"http.request.method");
        expect.push(0);
        expect.extend_from_slice(b"GET");
        assert_eq!(got, twox_hash::XxHash3_64::oneshot(&expect) as i64);
        assert_eq!(got, PINNED_GET_TERM);
        // XXH3-64 of the empty input, the reference implementation's test vector.
        assert_eq!(twox_hash::XxHash3_64::oneshot(b""), 0x2D06_8005_38D3_94C2);
    }

    /// The term above as this version computes it; it must never change.
    const PINNED_GET_TERM: i64 = -8_195_993_401_179_945_439;

    fn span(n: u8) -> Span {
        Span::test(n)
    }

    /// `(first_rowid, rowids)` of each posting row of `key`.
    fn lists(conn: &Connection, key: &str) -> Vec<(i64, String)> {
        conn.prepare(
            "SELECT first_rowid, rowids FROM span_postings WHERE key = ?1 ORDER BY first_rowid, value",
        )
        .expect("prepare")
        .query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    /// Spans (row ids) matching the attribute filter `key = value`, the
    /// same by both lookups.
    pub(in super::super) fn matching(conn: &Connection, key: &str, value: AttrValue) -> Vec<i64> {
        let f = AttrFilter {
            key: key.into(),
            value,
            mode: Default::default(),
        };
        let lists = matching_by(conn, &f, Lookup::Lists);
        assert_eq!(matching_by(conn, &f, Lookup::PerSpan), lists, "{f:?}");
        lists
    }

    fn matching_by(conn: &Connection, f: &AttrFilter, lookup: Lookup) -> Vec<i64> {
        let (cond, args) = attr_condition(f, "s.id", lookup, None).expect("condition");
        conn.prepare(&format!(
            "SELECT s.id FROM spans s WHERE {cond} ORDER BY s.id"
        ))
        .expect("prepare")
        .query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    #[test]
    fn a_batch_writes_one_list_per_term_and_skips_unsearchable_values() {
        let mut conn = Connection::open_in_memory().expect("db");
        prepare(&mut conn, 10).expect("schema");
        let tx = conn.transaction().expect("tx");
        let mut s = span(1);
        s.attributes = vec![
            KeyValue::new("a", AttrValue::Str("x".into())),
            KeyValue::new("nan", AttrValue::Double(f64::NAN)),
            KeyValue::new("list", AttrValue::Array(vec![])),
            KeyValue::new("b", AttrValue::Int(3)),
            // The same attribute twice in one span: its id is listed once.
            KeyValue::new("b", AttrValue::Int(3)),
        ];
        let mut t = span(2);
        t.attributes = vec![
            KeyValue::new("a", AttrValue::Str("x".into())),
            KeyValue::new("b", AttrValue::Int(4)),
        ];
        // The second copy of `s` is not new, in the same batch and later.
        assert_eq!(
            insert_spans(&tx, &[s.clone(), t, s.clone()]).expect("insert"),
            2
        );
        assert_eq!(insert_spans(&tx, &[s]).expect("again"), 0);
        assert_eq!(lists(&tx, "a"), vec![(1, "[1,2]".to_string())]);
        assert_eq!(
            lists(&tx, "b"),
            vec![(1, "[1]".to_string()), (2, "[2]".to_string())]
        );
        assert!(lists(&tx, "nan").is_empty() && lists(&tx, "list").is_empty());
        assert_eq!(matching(&tx, "a", AttrValue::Str("x".into())), vec![1, 2]);
        assert_eq!(matching(&tx, "b", AttrValue::Int(3)), vec![1]);
        assert!(matching(&tx, "b", AttrValue::Str("3".into())).is_empty());
    }

    #[test]
    fn long_lists_are_split_and_every_span_stays_searchable() {
        let mut conn = Connection::open_in_memory().expect("db");
        prepare(&mut conn, 10).expect("schema");
        let n = MAX_IDS_PER_ROW * 2 + 5;
        let spans: Vec<Span> = (0..n)
            .map(|i| {
                let mut s = span(1);
                s.span_id = (i as u64 + 1).to_be_bytes();
                s.attributes = vec![KeyValue::new("k", AttrValue::Bool(true))];
                s
            })
            .collect();
        assert_eq!(insert_spans(&conn, &spans).expect("insert"), n);
        let rows = lists(&conn, "k");
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![
                1,
                1 + MAX_IDS_PER_ROW as i64,
                1 + 2 * MAX_IDS_PER_ROW as i64
            ]
        );
        assert_eq!(
            matching(&conn, "k", AttrValue::Bool(true)),
            (1..=n as i64).collect::<Vec<_>>()
        );
    }

    /// Two different attributes given the same term (forced here: a real
    /// 64-bit collision cannot be produced on purpose) get a list each, and
    /// a search for one never returns the other's spans.
    #[test]
    fn colliding_terms_keep_separate_lists() {
        let mut conn = Connection::open_in_memory().expect("db");
        prepare(&mut conn, 10).expect("schema");
        for n in 1..=3 {
            insert_spans(&conn, &[span(n)]).expect("span rows");
        }
        let mut buf = Vec::new();
        let x = AttrValue::Str("x".into());
        let (ty, xv) = indexed(&x).expect("indexed");
        let forced = term("k", ty, xv, &mut buf);
        let row = |span_rowid, key, value| AttrRow {
            term: forced,
            span_rowid,
            start_ns: 1,
            key,
            ty: 0,
            value,
        };
        let rows = [
            row(1, "k", ValueRef::Text(b"x")),
            row(2, "other", ValueRef::Text(b"y")),
            row(3, "k", ValueRef::Text(b"x")),
        ];
        write(&conn, &rows).expect("write");
        assert_eq!(matching(&conn, "k", x), vec![1, 3]);
        assert_eq!(lists(&conn, "other"), vec![(2, "[2]".to_string())]);
    }

    /// Posting rows for `key = value` written straight into the table:
    /// `lists` rows from `first` on, `step` row ids apart, each listing
    /// `per_list` spans (only the counts: the lookup choice reads no list).
    fn fake_lists(
        conn: &Connection,
        key: &str,
        value: i64,
        first: i64,
        lists: i64,
        step: i64,
        per_list: i64,
    ) {
        let t = term(key, T_INT, ValueRef::Integer(value), &mut Vec::new());
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?4) \
             INSERT INTO span_postings (term, first_rowid, key, type, value, max_start_ns, id_count, rowids) \
             SELECT ?1, ?5 + i * ?6, ?2, 2, ?3, 1, ?7, '[]' FROM n",
            params![t, key, value, lists, first, step, per_list],
        )
        .expect("posting rows");
    }

    fn lookup_for(conn: &Connection, key: &str, value: i64) -> Lookup {
        let f = AttrFilter {
            key: key.into(),
            value: AttrValue::Int(value),
            mode: Default::default(),
        };
        choose_lookup(conn, &f).expect("lookup")
    }

    /// A value with more than [`ESTIMATE_LISTS`] lists is judged by its
    /// newest lists alone (what a newest-first search meets), by a walk down
    /// the primary key that stops after them, however many lists it has.
    #[test]
    fn the_lookup_choice_reads_only_the_newest_lists() {
        let mut conn = Connection::open_in_memory().expect("db");
        prepare(&mut conn, 10).expect("schema");
        // Stored row ids 1 ..= 1,000,000 (two span rows at the ends).
        insert_spans(&conn, &[span(1), span(2)]).expect("spans");
        conn.execute("UPDATE spans SET id = 1000000 WHERE id = 2", [])
            .expect("newest id");
        // On every span of the newest fifth: per span.
        fake_lists(&conn, "dense", 1, 800_001, 200, 1_000, 1_000);
        assert_eq!(lookup_for(&conn, "dense", 1), Lookup::PerSpan);
        // On every span of the oldest half, then on one span in a thousand:
        // half a million listed, but a search of recent spans meets it
        // rarely and expands few ids.
        fake_lists(&conn, "faded", 1, 1, 500, 1_000, 1_000);
        fake_lists(&conn, "faded", 1, 900_000, 100, 1_000, 1);
        assert_eq!(lookup_for(&conn, "faded", 1), Lookup::Lists);
        // Fewer lists than the estimate reads are counted exactly.
        fake_lists(&conn, "few", 1, 1, 60, 16_000, 1_000);
        assert_eq!(lookup_for(&conn, "few", 1), Lookup::PerSpan);
        fake_lists(&conn, "few", 2, 1, 60, 16_000, 100);
        assert_eq!(lookup_for(&conn, "few", 2), Lookup::Lists);
        assert_eq!(lookup_for(&conn, "absent", 1), Lookup::Lists);
        // The estimate walks the key backwards under its LIMIT: no sort of
        // every list of the term.
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {ESTIMATE_SQL}"))
            .expect("plan")
            .query_map(params![1, "dense", T_INT, 1, ESTIMATE_LISTS], |r| r.get(3))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(
            plan.iter()
                .any(|d| d.starts_with("SEARCH span_postings USING PRIMARY KEY (term=?)"))
                && !plan.iter().any(|d| d.contains("TEMP B-TREE")),
            "{plan:#?}"
        );
    }

    /// A store of two batches of spans with `k = 7`: one all old (row ids
    /// 1, 2 started at 100, 110), one mixing an old and a new span (3 at
    /// 120, 4 at 500).
    fn old_and_mixed_batches() -> Connection {
        let mut conn = Connection::open_in_memory().expect("db");
        prepare(&mut conn, 10).expect("schema");
        let at = |n: u8, start: u64| {
            let mut s = span(n);
            s.start_ns = start;
            s.end_ns = start + 1;
            s.attributes = vec![KeyValue::new("k", AttrValue::Int(7))];
            s
        };
        insert_spans(&conn, &[at(1, 100), at(2, 110)]).expect("old batch");
        insert_spans(&conn, &[at(3, 120), at(4, 500)]).expect("mixed batch");
        conn
    }

    /// Lists whose spans all started before the search's lower bound are
    /// not expanded; every span at or after it is still found.
    #[test]
    fn lists_older_than_the_search_are_skipped() {
        let conn = old_and_mixed_batches();
        let f = AttrFilter {
            key: "k".into(),
            value: AttrValue::Int(7),
            mode: Default::default(),
        };
        let since = |ns| {
            let (cond, args) = attr_condition(&f, "s.id", Lookup::Lists, ns).expect("condition");
            conn.prepare(&format!(
                "SELECT s.id FROM spans s WHERE {cond} ORDER BY s.id"
            ))
            .expect("prepare")
            .query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))
            .expect("query")
            .collect::<Result<Vec<i64>, _>>()
            .expect("rows")
        };
        assert_eq!(since(None), vec![1, 2, 3, 4]);
        // The mixed batch's list is kept whole; the old one is not read.
        assert_eq!(since(Some(200)), vec![3, 4]);
        assert_eq!(since(Some(110)), vec![1, 2, 3, 4]);
        assert_eq!(since(Some(501)), Vec::<i64>::new());
    }

    #[test]
    fn expired_lists_go_and_lists_naming_a_kept_span_stay() {
        let conn = old_and_mixed_batches();
        conn.execute("DELETE FROM spans WHERE start_ns < 200", [])
            .expect("retention's span delete");
        assert_eq!(delete_expired(&conn, 200, 1).expect("delete"), 1);
        assert_eq!(delete_expired(&conn, 200, 10).expect("delete"), 0);
        assert_eq!(lists(&conn, "k"), vec![(3, "[3,4]".to_string())]);
        assert_eq!(matching(&conn, "k", AttrValue::Int(7)), vec![4]);
    }
}
