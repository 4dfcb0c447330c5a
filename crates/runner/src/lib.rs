//! Script runs: a command submitted as a tracked run, from snapshot to outcome, on a pluggable compute target.
//!
//! The lifecycle ([`lifecycle::submit`]) is Queued → Preparing (snapshot, properties) → Running (live
//! stdout/stderr, `./logs` synced) → Finalizing (`./outputs` uploaded) → Completed / Failed / Canceled. Where the
//! command runs is a [`target::ComputeTarget`] (a local process group today; a cluster scheduler can follow), and
//! what the lifecycle records goes through a [`tracker::Tracker`] (the flightlog client, or a fake in tests).

pub mod capture;
pub mod error;
pub mod folders;
pub mod lifecycle;
pub mod props;
pub mod signals;
pub mod snapshot;
pub mod sse;
pub mod sweep;
pub mod target;
pub mod tracker;
pub mod wait;
pub mod workdir;

pub use error::RunnerError;
pub use lifecycle::{submit, Finished, Submission};
pub use snapshot::{SnapshotLimits, SNAPSHOT_PREFIX};
pub use target::{ComputeTarget, JobExit, LocalProcess};
pub use tracker::Tracker;
