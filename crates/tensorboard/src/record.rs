//! TFRecord framing: `u64 length | masked crc32c(length) | data | masked crc32c(data)`, all little-endian.

/// Bytes a record adds around its data: length (8), length CRC (4), data CRC (4).
pub const FRAME_OVERHEAD: usize = 16;

/// TFRecord's CRC mask, so that a CRC stored next to the data it covers does not look like data.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    mask(crc32c::crc32c(data))
}

/// [`masked_crc32c`] of a record's 8-byte length field, computed here (slice-by-8 tables) rather than by the
/// `crc32c` crate, which takes bytes before an 8-byte boundary one instruction at a time: every record has
/// one, and its CRC was a tenth of the time spent decoding scalar events.
pub fn masked_length_crc(len: [u8; 8]) -> u32 {
    let t = &CRC_TABLES;
    let lo = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) ^ !0;
    let hi = u32::from_le_bytes([len[4], len[5], len[6], len[7]]);
    let crc = t[7][(lo & 0xff) as usize]
        ^ t[6][((lo >> 8) & 0xff) as usize]
        ^ t[5][((lo >> 16) & 0xff) as usize]
        ^ t[4][(lo >> 24) as usize]
        ^ t[3][(hi & 0xff) as usize]
        ^ t[2][((hi >> 8) & 0xff) as usize]
        ^ t[1][((hi >> 16) & 0xff) as usize]
        ^ t[0][(hi >> 24) as usize];
    mask(!crc)
}

/// CRC-32C (Castagnoli, reflected) lookup tables for 8 bytes at a time: `[0]` is the byte-wise table, `[k]`
/// advances a byte's contribution by `k` more zero bytes.
static CRC_TABLES: [[u32; 256]; 8] = crc_tables();

const fn crc_tables() -> [[u32; 256]; 8] {
    const CASTAGNOLI: u32 = 0x82f6_3b78;
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ CASTAGNOLI
            } else {
                crc >> 1
            };
            bit += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

/// `((crc >> 15) | (crc << 17)) + 0xa282ead8`, as TensorFlow defines it.
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends one framed record holding `data` to `out`.
pub fn encode_record(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.reserve(data.len() + FRAME_OVERHEAD);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_length_crc(len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole record whose CRCs match; `size` bytes were used.
    Record { data: &'a [u8], size: usize },
    /// Not enough bytes yet for a whole record (a file still being written): read again later.
    Incomplete,
    /// The length's CRC does not match: the framing is lost, nothing after can be trusted to align.
    BadLengthCrc,
    /// The data's CRC does not match; the record spans `size` bytes and can be skipped.
    BadDataCrc { size: usize },
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Parses the frame at the start of `buf`. Never panics, whatever the bytes.
pub fn decode_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < 12 {
        return Frame::Incomplete;
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&buf[..8]);
    if masked_length_crc(len) != le_u32(&buf[8..12]) {
        return Frame::BadLengthCrc;
    }
    let len = u64::from_le_bytes(len);
    let size = match usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(FRAME_OVERHEAD))
    {
        Some(s) => s,
        None => return Frame::BadLengthCrc,
    };
    if buf.len() < size {
        return Frame::Incomplete;
    }
    let data = &buf[12..size - 4];
    if masked_crc32c(data) != le_u32(&buf[size - 4..size]) {
        return Frame::BadDataCrc { size };
    }
    Frame::Record { data, size }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_crc_is_the_crate_crc() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in [0u64, 1, 24, 255, 256, 1 << 30, u64::MAX]
            .into_iter()
            .chain((0..10_000).map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            }))
        {
            let bytes = len.to_le_bytes();
            assert_eq!(masked_length_crc(bytes), masked_crc32c(&bytes), "{len}");
        }
    }

    #[test]
    fn reference_vectors() {
        assert_eq!(masked_crc32c(b"\x1a\x11CRC test, one two"), 0x5794d08a);
        assert_eq!(masked_crc32c(&24u64.to_le_bytes()), 0x224b7fa3);
        // The standard CRC-32C check value.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn frame_round_trip() {
        let mut out = Vec::new();
        encode_record(b"hello", &mut out);
        encode_record(b"", &mut out);
        assert_eq!(out.len(), 5 + 2 * FRAME_OVERHEAD);
        let Frame::Record { data, size } = decode_frame(&out) else {
            panic!("record expected")
        };
        assert_eq!((data, size), (&b"hello"[..], 21));
        assert_eq!(
            decode_frame(&out[21..]),
            Frame::Record {
                data: b"",
                size: 16
            }
        );
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let mut out = Vec::new();
        encode_record(b"some event bytes", &mut out);
        for cut in 0..out.len() {
            assert_eq!(decode_frame(&out[..cut]), Frame::Incomplete, "cut {cut}");
        }
    }

    #[test]
    fn bit_flips_are_detected() {
        let mut out = Vec::new();
        encode_record(b"some event bytes", &mut out);
        for bit in 0..out.len() * 8 {
            let mut b = out.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let f = decode_frame(&b);
            assert!(
                matches!(
                    f,
                    Frame::BadLengthCrc | Frame::BadDataCrc { .. } | Frame::Incomplete
                ),
                "bit {bit}: {f:?}"
            );
        }
    }
}
