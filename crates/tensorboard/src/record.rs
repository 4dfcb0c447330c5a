//! TFRecord framing: `u64 length | masked crc32c(length) | data | masked crc32c(data)`, all little-endian.

/// Bytes a record adds around its data: length (8), length CRC (4), data CRC (4).
pub const FRAME_OVERHEAD: usize = 16;

/// TFRecord's CRC mask, so that a CRC stored next to the data it covers does not look like data.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    mask(crc32c::crc32c(data))
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
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
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
    if masked_crc32c(&buf[..8]) != le_u32(&buf[8..12]) {
        return Frame::BadLengthCrc;
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&buf[..8]);
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
