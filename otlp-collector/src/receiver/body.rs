//! Reading request bodies under limits: the compressed size is checked while
//! frames arrive (chunked bodies without `Content-Length` are fine), and gzip
//! is inflated in chunks with a cap, so a small "gzip bomb" is refused after
//! inflating at most the limit. Every byte held (as received and inflated) is
//! charged to one budget shared by all requests ([`InflightBudget`]), so many
//! concurrent large bodies cannot together exceed `limits.max_inflight_bytes`.
//! Every charge, and the reserve taken for decoding a body, is also admitted
//! against the memory limit ([`MemoryGuard::admits`]).

use std::io::Read;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::memory::MemoryGuard;
use crate::metrics::Metrics;

/// The memory budget for request bodies in flight, shared by every receiver.
#[derive(Clone, Debug)]
pub struct InflightBudget {
    sem: Arc<Semaphore>,
    max: usize,
    metrics: Arc<Metrics>,
    memory: Arc<MemoryGuard>,
}

impl InflightBudget {
    /// A budget of `max` bytes; the current charge is published in `metrics`.
    /// Charges and reserves are also admitted against `memory`'s limit.
    pub fn new(max: usize, metrics: Arc<Metrics>, memory: Arc<MemoryGuard>) -> InflightBudget {
        let max = max.min(Semaphore::MAX_PERMITS);
        InflightBudget {
            sem: Arc::new(Semaphore::new(max)),
            max,
            metrics,
            memory,
        }
    }

    /// An empty charge for one request; everything charged to it is returned
    /// to the budget when it is dropped.
    pub fn guard(&self) -> InflightGuard {
        InflightGuard {
            budget: self.clone(),
            permit: None,
            bytes: 0,
            reserved: DecodeReserve {
                bytes: Arc::new(AtomicU64::new(0)),
                metrics: self.metrics.clone(),
            },
        }
    }
}

/// A request's decoding reserve ([`InflightGuard::reserve`]), shared so that
/// whoever holds the decoded spans can lower it to what they really take
/// ([`DecodeReserve::settle`]) while the guard stays with the connection
/// code (the gRPC receivers decode inside tonic, away from their guard).
#[derive(Clone, Debug)]
pub struct DecodeReserve {
    bytes: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl DecodeReserve {
    /// Lowers the reserve to at most `keep` bytes. The reserve is the worst
    /// case of decoding (up to 40x the body); once decoding has ended, what
    /// stays in memory is the decoded spans (`Decoded::bytes`), or nothing
    /// once they are dropped, and holding the worst case for the rest of the
    /// request (the WAL append and its fsync) refused other requests for
    /// memory that was never used. Never raises it.
    pub fn settle(&self, keep: u64) {
        let mut cur = self.bytes.load(Relaxed);
        while cur > keep {
            match self
                .bytes
                .compare_exchange_weak(cur, keep, Relaxed, Relaxed)
            {
                Ok(_) => {
                    self.metrics
                        .memory
                        .reserved_bytes
                        .fetch_sub(cur - keep, Relaxed);
                    return;
                }
                Err(c) => cur = c,
            }
        }
    }

    /// Bytes reserved now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }
}

/// What one request has charged to the [`InflightBudget`].
#[derive(Debug)]
pub struct InflightGuard {
    budget: InflightBudget,
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
    reserved: DecodeReserve,
}

impl InflightGuard {
    /// Charges `n` more bytes, or fails with [`BodyError::OverBudget`] when
    /// the budget has not that much room left, or [`BodyError::MemoryLimit`]
    /// when holding them would take the process over its soft memory limit
    /// (nothing is charged then).
    pub fn charge(&mut self, n: usize) -> Result<(), BodyError> {
        if n == 0 {
            return Ok(());
        }
        if !self.budget.memory.admits(n as u64, self.held()) {
            return Err(BodyError::MemoryLimit);
        }
        let permits = u32::try_from(n).map_err(|_| BodyError::OverBudget(self.budget.max))?;
        let p = self
            .budget
            .sem
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| BodyError::OverBudget(self.budget.max))?;
        match self.permit.as_mut() {
            Some(held) => held.merge(p),
            None => self.permit = Some(p),
        }
        self.bytes += n;
        self.budget
            .metrics
            .inflight_bytes
            .fetch_add(n as u64, Relaxed);
        Ok(())
    }

    /// Reserves `n` bytes of memory for decoding the body (not charged to
    /// `limits.max_inflight_bytes`, which bounds bodies), or fails with
    /// [`BodyError::MemoryLimit`] when that would take the process over its
    /// soft memory limit. Held until the guard is dropped.
    pub fn reserve(&mut self, n: u64) -> Result<(), BodyError> {
        if !self.budget.memory.admits(n, self.held()) {
            return Err(BodyError::MemoryLimit);
        }
        self.reserved.bytes.fetch_add(n, Relaxed);
        self.budget
            .metrics
            .memory
            .reserved_bytes
            .fetch_add(n, Relaxed);
        Ok(())
    }

    /// The decoding reserve, to lower once decoding has ended.
    pub fn decode_reserve(&self) -> DecodeReserve {
        self.reserved.clone()
    }

