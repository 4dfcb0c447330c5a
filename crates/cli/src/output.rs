//! Human output helpers: aligned tables, times, durations, sizes.

use flightlog_model::WallTime;
use std::io::Write;

/// A tiny aligned-table printer: columns are as wide as their widest cell; the last is not padded.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            right: vec![false; headers.len()],
        }
    }
    /// Right-aligns column `i` (numbers).
    pub fn align_right(mut self, cols: &[usize]) -> Table {
        for &c in cols {
            if c < self.right.len() {
                self.right[c] = true;
            }
        }
        self
    }
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(width(c));
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate().take(n) {
                let pad = widths[i].saturating_sub(width(c));
                let last = i + 1 == n;
                if self.right[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    if !last {
                        s.push_str(&" ".repeat(pad));
                    }
                }
                if !last {
                    s.push_str("  ");
                }
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(&self.headers);
        for r in &self.rows {
            line(r);
        }
        out
    }
    pub fn print(&self) -> std::io::Result<()> {
        let mut o = std::io::stdout().lock();
        o.write_all(self.render().as_bytes())?;
        o.flush()
    }
}

/// The columns a cell takes in a terminal: CJK characters and most emoji take two, so counting characters
/// shifted every column after such a cell.
fn width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

/// "2026-11-22 17:58:47Z": UTC, marked so (a reader elsewhere would take it for local time).
pub fn time(t: WallTime) -> String {
    let (y, m, d, h, mi, s, _) = t.utc();
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// ISO 8601 with microseconds, for CSV.
pub fn iso_time(t: WallTime) -> String {
    t.iso_8601()
}

pub fn opt_time(t: Option<WallTime>) -> String {
    t.map(time).unwrap_or_else(|| "-".into())
}

/// "850ms", "12.3s", "4m 05s", "2h 03m", "3d 04h".
pub fn duration_us(us: i64) -> String {
    if us < 0 {
        return "-".into();
    }
    let ms = us / 1000;
    let s = us / 1_000_000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", us as f64 / 1e6)
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600)
    }
}

/// "512 B", "1.5 KiB", "20.0 MiB".
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// A metric value for a table: numbers short, strings quoted-free, others compact JSON, cut to `max` chars.
pub fn value(v: &serde_json::Value, max: usize) -> String {
    let s = match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.as_f64().map(number).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    };
    cut(&s.replace('\n', "\\n"), max)
}

pub fn number(v: f64) -> String {
    if let Some(name) = flightlog_model::non_finite_name(v) {
        name.to_string()
    } else if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 1e-4 && v.abs() < 1e9 {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.6e}")
    }
}

/// `s` in at most `max` terminal columns, ending in `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > max.saturating_sub(1) {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// Prints JSON (pretty) and a newline.
pub fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut o, v).map_err(std::io::Error::other)?;
    o.write_all(b"\n")?;
    o.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(time(WallTime(0)), "1970-01-01 00:00:00Z");
        assert_eq!(
            time(WallTime(1_700_000_000_123_456)),
            "2023-11-14 22:13:20Z"
        );
        assert_eq!(
            iso_time(WallTime(1_700_000_000_123_456)),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(duration_us(850_000), "850ms");
        assert_eq!(duration_us(12_340_000), "12.3s");
        assert_eq!(duration_us(245_000_000), "4m 05s");
        assert_eq!(duration_us(7_380_000_000), "2h 03m");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(f64::NAN), "NaN");
        let mut t = Table::new(&["A", "LONG HEADER", "N"]).align_right(&[2]);
        t.row(vec!["xyz".into(), "1".into(), "10".into()]);
        assert_eq!(t.render(), "A    LONG HEADER   N\nxyz  1            10\n");
    }

    #[test]
    fn wide_characters_take_two_columns_in_tables_and_cuts() {
        use unicode_width::UnicodeWidthStr;
        let mut t = Table::new(&["NAME", "RUNS"]);
        t.row(vec!["实验😀".into(), "3".into()]);
        t.row(vec!["plain".into(), "4".into()]);
        let lines: Vec<String> = t.render().lines().map(str::to_string).collect();
        let at = |l: &str, what: &str| l[..l.find(what).unwrap()].width();
        assert_eq!(at(&lines[1], "3"), at(&lines[0], "RUNS"));
        assert_eq!(at(&lines[2], "4"), at(&lines[0], "RUNS"));
        let cut_name = cut("训练运行😀😀😀 wide name", 10);
        assert!(
            cut_name.width() <= 10 && cut_name.ends_with('…'),
            "{cut_name}"
        );
        assert_eq!(cut("short", 10), "short");
    }
}
