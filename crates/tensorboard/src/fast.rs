//! A decoder for the commonest record that allocates nothing: an `Event` whose summary holds only
//! `simple_value` scalars (what tensorboardX, PyTorch and Keras write for every `add_scalar`). Importing
//! millions of them is then a walk over the bytes instead of building and dropping a message tree per record;
//! any other record (metadata, tensors, images, file versions, ...) is left to the full prost decoder.

/// One scalar-only event; the tags borrow from the record's bytes. Reused from record to record.
#[derive(Debug, Default)]
pub struct SimpleScalars<'a> {
    pub wall_time: f64,
    pub step: i64,
    /// (tag, simple_value) in record order.
    pub values: Vec<(&'a str, f32)>,
}

/// Protobuf wire types used by these messages.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

impl<'a> SimpleScalars<'a> {
    /// Reads `data` (an `Event` message) into `self`. `false` when the record is not of this simple shape,
    /// or is malformed: the caller then decodes it with prost, which gives the same answer (or the error).
    pub fn decode(&mut self, data: &'a [u8]) -> bool {
        self.wall_time = 0.0;
        self.step = 0;
        self.values.clear();
        self.decode_event(data).is_some()
    }

    fn decode_event(&mut self, data: &'a [u8]) -> Option<()> {
        let mut r = Wire { buf: data };
        let mut summary = None;
        while !r.buf.is_empty() {
            match r.key()? {
                (1, FIXED64) => self.wall_time = f64::from_le_bytes(r.array()?),
                (2, VARINT) => self.step = r.varint()? as i64,
                // A second summary would be merged into the first by protobuf rules: left to prost.
                (5, LEN) if summary.is_none() => summary = Some(r.bytes()?),
                _ => return None,
            }
        }
        let mut s = Wire { buf: summary? };
        while !s.buf.is_empty() {
            match s.key()? {
                (1, LEN) => {
                    let value = simple_value(s.bytes()?)?;
                    self.values.push(value);
                }
                _ => return None,
            }
        }
        Some(())
    }
}

/// A `Summary.Value` holding only a tag and a `simple_value`.
fn simple_value(data: &[u8]) -> Option<(&str, f32)> {
    let mut r = Wire { buf: data };
    let (mut tag, mut value) = ("", None);
    while !r.buf.is_empty() {
        match r.key()? {
            (1, LEN) => tag = std::str::from_utf8(r.bytes()?).ok()?,
            (2, FIXED32) => value = Some(f32::from_le_bytes(r.array()?)),
            _ => return None,
        }
    }
    Some((tag, value?))
}

/// The unread rest of a message.
struct Wire<'a> {
    buf: &'a [u8],
}

impl<'a> Wire<'a> {
    /// The next field's number and wire type.
    fn key(&mut self) -> Option<(u64, u8)> {
        let k = self.varint()?;
        Some((k >> 3, (k & 7) as u8))
    }

    fn varint(&mut self) -> Option<u64> {
        // Keys and short lengths (most varints here) are one byte.
        if let Some((&b, rest)) = self.buf.split_first() {
            if b & 0x80 == 0 {
                self.buf = rest;
                return Some(u64::from(b));
            }
        }
        let mut v = 0u64;
        for (i, &b) in self.buf.iter().take(10).enumerate() {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Some(a)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::event::What;
    use crate::proto::summary::value::Value as V;
    use crate::summary::scalar;
    use crate::{Event, Summary};
    use prost::Message;

    fn event(step: i64, values: Vec<crate::proto::summary::Value>) -> Vec<u8> {
        Event {
            wall_time: 1.7e9 + step as f64 * 0.25,
            step,
            what: Some(What::Summary(Summary { value: values })),
        }
        .encode_to_vec()
    }

    #[test]
    fn reads_what_prost_reads() {
        for step in [0, 1, 300, -5, i64::MAX] {
            let bytes = event(step, vec![scalar("loss", 0.5), scalar("acc/é", -1.25)]);
            let mut s = SimpleScalars::default();
            assert!(s.decode(&bytes));
            assert_eq!(s.step, step);
            assert_eq!(s.wall_time, 1.7e9 + step as f64 * 0.25);
            assert_eq!(s.values, vec![("loss", 0.5), ("acc/é", -1.25)]);
        }
    }

    #[test]
    fn leaves_every_other_shape_to_prost() {
        let mut with_meta = scalar("loss", 1.0);
        with_meta.metadata = Some(Default::default());
        let mut histo = scalar("h", 1.0);
        histo.value = Some(V::Histo(Default::default()));
        let mut empty = scalar("e", 1.0);
        empty.value = None;
        let version = Event {
            wall_time: 1.0,
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        }
        .encode_to_vec();
        let records = [
            event(1, vec![with_meta]),
            event(1, vec![histo]),
            event(1, vec![empty]),
            version,
        ];
        let good = event(7, vec![scalar("loss", 2.0)]);
        let mut s = SimpleScalars::default();
        for bytes in &records {
            assert!(!s.decode(bytes));
        }
        for cut in 0..good.len() {
            assert!(!s.decode(&good[..cut]), "cut {cut}");
        }
    }
}