    /// Bytes charged so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn held(&self) -> u64 {
        self.bytes as u64 + self.reserved.bytes()
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let m = &self.budget.metrics;
        m.inflight_bytes.fetch_sub(self.bytes as u64, Relaxed);
        // Whatever a `DecodeReserve` clone does later finds nothing left.
        let reserved = self.reserved.bytes.swap(0, Relaxed);
        m.memory.reserved_bytes.fetch_sub(reserved, Relaxed);
        self.budget.memory.released(self.bytes as u64 + reserved);
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Larger than the compressed-size limit.
    #[error("request body exceeds the {0}-byte limit")]
    TooLarge(usize),
    /// Inflates beyond the decompressed-size limit.
    #[error("decompressed request body exceeds the {0}-byte limit")]
    InflatedTooLarge(usize),
    /// Not valid gzip.
    #[error("invalid gzip body: {0}")]
    BadGzip(String),
    /// The connection failed while reading.
    #[error("error reading request body: {0}")]
    Read(String),
    /// The body came too slowly (`[connections]` body deadline or minimum rate).
    #[error("{0}")]
    TimedOut(String),
    /// Request bodies in flight already hold the whole memory budget.
    #[error(
        "the collector is holding its limit of {0} bytes of request bodies \
         (limits.max_inflight_bytes); retry later"
    )]
    OverBudget(usize),
    /// Holding more would take the process over its soft memory limit.
    #[error("the collector is at its memory limit (limits.memory_limit_mib); retry later")]
    MemoryLimit,
}

/// The first allocation for a body, and so the first charge: what a client
/// holds before it has sent anything, whatever `Content-Length` it claims.
const FIRST_CHUNK: usize = 64 * 1024;

