//! Where MLflow clients put an experiment's files: its artifact root, under which a run's artifact URI is
//! `<root>/<run>/artifacts` and a logged model's `<root>/models/<id>/artifacts` (fixed when the model is
//! created), as MLflow builds them.

use flightlog_model::{Experiment, ExperimentId, Run};
use flightlog_store::Store;
use std::cell::RefCell;
use std::collections::HashMap;

/// The root of an experiment created without an `artifact_location`: this server's own storage, through the
/// proxied artifact API.
fn default_root(experiment: ExperimentId) -> String {
    format!("mlflow-artifacts:/{experiment}")
}

/// An experiment's `artifact_location` as MLflow shows it: as it was given, else the default root.
pub fn artifact_location(e: &Experiment) -> String {
    e.artifact_location
        .clone()
        .unwrap_or_else(|| default_root(e.id))
}

/// The root that URIs are built under: the location without a trailing `/`, so none is doubled.
pub fn experiment_root(e: &Experiment) -> String {
    artifact_location(e).trim_end_matches('/').to_string()
}

/// The path under the proxied artifact API at which this server serves `root`, if it serves it: roots of
/// the `mlflow-artifacts:` scheme without a host (`mlflow-artifacts:/x`, `mlflow-artifacts:///x` → `x`).
/// Files under any other root (s3://, a path...) are written by the clients themselves, not through here.
fn proxied_prefix(root: &str) -> Option<&str> {
    let rest = root.strip_prefix("mlflow-artifacts:")?;
    let path = match rest.strip_prefix("//") {
        Some(after) => after.strip_prefix('/')?,
        None => rest,
    };
    Some(path.trim_matches('/'))
}

/// Whether a request's `prefix` names `root` ([`proxied_prefix`]). A root with a %-escape arrives both ways:
/// the client puts the root's path into its URLs as written (`mlflow-artifacts:/my%20dir` → `/my%20dir/..`),
/// which a path reads decoded (`my dir`) but a `?path=` query (listing) as written. Both are the same files.
pub fn names_root(prefix: &str, root: &str) -> bool {
    proxied_prefix(root).is_some_and(|p| {
        p == prefix || percent_encoding::percent_decode_str(p).decode_utf8_lossy() == prefix
    })
}

/// Experiments' roots, each read from the store once per request (a search page shows many runs of few
/// experiments). A root that cannot be read is the default one: the location is then unknown, and the
/// server's own storage is where the run's files would be.
pub struct ArtifactRoots<'s> {
    store: &'s dyn Store,
    known: RefCell<HashMap<ExperimentId, String>>,
}

impl<'s> ArtifactRoots<'s> {
    pub fn new(store: &'s dyn Store) -> Self {
        ArtifactRoots {
            store,
            known: RefCell::default(),
        }
    }

    pub fn root(&self, experiment: ExperimentId) -> String {
        if let Some(root) = self.known.borrow().get(&experiment) {
            return root.clone();
        }
        match self.store.get_experiment(experiment) {
            Ok(e) => {
                let root = experiment_root(&e);
                self.known.borrow_mut().insert(experiment, root.clone());
                root
            }
            Err(_) => default_root(experiment),
        }
    }

    pub fn run_uri(&self, run: &Run) -> String {
        format!("{}/{}/artifacts", self.root(run.experiment_id), run.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hostless_mlflow_artifacts_roots_are_served_here() {
        assert_eq!(proxied_prefix("mlflow-artifacts:/3"), Some("3"));
        assert_eq!(
            proxied_prefix("mlflow-artifacts:/custom/x/"),
            Some("custom/x")
        );
        assert_eq!(
            proxied_prefix("mlflow-artifacts:///custom/x"),
            Some("custom/x")
        );
        assert_eq!(proxied_prefix("mlflow-artifacts://host/x"), None);
        assert_eq!(proxied_prefix("s3://bucket/x"), None);
        assert_eq!(proxied_prefix("/mnt/x"), None);
    }

    #[test]
    fn an_escaped_root_is_named_as_written_and_decoded() {
        let root = "mlflow-artifacts:/my%20team/x";
        assert!(names_root("my%20team/x", root) && names_root("my team/x", root));
        assert!(!names_root("my%2520team/x", root) && !names_root("my team", root));
        assert!(names_root("3", "mlflow-artifacts:/3") && !names_root("3", "s3://b/3"));
    }
}
