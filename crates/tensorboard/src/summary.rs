//! Building the summary values flightlog exports (scalars, text, images, histograms) and reading back every
//! form TensorBoard writers use for them (legacy fields and plugin tensors).

use crate::proto::summary::{value::Value as V, Image, Value};
use crate::proto::{
    data_class, dtype, event::What, proto_value, tensor_shape_proto::Dim, Event, HParamsPluginData,
    HistogramProto, PluginData, Summary, SummaryMetadata, TensorProto, TensorShapeProto,
};
use prost::Message;
use std::collections::{BTreeMap, HashMap};

/// An event holding one summary value.
pub fn event(wall_time: f64, step: i64, value: Value) -> Event {
    Event {
        wall_time,
        step,
        what: Some(What::Summary(Summary { value: vec![value] })),
    }
}

fn plugin(name: &str, class: i32) -> Option<Box<SummaryMetadata>> {
    Some(Box::new(SummaryMetadata {
        plugin_data: Some(PluginData {
            plugin_name: name.to_string(),
            content: Vec::new(),
        }),
        data_class: class,
        ..Default::default()
    }))
}

/// A scalar as `simple_value` (what tensorboardX and PyTorch write, and what every loader reads).
pub fn scalar(tag: &str, value: f32) -> Value {
    Value {
        tag: tag.to_string(),
        value: Some(V::SimpleValue(value)),
        ..Default::default()
    }
}

/// Appends the protobuf encoding of `event(wall_time, step, scalar(tag, value))` to `out`, without building
/// the messages: exports write millions of these.
pub fn encode_scalar_event(out: &mut Vec<u8>, wall_time: f64, step: i64, tag: &str, value: f32) {
    let value_len = 1 + varint_len(tag.len() as u64) + tag.len() + 5;
    let summary_len = 1 + varint_len(value_len as u64) + value_len;
    if wall_time != 0.0 {
        out.push(0x09);
        out.extend_from_slice(&wall_time.to_le_bytes());
    }
    if step != 0 {
        out.push(0x10);
        put_varint(out, step as u64);
    }
    out.push(0x2a);
    put_varint(out, summary_len as u64);
    out.push(0x0a);
    put_varint(out, value_len as u64);
    out.push(0x0a);
    put_varint(out, tag.len() as u64);
    out.extend_from_slice(tag.as_bytes());
    out.push(0x15);
    out.extend_from_slice(&value.to_le_bytes());
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Text for the text plugin: a rank-0 string tensor (markdown is rendered).
pub fn text(tag: &str, text: &str) -> Value {
    Value {
        tag: tag.to_string(),
        metadata: plugin("text", data_class::TENSOR),
        value: Some(V::Tensor(Box::new(TensorProto {
            dtype: dtype::STRING,
            tensor_shape: Some(TensorShapeProto::default()),
            string_val: vec![text.as_bytes().to_vec()],
            ..Default::default()
        }))),
        ..Default::default()
    }
}

/// An encoded image as a legacy `Summary.Image` (read by every TensorBoard version).
pub fn image(tag: &str, encoded: Vec<u8>) -> Value {
    let (width, height) = image_size(&encoded).unwrap_or((0, 0));
    Value {
        tag: tag.to_string(),
        value: Some(V::Image(Box::new(Image {
            height: height as i32,
            width: width as i32,
            colorspace: 4,
            encoded_image_string: encoded,
        }))),
        ..Default::default()
    }
}

/// A histogram as a legacy `histo`: `counts[i]` values in `(limits[i-1], limits[i]]`, the first bucket from
/// `first_lower` when known (else its upper edge stands in, and the first bucket has no width).
pub fn histogram(tag: &str, limits: &[f64], counts: &[f64], first_lower: Option<f64>) -> Value {
    let used: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] != 0.0).collect();
    let lower = |i: usize| match i {
        0 => first_lower.unwrap_or(limits[0]),
        _ => limits[i - 1],
    };
    let (min, max) = match (used.first(), used.last()) {
        (Some(&a), Some(&b)) if b < limits.len() => (lower(a), limits[b]),
        _ => (0.0, 0.0),
    };
    Value {
        tag: tag.to_string(),
        value: Some(V::Histo(Box::new(HistogramProto {
            min,
            max,
            num: counts.iter().sum(),
            bucket_limit: limits.to_vec(),
            bucket: counts.to_vec(),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

/// Width and height of a PNG, GIF or JPEG from its header.
pub fn image_size(b: &[u8]) -> Option<(u32, u32)> {
    let be32 = |i: usize| Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let be16 = |i: usize| Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?) as u32);
    let le16 = |i: usize| Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?) as u32);
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some((be32(16)?, be32(20)?));
    }
    if b.starts_with(b"GIF8") {
        return Some((le16(6)?, le16(8)?));
    }
    if !b.starts_with(&[0xff, 0xd8]) {
        return None;
    }
    let mut i = 2;
    while i + 9 < b.len() {
        if b[i] != 0xff {
            return None;
        }
        let marker = b[i + 1];
        let len = be16(i + 2)? as usize;
        if (0xc0..=0xcf).contains(&marker) && ![0xc4, 0xc8, 0xcc].contains(&marker) {
            return Some((be16(i + 7)?, be16(i + 5)?));
        }
        i += 2 + len;
    }
    None
}

