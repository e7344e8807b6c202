//! JSON bodies that carry a secret (a revealed PAN, an OTP code), built in zeroizing
//! memory and handed to the HTTP stack without another copy of ours.
//!
//! `serde_json::to_vec` or a `serde_json::Value` would leave the secret in ordinary
//! heap buffers (and in the buffers a growing `Vec` leaves behind), never cleared.
//! Here the JSON is written by serde_json's serializer from borrowed `&str` fields into
//! a [`ZeroizingWriter`], whose buffer is never reallocated in place, and becomes a
//! [`Bytes`] that owns the zeroizing buffer, so that it is cleared when the last
//! reference (the HTTP stack's) is dropped.
//!
//! What this cannot reach: hyper may copy body bytes into its own write buffer (HTTP/1
//! when it flattens writes, h2's frame buffers), and rustls copies the plaintext into
//! its record buffer before encrypting it there. Those buffers are not ours and are not
//! zeroized (SECURITY.md, "Not protected").

use crate::service::{Result, ServiceError};
use bytes::Bytes;
use serde::Serialize;
use zeroize::Zeroizing;

/// An `io::Write` into zeroizing memory that never lets its `Vec` reallocate in place:
/// when full it moves to a larger zeroizing buffer and the old one is cleared on drop.
pub struct ZeroizingWriter(Zeroizing<Vec<u8>>);

impl ZeroizingWriter {
    /// An empty buffer; `capacity` should cover the usual body so that it never grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Zeroizing::new(Vec::with_capacity(capacity)))
    }

    /// The bytes written.
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl std::io::Write for ZeroizingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let need = self.0.len().saturating_add(buf.len());
        if need > self.0.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                need.max(self.0.capacity().saturating_mul(2)),
            ));
            bigger.extend_from_slice(&self.0);
            // The old buffer is zeroized (its whole capacity) as it drops here.
            self.0 = bigger;
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `value` as compact JSON (exactly what `serde_json::to_vec` gives), in zeroizing memory.
pub fn to_zeroizing_json<T: Serialize + ?Sized>(
    value: &T,
    capacity: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut w = ZeroizingWriter::with_capacity(capacity);
    serde_json::to_writer(&mut w, value).map_err(|e| ServiceError::internal(e))?;
    Ok(w.into_inner())
}

/// A body that owns the zeroizing buffer: no copy is made, and the buffer is cleared
/// when the HTTP stack drops its last reference.
pub fn into_bytes(body: Zeroizing<Vec<u8>>) -> Bytes {
    Bytes::from_owner(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn grows_into_new_buffers_and_matches_serde_json() {
        let mut w = ZeroizingWriter::with_capacity(2);
        for chunk in [b"ab".as_slice(), b"cdef", b"", b"ghijklmnopq"] {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.into_inner().as_slice(), b"abcdefghijklmnopq");
        let v = serde_json::json!({"b": [1, -2, 3.5, null, true], "a": "é\"\\\n\u{1}", "c": {}});
        assert_eq!(
            to_zeroizing_json(&v, 1).unwrap().as_slice(),
            serde_json::to_vec(&v).unwrap().as_slice()
        );
        let b = into_bytes(to_zeroizing_json("x", 8).unwrap());
        assert_eq!(&b[..], b"\"x\"");
    }
}
