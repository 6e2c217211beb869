//! Reading request bodies under limits: the compressed size is checked while
//! frames arrive (chunked bodies without `Content-Length` are fine), and gzip
//! is inflated in chunks with a cap, so a small "gzip bomb" is refused after
//! inflating at most the limit.

use std::io::Read;

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

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
}

/// Reads a whole body, refusing it once it passes `limit` bytes.
pub async fn read_limited<B>(
    body: B,
    content_length: Option<u64>,
    limit: usize,
) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if content_length.is_some_and(|l| l > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = std::pin::pin!(body);
    let mut buf =
        BytesMut::with_capacity(content_length.unwrap_or(16 * 1024).min(limit as u64) as usize);
    let mut single: Option<Bytes> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            let total = buf.len() + single.as_ref().map_or(0, Bytes::len) + data.len();
            if total > limit {
                return Err(BodyError::TooLarge(limit));
            }
            // The common case is one frame: keep it without copying.
            if buf.is_empty() && single.is_none() {
                single = Some(data);
            } else {
                if let Some(s) = single.take() {
                    buf.extend_from_slice(&s);
                }
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(single.unwrap_or_else(|| buf.freeze()))
}

/// Inflates gzip (possibly multi-member) into at most `limit` bytes.
pub fn gunzip_limited(data: &[u8], limit: usize) -> Result<Bytes, BodyError> {
    let mut dec = flate2::read::MultiGzDecoder::new(data);
    let mut out = Vec::with_capacity((data.len() * 4).min(limit));
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = dec
            .read(&mut chunk)
            .map_err(|e| BodyError::BadGzip(e.to_string()))?;
        if n == 0 {
            break;
        }
        if out.len() + n > limit {
            return Err(BodyError::InflatedTooLarge(limit));
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_bomb_is_capped() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 10 * 1024 * 1024]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(gz.len() < 20 * 1024);
        assert!(matches!(
            gunzip_limited(&gz, 1024 * 1024),
            Err(BodyError::InflatedTooLarge(_))
        ));
        assert_eq!(
            gunzip_limited(&gz, 11 * 1024 * 1024).unwrap().len(),
            10 * 1024 * 1024
        );
        assert!(matches!(
            gunzip_limited(b"not gzip", 100),
            Err(BodyError::BadGzip(_))
        ));
    }

    #[tokio::test]
    async fn limit_enforced_without_content_length() {
        let body = http_body_util::Full::new(Bytes::from(vec![1u8; 100]));
        assert!(matches!(
            read_limited(body, None, 50).await,
            Err(BodyError::TooLarge(50))
        ));
        let body = http_body_util::Full::new(Bytes::from(vec![1u8; 100]));
        assert_eq!(read_limited(body, None, 100).await.unwrap().len(), 100);
    }
}