/// A summary value understood as one of the kinds flightlog stores.
#[derive(Clone, Debug, PartialEq)]
pub enum Datum {
    Scalar(f64),
    Text(String),
    /// Encoded image bytes (several for an image-plugin tensor holding a batch).
    Images(Vec<Vec<u8>>),
    /// Upper bucket edges and counts, and the first bucket's lower edge when the file gives one.
    Histogram {
        limits: Vec<f64>,
        counts: Vec<f64>,
        lower: Option<f64>,
    },
    /// A session's hyperparameters (the hparams plugin): name → value as text, the run's params.
    Params(BTreeMap<String, String>),
    /// Anything else (audio, graphs, unknown plugins): skipped by importers.
    Unsupported(&'static str),
}

/// Interprets summary values, remembering each tag's plugin (writers send metadata only with the first value).
#[derive(Debug, Default)]
pub struct ValueDecoder {
    plugins: HashMap<String, String>,
}

impl ValueDecoder {
    /// A decoder that already knows these tags' plugins (kept by a caller that resumes a file mid-way).
    pub fn with_plugins(plugins: HashMap<String, String>) -> Self {
        ValueDecoder { plugins }
    }

    /// Each tag's plugin seen so far.
    pub fn plugins(&self) -> &HashMap<String, String> {
        &self.plugins
    }

    pub fn decode(&mut self, v: &Value) -> Datum {
        if let Some(p) = v.metadata.as_ref().and_then(|m| m.plugin_data.as_ref()) {
            if !p.plugin_name.is_empty() {
                self.plugins.insert(v.tag.clone(), p.plugin_name.clone());
            }
        }
        let plugin = self.plugins.get(&v.tag).map(String::as_str).unwrap_or("");
        if plugin == "hparams" {
            return hparams(v);
        }
        if let Some(why) = unsupported_plugin(plugin) {
            return Datum::Unsupported(why);
        }
        match &v.value {
            Some(V::SimpleValue(x)) => Datum::Scalar(*x as f64),
            Some(V::Image(img)) => Datum::Images(vec![img.encoded_image_string.clone()]),
            Some(V::Histo(h)) => Datum::Histogram {
                limits: h.bucket_limit.clone(),
                counts: h.bucket.clone(),
                // An empty histogram's min is 0 by default, not an edge.
                lower: (!h.bucket.is_empty() && h.min.is_finite()).then_some(h.min),
            },
            Some(V::Tensor(t)) => decode_tensor(plugin, t),
            Some(V::Audio(_)) => Datum::Unsupported("audio"),
            Some(V::ObsoleteOldStyleHistogram(_)) => Datum::Unsupported("old-style histogram"),
            None => Datum::Unsupported("empty value"),
        }
    }
}

/// A session's hyperparameters from an hparams value's plugin content (where the plugin keeps them, whatever
/// the value holds). Its other data (the experiment's config, a session's end) is skipped.
fn hparams(v: &Value) -> Datum {
    let content = v
        .metadata
        .as_ref()
        .and_then(|m| m.plugin_data.as_ref())
        .map_or(&[][..], |p| &p.content[..]);
    match HParamsPluginData::decode(content) {
        Ok(HParamsPluginData {
            session_start_info: Some(session),
            ..
        }) => Datum::Params(
            session
                .hparams
                .into_iter()
                .filter_map(|(name, v)| Some((name, param_text(v.kind?)?)))
                .collect(),
        ),
        Ok(_) => Datum::Unsupported("hparams plugin (experiment config or session end)"),
        Err(_) => Datum::Unsupported("malformed hparams plugin data"),
    }
}

/// A hyperparameter's value as a param: a whole number without a fraction (TensorBoard keeps every number as
/// a double, so an `int` batch size of 32 reads as 32, not 32.0), a boolean as Python writes it (as MLflow's
/// `log_param(True)` stores it). Nulls, structs and lists have no param form.
fn param_text(kind: proto_value::Kind) -> Option<String> {
    use proto_value::Kind;
    match kind {
        Kind::NumberValue(x) if x.fract() == 0.0 && x.abs() < 1e15 => Some(format!("{}", x as i64)),
        Kind::NumberValue(x) => Some(x.to_string()),
        Kind::StringValue(s) => Some(s),
        Kind::BoolValue(b) => Some(if b { "True" } else { "False" }.to_string()),
        Kind::NullValue(_) | Kind::StructValue(_) | Kind::ListValue(_) => None,
    }
}

/// Why values of a plugin that flightlog has no kind for are skipped (named, so an importer's summary says
/// which plugin's values it left out rather than what their summary value looked like).
fn unsupported_plugin(plugin: &str) -> Option<&'static str> {
    Some(match plugin {
        "pr_curves" => "pr_curves plugin (precision-recall curves)",
        "audio" => "audio",
        "mesh" => "mesh plugin (3D meshes)",
        "custom_scalars" => "custom_scalars plugin (dashboard layout)",
        "projector" => "projector plugin (embeddings)",
        "graph_run_metadata" | "graph_run_metadata_graph" | "graph_keras_model" => "graph plugin",
        _ => return None,
    })
}

