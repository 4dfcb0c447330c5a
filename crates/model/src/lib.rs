//! The vocabulary of flightlog: ids, experiments, runs, metric kinds, events, and the validation rules that
//! every API (native, MLflow, SDK) shares, so a bad value is rejected the same way whichever door it came in by.

pub mod background;
pub mod entity;
pub mod error;
pub mod ids;
pub mod metric;
pub mod scalar_wire;
pub mod status;
pub mod time;
pub mod validate;

pub use entity::*;
pub use error::{Entity, Error, Result};
pub use ids::{fnv1a128, fnv1a64, ExperimentId, RunId};
pub use metric::*;
pub use status::RunStatus;
pub use time::WallTime;