/// Reads a whole body, refusing it once it passes `limit` bytes. Memory is
/// charged to `guard` for the bytes that have arrived, never for what
/// `Content-Length` claims: the buffer starts at 64 KiB (or the claimed
/// length when smaller) and at least doubles as data arrives, so the charge
/// is at most twice what was received (plus 64 KiB) and a client that
/// claims a large body and sends it slowly holds little. A claimed length
/// only caps the growth, so a body that arrives in full takes no copy more
/// than a buffer sized in advance would at the last step.
pub async fn read_limited<B>(
    body: B,
    content_length: Option<u64>,
    limit: usize,
    guard: &mut InflightGuard,
) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + 'static,
{
    if content_length.is_some_and(|l| l > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = std::pin::pin!(body);
    let claimed = content_length.map(|l| l as usize);
    let mut charged = 0usize;
    let mut buf: Vec<u8> = Vec::new();
    let mut single: Option<Bytes> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| read_error(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let held = buf.len() + single.as_ref().map_or(0, Bytes::len);
        let total = held + data.len();
        if total > limit {
            return Err(BodyError::TooLarge(limit));
        }
        // The common case is one frame: keep it without copying.
        if held == 0 {
            if let Err(e) = guard.charge(data.len().saturating_sub(charged)) {
                drop(data);
                discard_rest(body.as_mut(), limit).await;
                return Err(e);
            }
            charged = charged.max(data.len());
            single = Some(data);
            continue;
        }
        if total > buf.capacity() {
            let first = claimed.unwrap_or(FIRST_CHUNK).clamp(1, FIRST_CHUNK);
            let mut target = total.max(buf.capacity().saturating_mul(2)).max(first);
            // Never past the claimed length (while it holds) or the limit.
            if let Some(c) = claimed.filter(|c| *c >= total) {
                target = target.min(c);
            }
            let target = target.min(limit).max(total);
            if target > charged {
                if let Err(e) = guard.charge(target - charged) {
                    // Dropped before the rest is read: memory is what is short.
                    drop((single.take(), std::mem::take(&mut buf)));
                    discard_rest(body.as_mut(), limit).await;
                    return Err(e);
                }
                charged = target;
            }
            buf.reserve_exact(target - buf.len());
        }
        if let Some(s) = single.take() {
            buf.extend_from_slice(&s);
        }
        buf.extend_from_slice(&data);
    }
    Ok(single.unwrap_or_else(|| Bytes::from(buf)))
}

/// Maps a body error: a deadline or rate trip of the listener
/// ([`crate::listener::BodyReadError`]) is [`BodyError::TimedOut`].
fn read_error(e: &(dyn std::error::Error + 'static)) -> BodyError {
    match crate::listener::BodyReadError::find(e) {
        Some(b) if b.is_timeout() => BodyError::TimedOut(b.to_string()),
        _ => BodyError::Read(e.to_string()),
    }
}

/// Reads and drops the rest of a body the collector refused, one frame at a
/// time (nothing is kept), so the client gets the refusal and its retry hint
/// instead of a broken pipe: hyper closes a connection whose request body was
/// not read, and a client still writing a large body would see the reset
/// first. Stops after `limit` bytes or 10 s; then the connection is closed.
pub async fn discard_rest<B>(mut body: std::pin::Pin<&mut B>, limit: usize)
where
    B: Body<Data = Bytes>,
{
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                seen += d.len();
                if seen > limit {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
}

/// Inflates gzip (possibly multi-member) into at most `limit` bytes, charging
/// the output to `guard` as it grows.
pub fn gunzip_limited(
    data: &[u8],
    limit: usize,
    guard: &mut InflightGuard,
) -> Result<Bytes, BodyError> {
    gunzip_into(data, limit, guard, Vec::new()).map(Bytes::from)
}

/// Like [`gunzip_limited`], appending to `out` (whose existing bytes are not
/// counted against `limit` nor charged): lets the gRPC receiver inflate behind
/// its frame header without a second copy.
pub fn gunzip_into(
    data: &[u8],
    limit: usize,
    guard: &mut InflightGuard,
    mut out: Vec<u8>,
) -> Result<Vec<u8>, BodyError> {
    let base = out.len();
    let mut dec = flate2::read::MultiGzDecoder::new(data);
    let initial = (data.len() * 4).min(limit);
    guard.charge(initial)?;
    let mut charged = initial;
    out.reserve(initial);
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = dec
            .read(&mut chunk)
            .map_err(|e| BodyError::BadGzip(e.to_string()))?;
        if n == 0 {
            break;
        }
        let len = out.len() - base;
        if len + n > limit {
            return Err(BodyError::InflatedTooLarge(limit));
        }
        if len + n > charged {
            // Charge what the vector may grow to, not only what it holds.
            let target = (len + n).max(out.capacity() - base).min(limit);
            guard.charge(target - charged)?;
            charged = target;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn budget(max: usize) -> InflightBudget {
        let metrics = Arc::new(Metrics::default());
        InflightBudget::new(max, metrics.clone(), MemoryGuard::disabled(metrics))
    }

    #[test]
    fn gzip_bomb_is_capped() {
        let b = budget(usize::MAX);
        let g = &mut b.guard();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 10 * 1024 * 1024]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(gz.len() < 20 * 1024);
        assert!(matches!(
            gunzip_limited(&gz, 1024 * 1024, g),
            Err(BodyError::InflatedTooLarge(_))
        ));
        assert_eq!(
            gunzip_limited(&gz, 11 * 1024 * 1024, g).unwrap().len(),
            10 * 1024 * 1024
        );
        assert!(matches!(
            gunzip_limited(b"not gzip", 100, g),
            Err(BodyError::BadGzip(_))
        ));
    }

    #[test]
    fn a_settled_reserve_is_lowered_never_raised_and_returned_once() {
        let b = budget(usize::MAX);
        let mut g = b.guard();
        g.charge(100).unwrap();
        g.reserve(3200).unwrap();
        let r = g.decode_reserve();
        let reserved = || b.metrics.memory.reserved_bytes.load(Relaxed);
        assert_eq!(reserved(), 3200);
        r.settle(500);
        assert_eq!((r.bytes(), reserved(), g.held()), (500, 500, 600));
        r.settle(900);
        assert_eq!(r.bytes(), 500, "never raised");
        r.settle(0);
        assert_eq!(reserved(), 0);
        g.reserve(40).unwrap();
        drop(g);
        assert_eq!(reserved(), 0);
        r.settle(0); // after the guard: nothing left to return
        assert_eq!((r.bytes(), reserved()), (0, 0));
        assert_eq!(b.metrics.inflight_bytes.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn limit_enforced_without_content_length() {
        let b = budget(usize::MAX);
        let g = &mut b.guard();
        let body = http_body_util::Full::new(Bytes::from(vec![1u8; 100]));
        assert!(matches!(
            read_limited(body, None, 50, g).await,
            Err(BodyError::TooLarge(50))
        ));
        let body = http_body_util::Full::new(Bytes::from(vec![1u8; 100]));
        assert_eq!(read_limited(body, None, 100, g).await.unwrap().len(), 100);
    }

    #[tokio::test]
    async fn budget_is_shared_and_returned_on_drop() {
        let b = budget(1000);
        let mut first = b.guard();
        let body = http_body_util::Full::new(Bytes::from(vec![1u8; 700]));
        read_limited(body, Some(700), 5000, &mut first)
            .await
            .unwrap();
        assert_eq!(b.metrics.inflight_bytes.load(Relaxed), 700);
        let mut second = b.guard();
        let body = http_body_util::Full::new(Bytes::from(vec![1u8; 400]));
        assert!(matches!(
            read_limited(body, None, 5000, &mut second).await,
            Err(BodyError::OverBudget(1000))
        ));
        drop(second);
        drop(first);
        assert_eq!(b.metrics.inflight_bytes.load(Relaxed), 0);
        let mut third = b.guard();
        let body = http_body_util::Full::new(Bytes::from(vec![1u8; 900]));
        read_limited(body, Some(900), 5000, &mut third)
            .await
            .unwrap();
        // Inflating is charged too: 900 + what gzip grows to exceeds 1000.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[0u8; 500]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(matches!(
            gunzip_limited(&gz, 5000, &mut third),
            Err(BodyError::OverBudget(1000))
        ));
    }
}
