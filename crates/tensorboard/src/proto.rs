//! Hand-written prost messages for the parts of TensorBoard's protobufs that event files use (no protoc needed).

/// One record of an event file: a file version, a summary, or a session log, at a wall time and step.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "event::What", tags = "3, 4, 5, 6, 7, 8, 9")]
    pub what: Option<event::What>,
}

pub mod event {
    /// What an [`super::Event`] carries. Graphs and run metadata are kept as opaque bytes (never interpreted).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        #[prost(string, tag = "3")]
        FileVersion(String),
        #[prost(bytes = "vec", tag = "4")]
        GraphDef(Vec<u8>),
        #[prost(message, tag = "5")]
        Summary(super::Summary),
        #[prost(bytes = "vec", tag = "6")]
        LogMessage(Vec<u8>),
        #[prost(message, tag = "7")]
        SessionLog(super::SessionLog),
        #[prost(bytes = "vec", tag = "8")]
        TaggedRunMetadata(Vec<u8>),
        #[prost(bytes = "vec", tag = "9")]
        MetaGraphDef(Vec<u8>),
    }
}

/// Start/stop/checkpoint markers some writers emit.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    #[prost(int32, tag = "1")]
    pub status: i32,
    #[prost(string, tag = "2")]
    pub checkpoint_path: String,
    #[prost(string, tag = "3")]
    pub msg: String,
}

/// A set of tagged values logged at one step.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<summary::Value>,
}

pub mod summary {
    /// One tagged value; `metadata` usually only on the first value of a tag.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(string, tag = "1")]
        pub tag: String,
        #[prost(string, tag = "7")]
        pub node_name: String,
        #[prost(message, optional, boxed, tag = "9")]
        pub metadata: Option<Box<super::SummaryMetadata>>,
        #[prost(oneof = "value::Value", tags = "2, 3, 4, 5, 6, 8")]
        pub value: Option<value::Value>,
    }

    pub mod value {
        /// The value itself; the large messages are boxed so that a decoded scalar stays small.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(float, tag = "2")]
            SimpleValue(f32),
            #[prost(bytes = "vec", tag = "3")]
            ObsoleteOldStyleHistogram(Vec<u8>),
            #[prost(message, boxed, tag = "4")]
            Image(Box<super::Image>),
            #[prost(message, boxed, tag = "5")]
            Histo(Box<super::super::HistogramProto>),
            #[prost(message, boxed, tag = "6")]
            Audio(Box<super::Audio>),
            #[prost(message, boxed, tag = "8")]
            Tensor(Box<super::super::TensorProto>),
        }
    }

    /// An encoded (PNG, JPEG, GIF) image. colorspace: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        #[prost(int32, tag = "1")]
        pub height: i32,
        #[prost(int32, tag = "2")]
        pub width: i32,
        #[prost(int32, tag = "3")]
        pub colorspace: i32,
        #[prost(bytes = "vec", tag = "4")]
        pub encoded_image_string: Vec<u8>,
    }

    /// Encoded audio (kept so such values decode; not imported).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Audio {
        #[prost(float, tag = "1")]
        pub sample_rate: f32,
        #[prost(int64, tag = "2")]
        pub num_channels: i64,
        #[prost(int64, tag = "3")]
        pub length_frames: i64,
        #[prost(bytes = "vec", tag = "4")]
        pub encoded_audio_string: Vec<u8>,
        #[prost(string, tag = "5")]
        pub content_type: String,
    }
}

/// Which plugin a value belongs to and how to read its tensor.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
    #[prost(string, tag = "2")]
    pub display_name: String,
    #[prost(string, tag = "3")]
    pub summary_description: String,
    #[prost(int32, tag = "4")]
    pub data_class: i32,
}

/// The plugin ("scalars", "images", "text", "histograms"...) and its own content bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// A histogram: `bucket[i]` values fell in `(bucket_limit[i-1], bucket_limit[i]]`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramProto {
    #[prost(double, tag = "1")]
    pub min: f64,
    #[prost(double, tag = "2")]
    pub max: f64,
    #[prost(double, tag = "3")]
    pub num: f64,
    #[prost(double, tag = "4")]
    pub sum: f64,
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

/// A tensor, either packed in `tensor_content` (little-endian) or spelled out in the typed `*_val` fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    #[prost(int32, tag = "3")]
    pub version_number: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub tensor_content: Vec<u8>,
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    #[prost(double, repeated, tag = "6")]
    pub double_val: Vec<f64>,
    #[prost(int32, repeated, tag = "7")]
    pub int_val: Vec<i32>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
    #[prost(int64, repeated, tag = "10")]
    pub int64_val: Vec<i64>,
    #[prost(bool, repeated, tag = "11")]
    pub bool_val: Vec<bool>,
    #[prost(int32, repeated, tag = "13")]
    pub half_val: Vec<i32>,
}

/// A tensor's dimensions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<tensor_shape_proto::Dim>,
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

pub mod tensor_shape_proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(int64, tag = "1")]
        pub size: i64,
        #[prost(string, tag = "2")]
        pub name: String,
    }
}

/// TensorFlow's DataType numbers used here.
pub mod dtype {
    pub const FLOAT: i32 = 1;
    pub const DOUBLE: i32 = 2;
    pub const INT32: i32 = 3;
    pub const UINT8: i32 = 4;
    pub const STRING: i32 = 7;
    pub const INT64: i32 = 9;
    pub const BOOL: i32 = 10;
    pub const HALF: i32 = 19;
}

/// SummaryMetadata.data_class values.
pub mod data_class {
    pub const SCALAR: i32 = 1;
    pub const TENSOR: i32 = 2;
    pub const BLOB_SEQUENCE: i32 = 3;
}

/// The hparams plugin's content (`plugin_data.content` of its values): an experiment's config, a session's
/// start (its hyperparameter values) or its end. Only the start is read; the other two are skipped fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(message, optional, tag = "3")]
    pub session_start_info: Option<SessionStartInfo>,
}

/// A session's (a run's) hyperparameter values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionStartInfo {
    #[prost(btree_map = "string, message", tag = "1")]
    pub hparams: std::collections::BTreeMap<String, ProtoValue>,
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// `google.protobuf.Value`: a hyperparameter's value. Structs and lists are kept as opaque bytes (TensorBoard's
/// hparams API only logs numbers, strings and booleans).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoValue {
    #[prost(oneof = "proto_value::Kind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<proto_value::Kind>,
}

pub mod proto_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(int32, tag = "1")]
        NullValue(i32),
        #[prost(double, tag = "2")]
        NumberValue(f64),
        #[prost(string, tag = "3")]
        StringValue(String),
        #[prost(bool, tag = "4")]
        BoolValue(bool),
        #[prost(bytes = "vec", tag = "5")]
        StructValue(Vec<u8>),
        #[prost(bytes = "vec", tag = "6")]
        ListValue(Vec<u8>),
    }
}
