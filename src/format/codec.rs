//! The envelope and primitive encoding shared by every binary structure.
//!
//! Every encoded structure is `magic (4 bytes) | version (u16 LE) | body |
//! BLAKE3 of everything before it (32 bytes)`. Integers are little-endian and
//! fixed-width; strings are a `u16` byte length followed by UTF-8; counts are
//! `u32`. Fixed widths keep the documentation in `docs/format.md` exact and
//! make offsets predictable; the structures are small (an index is a few
//! bytes per group, a page ~60 bytes per block), so varints would buy little.
//!
//! Decoding is defensive: the checksum is verified before anything is parsed,
//! every read is bounds-checked, and every count is checked against the bytes
//! left (count × smallest element size) *before* anything is allocated, so a
//! corrupted count of 2^60 is an error, not an allocation.

use thiserror::Error;

/// Length of the trailing BLAKE3 checksum.
pub const CHECKSUM_LEN: usize = 32;
/// magic + version.
pub const PREAMBLE_LEN: usize = 6;

/// A structure could not be decoded. `what` names the structure (and, where
/// known, the object key), `msg` the field and the problem.
#[derive(Debug, Error)]
#[error("{what}: {msg}")]
pub struct FormatError {
    pub what: String,
    pub msg: String,
}

/// Builds an encoded structure.
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(magic: &[u8; 4], version: u16) -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(magic);
        buf.extend_from_slice(&version.to_le_bytes());
        Writer { buf }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f32(&mut self, v: f32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// A string of at most `u16::MAX` bytes; callers only pass validated
    /// names and keys, far below that.
    /// A `u32` byte length, then the bytes.
    pub fn blob(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.bytes(v);
    }
    pub fn str(&mut self, s: &str) {
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        self.u16(len);
        self.buf.extend_from_slice(&s.as_bytes()[..len as usize]);
    }
    /// A count that the caller knows fits (`usize` → `u32`).
    pub fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    /// Appends the checksum and returns the encoded bytes.
    pub fn finish(mut self) -> Vec<u8> {
        append_checksum(&mut self.buf);
        self.buf
    }
}

/// Appends the trailing checksum every encoding ends with: the BLAKE3 of
/// all the bytes before it ([`Reader::open`] checks it).
pub fn append_checksum(buf: &mut Vec<u8>) {
    let sum = blake3::hash(buf);
    buf.extend_from_slice(sum.as_bytes());
}

/// Reads an encoded structure, with every read checked.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: String,
}

impl<'a> Reader<'a> {
    /// Checks length, checksum, magic and version; returns a reader
    /// positioned at the body and the version found.
    pub fn open(
        data: &'a [u8],
        magic: &[u8; 4],
        max_version: u16,
        what: impl Into<String>,
    ) -> Result<(Self, u16), FormatError> {
        let what = what.into();
        let err = |msg: String| FormatError {
            what: what.clone(),
            msg,
        };
        if data.len() < PREAMBLE_LEN + CHECKSUM_LEN {
            return Err(err(format!(
                "truncated: {} bytes, shorter than the smallest valid encoding",
                data.len()
            )));
        }
        let (body, sum) = data.split_at(data.len() - CHECKSUM_LEN);
        if blake3::hash(body).as_bytes() != sum {
            return Err(err(
                "checksum mismatch: the object is corrupted or truncated".into(),
            ));
        }
        if &body[..4] != magic {
            return Err(err(format!(
                "bad magic {:?}, expected {:?}",
                String::from_utf8_lossy(&body[..4]),
                String::from_utf8_lossy(magic)
            )));
        }
        let version = u16::from_le_bytes([body[4], body[5]]);
        if version == 0 || version > max_version {
            return Err(err(format!(
                "format version {version} is not supported (this build reads 1..={max_version})"
            )));
        }
        Ok((
            Reader {
                buf: body,
                pos: PREAMBLE_LEN,
                what,
            },
            version,
        ))
    }

    /// An error about `field` at the current position.
    pub fn error(&self, field: &str, msg: impl std::fmt::Display) -> FormatError {
        FormatError {
            what: self.what.clone(),
            msg: format!("{field} (at byte {}): {msg}", self.pos),
        }
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], FormatError> {
        if self.buf.len() - self.pos < n {
            return Err(self.error(field, "truncated"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], FormatError> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self, field: &str) -> Result<u8, FormatError> {
        Ok(self.take(1, field)?[0])
    }
    pub fn u16(&mut self, field: &str) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub fn u32(&mut self, field: &str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub fn u64(&mut self, field: &str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    pub fn i64(&mut self, field: &str) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }
    /// A probability: finite and within [0, 1].
    pub fn probability(&mut self, field: &str) -> Result<f32, FormatError> {
        let v = f32::from_le_bytes(self.array(field)?);
        if !(0.0..=1.0).contains(&v) {
            return Err(self.error(field, format!("{v} is not a probability in [0, 1]")));
        }
        Ok(v)
    }
    pub fn bytes<const N: usize>(&mut self, field: &str) -> Result<[u8; N], FormatError> {
        self.array(field)
    }
    /// What [`Writer::blob`] writes.
    pub fn blob(&mut self, field: &str) -> Result<&'a [u8], FormatError> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }
    pub fn str(&mut self, field: &str) -> Result<&'a str, FormatError> {
        let len = self.u16(field)? as usize;
        let s = self.take(len, field)?;
        std::str::from_utf8(s).map_err(|_| self.error(field, "not valid UTF-8"))
    }
    /// A `u32` count of elements each at least `min_elem` bytes long,
    /// refused when the remaining bytes cannot hold that many.
    pub fn count(&mut self, field: &str, min_elem: usize) -> Result<usize, FormatError> {
        let n = self.u32(field)? as usize;
        let left = self.buf.len() - self.pos;
        if n.saturating_mul(min_elem.max(1)) > left {
            return Err(self.error(
                field,
                format!("count {n} cannot fit in the {left} bytes left"),
            ));
        }
        Ok(n)
    }
    /// Refuses trailing bytes after the last field.
    pub fn finish(self) -> Result<(), FormatError> {
        if self.pos != self.buf.len() {
            return Err(self.error(
                "end",
                format!("{} unexpected trailing bytes", self.buf.len() - self.pos),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checksum() {
        let mut w = Writer::new(b"TEST", 1);
        w.u64(42);
        w.str("hello");
        let enc = w.finish();
        let (mut r, v) = Reader::open(&enc, b"TEST", 1, "test").unwrap();
        assert_eq!(v, 1);
        assert_eq!(r.u64("a").unwrap(), 42);
        assert_eq!(r.str("b").unwrap(), "hello");
        r.finish().unwrap();

        let mut bad = enc.clone();
        bad[7] ^= 1;
        let e = Reader::open(&bad, b"TEST", 1, "test").err().unwrap();
        assert!(e.to_string().contains("checksum"), "{e}");
        assert!(Reader::open(&enc[..10], b"TEST", 1, "test").is_err());
        assert!(Reader::open(&enc, b"NOPE", 1, "test").is_err());
    }

    #[test]
    fn huge_count_is_refused_without_allocating() {
        let mut w = Writer::new(b"TEST", 1);
        w.u32(u32::MAX);
        let enc = w.finish();
        let (mut r, _) = Reader::open(&enc, b"TEST", 1, "test").unwrap();
        let e = r.count("entries", 8).unwrap_err();
        assert!(e.to_string().contains("cannot fit"), "{e}");
    }
}
