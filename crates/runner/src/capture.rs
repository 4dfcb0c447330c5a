//! Output capture: a job's stdout/stderr read line by line, stamped, and sent to the run's log streams.
//!
//! Each stored line is `<ISO-8601 UTC time with µs> <text>\n`, so the two streams can be merged back into the
//! order the lines were written in. Text is decoded lossily: binary output is stored (as U+FFFD) and never
//! breaks the capture; a line longer than [`MAX_PIECE`] is stored in pieces.

use crate::tracker::Tracker;
use flightlog_model::{RunId, WallTime};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

/// The longest piece of one line sent at once (well under the server's append limit).
pub const MAX_PIECE: usize = 1 << 20;

/// How many lines of stderr a failed run's error details quote.
pub const TAIL_LINES: usize = 20;

/// The last lines of a stream, for error details.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: &str) {
        let Ok(mut q) = self.0.lock() else { return };
        if q.len() == TAIL_LINES {
            q.pop_front();
        }
        q.push_back(line.trim_end_matches(['\n', '\r']).to_string());
    }

    /// Keeps the last [`TAIL_LINES`] lines of `text` (whole lines), without touching the earlier ones.
    fn push_last_lines(&self, text: &str) {
        let mut start = text.len();
        for _ in 0..TAIL_LINES {
            let Some(nl) = start
                .checked_sub(1)
                .and_then(|end| memchr::memrchr(b'\n', &text.as_bytes()[..end]))
            else {
                start = 0;
                break;
            };
            start = nl + 1;
        }
        for line in text[start..].split_inclusive('\n') {
            self.push(line);
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Where captured bytes are echoed (the terminal with `--show-output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    None,
    Stdout,
    Stderr,
}

/// Reads `reader` to its end, sending stamped lines to `stream`; returns when the job closes it. Lines that
/// arrive together are stamped with the same time and sent as one piece of text, so a chatty job is not
/// slowed down by per-line overhead.
pub fn pump(
    reader: Box<dyn Read + Send>,
    tracker: Arc<dyn Tracker>,
    run: RunId,
    stream: &str,
    echo: Echo,
    tail: Option<Tail>,
) {
    let mut r = BufReader::with_capacity(256 * 1024, reader);
    let mut lines = LineStamper::new(tail);
    loop {
        let (text, n) = match r.fill_buf() {
            Ok([]) => (lines.finish(WallTime::now()), 0),
            Ok(buf) => {
                echo_bytes(echo, buf);
                (lines.feed(buf, WallTime::now()), buf.len())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => (lines.finish(WallTime::now()), 0),
        };
        if !text.is_empty() {
            if let Err(e) = tracker.log_text(&run, stream, &text) {
                tracing::warn!("cannot record {stream} output: {e}");
            }
        }
        if n == 0 {
            return;
        }
        r.consume(n);
        if n < SETTLE_BELOW {
            // A chatty job writes a line per syscall: reading each one as it comes costs a wakeup per line
            // on both sides. A short pause lets the (widened) pipe gather lines; the first line of a burst
            // is read at once, so sparse output is not delayed.
            std::thread::sleep(SETTLE);
        }
    }
}

/// A read shorter than this means the job is writing in small pieces: pause [`SETTLE`] before the next.
const SETTLE_BELOW: usize = 64 * 1024;
/// How long output may gather in the pipe between reads of a chatty job.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(2);

/// Splits bytes into lines and stamps them; a line longer than [`MAX_PIECE`] is cut into pieces.
pub struct LineStamper {
    partial: Vec<u8>,
    tail: Option<Tail>,
    /// The last piece sent was cut mid-line (a full [`MAX_PIECE`], or progress up to a `\r`): a newline
    /// right after it ends that line and is not a line (an empty one) of its own.
    cut_mid_line: bool,
    /// Since when `partial` has held text.
    partial_since: Option<WallTime>,
}

/// How long a line redrawn with `\r` (a progress bar) may go unsent: such a line can take a whole epoch to
/// end, and would show nothing live until then.
const PROGRESS_EVERY_MICROS: i64 = 1_000_000;

impl LineStamper {
    pub fn new(tail: Option<Tail>) -> Self {
        LineStamper {
            partial: Vec::new(),
            tail,
            cut_mid_line: false,
            partial_since: None,
        }
    }

    /// The complete lines (and full pieces) in `partial + bytes`, stamped with `now`. Whenever no line is
    /// pending (at the start, or once a read that ended mid-line is completed) the rest goes the fast way.
    pub fn feed(&mut self, mut bytes: &[u8], now: WallTime) -> String {
        let stamp_text = iso_time(now);
        let mut out = String::with_capacity(bytes.len() + bytes.len() / 3);
        while !bytes.is_empty() {
            if std::mem::take(&mut self.cut_mid_line)
                && self.partial.is_empty()
                && bytes[0] == b'\n'
            {
                bytes = &bytes[1..];
                continue;
            }
            if self.partial.is_empty() {
                bytes = self.feed_whole_lines(bytes, &stamp_text, &mut out);
                if bytes.is_empty() {
                    break;
                }
            }
            let room = MAX_PIECE - self.partial.len();
            let window = &bytes[..bytes.len().min(room)];
            match memchr::memchr(b'\n', window) {
                Some(i) if self.partial.is_empty() => {
                    self.emit(&window[..=i], &stamp_text, &mut out);
                    bytes = &bytes[i + 1..];
                }
                Some(i) => {
                    self.partial.extend_from_slice(&window[..=i]);
                    let line = std::mem::take(&mut self.partial);
                    self.emit(&line, &stamp_text, &mut out);
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.partial.extend_from_slice(window);
                    bytes = &bytes[window.len()..];
                    if self.partial.len() >= MAX_PIECE {
                        // Cut at a character boundary: a character split in two would be stored as
                        // U+FFFD at the end of one piece and the start of the next.
                        let keep = self.partial.len() - unfinished_char_len(&self.partial);
                        let rest = self.partial.split_off(keep);
                        let piece = std::mem::replace(&mut self.partial, rest);
                        self.emit(&piece, &stamp_text, &mut out);
                        self.cut_mid_line = true;
                    }
                }
            }
        }
        self.send_progress(now, &stamp_text, &mut out);
        out
    }

    /// A line redrawn with `\r` that has been pending for [`PROGRESS_EVERY_MICROS`] is sent as it stands, a
    /// piece of its own, so its end is what a terminal would show now: watched live, each byte still stored
    /// once, one piece a second rather than one per redraw.
    fn send_progress(&mut self, now: WallTime, stamp_text: &str, out: &mut String) {
        if self.partial.is_empty() {
            self.partial_since = None;
            return;
        }
        let since = *self.partial_since.get_or_insert(now);
        if now.0 - since.0 < PROGRESS_EVERY_MICROS {
            return;
        }
        if memchr::memchr(b'\r', &self.partial).is_none() {
            return;
        }
        let keep = self.partial.len() - unfinished_char_len(&self.partial);
        let rest = self.partial.split_off(keep);
        let piece = std::mem::replace(&mut self.partial, rest);
        self.emit(&piece, stamp_text, out);
        self.cut_mid_line = true;
        self.partial_since = (!self.partial.is_empty()).then_some(now);
    }

    /// The common case, fast: complete lines of valid UTF-8 are stamped straight from one validation of the
    /// whole chunk (no per-line decoding). Returns what is left for the careful path: a last line without
    /// its newline, invalid UTF-8 and what follows it, a line longer than [`MAX_PIECE`].
    fn feed_whole_lines<'a>(
        &self,
        bytes: &'a [u8],
        stamp_text: &str,
        out: &mut String,
    ) -> &'a [u8] {
        let Some(end) = memchr::memrchr(b'\n', bytes) else {
            return bytes;
        };
        let valid = match std::str::from_utf8(&bytes[..=end]) {
            Ok(text) => text,
            Err(e) => match memchr::memrchr(b'\n', &bytes[..e.valid_up_to()]) {
                // The prefix up to the last newline before the first invalid byte is valid UTF-8.
                Some(i) => std::str::from_utf8(&bytes[..=i]).unwrap_or_default(),
                None => return bytes,
            },
        };
        let mut used = 0;
        for nl in memchr::memchr_iter(b'\n', valid.as_bytes()) {
            // Both ends follow a newline (or start the text), so they are character boundaries.
            let line = &valid[used..=nl];
            if line.len() > MAX_PIECE {
                break;
            }
            out.push_str(stamp_text);
            out.push(' ');
            out.push_str(line);
            used = nl + 1;
        }
        if let Some(t) = &self.tail {
            t.push_last_lines(&valid[..used]);
        }
        &bytes[used..]
    }

    /// What is left when the stream ends (a last line without a newline).
    pub fn finish(&mut self, now: WallTime) -> String {
        let mut out = String::new();
        if !self.partial.is_empty() {
            let piece = std::mem::take(&mut self.partial);
            self.emit(&piece, &iso_time(now), &mut out);
        }
        out
    }

    fn emit(&self, line: &[u8], stamp_text: &str, out: &mut String) {
        let text = String::from_utf8_lossy(line);
        if let Some(t) = &self.tail {
            t.push(&text);
        }
        out.push_str(stamp_text);
        out.push(' ');
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
}

/// How many bytes at the end of `b` start a UTF-8 character that is not complete yet (0 to 3).
fn unfinished_char_len(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let byte = b[b.len() - back];
        if byte & 0xC0 != 0x80 {
            let needs = match byte {
                0xF0.. => 4,
                0xE0.. => 3,
                0xC0.. => 2,
                _ => 1,
            };
            return if needs > back { back } else { 0 };
        }
    }
    0
}

fn echo_bytes(echo: Echo, bytes: &[u8]) {
    let _ = match echo {
        Echo::None => Ok(()),
        Echo::Stdout => {
            let mut o = std::io::stdout().lock();
            o.write_all(bytes).and_then(|_| o.flush())
        }
        Echo::Stderr => std::io::stderr().lock().write_all(bytes),
    };
}

/// `2026-11-22T18:45:08.123456Z text\n` (a newline is added when the piece has none).
pub fn stamp(t: WallTime, text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 29);
    s.push_str(&iso_time(t));
    s.push(' ');
    s.push_str(text);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Splits a stored line into its time and text; `None` for a line without a stamp.
pub fn unstamp(line: &str) -> Option<(&str, &str)> {
    let (t, rest) = line.split_once(' ')?;
    let ok = t.len() == 27 && t.ends_with('Z') && t.as_bytes().get(10) == Some(&b'T');
    ok.then_some((t, rest))
}

/// Stored text as the job printed it: each line without its time stamp (for showing output to a user).
pub fn strip_stamps(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        plain.push_str(unstamp(line).map_or(line, |(_, t)| t));
    }
    plain
}

/// ISO 8601 UTC with microseconds (sorts as text in time order).
pub fn iso_time(t: WallTime) -> String {
    t.iso_8601()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let t = WallTime(1_700_000_000_123_456);
        assert_eq!(iso_time(t), "2023-11-14T22:13:20.123456Z");
        let s = stamp(t, "hello world");
        assert_eq!(s, "2023-11-14T22:13:20.123456Z hello world\n");
        assert_eq!(
            unstamp(s.trim_end()),
            Some(("2023-11-14T22:13:20.123456Z", "hello world"))
        );
        assert_eq!(unstamp("no stamp here"), None);
        assert_eq!(
            strip_stamps(&format!("{s}plain\n{s}")),
            "hello world\nplain\nhello world\n"
        );
    }

    #[test]
    fn long_lines_come_in_pieces_and_binary_is_lossy() {
        let t = WallTime(1_700_000_000_000_000);
        let mut st = LineStamper::new(None);
        let mut data = vec![b'a'; MAX_PIECE + 10];
        data.extend_from_slice(b"\n\xff\xfe bin\nla");
        let mut out = String::new();
        for chunk in data.chunks(4096) {
            out.push_str(&st.feed(chunk, t));
        }
        out.push_str(&st.feed(b"st", t));
        out.push_str(&st.finish(t));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].len(), 28 + MAX_PIECE);
        assert_eq!(lines[1], format!("{} {}", iso_time(t), "a".repeat(10)));
        assert_eq!(lines[2], format!("{} \u{fffd}\u{fffd} bin", iso_time(t)));
        assert_eq!(lines[3], format!("{} last", iso_time(t)));
    }

    #[test]
    fn long_lines_are_cut_between_characters_and_keep_their_newline() {
        let t = WallTime(1_700_000_000_000_000);
        let line = "€".repeat(900_000);
        let mut data = line.clone().into_bytes();
        data.push(b'\n');
        data.extend_from_slice(&vec![b'x'; 2 * MAX_PIECE]);
        data.extend_from_slice(b"\nnext\n");
        for chunk_size in [4096, 3 * MAX_PIECE] {
            let mut st = LineStamper::new(None);
            let mut out = String::new();
            for chunk in data.chunks(chunk_size) {
                out.push_str(&st.feed(chunk, t));
            }
            out.push_str(&st.finish(t));
            let texts: Vec<&str> = out.lines().map(|l| &l[28..]).collect();
            assert!(!out.contains('\u{fffd}'));
            assert_eq!(texts[..3].concat(), line);
            // Exactly two full pieces, no empty line for the newline that ends them.
            assert_eq!(
                texts[3..],
                ["x".repeat(MAX_PIECE), "x".repeat(MAX_PIECE), "next".into()]
            );
        }
        assert_eq!(unfinished_char_len("a€".as_bytes()), 0);
        assert_eq!(unfinished_char_len(&"a€".as_bytes()[..3]), 2);
        assert_eq!(unfinished_char_len(&[b'a', 0xF0, 0x9F, 0x98]), 3);
    }

    #[test]
    fn progress_redrawn_with_cr_is_sent_once_a_second_and_stored_whole() {
        let at = |s: i64| WallTime(1_700_000_000_000_000 + s * 100_000);
        let mut st = LineStamper::new(None);
        let mut out = String::new();
        for tenth in 0..25 {
            out.push_str(&st.feed(format!("\r{tenth:>3}%").as_bytes(), at(tenth)));
        }
        out.push_str(&st.feed(b"\r100%\n", at(25)));
        out.push_str(&st.feed(b"next\n", at(26)));
        let lines: Vec<&str> = out.split_inclusive('\n').collect();
        // A piece at 1.0 s, the next a second after its first redraw (2.1 s), each ending with the state
        // drawn last; the rest ends with the newline.
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].starts_with(&iso_time(at(10))), "{lines:?}");
        assert!(lines[1].starts_with(&iso_time(at(21))), "{lines:?}");
        assert_eq!(*lines[3], format!("{} next\n", iso_time(at(26))));
        let text: String = lines[..3].iter().map(|l| &l[28..]).collect();
        let drawn: String = (0..25).map(|t| format!("\r{t:>3}%")).collect();
        assert!(lines[0].ends_with(" 10%\n"), "{lines:?}");
        assert_eq!(text.replace('\n', ""), format!("{drawn}\r100%"));
        // Without a \r, a pending line waits for its end.
        let mut st = LineStamper::new(None);
        assert_eq!(st.feed(b"partial", at(0)) + &st.feed(b" more", at(30)), "");
    }

    #[test]
    fn whole_chunks_and_byte_by_byte_feeding_store_the_same_text() {
        let t = WallTime(1_700_000_000_000_000);
        let mut data = b"one\ntwo \xc3\xa9\nbad \xff here\nafter\n".to_vec();
        data.extend_from_slice(&vec![b'z'; MAX_PIECE + 5]);
        data.extend_from_slice(b"\nend\npartial");
        let (mut whole, mut bytewise) = (LineStamper::new(None), LineStamper::new(None));
        let a = whole.feed(&data, t) + &whole.finish(t);
        let mut b = String::new();
        for byte in &data {
            b.push_str(&bytewise.feed(std::slice::from_ref(byte), t));
        }
        b.push_str(&bytewise.finish(t));
        assert_eq!(a, b);
        let lines: Vec<&str> = a.lines().map(|l| unstamp(l).unwrap().1).collect();
        assert_eq!(lines[..4], ["one", "two é", "bad \u{fffd} here", "after"]);
        assert_eq!(lines[lines.len() - 2..], ["end", "partial"]);
    }

    #[test]
    fn tail_from_whole_chunks_matches_line_by_line() {
        let text: String = (0..45).map(|i| format!("line {i}\n")).collect();
        for n in [0, 1, 19, 20, 21, 45] {
            let part: String = text.split_inclusive('\n').take(n).collect();
            let (chunk, each) = (Tail::default(), Tail::default());
            chunk.push_last_lines(&part);
            for line in part.split_inclusive('\n') {
                each.push(line);
            }
            assert_eq!(chunk.lines(), each.lines(), "{n} lines");
        }
        let t = Tail::default();
        t.push_last_lines("first\n");
        t.push_last_lines("second\nthird\n");
        assert_eq!(t.lines(), ["first", "second", "third"]);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let t = Tail::default();
        for i in 0..30 {
            t.push(&format!("line {i}\n"));
        }
        let l = t.lines();
        assert_eq!(l.len(), TAIL_LINES);
        assert_eq!(l[0], "line 10");
        assert_eq!(l[19], "line 29");
    }
}
