//! TensorBoard event files: TFRecord framing with masked CRC32C, hand-written protobuf messages, a writer that
//! names its files as TensorBoard expects, and a reader that tails a file still being written.

pub mod export;
pub mod fast;
pub mod ingest;
pub mod proto;
pub mod reader;
pub mod record;
pub mod summary;
pub mod writer;

pub use proto::{Event, HistogramProto, Summary, SummaryMetadata, TensorProto};
pub use reader::{
    file_identity, parse_events, read_identity, replaced_since, visit_decoded, visit_events,
    Decoded, EventFileReader, Parsed, RecordError,
};
pub use summary::{Datum, ValueDecoder};
pub use writer::EventWriter;

/// Whether TensorBoard would read this file name as an event file (its basename contains `tfevents`).
pub fn is_event_file_name(name: &str) -> bool {
    name.contains("tfevents")
}
