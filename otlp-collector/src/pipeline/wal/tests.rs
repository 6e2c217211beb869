//! Unit tests of the WAL: append, replay, release, limits and failures.

use super::*;
use std::fs::OpenOptions;
use std::time::Duration;

#[test]
fn the_free_space_reserve_defaults_to_a_quarter_of_the_disk_at_most_256_mib() {
    assert_eq!(free_space_reserve(0, Some(64 << 20)), 16 << 20);
    assert_eq!(free_space_reserve(0, Some(100 << 30)), 256 << 20);
    assert_eq!(free_space_reserve(0, None), 0);
    assert_eq!(free_space_reserve(5, Some(64 << 20)), 5);
}

#[tokio::test]
async fn appends_are_refused_as_out_of_space_below_the_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    let free = free_bytes(dir.path()).unwrap();
    // A reserve larger than what is free: every append is refused.
    let cfg = WalConfig {
        min_free_bytes: free.saturating_add(1 << 30),
        ..cfg()
    };
    let (wal, _) = Wal::open(dir.path(), &cfg, m.clone()).unwrap();
    let err = wal
        .append(RecordFormat::OtlpProto, 1, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(err.is_out_of_space(), "{err}");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert!(wal.out_of_space().is_some());
}

/// Small segments created when needed: these tests follow segment ids and
/// put faults at the next segment's path before it exists, which a prepared
/// spare would already occupy (the spare path has its own tests below).
fn cfg() -> WalConfig {
    WalConfig {
        segment_bytes: 200,
        max_bytes: 2000,
        preallocate: false,
        ..WalConfig::default()
    }
}

#[tokio::test]
async fn append_replay_release_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    let (wal, replay) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
    assert!(replay.is_empty());
    let mut segs = Vec::new();
    for i in 0..6u8 {
        let s = wal
            .append(RecordFormat::OtlpJson, 2, Bytes::from(vec![i; 100]))
            .await
            .unwrap();
        assert_eq!(s.first_span, (i as u64 % 2) * 2);
        segs.push(s.segment);
    }
    // 113-byte records, 200-byte segments: rotation after every second record.
    assert_eq!(segs, vec![1, 1, 2, 2, 3, 3]);
    wal.close();
    // Reopen: three segments to replay, new writes go to segment 4.
    let (wal, replay) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
    assert_eq!(replay, vec![1, 2, 3]);
    let recs = wal.read_segment(2).unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].payload.as_ref(), &[2u8; 100][..]);
    assert_eq!(recs[1].spans, 2);
    wal.add_outstanding(2, 4);
    wal.finish_replay(2);
    assert!(segment_path(dir.path(), 2).exists());
    wal.release(2, 4);
    assert!(!segment_path(dir.path(), 2).exists());
    // Segment with nothing outstanding is deleted at finish_replay.
    wal.finish_replay(1);
    assert!(!segment_path(dir.path(), 1).exists());
    wal.close();
}

#[tokio::test]
async fn rollup_holds_keep_segments_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    let (wal, _) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
    let instance = wal.instance();
    assert_ne!(instance, 0);
    let mut pos = Vec::new();
    for i in 0..3u8 {
        pos.push(
            wal.append(RecordFormat::OtlpJson, 2, Bytes::from(vec![i; 100]))
                .await
                .unwrap(),
        );
    }
    // Segment 1 is sealed (rotated); its spans are released but the
    // rollups of one of them are still only in memory.
    wal.hold_rollups(1, 2);
    wal.release(1, 4);
    assert!(segment_path(dir.path(), 1).exists());
    wal.release_rollups(1, 1);
    assert!(segment_path(dir.path(), 1).exists());
    wal.release_rollups(1, 1);
    assert!(!segment_path(dir.path(), 1).exists());
    assert_eq!(wal.oldest_segment(), Some(2));
    // Everything committed: a clean close deletes every segment.
    wal.release(2, 2);
    wal.close();
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
            .count(),
        0
    );
    // Reopened: same identity, and segment ids continue after the highest ever used.
    let (wal, replay) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
    assert!(replay.is_empty());
    assert_eq!(wal.instance(), instance);
    let p = wal
        .append(RecordFormat::OtlpJson, 1, Bytes::from(vec![9u8; 10]))
        .await
        .unwrap();
    assert_eq!(
        p,
        WalPos {
            segment: 3,
            first_span: 0,
            offset: 0
        }
    );
    wal.close();
    // A lost meta file means a new identity (origins stored under the old
    // one no longer match), never a reused (identity, segment) pair.
    std::fs::remove_file(dir.path().join(META_FILE)).unwrap();
    let (wal, replay) = Wal::open(dir.path(), &cfg(), m).unwrap();
    assert_ne!(wal.instance(), instance);
    assert_eq!(replay, vec![3]);
    wal.close();
}

