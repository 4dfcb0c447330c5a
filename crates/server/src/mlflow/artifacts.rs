//! The proxied artifact API (`mlflow-artifacts:/`), served from the runs' own artifact storage.

use super::artifact_roots::{names_root, ArtifactRoots};
use super::error::{MlError, MlResult};
use super::models;
use super::runs::find;
use super::{blocking, empty, Req};
use crate::artifacts::{content_type, file_response, store_upload};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use flightlog_model::{validate, ArtifactInfo, Error, ExperimentId, RunId};
use flightlog_store::{FileOwner, Store};
use serde_json::{json, Value};

/// `<exp>/<run>/artifacts/<path>` is the run's own artifact storage (the same files the native API serves);
/// `<exp>/models/<model>/artifacts/<path>` a logged model's files, which the store keeps apart from every
/// run's (a model may have no run, and its files are not its source run's artifacts, as on MLflow 3).
pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for base in [
        "/api/2.0/mlflow-artifacts/artifacts",
        "/ajax-api/2.0/mlflow-artifacts/artifacts",
    ] {
        r = r.route(base, get(list)).route(
            &format!("{base}/{{*path}}"),
            get(download).put(upload).delete(remove),
        );
    }
    r
}

/// `artifacts/list` under `/api/2.0/mlflow` (the UI's listing, by run id rather than by artifact path).
pub fn api_routes() -> Router<AppState> {
    Router::new().route("/artifacts/list", get(list_by_run))
}

#[derive(serde::Deserialize, Default)]
struct ListReq {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    run_uuid: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

/// One level under `path`, with paths relative to the run's artifact root, as MLflow's ListArtifacts answers.
async fn list_by_run(State(st): State<AppState>, Req(r): Req<ListReq>) -> MlResult<Json<Value>> {
    let id = super::runs::run_id(r.run_id.as_deref(), r.run_uuid.as_deref())?;
    let prefix = match r.path.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => Some(validate::artifact_path(p)?),
        None => None,
    };
    let out = blocking(move || {
        let run = find(st.store.as_ref(), &id)?;
        let items = match st.store.list_artifacts(&id, prefix.as_deref(), false) {
            Ok(items) => items,
            Err(Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let files: Vec<Value> = items
            .iter()
            .filter(|i| prefix.as_deref() != Some(i.path.as_str()))
            .map(|i| file_info(&i.path, i))
            .collect();
        let root_uri = ArtifactRoots::new(st.store.as_ref()).run_uri(&run);
        Ok(json!({ "root_uri": root_uri, "files": files }))
    })
    .await?;
    Ok(Json(out))
}

/// A listed file or folder as MLflow's FileInfo: a size for files, left out when 0 (proto3 omits zeros, so the
/// client reads `file_size` None for an empty file there).
fn file_info(path: &str, item: &ArtifactInfo) -> Value {
    match item.size.filter(|&size| !item.is_dir && size > 0) {
        Some(size) => json!({ "path": path, "is_dir": false, "file_size": size }),
        None => json!({ "path": path, "is_dir": item.is_dir }),
    }
}

/// Where a proxied path lives: a run's or a model's files and the path inside them (None: the root).
struct Target {
    owner: FileOwner,
    path: Option<String>,
}

/// Resolves `<prefix>/<run>/artifacts[/p]` or `<prefix>/models/<id>/artifacts[/p]`, where `<prefix>` is the
/// path of the run's or model's experiment root under `mlflow-artifacts:` (its id, unless the experiment was
/// created with an `mlflow-artifacts:/...` location of its own). A path that would escape is a 400; one that
/// names no run or model under that root a 404.
fn resolve(store: &dyn Store, raw: &str) -> MlResult<Target> {
    let norm = validate::artifact_path(raw)?;
    let parts: Vec<&str> = norm.split('/').collect();
    let roots = ArtifactRoots::new(store);
    let mut missing = None;
    for at in 1..parts.len() {
        match owner_at(store, &parts, at) {
            None => {}
            Some(Err(e)) if e.status() == StatusCode::NOT_FOUND => {
                missing.get_or_insert(e);
            }
            Some(Err(e)) => return Err(e),
            Some(Ok((owner, experiment, rest))) => {
                let prefix = parts[..at].join("/");
                if names_root(&prefix, &roots.root(experiment)) {
                    let path = (!rest.is_empty()).then(|| rest.join("/"));
                    return Ok(Target { owner, path });
                }
            }
        }
    }
    Err(missing.unwrap_or_else(|| {
        MlError::not_found(format!(
            "No artifact location '{raw}': expected <experiment>/<run>/artifacts/<path>"
        ))
    }))
}

/// The run or model whose files `parts[at..]` names (`<run>/artifacts/...` or `models/<id>/artifacts/...`),
/// its experiment and the path inside its files; None where the parts have neither shape.
fn owner_at<'p>(
    store: &dyn Store,
    parts: &'p [&'p str],
    at: usize,
) -> Option<MlResult<(FileOwner, ExperimentId, &'p [&'p str])>> {
    match &parts[at..] {
        ["models", model, "artifacts", rest @ ..] => Some(
            models::experiment_of(store, model)
                .map(|exp| (FileOwner::Model(model.to_string()), exp, rest)),
        ),
        [run, "artifacts", rest @ ..] => {
            let run: RunId = run.parse().ok()?;
            Some(find(store, &run).map(|r| (FileOwner::Run(run), r.experiment_id, rest)))
        }
        _ => None,
    }
}

