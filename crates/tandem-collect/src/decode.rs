//! `Content-Encoding` of request bodies.

use crate::parse::RequestError;
use std::borrow::Cow;
use std::io::Read;
use tandem_core::limits::REQUEST_BODY_BYTES_MAX;
use tandem_core::ErrorCode;

/// The body as JSON bytes: as sent for `identity` (or no header), decompressed for `gzip`,
/// `x-gzip` and `deflate`. Decompressed output is capped at `REQUEST_BODY_BYTES_MAX`.
pub fn decode_body<'a>(content_encoding: Option<&str>, body: &'a [u8]) -> Result<Cow<'a, [u8]>, RequestError> {
    let encoding = content_encoding.map(|value| value.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(Cow::Borrowed(body)),
        Some("gzip") | Some("x-gzip") => inflate(flate2::read::MultiGzDecoder::new(body), "gzip"),
        Some("deflate") => inflate(flate2::read::ZlibDecoder::new(body), "deflate"),
        Some(other) => Err(RequestError::new(ErrorCode::InvalidEncoding, format!("unsupported Content-Encoding {other:?}: send identity, gzip or deflate"))),
    }
}

fn inflate<'a>(decoder: impl Read, name: &str) -> Result<Cow<'a, [u8]>, RequestError> {
    let mut out = Vec::new();
    decoder
        .take(REQUEST_BODY_BYTES_MAX as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|error| RequestError::new(ErrorCode::InvalidEncoding, format!("the body is not valid {name}: {error}")))?;
    if out.len() > REQUEST_BODY_BYTES_MAX {
        return Err(RequestError::new(ErrorCode::BodyTooLarge, format!("the decompressed body is larger than {REQUEST_BODY_BYTES_MAX} bytes")));
    }
    Ok(Cow::Owned(out))
}