#[tokio::test]
async fn full_wal_refuses_and_torn_tail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    let (wal, _) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
    let mut full = false;
    for _ in 0..40 {
        match wal
            .append(RecordFormat::ZipkinJson, 1, Bytes::from(vec![7u8; 100]))
            .await
        {
            Ok(_) => {}
            Err(WalError::Full(_)) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full);
    assert!(wal.total_bytes() <= 2000);
    wal.close();
    // Tear the last record of segment 1.
    let p = segment_path(dir.path(), 1);
    let len = std::fs::metadata(&p).unwrap().len();
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len - 5).unwrap();
    let (wal, _) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
    assert_eq!(wal.read_segment(1).unwrap().len(), 1);
    assert_eq!(m.wal_corrupt_records.load(Relaxed), 1);
    wal.close();
}

#[tokio::test]
async fn lack_of_space_and_a_full_wal_are_remembered_until_an_append_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    // One record per segment: every append opens the next segment file.
    let cfg = WalConfig {
        segment_bytes: 1,
        max_bytes: 2000,
        preallocate: false,
        ..WalConfig::default()
    };
    let (wal, _) = Wal::open(dir.path(), &cfg, m.clone()).unwrap();
    let rec = || Bytes::from(vec![7u8; 100]);
    assert_eq!(
        wal.append(RecordFormat::OtlpJson, 1, rec())
            .await
            .unwrap()
            .segment,
        1
    );
    assert_eq!(wal.out_of_space(), None);
    // Segment 2 is /dev/full: its write fails with ENOSPC, as on a full disk.
    std::os::unix::fs::symlink("/dev/full", segment_path(dir.path(), 2)).unwrap();
    let err = wal
        .append(RecordFormat::OtlpJson, 1, rec())
        .await
        .unwrap_err();
    assert!(err.is_out_of_space(), "{err}");
    let why = wal.out_of_space().expect("remembered");
    assert!(why.contains("No space left on device"), "{why}");
    // The next append goes to a fresh segment and ends it.
    assert_eq!(
        wal.append(RecordFormat::OtlpJson, 1, rec())
            .await
            .unwrap()
            .segment,
        3
    );
    assert_eq!(wal.out_of_space(), None);

    // Nothing refused yet: an unknown size is let through, a body
    // larger than the whole WAL is not, and that refusal makes the WAL
    // refuse for being full (reported by /readyz) until an append
    // succeeds.
    assert!(!wal.would_be_full(0));
    assert!(wal.would_be_full(5000));
    assert!(wal.shared.refusing_full.load(Relaxed));
    assert!(wal.would_be_full(0), "as large as the refused one");
    // (An append that succeeds ends it; shown below.)
    wal.shared.refusing_full.store(false, Relaxed);
    assert!(!wal.would_be_full(0));
    // Full: 113-byte records, 2000 bytes: the 18th is refused at 1921 bytes.
    let mut full = false;
    let mut segs = vec![1, 3];
    for _ in 0..40 {
        match wal.append(RecordFormat::OtlpJson, 1, rec()).await {
            Ok(p) => segs.push(p.segment),
            Err(WalError::Full(_)) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full);
    assert!(wal.refusing_full(), "{} bytes", wal.total_bytes());
    // Before reading a body: a record of unknown size is taken to be as
    // large as the refused one, and would not fit; a known size is a
    // lower bound and never lowers that.
    assert!(wal.would_be_full(0));
    assert!(wal.would_be_full(1));
    assert!(wal.would_be_full(1000));
    // The sink commits one record: still above 90%, still refusing.
    wal.release(segs.remove(0), 1);
    assert!(wal.total_bytes() >= 1800, "{}", wal.total_bytes());
    assert!(wal.refusing_full());
    // Under 90% the WAL no longer counts as full, without any append.
    wal.release(segs.remove(0), 1);
    assert!(!wal.refusing_full(), "{} bytes", wal.total_bytes());
    assert!(
        !wal.would_be_full(0),
        "room again for a record like the refused one"
    );
    // And a successful append ends it outright.
    wal.shared.refusing_full.store(true, Relaxed);
    wal.append(RecordFormat::OtlpJson, 1, rec()).await.unwrap();
    assert!(!wal.shared.refusing_full.load(Relaxed));
    assert_eq!(m.wal_max_bytes.load(Relaxed), 2000);
    wal.close();
}