fn decode_tensor(plugin: &str, t: &TensorProto) -> Datum {
    match plugin {
        "images" => match t.string_val.get(2..) {
            Some(imgs) if t.dtype == dtype::STRING && !imgs.is_empty() => {
                Datum::Images(imgs.to_vec())
            }
            _ => Datum::Unsupported("malformed image tensor"),
        },
        "text" => text_tensor(t),
        "histograms" => histogram_tensor(t),
        _ => match (numbers(t), dims(t).is_empty()) {
            (Some(v), true) if v.len() == 1 => Datum::Scalar(v[0]),
            _ if t.dtype == dtype::STRING && plugin.is_empty() => text_tensor(t),
            _ => Datum::Unsupported("tensor"),
        },
    }
}

fn dims(t: &TensorProto) -> Vec<i64> {
    t.tensor_shape
        .as_ref()
        .map(|s| s.dim.iter().map(|d: &Dim| d.size).collect())
        .unwrap_or_default()
}

/// The values of a float or double tensor, from `tensor_content` or the typed fields.
fn numbers(t: &TensorProto) -> Option<Vec<f64>> {
    let c = &t.tensor_content;
    match t.dtype {
        dtype::FLOAT if !c.is_empty() => le_values(c, |b: [u8; 4]| f32::from_le_bytes(b) as f64),
        dtype::DOUBLE if !c.is_empty() => le_values(c, f64::from_le_bytes),
        dtype::FLOAT => Some(t.float_val.iter().map(|&x| x as f64).collect()),
        dtype::DOUBLE => Some(t.double_val.clone()),
        _ => None,
    }
}

/// Packed little-endian values; `None` if the length is not a whole number of them.
fn le_values<const N: usize>(c: &[u8], f: impl Fn([u8; N]) -> f64) -> Option<Vec<f64>> {
    let chunks = c.chunks_exact(N);
    if !chunks.remainder().is_empty() {
        return None;
    }
    Some(chunks.map(|b| f(b.try_into().unwrap_or([0; N]))).collect())
}

/// A string tensor: one string as is; a vector as lines; a matrix as a markdown table.
fn text_tensor(t: &TensorProto) -> Datum {
    if t.dtype != dtype::STRING {
        return Datum::Unsupported("non-string text tensor");
    }
    let s: Vec<String> = t
        .string_val
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let d = dims(t);
    if d.len() == 2 && d[1] > 0 && s.len() as i64 == d[0] * d[1] {
        let rows: Vec<Vec<String>> = s.chunks(d[1] as usize).map(<[String]>::to_vec).collect();
        return Datum::Text(markdown_table(&rows));
    }
    Datum::Text(s.join("\n"))
}

fn histogram_tensor(t: &TensorProto) -> Datum {
    let d = dims(t);
    match numbers(t) {
        Some(v) if d.len() == 2 && d[1] == 3 && v.len() as i64 == d[0] * 3 => Datum::Histogram {
            limits: v.chunks_exact(3).map(|b| b[1]).collect(),
            counts: v.chunks_exact(3).map(|b| b[2]).collect(),
            lower: v.first().copied().filter(|x| x.is_finite()),
        },
        Some(v) if v.is_empty() => Datum::Histogram {
            limits: vec![],
            counts: vec![],
            lower: None,
        },
        _ => Datum::Unsupported("malformed histogram tensor"),
    }
}

/// A markdown table whose first row is the header; `|` and newlines in cells are escaped.
pub fn markdown_table(rows: &[Vec<String>]) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let line = |r: &[String]| {
        let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
        format!("| {} |", cells.join(" | "))
    };
    let Some(head) = rows.first() else {
        return String::new();
    };
    let mut out = vec![line(head), format!("|{}", "---|".repeat(head.len()))];
    out.extend(rows[1..].iter().map(|r| line(r)));
    out.join("\n")
}