async fn list(State(st): State<AppState>, RawQuery(raw): RawQuery) -> MlResult<Json<Value>> {
    let q = crate::extract::Query::parse(raw);
    let Some(path) = q.get("path").filter(|p| !p.is_empty()).map(str::to_string) else {
        return Ok(empty());
    };
    let files = blocking(move || {
        let t = resolve(st.store.as_ref(), &path)?;
        let items = match st.store.list_files(&t.owner, t.path.as_deref(), false) {
            Ok(items) => items,
            Err(Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(items
            .iter()
            .filter(|i| t.path.as_deref() != Some(i.path.as_str()))
            .map(|i| file_info(i.path.rsplit('/').next().unwrap_or(&i.path), i))
            .collect::<Vec<Value>>())
    })
    .await?;
    Ok(Json(if files.is_empty() {
        json!({})
    } else {
        json!({ "files": files })
    }))
}

/// The file named by the path (a folder or the artifact root is not a file).
fn file_target(store: &dyn Store, raw: &str) -> MlResult<(FileOwner, String)> {
    let t = resolve(store, raw)?;
    let path = t
        .path
        .ok_or_else(|| MlError::invalid(format!("'{raw}' names a folder, not a file")))?;
    Ok((t.owner, path))
}

async fn download(State(st): State<AppState>, Path(raw): Path<String>) -> MlResult<Response> {
    let ct = content_type(&raw);
    let (info, reader) = blocking(move || {
        let (owner, path) = file_target(st.store.as_ref(), &raw)?;
        Ok(st.store.open_file(&owner, &path)?)
    })
    .await?;
    Ok(file_response(ct, info.size, reader))
}

/// Streams the body into the run's or model's storage, counted against the artifact limit like native uploads.
async fn upload(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> MlResult<Json<Value>> {
    let store = st.store.clone();
    let (owner, path) = blocking(move || file_target(store.as_ref(), &raw)).await?;
    let model = match &owner {
        FileOwner::Model(id) => Some(id.clone()),
        FileOwner::Run(_) => None,
    };
    store_upload(st.clone(), owner, path, &headers, body).await?;
    if let Some(id) = model {
        blocking(move || no_orphan(st.store.as_ref(), &id)).await?;
    }
    Ok(empty())
}

/// After an upload to a model: if the model was deleted meanwhile (its files with it), the file just placed
/// is removed as well and the upload answers 404; a delete after this check removes it itself.
fn no_orphan(store: &dyn Store, model: &str) -> MlResult<()> {
    if store.get_document(models::MODEL_DOC, model)?.is_none() {
        store.delete_model_files(model)?;
        return Err(models::missing(model));
    }
    Ok(())
}

async fn remove(State(st): State<AppState>, Path(raw): Path<String>) -> MlResult<Json<Value>> {
    blocking(move || {
        let t = resolve(st.store.as_ref(), &raw)?;
        let path = t
            .path
            .ok_or_else(|| MlError::invalid("the artifact root cannot be deleted"))?;
        // As MLflow's proxy: deleting what is not there succeeds (`mlflow gc` may delete a path twice).
        match st.store.delete_file(&t.owner, &path) {
            Err(Error::NotFound { .. }) => Ok(()),
            done => Ok(done?),
        }
    })
    .await?;
    Ok(empty())
}