#[tokio::test]
async fn read_record_at_finds_each_acknowledged_record_and_rejects_a_wrong_offset() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    let (wal, _) = Wal::open(dir.path(), &cfg(), m.clone()).unwrap();
    let mut written = Vec::new();
    for i in 0..5u8 {
        let payload = Bytes::from(vec![i; 10 + usize::from(i) * 7]);
        let p = wal
            .append(RecordFormat::ZipkinJson, u32::from(i) + 1, payload.clone())
            .await
            .unwrap();
        written.push((p, payload));
    }
    for (p, payload) in &written {
        let r = wal.read_record_at(*p).unwrap();
        assert_eq!(r.payload, *payload);
        assert_eq!(r.format, RecordFormat::ZipkinJson);
        assert_eq!(u64::from(r.spans), u64::from(payload[0]) + 1);
    }
    // Offsets agree with what replay reads.
    let seg = written[0].0.segment;
    let recs = wal.read_segment(seg).unwrap();
    let mut off = 0;
    for (r, (p, _)) in recs
        .iter()
        .zip(written.iter().filter(|(p, _)| p.segment == seg))
    {
        assert_eq!(p.offset, off);
        off += r.encoded_len();
    }
    let bad = WalPos {
        offset: written[1].0.offset + 1,
        ..written[1].0
    };
    assert!(wal.read_record_at(bad).is_err());
    assert_eq!(m.wal_corrupt_records.load(Relaxed), 0);
    wal.close();
}

#[tokio::test]
async fn failed_fsync_refuses_the_append_and_closes_the_segment() {
    for preallocate in [false, true] {
        failed_fsync_refuses_the_append_and_closes_the_segment_with(preallocate).await;
    }
}

async fn failed_fsync_refuses_the_append_and_closes_the_segment_with(preallocate: bool) {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    let cfg = WalConfig {
        segment_bytes: 10_000,
        max_bytes: 100_000,
        preallocate,
        ..WalConfig::default()
    };
    let (wal, _) = Wal::open(dir.path(), &cfg, m.clone()).unwrap();
    let ok = wal
        .append(RecordFormat::OtlpProto, 3, Bytes::from(vec![1u8; 50]))
        .await
        .unwrap();
    assert_eq!(ok.segment, 1);
    wal.shared.fail_fsyncs.store(1, Relaxed);
    let err = wal
        .append(RecordFormat::OtlpProto, 5, Bytes::from(vec![2u8; 50]))
        .await
        .unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err}");
    assert!(err.to_string().contains("injected fsync failure"), "{err}");
    assert_eq!(m.wal_io_errors.get("fsync"), 1);
    // The next append goes to a fresh segment, and succeeds.
    let next = wal
        .append(RecordFormat::OtlpProto, 2, Bytes::from(vec![3u8; 50]))
        .await
        .unwrap();
    assert_eq!(next.segment, 2);
    assert_eq!(m.wal_appends.load(Relaxed), 2);
    // Segment 1 is sealed and only the acknowledged record's 3 spans are
    // outstanding: the refused record does not keep it alive.
    wal.release(1, 3);
    assert!(!segment_path(dir.path(), 1).exists());
    wal.close();
}

/// Segment files in `dir`, by id.
fn segment_files(dir: &Path) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let id = e.file_name().to_str()?.strip_suffix(".wal")?.parse().ok()?;
            Some((id, e.metadata().unwrap().len()))
        })
        .collect();
    out.sort_unstable();
    out
}

/// A WAL of 4 KiB segments with spares prepared: a few hundred-byte
/// records reach the second and third segment.
fn small_preallocating() -> WalConfig {
    WalConfig {
        segment_bytes: 4096,
        max_bytes: 1 << 20,
        preallocate: true,
        ..WalConfig::default()
    }
}

