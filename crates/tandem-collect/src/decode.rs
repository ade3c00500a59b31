//! `Content-Encoding` handling: identity bodies are borrowed, gzip and deflate bodies are inflated
//! up to `REQUEST_BODY_BYTES_MAX` decoded bytes, so a small "zip bomb" cannot pin memory.

use crate::parse::RequestError;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use std::borrow::Cow;
use std::io::Read;
use tandem_core::limits::REQUEST_BODY_BYTES_MAX;
use tandem_core::ErrorCode;

/// Bytes reserved up front for a decoded body, as a multiple of the compressed size (JSON
/// typically compresses 5-10×); the vector grows past it when needed, up to the cap.
const INFLATE_RATIO_GUESS: usize = 8;

/// Decodes a request body according to its `Content-Encoding` header.
///
/// Absent, empty or `identity` → the body itself. `gzip`/`x-gzip` (several members allowed) and
/// `deflate` (zlib-wrapped, or raw as some clients send it) → the inflated bytes, at most
/// `REQUEST_BODY_BYTES_MAX` of them (more → `body_too_large`). A broken stream or any other
/// encoding → `invalid_encoding`. Names are case-insensitive.
pub fn decode_body<'a>(
    content_encoding: Option<&str>,
    body: &'a [u8],
) -> Result<Cow<'a, [u8]>, RequestError> {
    let encoding = content_encoding
        .map(str::trim)
        .unwrap_or_default()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" | "none" => Ok(Cow::Borrowed(body)),
        "gzip" | "x-gzip" => inflate(MultiGzDecoder::new(body), body.len(), "gzip").map(Cow::Owned),
        "deflate" => inflate(ZlibDecoder::new(body), body.len(), "deflate")
            .or_else(|zlib_error| match zlib_error.code {
                ErrorCode::InvalidEncoding => {
                    inflate(DeflateDecoder::new(body), body.len(), "deflate")
                }
                _ => Err(zlib_error),
            })
            .map(Cow::Owned),
        other => Err(RequestError::new(
            ErrorCode::InvalidEncoding,
            format!("unsupported Content-Encoding {other:?}: send gzip, deflate or identity"),
        )),
    }
}

/// Reads a decoder to its end, refusing more than `REQUEST_BODY_BYTES_MAX` decoded bytes.
fn inflate(
    decoder: impl Read,
    compressed_bytes: usize,
    name: &str,
) -> Result<Vec<u8>, RequestError> {
    let guess = compressed_bytes
        .saturating_mul(INFLATE_RATIO_GUESS)
        .min(REQUEST_BODY_BYTES_MAX + 1);
    let mut decoded = Vec::with_capacity(guess);
    decoder
        .take(REQUEST_BODY_BYTES_MAX as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|error| {
            RequestError::new(
                ErrorCode::InvalidEncoding,
                format!("the {name} body cannot be decoded: {error}"),
            )
        })?;
    if decoded.len() > REQUEST_BODY_BYTES_MAX {
        return Err(RequestError::new(
            ErrorCode::BodyTooLarge,
            format!("the {name} body decodes to more than {REQUEST_BODY_BYTES_MAX} bytes"),
        ));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn identity_is_borrowed() {
        for encoding in [None, Some(""), Some("identity"), Some(" Identity ")] {
            assert!(matches!(
                decode_body(encoding, b"{}").unwrap(),
                Cow::Borrowed(b"{}")
            ));
        }
    }

    #[test]
    fn gzip_is_decoded_case_insensitively() {
        let body = gzip(br#"{"a":1}"#);
        for encoding in ["gzip", "GZIP", "x-gzip"] {
            assert_eq!(&*decode_body(Some(encoding), &body).unwrap(), br#"{"a":1}"#);
        }
    }

    #[test]
    fn concatenated_gzip_members_are_one_body() {
        let mut body = gzip(b"[1,");
        body.extend(gzip(b"2]"));
        assert_eq!(&*decode_body(Some("gzip"), &body).unwrap(), b"[1,2]");
    }

    #[test]
    fn deflate_zlib_and_raw_are_decoded() {
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(b"zlib body").unwrap();
        assert_eq!(
            &*decode_body(Some("deflate"), &zlib.finish().unwrap()).unwrap(),
            b"zlib body"
        );
        let mut raw = DeflateEncoder::new(Vec::new(), Compression::default());
        raw.write_all(b"raw body").unwrap();
        assert_eq!(
            &*decode_body(Some("deflate"), &raw.finish().unwrap()).unwrap(),
            b"raw body"
        );
    }

    #[test]
    fn corrupt_or_truncated_gzip_is_invalid_encoding() {
        let body = gzip(&[b'x'; 10_000]);
        let truncated = decode_body(Some("gzip"), &body[..body.len() / 2]).unwrap_err();
        assert_eq!(truncated.code, ErrorCode::InvalidEncoding);
        let garbage = decode_body(Some("gzip"), b"this is not gzip").unwrap_err();
        assert_eq!(garbage.code, ErrorCode::InvalidEncoding);
        let mut flipped = body.clone();
        flipped[body.len() - 6] ^= 0xff; // inside the CRC trailer
        assert_eq!(
            decode_body(Some("gzip"), &flipped).unwrap_err().code,
            ErrorCode::InvalidEncoding
        );
    }

    #[test]
    fn gzip_bomb_is_cut_at_the_cap() {
        let bomb = gzip(&vec![b' '; REQUEST_BODY_BYTES_MAX * 20]);
        assert!(bomb.len() < 100_000);
        assert_eq!(
            decode_body(Some("gzip"), &bomb).unwrap_err().code,
            ErrorCode::BodyTooLarge
        );
        let exact = gzip(&vec![b' '; REQUEST_BODY_BYTES_MAX]);
        assert_eq!(
            decode_body(Some("gzip"), &exact).unwrap().len(),
            REQUEST_BODY_BYTES_MAX
        );
    }

    #[test]
    fn unknown_encoding_is_refused() {
        for encoding in ["br", "compress", "gzip, br", "zstd"] {
            assert_eq!(
                decode_body(Some(encoding), b"{}").unwrap_err().code,
                ErrorCode::InvalidEncoding,
                "{encoding}"
            );
        }
    }
}