#[tokio::test]
async fn prepared_segments_are_zero_filled_used_in_order_and_replay_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    assert!(
        WalConfig::default().preallocate,
        "on by default: rotations off the acknowledgement path (docs/benchmarks.md, session 10)"
    );
    let cfg = small_preallocating();
    let (wal, replay) = Wal::open(dir.path(), &cfg, m.clone()).unwrap();
    assert!(replay.is_empty());
    let mut written = Vec::new();
    for i in 0..40u8 {
        let payload = Bytes::from(vec![i.max(1); 300 + usize::from(i)]);
        let p = wal
            .append(RecordFormat::OtlpProto, 2, payload.clone())
            .await
            .unwrap();
        written.push((p, payload));
    }
    // Segments follow each other without gaps, positions as without spares.
    let segs: Vec<u64> = written.iter().map(|(p, _)| p.segment).collect();
    assert_eq!(segs[0], 1);
    assert!(segs.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
    let last = *segs.last().unwrap();
    assert!(last >= 3, "{segs:?}");
    for (p, payload) in &written {
        assert_eq!(wal.read_record_at(*p).unwrap().payload, *payload);
    }
    // Every segment after the first was prepared: zero-filled to the
    // segment size (a group may run past it), and the next one is ready.
    // (The spare for the segment after the last is being prepared meanwhile.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while segment_files(dir.path()).last().unwrap().0 <= last {
        assert!(std::time::Instant::now() < deadline, "no spare prepared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let files = segment_files(dir.path());
    for (id, len) in &files[..files.len() - 1] {
        if *id > 1 {
            assert!(*len >= 4096, "segment {id} is {len} bytes");
        }
    }
    assert_eq!(
        files.last().unwrap().0,
        last + 1,
        "a spare waits: {files:?}"
    );
    // Only used segments are in the table and counted.
    assert_eq!(wal.segment_count() as u64, last);
    let logical: u64 = written
        .iter()
        .map(|(_, p)| (HEADER_LEN + p.len()) as u64)
        .sum();
    assert_eq!(wal.total_bytes(), logical);
    wal.close();
    // The unused spare is gone with the close; the rest replays every
    // record, the zeros after the last one are no corruption.
    assert_eq!(segment_files(dir.path()).last().unwrap().0, last);
    let (wal, replay) = Wal::open(dir.path(), &cfg, m.clone()).unwrap();
    assert_eq!(replay, (1..=last).collect::<Vec<_>>());
    let mut read = Vec::new();
    for id in &replay {
        read.extend(
            wal.read_segment(*id)
                .unwrap()
                .into_iter()
                .map(|r| r.payload),
        );
    }
    assert_eq!(
        read,
        written.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>()
    );
    assert_eq!(m.wal_corrupt_records.load(Relaxed), 0);
    // Ids are never reused: new appends go after the spare that was deleted.
    let p = wal
        .append(RecordFormat::OtlpProto, 1, Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_eq!(p.segment, last + 2);
    wal.close();
}

#[tokio::test]
async fn a_torn_record_in_a_prepared_segment_is_counted_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    let cfg = small_preallocating();
    let (wal, _) = Wal::open(dir.path(), &cfg, m.clone()).unwrap();
    let mut last = None;
    // Past the first segment, into a prepared one.
    for i in 0..20u8 {
        last = Some(
            wal.append(RecordFormat::OtlpProto, 1, Bytes::from(vec![i + 1; 400]))
                .await
                .unwrap(),
        );
    }
    let last = last.unwrap();
    assert!(last.segment > 1);
    wal.close();
    // Damage the last record's payload in place (the file keeps its size).
    let path = segment_path(dir.path(), last.segment);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xff; 8], last.offset + 20).unwrap();
    drop(f);
    let (wal, _) = Wal::open(dir.path(), &cfg, m.clone()).unwrap();
    let recs = wal.read_segment(last.segment).unwrap();
    assert!(recs.iter().all(|r| r.payload.len() == 400));
    assert_eq!(m.wal_corrupt_records.load(Relaxed), 1);
    wal.close();
}

/// Copies the WAL directory as it is on disk now: what a crash (`kill -9`)
/// at this point would leave for the next start.
fn crash_image(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
    }
    to
}

/// Waits until segment file `id` exists with at least `len` bytes.
async fn wait_for_file(dir: &Path, id: u64, len: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !segment_files(dir).iter().any(|&(i, l)| i == id && l >= len) {
        assert!(
            std::time::Instant::now() < deadline,
            "no segment {id} of {len} bytes: {:?}",
            segment_files(dir)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_crash_with_a_spare_prepared_and_not_used_loses_nothing_and_reuses_no_id() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_preallocating();
    let (wal, _) = Wal::open(dir.path(), &cfg, Arc::new(Metrics::default())).unwrap();
    let mut written = Vec::new();
    for i in 0..3u8 {
        let payload = Bytes::from(vec![i + 1; 500]);
        let p = wal
            .append(RecordFormat::OtlpProto, 1, payload.clone())
            .await
            .unwrap();
        assert_eq!(p.segment, 1);
        written.push(payload);
    }
    // The spare (segment 2) is created, zero-filled and its id recorded
    // before any record is written to it; crash now.
    wait_for_file(dir.path(), 2, 4096).await;
    let image = crash_image(dir.path());
    wal.close();

    let m = Arc::new(Metrics::default());
    let (wal, replay) = Wal::open(image.path(), &cfg, m.clone()).unwrap();
    assert_eq!(replay, vec![1, 2], "every segment is found, the spare too");
    let got: Vec<Bytes> = wal
        .read_segment(1)
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(got, written, "every acknowledged record replays");
    assert!(
        wal.read_segment(2).unwrap().is_empty(),
        "the unused spare holds no record"
    );
    assert_eq!(
        m.wal_corrupt_records.load(Relaxed),
        0,
        "its zeros are a clean end"
    );
    wal.add_outstanding(1, 3);
    for id in replay {
        wal.finish_replay(id);
    }
    // The left-over spare is deleted with the replay; segment 1 once released.
    assert!(!segment_path(image.path(), 2).exists());
    wal.release(1, 3);
    assert!(!segment_path(image.path(), 1).exists());
    // Ids are never reused: `wal.meta` named the spare's id before it existed.
    let p = wal
        .append(RecordFormat::OtlpProto, 1, Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert!(p.segment >= 3, "{p:?}");
    wal.close();
}

#[tokio::test]
async fn a_crash_after_rotating_into_a_spare_replays_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    let cfg = small_preallocating();
    let (wal, _) = Wal::open(dir.path(), &cfg, m.clone()).unwrap();
    let mut written = Vec::new();
    let mut last = None;
    // Past segment 1 into the prepared segment 2 (9 × 513 bytes > 4096).
    for i in 0..10u8 {
        let payload = Bytes::from(vec![i + 1; 500]);
        last = Some(
            wal.append(RecordFormat::OtlpProto, 1, payload.clone())
                .await
                .unwrap(),
        );
        written.push(payload);
    }
    assert_eq!(last.unwrap().segment, 2);
    // Rotating took the prepared segment: no segment was created while
    // appends waited, and the writer asked for the next spare at once.
    assert_eq!(m.wal_rotations_unprepared.load(Relaxed), 0);
    assert_eq!(m.wal_rotate_latency.count(), 1);
    wait_for_file(dir.path(), 3, 4096).await;
    let image = crash_image(dir.path());
    wal.close();

    let m2 = Arc::new(Metrics::default());
    let (wal, replay) = Wal::open(image.path(), &cfg, m2.clone()).unwrap();
    assert_eq!(replay, vec![1, 2, 3]);
    let mut got = Vec::new();
    for id in &replay {
        got.extend(
            wal.read_segment(*id)
                .unwrap()
                .into_iter()
                .map(|r| r.payload),
        );
    }
    assert_eq!(got, written);
    assert_eq!(m2.wal_corrupt_records.load(Relaxed), 0);
    wal.close();
}

#[tokio::test]
async fn rotations_without_a_spare_are_counted_and_a_released_segment_is_deleted_after_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::default());
    // One record per segment: every append rotates.
    let cfg = WalConfig {
        segment_bytes: 1,
        ..cfg()
    };
    let (wal, _) = Wal::open(dir.path(), &cfg, m.clone()).unwrap();
    let p1 = wal
        .append(RecordFormat::OtlpProto, 2, Bytes::from_static(b"one"))
        .await
        .unwrap();
    assert_eq!(p1.segment, 1);
    // Released while still the current segment: kept until sealed.
    wal.release(1, 2);
    assert!(segment_path(dir.path(), 1).exists());
    let p2 = wal
        .append(RecordFormat::OtlpProto, 2, Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_eq!(p2.segment, 2);
    // The rotation sealed segment 1: it left the table (and the byte count)
    // before the answer; its file goes right after the group.
    assert_eq!(m.wal_segments_deleted.load(Relaxed), 1);
    assert_eq!(wal.segment_count(), 1);
    assert_eq!(wal.total_bytes(), (HEADER_LEN + 3) as u64);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while segment_path(dir.path(), 1).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "segment 1 not deleted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The one rotation created its segment on the writer (no spare).
    assert_eq!(m.wal_rotate_latency.count(), 1);
    assert_eq!(m.wal_rotations_unprepared.load(Relaxed), 1);
    wal.close();
}
