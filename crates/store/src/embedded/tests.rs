//! Behaviour tests of the embedded store through the `Store` trait.

use super::EmbeddedStore;
use crate::{FileOwner, Store};
use flightlog_model::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

fn store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path()).unwrap();
    (dir, s)
}

fn run(s: &EmbeddedStore) -> RunId {
    s.create_run(NewRun::default()).unwrap().id
}

fn scalars(name: &str, values: &[f64]) -> ScalarWrite {
    ScalarWrite {
        name: name.into(),
        values: values.iter().map(|&v| F64(v)).collect(),
        ..Default::default()
    }
}

fn batch(scalars: Vec<ScalarWrite>) -> Batch {
    Batch {
        scalars,
        ..Default::default()
    }
}

fn bits(v: &[F64]) -> Vec<u64> {
    v.iter().map(|x| x.0.to_bits()).collect()
}

fn all() -> ReadRange {
    ReadRange::default()
}

// --- experiments & runs ----------------------------------------------------------------------------------

#[test]
fn a_lean_listing_keeps_only_the_named_params_tags_and_metrics() {
    let (_d, s) = store();
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let id = s
        .create_run(NewRun {
            params: map(&[("lr", "0.1"), ("a\"b", "q\"v"), ("epochs", "3")]),
            tags: map(&[("team", "x"), ("note", "n")]),
            properties: map(&[("p", "1")]),
            ..Default::default()
        })
        .unwrap()
        .id;
    s.write_batch(
        &id,
        batch(vec![scalars("loss", &[0.5, 0.25]), scalars("acc", &[0.9])]),
    )
    .unwrap();
    let strings = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    let lean = |params: &[&str], tags: &[&str], metrics: &[&str]| {
        let q = RunQuery {
            only_keys: Some(RunKeys {
                params: strings(params),
                tags: strings(tags),
                metrics: strings(metrics),
            }),
            ..Default::default()
        };
        s.list_runs(&q).unwrap().items.remove(0)
    };
    let run = lean(&["lr", "a\"b", "missing"], &["team"], &["loss", "missing"]);
    assert_eq!(run.params, map(&[("lr", "0.1"), ("a\"b", "q\"v")]));
    assert_eq!(run.tags, map(&[("team", "x")]));
    assert!(run.properties.is_empty());
    assert_eq!(run.metrics.len(), 1, "only the named metric that exists");
    assert_eq!(run.metrics[0].name, "loss");
    assert_eq!(run.metrics[0].last_value, serde_json::json!(0.25));
    assert_eq!(run.metrics[0].last_step, Some(1));
    let full = s.list_metrics(&id).unwrap();
    assert_eq!(
        Some(&run.metrics[0]),
        full.iter().find(|m| m.name == "loss"),
        "the joined summary is the series' whole summary"
    );
    let run = lean(&[], &[], &[]);
    assert!(run.params.is_empty() && run.tags.is_empty() && run.metrics.is_empty());
    let full = s.list_runs(&RunQuery::default()).unwrap().items.remove(0);
    assert_eq!(full.params.len(), 3);
    assert_eq!(full.id, id);
}

#[test]
fn runs_are_listed_by_param_values() {
    let (_d, s) = store();
    let with_param = |v: &str| {
        s.create_run(NewRun {
            params: [("p".to_string(), v.to_string())].into(),
            ..Default::default()
        })
        .unwrap()
        .id
    };
    let (a, _b, quoted) = (with_param("a"), with_param("b"), with_param("it's \"x\""));
    let listed = |v: &str| {
        let q = RunQuery {
            params: [("p".to_string(), Some(v.to_string()))].into(),
            ..Default::default()
        };
        s.list_runs(&q)
            .unwrap()
            .items
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(listed("a"), vec![a]);
    assert_eq!(listed("it's \"x\""), vec![quoted]);
    assert!(listed("c").is_empty());
}

#[test]
fn runs_are_listed_by_param_keys_of_any_spelling() {
    let (_d, s) = store();
    // Keys a JSON path must quote (dots, brackets, spaces, `$`), keys it cannot hold (quote, backslash).
    let keys = [
        "opt.lr", "a[0]", "x y", "$.p", "sl/ash", "q\"k", "b\\s", "é",
    ];
    let ids: Vec<RunId> = keys
        .iter()
        .map(|k| {
            let params = [
                (k.to_string(), "v".to_string()),
                ("other".into(), k.to_string()),
            ];
            s.create_run(NewRun {
                params: params.into(),
                ..Default::default()
            })
            .unwrap()
            .id
        })
        .collect();
    let listed = |params: BTreeMap<String, Option<String>>| {
        let q = RunQuery {
            params,
            ..Default::default()
        };
        let runs = s.list_runs(&q).unwrap().items;
        runs.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    for (k, id) in keys.iter().zip(&ids) {
        let only = std::slice::from_ref(id);
        let (key, value) = (k.to_string(), Some("v".to_string()));
        assert_eq!(listed([(key.clone(), value)].into()), only, "{k} = v");
        assert_eq!(listed([(key.clone(), None)].into()), only, "{k} is set");
        let wrong = Some("w".to_string());
        assert!(listed([(key, wrong)].into()).is_empty(), "{k} = w");
        let by_other = [("other".to_string(), Some(k.to_string()))].into();
        assert_eq!(listed(by_other), only, "other = {k}");
    }
    assert!(
        listed([("opt".to_string(), None)].into()).is_empty(),
        "a prefix of a dotted key"
    );
}

#[test]
fn runs_are_read_by_ids_in_the_order_given() {
    let (_d, s) = store();
    let ids: Vec<RunId> = (0..4).map(|_| run(&s)).collect();
    let wanted = vec![ids[2].clone(), RunId::new(), ids[0].clone(), ids[3].clone()];
    let got: Vec<RunId> = s
        .get_runs(&wanted)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(got, vec![ids[2].clone(), ids[0].clone(), ids[3].clone()]);
    assert!(s.get_runs(&[]).unwrap().is_empty());
}

#[test]
fn default_experiment_exists_and_experiments_work() {
    let (_d, s) = store();
    let d = s.get_experiment(ExperimentId::DEFAULT).unwrap();
    assert_eq!(d.name, "Default");
    let e = s
        .create_experiment(NewExperiment {
            name: "vision".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(e.id, ExperimentId(1));
    assert!(matches!(
        s.create_experiment(NewExperiment {
            name: "vision".into(),
            ..Default::default()
        }),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(s.get_experiment_by_name("vision").unwrap().id, e.id);
    assert!(matches!(
        s.get_experiment(ExperimentId(99)),
        Err(Error::NotFound {
            entity: Entity::Experiment,
            ..
        })
    ));
    s.create_run(NewRun {
        experiment_id: e.id,
        ..Default::default()
    })
    .unwrap();
    let patch = ExperimentPatch {
        name: Some("Vision".into()),
        set_tags: [("a".into(), "1".into())].into(),
        ..Default::default()
    };
    let e2 = s.update_experiment(e.id, patch).unwrap();
    assert_eq!(e2.name, "Vision");
    assert_eq!(e2.run_count, 1);
    assert!(e2.last_activity.is_some());
    let listed = s
        .list_experiments(&ExperimentQuery {
            name_contains: Some("visi".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    s.update_experiment(
        e.id,
        ExperimentPatch {
            lifecycle: Some(Lifecycle::Deleted),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        s.list_experiments(&ExperimentQuery::default())
            .unwrap()
            .items
            .len(),
        1
    );
    let with_deleted = ExperimentQuery {
        include_deleted: true,
        ..Default::default()
    };
    assert_eq!(s.list_experiments(&with_deleted).unwrap().items.len(), 2);
    assert!(matches!(
        s.create_run(NewRun {
            experiment_id: e.id,
            ..Default::default()
        }),
        Err(Error::Deleted {
            entity: Entity::Experiment,
            ..
        })
    ));
    assert!(matches!(
        s.create_experiment(NewExperiment {
            name: "Vision".into(),
            ..Default::default()
        }),
        Err(Error::AlreadyExists { .. })
    ));
    // A deleted experiment takes no rename or tag change; a patch that restores it may carry them.
    let rename = |lifecycle| ExperimentPatch {
        name: Some("Vision 2".into()),
        lifecycle,
        ..Default::default()
    };
    assert!(matches!(
        s.update_experiment(e.id, rename(None)),
        Err(Error::Deleted {
            entity: Entity::Experiment,
            ..
        })
    ));
    let untag = ExperimentPatch {
        remove_tags: vec!["a".into()],
        ..Default::default()
    };
    assert!(matches!(
        s.update_experiment(e.id, untag),
        Err(Error::Deleted { .. })
    ));
    assert_eq!(s.get_experiment(e.id).unwrap().name, "Vision");
    let back = s
        .update_experiment(e.id, rename(Some(Lifecycle::Active)))
        .unwrap();
    assert_eq!(
        (back.name.as_str(), back.lifecycle),
        ("Vision 2", Lifecycle::Active)
    );
    let default_gone = ExperimentPatch {
        lifecycle: Some(Lifecycle::Deleted),
        ..Default::default()
    };
    assert!(matches!(
        s.update_experiment(ExperimentId::DEFAULT, default_gone),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn deleting_an_experiment_deletes_its_runs_and_restoring_it_restores_them() {
    let (_d, s) = store();
    let e = s
        .create_experiment(NewExperiment {
            name: "sweep".into(),
            ..Default::default()
        })
        .unwrap();
    let new_run = || {
        s.create_run(NewRun {
            experiment_id: e.id,
            ..Default::default()
        })
        .unwrap()
        .id
    };
    let (kept, gone) = (new_run(), new_run());
    let other = run(&s);
    let lifecycle = |l| ExperimentPatch {
        lifecycle: Some(l),
        ..Default::default()
    };
    let delete = RunPatch {
        lifecycle: Some(Lifecycle::Deleted),
        ..Default::default()
    };
    s.update_run(&gone, delete).unwrap();
    let before = s.get_experiment(e.id).unwrap().last_update_time;
    let tagged = ExperimentPatch {
        set_tags: [("team".into(), "x".into())].into(),
        ..Default::default()
    };
    s.update_experiment(e.id, tagged).unwrap();
    assert_eq!(
        s.get_experiment(e.id).unwrap().last_update_time,
        before,
        "a tag is not an update of the experiment (as on MLflow)"
    );
    std::thread::sleep(std::time::Duration::from_millis(2));
    let same_name = ExperimentPatch {
        name: Some(s.get_experiment(e.id).unwrap().name),
        ..Default::default()
    };
    s.update_experiment(e.id, same_name).unwrap();
    let renamed = s.get_experiment(e.id).unwrap().last_update_time;
    assert!(
        renamed > before,
        "a rename, even to its own name, is an update (as on MLflow)"
    );
    let before = renamed;
    let seen = *s.subscribe().borrow();
    s.update_experiment(e.id, lifecycle(Lifecycle::Deleted))
        .unwrap();
    assert!(s.get_experiment(e.id).unwrap().last_update_time > before);
    assert_eq!(s.get_run(&kept).unwrap().lifecycle, Lifecycle::Deleted);
    assert!(matches!(
        s.append_log(&kept, "stdout", b"x"),
        Err(Error::Deleted { .. })
    ));
    assert_eq!(s.get_run(&other).unwrap().lifecycle, Lifecycle::Active);
    let announced: Vec<_> = s
        .events_since(&EventFilter::default(), seen, 100)
        .unwrap()
        .into_iter()
        .filter_map(|e| e.run_id)
        .collect();
    assert_eq!(
        announced,
        vec![kept.clone()],
        "readers learn of the run's change"
    );
    s.update_experiment(e.id, lifecycle(Lifecycle::Active))
        .unwrap();
    for id in [&kept, &gone] {
        assert_eq!(
            s.get_run(id).unwrap().lifecycle,
            Lifecycle::Active,
            "MLflow restores every run of a restored experiment"
        );
    }
}

#[test]
fn opening_removes_temp_files_a_crashed_upload_left_a_day_ago() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(dir.path()).unwrap());
    let (stale, fresh) = (dir.path().join("tmp/stale"), dir.path().join("tmp/fresh"));
    for f in [&stale, &fresh] {
        std::fs::write(f, b"partial upload").unwrap();
    }
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    drop(EmbeddedStore::open(dir.path()).unwrap());
    assert!(!stale.exists(), "left by a crash");
    assert!(fresh.exists(), "may be another process's upload in flight");
}

/// Temp entries carry their process's id: those of a process that is gone go at the next open, however fresh
/// (a crash loop with retried large uploads filled the disk for a day), folders parked by a delete included;
/// a live process's stay.
#[test]
fn opening_removes_temp_files_of_processes_that_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedStore::open(dir.path()).unwrap());
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let tmp = dir.path().join("tmp");
    let (dead, parked, live) = (
        tmp.join(format!("{}-upload", gone.id())),
        tmp.join(format!("{}-parked", gone.id())),
        tmp.join(format!("{}-upload", std::process::id())),
    );
    std::fs::write(&dead, b"partial upload").unwrap();
    std::fs::create_dir_all(parked.join("a")).unwrap();
    std::fs::write(parked.join("a/f"), b"deleted").unwrap();
    std::fs::write(&live, b"in flight").unwrap();
    drop(EmbeddedStore::open(dir.path()).unwrap());
    assert!(!dead.exists() && !parked.exists(), "left by a crash");
    assert!(live.exists(), "a live process's upload in flight");
}

/// Of creates with one client id racing each other, exactly one is told it made the run (the server answers
/// it 201, the others 200): the check used to be a read before the write, so several could find no run.
#[test]
fn racing_creates_of_one_run_are_told_apart_in_the_write() {
    let (_d, s) = store();
    let new = NewRun {
        id: Some(RunId::new()),
        ..Default::default()
    };
    let made: Vec<bool> = std::thread::scope(|t| {
        let racers: Vec<_> = (0..16)
            .map(|_| t.spawn(|| s.create_run_once(new.clone()).unwrap().1))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(made.iter().filter(|m| **m).count(), 1, "{made:?}");
}

#[test]
fn create_run_defaults_and_idempotency() {
    let (_d, s) = store();
    let r = s
        .create_run(NewRun {
            user: "ann".into(),
            host: "box".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.status, RunStatus::Running);
    assert!(r.start_time.is_some());
    assert_eq!(r.display_name.split('-').count(), 3, "{}", r.display_name);
    assert_eq!((r.user.as_str(), r.host.as_str()), ("ann", "box"));
    let id = RunId::new();
    let new = NewRun {
        id: Some(id.clone()),
        display_name: Some("first".into()),
        ..Default::default()
    };
    let a = s.create_run(new.clone()).unwrap();
    let b = s
        .create_run(NewRun {
            display_name: Some("second".into()),
            ..new.clone()
        })
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(b.display_name, "first");
    let e = s
        .create_experiment(NewExperiment {
            name: "x".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(matches!(
        s.create_run(NewRun {
            experiment_id: e.id,
            ..new
        }),
        Err(Error::AlreadyExists {
            entity: Entity::Run,
            ..
        })
    ));
    let orphan = RunId::new();
    let err = s
        .create_run(NewRun {
            parent_id: Some(orphan.clone()),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("invalid parent_id: no run '{orphan}' exists; a parent must be an existing run")
    );
    let itself = s
        .create_run(NewRun {
            id: Some(orphan.clone()),
            parent_id: Some(orphan.clone()),
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        itself
            .to_string()
            .ends_with("a run cannot be its own parent"),
        "{itself}"
    );
    assert!(matches!(
        s.create_run(NewRun {
            experiment_id: ExperimentId(42),
            ..Default::default()
        }),
        Err(Error::NotFound {
            entity: Entity::Experiment,
            ..
        })
    ));
    let child = s
        .create_run(NewRun {
            parent_id: Some(r.id.clone()),
            status: Some(RunStatus::Queued),
            ..Default::default()
        })
        .unwrap();
    assert!(child.start_time.is_none());
    assert!(matches!(
        s.get_run(&RunId::new()),
        Err(Error::NotFound {
            entity: Entity::Run,
            ..
        })
    ));
}

#[test]
fn status_machine_and_write_once_fields() {
    let (_d, s) = store();
    let id = s
        .create_run(NewRun {
            status: Some(RunStatus::Queued),
            ..Default::default()
        })
        .unwrap()
        .id;
    let r = s
        .update_run(
            &id,
            RunPatch {
                status: Some(RunStatus::Running),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(r.start_time.is_some());
    let props = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    s.update_run(
        &id,
        RunPatch {
            add_properties: props("git", "abc"),
            add_params: props("lr", "0.1"),
            ..Default::default()
        },
    )
    .unwrap();
    // Same value: no-op.
    s.update_run(
        &id,
        RunPatch {
            add_properties: props("git", "abc"),
            ..Default::default()
        },
    )
    .unwrap();
    // A rejected patch changes nothing, not even its valid parts.
    let before = s.get_run(&id).unwrap();
    let err = s
        .update_run(
            &id,
            RunPatch {
                display_name: Some("renamed".into()),
                add_properties: props("git", "def"),
                ..Default::default()
            },
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Conflict { .. }));
    assert!(
        msg.contains("git") && msg.contains("abc") && msg.contains("def"),
        "{msg}"
    );
    let err = s
        .update_run(
            &id,
            RunPatch {
                add_params: props("lr", "0.2"),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("lr"));
    assert_eq!(s.get_run(&id).unwrap(), before);
    let done = s
        .update_run(
            &id,
            RunPatch {
                status: Some(RunStatus::Completed),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(done.end_time.is_some());
    let err = s
        .update_run(
            &id,
            RunPatch {
                status: Some(RunStatus::Running),
                set_tags: props("t", "1"),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::IllegalTransition { .. }));
    assert_eq!(s.get_run(&id).unwrap().tags.len(), 0);
    let failed = s.create_run(NewRun::default()).unwrap().id;
    let end = WallTime(5);
    let r = s
        .update_run(
            &failed,
            RunPatch {
                status: Some(RunStatus::Failed),
                end_time: Some(end),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.end_time, Some(end));
    // An end time for a run that goes on is refused (it showed as ended with a Running status).
    let running = s.create_run(NewRun::default()).unwrap().id;
    let err = s
        .update_run(
            &running,
            RunPatch {
                end_time: Some(end),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "invalid end_time: the run is Running and an end time is for a run that has ended"
        ),
        "{err}"
    );
    assert_eq!(s.get_run(&running).unwrap().end_time, None);
}

#[test]
fn deleted_runs_reject_writes_until_restored() {
    let (_d, s) = store();
    let id = run(&s);
    s.update_run(
        &id,
        RunPatch {
            lifecycle: Some(Lifecycle::Deleted),
            ..Default::default()
        },
    )
    .unwrap();
    let deleted = |r: Result<_>| {
        matches!(
            r,
            Err(Error::Deleted {
                entity: Entity::Run,
                ..
            })
        )
    };
    assert!(deleted(
        s.write_batch(&id, batch(vec![scalars("loss", &[1.0])]))
            .map(|_| ())
    ));
    assert!(deleted(s.append_log(&id, "stdout", b"x").map(|_| ())));
    assert!(deleted(
        s.put_artifact(&id, "a.txt", &mut &b"x"[..]).map(|_| ())
    ));
    assert!(deleted(
        s.update_run(
            &id,
            RunPatch {
                display_name: Some("n".into()),
                ..Default::default()
            }
        )
        .map(|_| ())
    ));
    assert!(s.list_runs(&RunQuery::default()).unwrap().items.is_empty());
    assert_eq!(
        s.list_runs(&RunQuery {
            include_deleted: true,
            ..Default::default()
        })
        .unwrap()
        .items
        .len(),
        1
    );
    s.update_run(
        &id,
        RunPatch {
            lifecycle: Some(Lifecycle::Active),
            ..Default::default()
        },
    )
    .unwrap();
    s.write_batch(&id, batch(vec![scalars("loss", &[1.0])]))
        .unwrap();
}

#[test]
fn list_runs_filters_and_pages() {
    let (_d, s) = store();
    let parent = run(&s);
    let mut ids = vec![parent.clone()];
    for i in 0..24 {
        let new = NewRun {
            parent_id: Some(parent.clone()),
            tags: [("even".to_string(), (i % 2 == 0).to_string())].into(),
            properties: [("i".to_string(), i.to_string())].into(),
            ..Default::default()
        };
        ids.push(s.create_run(new).unwrap().id);
    }
    s.write_batch(&ids[3], batch(vec![scalars("loss", &[0.5, 0.25])]))
        .unwrap();
    let mut seen = Vec::new();
    let mut q = RunQuery {
        limit: Some(7),
        with_metrics: true,
        ..Default::default()
    };
    loop {
        let page = s.list_runs(&q).unwrap();
        assert!(page.items.len() <= 7);
        seen.extend(
            page.items
                .iter()
                .map(|r| (r.created_time, r.id.clone(), r.metrics.len())),
        );
        match page.next_page_token {
            Some(t) => q.page_token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "newest first");
    assert_eq!(seen.iter().find(|x| x.1 == ids[3]).unwrap().2, 1);
    let q = |f: RunQuery| s.list_runs(&f).unwrap().items.len();
    assert_eq!(
        q(RunQuery {
            tags: [("even".into(), Some("true".into()))].into(),
            ..Default::default()
        }),
        12
    );
    assert_eq!(
        q(RunQuery {
            tags: [("even".into(), None)].into(),
            ..Default::default()
        }),
        24
    );
    assert_eq!(
        q(RunQuery {
            properties: [("i".into(), Some("7".into()))].into(),
            ..Default::default()
        }),
        1
    );
    for odd_key in ["\0", "a\u{1}b", "say \"hi\""] {
        assert_eq!(
            q(RunQuery {
                params: [(odd_key.into(), Some("x".into()))].into(),
                tags: [(odd_key.into(), None)].into(),
                ..Default::default()
            }),
            0,
            "a key SQLite's JSON paths cannot hold is looked up another way"
        );
    }
    assert_eq!(
        q(RunQuery {
            top_level_only: true,
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        q(RunQuery {
            parent_id: Some(parent.clone()),
            ..Default::default()
        }),
        24
    );
    assert_eq!(
        q(RunQuery {
            statuses: vec![RunStatus::Completed],
            ..Default::default()
        }),
        0
    );
    assert_eq!(
        q(RunQuery {
            experiment_ids: vec![ExperimentId(0)],
            ..Default::default()
        }),
        25
    );
    let bad = s
        .list_runs(&RunQuery {
            page_token: Some("garbage!".into()),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(bad, Error::InvalidArgument { .. }));
    let run = s.get_run(&ids[3]).unwrap();
    assert_eq!(run.metrics[0].last_value, serde_json::json!(0.25));
}

#[test]
fn listing_ten_thousand_runs() {
    let (_d, s) = store();
    let s = Arc::new(s);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let s = s.clone();
            scope.spawn(move || {
                for _ in 0..1250 {
                    s.create_run(NewRun {
                        tags: [("k".into(), "v".into())].into(),
                        ..Default::default()
                    })
                    .unwrap();
                }
            });
        }
    });
    let t = std::time::Instant::now();
    let page = s
        .list_runs(&RunQuery {
            limit: Some(50_000),
            with_metrics: true,
            ..Default::default()
        })
        .unwrap();
    println!("listing 10000 runs took {:?}", t.elapsed());
    assert_eq!(page.items.len(), 10_000);
}

// --- metrics -----------------------------------------------------------------------------------------------

#[test]
fn scalars_round_trip_exactly_with_auto_steps() {
    let (_d, s) = store();
    let id = run(&s);
    let nan = f64::from_bits(0x7ff8_0000_0000_1234);
    let vals = [0.5, nan, f64::INFINITY, f64::NEG_INFINITY, -0.0];
    s.write_batch(&id, batch(vec![scalars("損失/loss é", &vals)]))
        .unwrap();
    let w = ScalarWrite {
        steps: Some(vec![Some(10), None]),
        times: Some(vec![WallTime(1), WallTime(2)]),
        ..scalars("損失/loss é", &[1.0, 2.0])
    };
    s.write_batch(&id, batch(vec![w])).unwrap();
    s.write_batch(&id, batch(vec![scalars("損失/loss é", &[3.0])]))
        .unwrap();
    let got = s.read_scalars(&id, "損失/loss é", &all()).unwrap();
    assert_eq!(got.steps, vec![0, 1, 2, 3, 4, 10, 11, 12]);
    let mut want = vals.to_vec();
    want.extend([1.0, 2.0, 3.0]);
    assert_eq!(
        bits(&got.values),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(&got.times[5..7], &[WallTime(1), WallTime(2)]);
    let info = s.metric_info(&id, "損失/loss é").unwrap();
    assert_eq!(
        (info.count, info.last_step, info.kind),
        (8, Some(12), MetricKind::Scalar)
    );
    assert_eq!(info.min, Some(F64(f64::NEG_INFINITY)));
    assert_eq!(info.max, Some(F64(f64::INFINITY)));
    assert_eq!(info.last_value, serde_json::json!(3.0));
    s.write_batch(&id, batch(vec![scalars("n", &[f64::NAN])]))
        .unwrap();
    let n = s.metric_info(&id, "n").unwrap();
    assert_eq!(
        (n.min, n.max, n.last_value),
        (None, None, serde_json::json!("NaN"))
    );
    assert!(matches!(
        s.read_scalars(&id, "nope", &all()),
        Err(Error::NotFound {
            entity: Entity::Metric,
            ..
        })
    ));
    assert!(matches!(
        s.read_scalars(&RunId::new(), "n", &all()),
        Err(Error::NotFound {
            entity: Entity::Run,
            ..
        })
    ));
}

#[test]
fn every_record_kind_round_trips() {
    let (_d, s) = store();
    let id = run(&s);
    let row = |a: f64, b: &str| {
        BTreeMap::from([
            ("b".to_string(), Cell::Text(b.into())),
            ("a".to_string(), Cell::Number(F64(a))),
        ])
    };
    let metrics = vec![
        MetricWrite::Text {
            name: "msg".into(),
            description: Some("notes".into()),
            steps: None,
            times: None,
            values: vec!["héllo".into(), "wörld".into()],
        },
        MetricWrite::List {
            name: "l".into(),
            description: None,
            values: vec![F64(1.0), F64(f64::NAN)],
            step: Some(7),
            time: None,
        },
        MetricWrite::Row {
            name: "r".into(),
            description: None,
            rows: vec![row(1.0, "x"), row(2.0, "y")],
            times: None,
        },
        MetricWrite::Table {
            name: "t".into(),
            description: None,
            columns: BTreeMap::from([("c".to_string(), vec![Cell::Bool(true), Cell::Null])]),
            time: Some(WallTime(9)),
        },
        MetricWrite::Json {
            name: "cm".into(),
            description: None,
            schema: "confusion_matrix".into(),
            value: serde_json::json!({"m": [[1]]}),
            step: None,
            time: None,
        },
        MetricWrite::Histogram {
            name: "h".into(),
            description: None,
            limits: vec![F64(1.0), F64(f64::INFINITY)],
            counts: vec![F64(3.0), F64(0.0)],
            lower: Some(F64(-0.5)),
            step: Some(2),
            time: None,
        },
    ];
    s.write_batch(
        &id,
        Batch {
            metrics,
            ..Default::default()
        },
    )
    .unwrap();
    let text = s.read_records(&id, "msg", &all()).unwrap();
    assert_eq!(
        text.iter()
            .map(|r| (r.index, r.step, r.value.clone()))
            .collect::<Vec<_>>(),
        vec![
            (0, 0, serde_json::json!("héllo")),
            (1, 1, serde_json::json!("wörld"))
        ]
    );
    let info = s.metric_info(&id, "msg").unwrap();
    assert_eq!(
        (
            info.kind,
            info.description.as_str(),
            info.last_value.clone()
        ),
        (MetricKind::Text, "notes", serde_json::json!("wörld"))
    );
    assert_eq!(
        s.read_records(&id, "l", &all()).unwrap()[0].value,
        serde_json::json!([1.0, "NaN"])
    );
    assert_eq!(s.read_records(&id, "l", &all()).unwrap()[0].step, 7);
    let rows = s.read_records(&id, "r", &all()).unwrap();
    assert_eq!(rows[1].value, serde_json::json!({"a": 2.0, "b": "y"}));
    assert_eq!(s.metric_info(&id, "r").unwrap().columns, vec!["a", "b"]);
    let t = s.read_records(&id, "t", &all()).unwrap();
    assert_eq!(
        (t[0].value.clone(), t[0].time),
        (serde_json::json!({"c": [true, null]}), WallTime(9))
    );
    let cm = s.read_records(&id, "cm", &all()).unwrap();
    assert_eq!(
        cm[0].value,
        serde_json::json!({"schema": "confusion_matrix", "value": {"m": [[1]]}})
    );
    assert_eq!(
        s.metric_info(&id, "cm").unwrap().schema.as_deref(),
        Some("confusion_matrix")
    );
    let h = s.read_records(&id, "h", &all()).unwrap();
    assert_eq!(
        h[0].value,
        serde_json::json!({"limits": [1.0, "Infinity"], "counts": [3.0, 0.0], "lower": -0.5})
    );
    assert_eq!(s.list_metrics(&id).unwrap().len(), 6);
    assert!(matches!(
        s.read_scalars(&id, "msg", &all()),
        Err(Error::InvalidArgument { .. })
    ));
    s.write_batch(&id, batch(vec![scalars("x", &[1.0])]))
        .unwrap();
    assert!(matches!(
        s.read_records(&id, "x", &all()),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn a_histogram_lower_edge_is_kept_and_nan_is_rejected() {
    let (_d, s) = store();
    let id = run(&s);
    let hist = |lower: f64| Batch {
        metrics: vec![MetricWrite::Histogram {
            name: "h".into(),
            description: None,
            limits: vec![F64(1.0), F64(2.0)],
            counts: vec![F64(3.0), F64(1.0)],
            lower: Some(F64(lower)),
            step: None,
            time: None,
        }],
        ..Default::default()
    };
    let err = s.write_batch(&id, hist(f64::NAN)).unwrap_err();
    assert!(
        err.to_string().contains("lower edge must be a number"),
        "{err}"
    );
    assert!(s.read_records(&id, "h", &all()).is_err(), "nothing stored");
    // Above the first limit too (an empty first bucket, as TensorBoard files have them).
    s.write_batch(&id, hist(1.5)).unwrap();
    assert_eq!(
        s.read_records(&id, "h", &all()).unwrap()[0].value["lower"],
        1.5
    );
}

#[test]
fn kind_conflicts_and_bad_entries_reject_the_whole_batch() {
    let (_d, s) = store();
    let id = run(&s);
    s.write_batch(&id, batch(vec![scalars("loss", &[1.0])]))
        .unwrap();
    let row = MetricWrite::Row {
        name: "loss".into(),
        description: None,
        rows: vec![BTreeMap::new()],
        times: None,
    };
    let b = Batch {
        scalars: vec![scalars("acc", &[0.9])],
        metrics: vec![row],
        ..Default::default()
    };
    let err = s.write_batch(&id, b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "metric 'loss' is a scalar series; it cannot take a row value (use another name)"
    );
    assert!(
        matches!(s.metric_info(&id, "acc"), Err(Error::NotFound { .. })),
        "the valid part was not stored"
    );
    let bad_len = ScalarWrite {
        steps: Some(vec![Some(1)]),
        ..scalars("acc", &[1.0, 2.0])
    };
    let b = Batch {
        scalars: vec![scalars("acc", &[0.9]), bad_len],
        logs: vec![LogAppend {
            stream: "stdout".into(),
            data: "hi".into(),
        }],
        ..Default::default()
    };
    assert!(matches!(
        s.write_batch(&id, b),
        Err(Error::InvalidArgument { .. })
    ));
    let b = batch(vec![scalars("acc", &[0.9]), scalars("bad\nname", &[1.0])]);
    assert!(matches!(
        s.write_batch(&id, b),
        Err(Error::InvalidArgument { .. })
    ));
    let table = MetricWrite::Table {
        name: "t".into(),
        description: None,
        columns: BTreeMap::from([("a".into(), vec![Cell::Null]), ("b".into(), vec![])]),
        time: None,
    };
    assert!(matches!(
        s.write_batch(
            &id,
            Batch {
                metrics: vec![table],
                ..Default::default()
            }
        ),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(s.list_metrics(&id).unwrap().len(), 1);
    assert!(s.list_logs(&id).unwrap().is_empty());
    assert_eq!(s.read_scalars(&id, "loss", &all()).unwrap().len(), 1);
    // The tail cache did not keep rolled-back points: the next append continues the committed series.
    let b = batch(vec![scalars("loss", &[2.0]), scalars("loss2", &[1.0])]);
    let mut broken = b.clone();
    broken.metrics.push(MetricWrite::Text {
        name: "loss2".into(),
        description: None,
        steps: None,
        times: None,
        values: vec!["x".into()],
    });
    assert!(s.write_batch(&id, broken).is_err());
    s.write_batch(&id, b).unwrap();
    assert_eq!(
        s.read_scalars(&id, "loss", &all()).unwrap().steps,
        vec![0, 1]
    );
}

/// The callback form answers once the batch is committed, with what `write_batch` would return: the ack, a
/// validation error before anything is queued, the run's state as an error.
#[test]
fn write_batch_then_answers_like_write_batch() {
    let (_d, s) = store();
    let id = run(&s);
    let answer = |b: Batch, run: &RunId| {
        let (tx, rx) = std::sync::mpsc::channel();
        s.write_batch_then(run, b, Box::new(move |r| tx.send(r).unwrap()));
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()
    };
    let ack = answer(batch(vec![scalars("loss", &[1.0, 2.0, 3.0])]), &id).unwrap();
    assert_eq!((ack.points, ack.duplicate), (3, false));
    assert_eq!(s.read_scalars(&id, "loss", &all()).unwrap().len(), 3);
    let empty_name = batch(vec![scalars("", &[1.0])]);
    assert!(matches!(
        answer(empty_name, &id),
        Err(Error::InvalidArgument { .. })
    ));
    let delete = RunPatch {
        lifecycle: Some(Lifecycle::Deleted),
        ..Default::default()
    };
    s.update_run(&id, delete).unwrap();
    let deleted = answer(batch(vec![scalars("loss", &[4.0])]), &id);
    assert!(matches!(deleted, Err(Error::Deleted { .. })), "{deleted:?}");
    assert_eq!(s.read_scalars(&id, "loss", &all()).unwrap().len(), 3);
}

/// A scalar write of (step, time ms, value) points.
fn points(name: &str, pts: &[(i64, i64, f64)]) -> ScalarWrite {
    ScalarWrite {
        name: name.into(),
        steps: Some(pts.iter().map(|p| Some(p.0)).collect()),
        times: Some(pts.iter().map(|p| WallTime(p.1)).collect()),
        values: pts.iter().map(|p| F64(p.2)).collect(),
        ..Default::default()
    }
}

/// A batch that drops repeated points, as the MLflow API's are.
fn mlflow_batch(w: ScalarWrite) -> Batch {
    Batch {
        drop_repeated_points: true,
        ..batch(vec![w])
    }
}

/// A series' points as (step, time ms, value bits), in stored order.
fn stored_points(s: &EmbeddedStore, run: &RunId, name: &str) -> Vec<(i64, i64, u64)> {
    let got = s.read_scalars(run, name, &all()).unwrap();
    (0..got.len())
        .map(|i| (got.steps[i], got.times[i].0, got.values[i].0.to_bits()))
        .collect()
}

#[test]
fn repeated_points_are_dropped_only_where_the_batch_asks() {
    let (_d, s) = store();
    let id = run(&s);
    let first = [
        (0, 10, 1.0),
        (1, 11, 2.0),
        (1, 11, 2.0),
        (2, 12, f64::NAN),
        (3, 13, 0.0),
    ];
    s.write_batch(&id, mlflow_batch(points("m", &first)))
        .unwrap();
    let again = [
        (1, 11, 3.0),       // same step and time, another value: kept
        (2, 12, -f64::NAN), // NaN again: dropped
        (1, 11, 2.0),       // stored: dropped
        (3, 13, -0.0),      // zero again, other sign: dropped
        (0, 11, 1.0),       // another time: kept
        (4, 14, 4.0),
        (4, 14, 4.0), // twice in the batch: kept once
    ];
    s.write_batch(&id, mlflow_batch(points("m", &again)))
        .unwrap();
    let nan = f64::NAN.to_bits();
    let expected = vec![
        (0, 10, 1f64.to_bits()),
        (1, 11, 2f64.to_bits()),
        (2, 12, nan),
        (3, 13, 0),
        (1, 11, 3f64.to_bits()),
        (0, 11, 1f64.to_bits()),
        (4, 14, 4f64.to_bits()),
    ];
    assert_eq!(stored_points(&s, &id, "m"), expected);
    let info = s.metric_info(&id, "m").unwrap();
    assert_eq!((info.count, info.last_step), (7, Some(4)));
    // A batch that does not ask keeps every point (the native API's rule).
    s.write_batch(&id, batch(vec![points("m", &[(1, 11, 2.0), (1, 11, 2.0)])]))
        .unwrap();
    assert_eq!(stored_points(&s, &id, "m").len(), 9);
    // A batch of nothing but repeats stores nothing and keeps the summary.
    s.write_batch(&id, mlflow_batch(points("m", &[(4, 14, 4.0)])))
        .unwrap();
    assert_eq!(s.metric_info(&id, "m").unwrap().count, 9);
}

#[test]
fn points_moving_forward_in_time_at_one_step_are_all_kept() {
    let (_d, s) = store();
    let id = run(&s);
    for t in 0..50 {
        // MLflow's default step is 0; the same value at a new time is a new point.
        let w = points("loss", &[(0, 1000 + t, 0.5), (0, 1000 + t, 0.25)]);
        s.write_batch(&id, mlflow_batch(w)).unwrap();
    }
    assert_eq!(stored_points(&s, &id, "loss").len(), 100);
}

#[test]
fn repeats_are_found_in_full_blocks_and_in_blocks_written_before_time_spans() {
    let (d, s) = store();
    let id = run(&s);
    let n = super::blocks::BLOCK_POINTS as i64 * 2 + 100;
    let all_points: Vec<(i64, i64, f64)> = (0..n).map(|i| (i, 5000 + i, i as f64 / 7.0)).collect();
    for chunk in all_points.chunks(1000) {
        s.write_batch(&id, mlflow_batch(points("m", chunk)))
            .unwrap();
    }
    let resent = [all_points[3], all_points[5000], (n, 5000 + n, 1.0)];
    s.write_batch(&id, mlflow_batch(points("m", &resent)))
        .unwrap();
    assert_eq!(stored_points(&s, &id, "m").len() as i64, n + 1);
    drop(s);
    // Blocks from before version 8 had no time span: the migration gives them the columns' defaults.
    write_blocks_as_version_6(d.path());
    let s = EmbeddedStore::open(d.path()).unwrap();
    let resent = [all_points[1], all_points[8000], (n + 1, 1, 1.0)];
    s.write_batch(&id, mlflow_batch(points("m", &resent)))
        .unwrap();
    let got = stored_points(&s, &id, "m");
    assert_eq!(got.len() as i64, n + 2);
    assert_eq!(got.last(), Some(&(n + 1, 1, 1f64.to_bits())));
}

/// A run change and a batch written together are one commit: when the batch is refused (a metric logged as
/// another kind than before), the params and tags of the change are not stored either, and when both are
/// taken both are there.
#[test]
fn a_patch_and_a_batch_are_stored_together_or_not_at_all() {
    let (_d, s) = store();
    let id = run(&s);
    let text = MetricWrite::Text {
        name: "loss".into(),
        description: None,
        steps: None,
        times: None,
        values: vec!["not a number".into()],
    };
    s.write_batch(
        &id,
        Batch {
            metrics: vec![text],
            ..Default::default()
        },
    )
    .unwrap();
    let patch = |lr: &str| RunPatch {
        add_params: [("lr".to_string(), lr.to_string())].into(),
        set_tags: [("phase".to_string(), "train".to_string())].into(),
        ..Default::default()
    };
    let err = s
        .update_run_and_write_batch(&id, patch("0.1"), batch(vec![scalars("loss", &[1.0])]))
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let r = s.get_run(&id).unwrap();
    assert!(r.params.is_empty() && r.tags.is_empty(), "{r:?}");
    let ack = s
        .update_run_and_write_batch(&id, patch("0.1"), batch(vec![scalars("acc", &[0.5, 0.6])]))
        .unwrap();
    assert_eq!(ack.points, 2);
    let r = s.get_run(&id).unwrap();
    assert_eq!(
        (r.params["lr"].as_str(), r.tags["phase"].as_str()),
        ("0.1", "train")
    );
    // A refused change stores none of the batch.
    let err = s
        .update_run_and_write_batch(&id, patch("0.2"), batch(vec![scalars("acc", &[0.7])]))
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { .. } | Error::InvalidArgument { .. }),
        "{err}"
    );
    assert_eq!(
        s.read_scalars(&id, "acc", &ReadRange::default())
            .unwrap()
            .values
            .len(),
        2
    );
}

#[test]
fn batch_ids_make_retries_harmless() {
    let (_d, s) = store();
    let id = run(&s);
    let b = Batch {
        batch_id: Some("b-1".into()),
        logs: vec![LogAppend {
            stream: "stdout".into(),
            data: "line\n".into(),
        }],
        ..batch(vec![scalars("loss", &[1.0, 2.0])])
    };
    let first = s.write_batch(&id, b.clone()).unwrap();
    assert_eq!((first.points, first.duplicate), (2, false));
    let again = s.write_batch(&id, b).unwrap();
    assert_eq!(
        (again.points, again.duplicate, again.batch_id.as_deref()),
        (2, true, Some("b-1"))
    );
    assert_eq!(s.read_scalars(&id, "loss", &all()).unwrap().len(), 2);
    assert_eq!(s.read_log(&id, "stdout", 0, 100).unwrap().data, "line\n");
    // Another run has its own batch ids.
    let other = run(&s);
    let b = Batch {
        batch_id: Some("b-1".into()),
        ..batch(vec![scalars("loss", &[1.0])])
    };
    assert!(!s.write_batch(&other, b).unwrap().duplicate);
}

#[test]
fn blocks_split_and_ranges_read_by_index_and_step() {
    let (_d, s) = store();
    let id = run(&s);
    let n = 10_000usize;
    // Uneven batch sizes cross the 4096 boundaries at different offsets.
    let mut i = 0;
    for size in [1, 4094, 3, 5000, 902] {
        let vals: Vec<f64> = (i..i + size).map(|x| x as f64).collect();
        let w = ScalarWrite {
            steps: Some((i..i + size).map(|x| Some(2 * x as i64)).collect()),
            ..scalars("x", &vals)
        };
        s.write_batch(&id, batch(vec![w])).unwrap();
        i += size;
    }
    assert_eq!(i, n);
    let got = s.read_scalars(&id, "x", &all()).unwrap();
    assert_eq!(got.len(), n);
    assert!(got.values.iter().enumerate().all(|(i, v)| v.0 == i as f64));
    let r = s
        .read_scalars(
            &id,
            "x",
            &ReadRange {
                start_index: 4090,
                limit: Some(10),
                ..all()
            },
        )
        .unwrap();
    assert_eq!(
        r.values.iter().map(|v| v.0 as usize).collect::<Vec<_>>(),
        (4090..4100).collect::<Vec<_>>()
    );
    let r = s
        .read_scalars(
            &id,
            "x",
            &ReadRange {
                min_step: Some(8190),
                max_step: Some(8200),
                ..all()
            },
        )
        .unwrap();
    assert_eq!(r.steps, vec![8190, 8192, 8194, 8196, 8198, 8200]);
    let r = s
        .read_scalars(
            &id,
            "x",
            &ReadRange {
                start_index: 9998,
                ..all()
            },
        )
        .unwrap();
    assert_eq!(r.len(), 2);
    let r = s
        .read_scalars(
            &id,
            "x",
            &ReadRange {
                start_index: 20_000,
                ..all()
            },
        )
        .unwrap();
    assert!(r.is_empty());
    let r = s
        .read_scalars(
            &id,
            "x",
            &ReadRange {
                min_step: Some(100),
                limit: Some(3),
                ..all()
            },
        )
        .unwrap();
    assert_eq!(r.steps, vec![100, 102, 104]);
    // Records split across blocks as well.
    let texts: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
    let w = MetricWrite::Text {
        name: "t".into(),
        description: None,
        steps: None,
        times: None,
        values: texts,
    };
    s.write_batch(
        &id,
        Batch {
            metrics: vec![w],
            ..Default::default()
        },
    )
    .unwrap();
    let recs = s
        .read_records(
            &id,
            "t",
            &ReadRange {
                start_index: 4095,
                limit: Some(3),
                ..all()
            },
        )
        .unwrap();
    assert_eq!(
        recs.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![4095, 4096, 4097]
    );
    let recs = s
        .read_records(
            &id,
            "t",
            &ReadRange {
                min_step: Some(4999),
                ..all()
            },
        )
        .unwrap();
    assert_eq!(recs[0].value, serde_json::json!("t4999"));
}

#[test]
fn small_appends_write_fragments_that_merge_into_full_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path()).unwrap();
    // A second store on the same directory: its appends make the first one reload the open region from disk.
    let other = EmbeddedStore::open(dir.path()).unwrap();
    let id = run(&s);
    let mut n = 0usize;
    for k in 0..3000 {
        let size = 1 + k % 7;
        let vals: Vec<f64> = (n..n + size).map(|x| x as f64).collect();
        let writer = if k % 97 == 0 { &other } else { &s };
        writer
            .write_batch(&id, batch(vec![scalars("x", &vals)]))
            .unwrap();
        n += size;
    }
    let got = s.read_scalars(&id, "x", &all()).unwrap();
    assert_eq!(got.len(), n);
    assert!(got.values.iter().enumerate().all(|(i, v)| v.0 == i as f64));
    assert!(got.steps.iter().enumerate().all(|(i, s)| *s == i as i64));
    let window = ReadRange {
        start_index: 4090,
        limit: Some(20),
        ..all()
    };
    let r = s.read_scalars(&id, "x", &window).unwrap();
    assert_eq!(r.steps, (4090..4110).collect::<Vec<i64>>());

    let c = rusqlite::Connection::open(dir.path().join("flightlog.db")).unwrap();
    let rows: Vec<(i64, i64)> = c
        .prepare("SELECT first_index, count FROM blocks ORDER BY first_index")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut next = 0;
    for (first, count) in &rows {
        assert_eq!(*first, next, "blocks are contiguous: {rows:?}");
        next += count;
    }
    assert_eq!(next as usize, n);
    let full = n / 4096;
    assert!(rows[..full].iter().all(|(_, c)| *c == 4096), "{rows:?}");
    assert!(
        rows.len() <= full + 16,
        "the open region is bounded: {rows:?}"
    );
}

#[test]
fn downsampling_keeps_a_single_spike_in_a_million_points() {
    let (_d, s) = store();
    let id = run(&s);
    let n = 1_000_000;
    let spike = 654_321;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100_000) {
        let vals: Vec<f64> = chunk
            .iter()
            .map(|&i| {
                if i == spike {
                    1e12
                } else {
                    (i % 100) as f64 / 100.0
                }
            })
            .collect();
        s.write_batch(&id, batch(vec![scalars("loss", &vals)]))
            .unwrap();
    }
    let d = s.read_downsampled(&id, "loss", &all(), 1000).unwrap();
    assert!(d.len() <= 2000, "{}", d.len());
    assert!(d.values.contains(&F64(1e12)));
    assert!(d.steps.contains(&(spike as i64)));
    assert!(d.steps.windows(2).all(|w| w[0] < w[1]));
    let d = s
        .read_downsampled(
            &id,
            "loss",
            &ReadRange {
                min_step: Some(600_000),
                max_step: Some(700_000),
                ..all()
            },
            100,
        )
        .unwrap();
    assert!(d.len() <= 200 && d.values.contains(&F64(1e12)));
    let small = s
        .read_downsampled(
            &id,
            "loss",
            &ReadRange {
                start_index: 10,
                limit: Some(50),
                ..all()
            },
            100,
        )
        .unwrap();
    assert_eq!(small.len(), 50);
    assert!(matches!(
        s.read_downsampled(&id, "loss", &all(), 0),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn a_million_points_take_at_most_16_bytes_each() {
    let (dir, s) = store();
    let id = run(&s);
    let n = 1_000_000usize;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let t0 = 1_700_000_000_000_000i64;
    for start in (0..n).step_by(50_000) {
        let mut vals = Vec::with_capacity(50_000);
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            vals.push((x >> 11) as f64 / (1u64 << 53) as f64);
        }
        let w = ScalarWrite {
            steps: Some((start..start + 50_000).map(|i| Some(i as i64)).collect()),
            times: Some(
                (start..start + 50_000)
                    .map(|i| WallTime(t0 + i as i64 * 1_500))
                    .collect(),
            ),
            ..scalars("random", &vals)
        };
        s.write_batch(&id, batch(vec![w])).unwrap();
    }
    let conn = rusqlite::Connection::open(dir.path().join("flightlog.db")).unwrap();
    let (bytes, count): (i64, i64) = conn
        .query_row(
            "SELECT sum(length(data)), sum(count) FROM blocks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(count as usize, n);
    let per_point = bytes as f64 / n as f64;
    let db = std::fs::metadata(dir.path().join("flightlog.db"))
        .unwrap()
        .len();
    let wal = wal_len(&dir);
    println!("block data: {per_point:.2} bytes/point; db file {db} bytes, wal {wal} bytes");
    assert!(per_point <= 16.0, "{per_point}");
    let t = std::time::Instant::now();
    assert_eq!(s.read_scalars(&id, "random", &all()).unwrap().len(), n);
    println!(
        "read_scalars of 1M points (this build profile): {:?}",
        t.elapsed()
    );
}

// --- logs --------------------------------------------------------------------------------------------------

#[test]
fn logs_resume_at_offsets_and_respect_utf8() {
    let (_d, s) = store();
    let id = run(&s);
    assert_eq!(s.append_log(&id, "stdout", b"hello ").unwrap(), 6);
    assert_eq!(
        s.append_log(&id, "stdout", "wörld €\n".as_bytes()).unwrap(),
        6 + 11
    );
    let all = s.read_log(&id, "stdout", 0, 1 << 20).unwrap();
    assert_eq!(
        (all.data.as_str(), all.next_offset, all.length),
        ("hello wörld €\n", 17, 17)
    );
    // A window that ends inside 'ö' (bytes 7..9) backs off to its start.
    let part = s.read_log(&id, "stdout", 0, 8).unwrap();
    assert_eq!((part.data.as_str(), part.next_offset), ("hello w", 7));
    let rest = s
        .read_log(&id, "stdout", part.next_offset, 1 << 20)
        .unwrap();
    assert_eq!(rest.data, "örld €\n");
    // Reading in 1-byte windows still advances and reassembles the text.
    let (mut off, mut text) = (0, String::new());
    while off < 17 {
        let sl = s.read_log(&id, "stdout", off, 1).unwrap();
        assert!(sl.next_offset > off);
        text.push_str(&sl.data);
        off = sl.next_offset;
    }
    assert_eq!(text, "hello wörld €\n");
    let end = s.read_log(&id, "stdout", 1000, 10).unwrap();
    assert_eq!(
        (end.data.as_str(), end.next_offset, end.offset),
        ("", 17, 17)
    );
    s.append_log(&id, "stderr", b"e").unwrap();
    let logs = s.list_logs(&id).unwrap();
    assert_eq!(
        logs.iter()
            .map(|l| (l.name.as_str(), l.length))
            .collect::<Vec<_>>(),
        vec![("stderr", 1), ("stdout", 17)]
    );
    assert!(matches!(
        s.read_log(&id, "nope", 0, 1),
        Err(Error::NotFound {
            entity: Entity::LogStream,
            ..
        })
    ));
    assert!(matches!(
        s.append_log(&id, "a/b", b"x"),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn a_log_cut_inside_a_character_is_delivered_once_its_run_has_ended() {
    let (_d, s) = store();
    let id = run(&s);
    s.append_log(&id, "stdout", b"abc\xe2\x82").unwrap();
    // While the run goes on, the cut character waits for its last byte.
    let live = s.read_log(&id, "stdout", 0, 1 << 20).unwrap();
    assert_eq!((live.data.as_str(), live.next_offset), ("abc", 3));
    let patch = RunPatch {
        status: Some(RunStatus::Failed),
        ..Default::default()
    };
    s.update_run(&id, patch).unwrap();
    // Once the run has ended nothing will complete it: the reader gets it as U+FFFD and reaches the end.
    let tail = s.read_log(&id, "stdout", 3, 1 << 20).unwrap();
    assert_eq!((tail.data.as_str(), tail.next_offset), ("\u{FFFD}", 5));
    let whole = s.read_log(&id, "stdout", 0, 1 << 20).unwrap();
    assert_eq!((whole.data.as_str(), whole.next_offset), ("abc\u{FFFD}", 5));
}

// --- artifacts -----------------------------------------------------------------------------------------------

#[test]
fn model_files_are_kept_apart_from_runs_and_checked_like_artifacts() {
    let (d, s) = store();
    let id = "m-0123456789abcdef0123456789abcdef";
    let model = FileOwner::Model(id.into());
    s.put_file(&model, "MLmodel", &mut &b"flavors"[..]).unwrap();
    s.put_file(&model, "data/model.pkl", &mut &b"x"[..])
        .unwrap();
    let listed = s.list_files(&model, None, false).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|f| (f.path.as_str(), f.is_dir))
            .collect::<Vec<_>>(),
        [("MLmodel", false), ("data", true)]
    );
    let mut text = String::new();
    s.open_file(&model, "MLmodel")
        .unwrap()
        .1
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "flavors");
    assert!(matches!(
        s.put_file(&model, "../escape", &mut &b"x"[..]),
        Err(Error::InvalidPath { .. })
    ));
    for bad in ["../m", "a/b", "", "m.1"] {
        assert!(
            matches!(
                s.put_file(&FileOwner::Model(bad.into()), "f", &mut &b"x"[..]),
                Err(Error::InvalidArgument { .. })
            ),
            "{bad:?}"
        );
    }
    s.delete_file(&model, "data").unwrap();
    assert_eq!(s.list_files(&model, None, true).unwrap().len(), 1);
    assert!(matches!(
        s.open_file(&model, "data/model.pkl"),
        Err(Error::NotFound { .. })
    ));
    // Nothing of the model's lands in a run's folder or outside the models' one.
    let run = run(&s);
    assert!(s.list_artifacts(&run, None, true).unwrap().is_empty());
    assert!(d
        .path()
        .join("artifacts/models")
        .join(id)
        .join("MLmodel")
        .is_file());
}

fn read_all(mut r: crate::ByteReader) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn artifacts_put_open_list_delete() {
    let (d, s) = store();
    let id = run(&s);
    let info = s
        .put_artifact(&id, "outputs/./model.bin", &mut &b"weights"[..])
        .unwrap();
    assert_eq!(
        (info.path.as_str(), info.size, info.is_dir),
        ("outputs/model.bin", Some(7), false)
    );
    s.put_artifact(&id, "outputs/sub/a.txt", &mut &b"a"[..])
        .unwrap();
    s.put_artifact(&id, "readme.md", &mut &b"r"[..]).unwrap();
    s.put_artifact(&id, "readme.md", &mut &b"r2"[..]).unwrap();
    let (info, reader) = s.open_artifact(&id, "readme.md").unwrap();
    assert_eq!((read_all(reader), info.size), (b"r2".to_vec(), Some(2)));
    let top = s.list_artifacts(&id, None, false).unwrap();
    assert_eq!(
        top.iter()
            .map(|a| (a.path.as_str(), a.is_dir))
            .collect::<Vec<_>>(),
        vec![("outputs", true), ("readme.md", false)]
    );
    let rec = s.list_artifacts(&id, None, true).unwrap();
    assert_eq!(
        rec.iter().map(|a| a.path.as_str()).collect::<Vec<_>>(),
        vec!["outputs/model.bin", "outputs/sub/a.txt", "readme.md"]
    );
    let sub = s.list_artifacts(&id, Some("outputs"), false).unwrap();
    assert_eq!(
        sub.iter().map(|a| a.path.as_str()).collect::<Vec<_>>(),
        vec!["outputs/model.bin", "outputs/sub"]
    );
    assert!(s
        .list_artifacts(&id, Some("missing"), true)
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.list_artifacts(&RunId::new(), None, true),
        Err(Error::NotFound {
            entity: Entity::Run,
            ..
        })
    ));
    assert!(matches!(
        s.open_artifact(&id, "outputs"),
        Err(Error::NotFound {
            entity: Entity::Artifact,
            ..
        })
    ));
    assert!(matches!(
        s.open_artifact(&id, "nope"),
        Err(Error::NotFound { .. })
    ));
    // A file where a folder is needed, and a folder where a file is needed.
    assert!(matches!(
        s.put_artifact(&id, "readme.md/x", &mut &b"x"[..]),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        s.put_artifact(&id, "outputs", &mut &b"x"[..]),
        Err(Error::InvalidPath { .. })
    ));
    s.delete_artifact(&id, "outputs").unwrap();
    assert_eq!(s.list_artifacts(&id, None, true).unwrap().len(), 1);
    assert!(matches!(
        s.delete_artifact(&id, "outputs"),
        Err(Error::NotFound { .. })
    ));
    // What the overwrite and the delete kept aside until their commits is gone with them (a folder on a
    // thread of its own).
    let tmp = d.path().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_dir(&tmp).unwrap().count() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    let events = s
        .events_since(
            &EventFilter {
                run_id: Some(id.clone()),
                ..Default::default()
            },
            0,
            100,
        )
        .unwrap();
    let kinds: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ArtifactWritten { path, .. } => Some(format!("w:{path}")),
            EventBody::ArtifactDeleted { path } => Some(format!("d:{path}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "w:outputs/model.bin",
            "w:outputs/sub/a.txt",
            "w:readme.md",
            "w:readme.md",
            "d:outputs"
        ]
    );
}

#[test]
fn artifact_paths_cannot_escape() {
    let (dir, s) = store();
    let id = run(&s);
    for bad in ["../x", "a/../../x", "/etc/passwd", "a\\b", ""] {
        assert!(
            matches!(
                s.put_artifact(&id, bad, &mut &b"x"[..]),
                Err(Error::InvalidPath { .. })
            ),
            "{bad}"
        );
    }
    let outside = tempfile::tempdir().unwrap();
    let run_root = dir.path().join("artifacts").join(id.as_str());
    std::fs::create_dir_all(&run_root).unwrap();
    std::os::unix::fs::symlink(outside.path(), run_root.join("link")).unwrap();
    let err = s
        .put_artifact(&id, "link/evil.txt", &mut &b"x"[..])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"));
    assert!(
        std::fs::read_dir(outside.path()).unwrap().next().is_none(),
        "nothing written outside"
    );
    assert!(matches!(
        s.open_artifact(&id, "link/x"),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        s.list_artifacts(&id, Some("link"), true),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        s.delete_artifact(&id, "link/x"),
        Err(Error::InvalidPath { .. })
    ));
    std::fs::write(outside.path().join("secret"), b"s").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), run_root.join("file-link")).unwrap();
    assert!(matches!(
        s.open_artifact(&id, "file-link"),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        s.put_artifact(&id, "file-link", &mut &b"x"[..]),
        Err(Error::InvalidPath { .. })
    ));
    assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"s");
    // Symlinks are skipped by listings, and no temp files are left behind.
    assert!(s.list_artifacts(&id, None, true).unwrap().is_empty());
    assert!(std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn images_are_sniffed_and_recorded() {
    let (_d, s) = store();
    let id = run(&s);
    let png = b"\x89PNG\r\n\x1a\n....";
    let meta = ImageWrite {
        name: "samples/pred".into(),
        description: Some("d".into()),
        step: None,
        time: None,
        media_type: "image/png".into(),
        batch_id: None,
    };
    let r = s.write_image(&id, meta.clone(), png).unwrap();
    assert_eq!(r.value["path"], "images/samples/pred/0_0.png");
    let r2 = s
        .write_image(
            &id,
            ImageWrite {
                step: Some(5),
                ..meta.clone()
            },
            png,
        )
        .unwrap();
    assert_eq!((r2.index, r2.step), (1, 5));
    let (_, bytes) = s
        .open_artifact(&id, r2.value["path"].as_str().unwrap())
        .unwrap();
    assert_eq!(read_all(bytes), png.to_vec());
    let recs = s.read_records(&id, "samples/pred", &all()).unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(
        recs[0].value,
        serde_json::json!({"path": "images/samples/pred/0_0.png", "media_type": "image/png", "description": "d"})
    );
    assert_eq!(
        s.metric_info(&id, "samples/pred").unwrap().kind,
        MetricKind::Image
    );
    let err = s
        .write_image(
            &id,
            ImageWrite {
                media_type: "image/jpeg".into(),
                ..meta.clone()
            },
            png,
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }));
    assert!(s.write_image(&id, meta, b"not an image").is_err());
    assert_eq!(
        s.read_records(&id, "samples/pred", &all()).unwrap().len(),
        2
    );
}

#[test]
fn images_never_replace_another_metrics_images_or_an_uploaded_file() {
    let (_d, s) = store();
    let id = run(&s);
    let image = |name: &str, body: &[u8]| {
        let meta = ImageWrite {
            name: name.into(),
            description: None,
            step: Some(0),
            time: None,
            media_type: "image/png".into(),
            batch_id: None,
        };
        let png = [&b"\x89PNG\r\n\x1a\n"[..], body].concat();
        let r = s.write_image(&id, meta, &png).unwrap();
        r.value["path"].as_str().unwrap().to_string()
    };
    s.put_artifact(&id, "images/mine/0_0.png", &mut &b"my own file"[..])
        .unwrap();
    let long = "n".repeat(300);
    let paths: Vec<String> = [
        ("x/y", "a"),
        ("x_y", "b"),
        ("x y", "c"),
        ("mine", "d"),
        (long.as_str(), "e"),
        ("é".repeat(130).as_str(), "f"),
    ]
    .iter()
    .map(|(name, body)| image(name, body.as_bytes()))
    .collect();
    assert_eq!(&paths[..2], ["images/x/y/0_0.png", "images/x_y/0_0.png"]);
    assert!(paths[2].starts_with("images/x_y-"), "{}", paths[2]);
    assert_eq!(paths[3], "images/mine/0_0-1.png", "the uploaded file stays");
    for (path, body) in paths.iter().zip(["a", "b", "c", "d", "e", "f"]) {
        let (_, bytes) = s.open_artifact(&id, path).unwrap();
        assert!(read_all(bytes).ends_with(body.as_bytes()), "{path}");
        assert!(path.split('/').all(|part| part.len() <= 255), "{path}");
    }
    let (_, mine) = s.open_artifact(&id, "images/mine/0_0.png").unwrap();
    assert_eq!(read_all(mine), b"my own file");
}

#[test]
fn an_image_written_again_with_its_batch_id_is_stored_once() {
    let (d, s) = store();
    let id = run(&s);
    let png = b"\x89PNG\r\n\x1a\n....";
    let meta = ImageWrite {
        name: "img".into(),
        description: None,
        step: Some(3),
        time: None,
        media_type: "image/png".into(),
        batch_id: Some("tb-1-img-40-0".into()),
    };
    let first = s.write_image(&id, meta.clone(), png).unwrap();
    let again = s.write_image(&id, meta.clone(), png).unwrap();
    assert_eq!(
        again, first,
        "the retry answers with the first write's record"
    );
    assert_eq!(s.read_records(&id, "img", &all()).unwrap(), vec![first]);
    let tmp: Vec<_> = std::fs::read_dir(d.path().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "the retry's upload was removed: {tmp:?}");
    let other = ImageWrite {
        batch_id: Some("tb-1-img-40-1".into()),
        ..meta.clone()
    };
    assert_eq!(s.write_image(&id, other, png).unwrap().index, 1);
    s.write_batch(
        &id,
        Batch {
            batch_id: Some("points".into()),
            scalars: vec![scalars("loss", &[1.0])],
            ..Default::default()
        },
    )
    .unwrap();
    let reused = ImageWrite {
        batch_id: Some("points".into()),
        ..meta
    };
    let err = s.write_image(&id, reused, png).unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
}

// --- events, durability, concurrency ----------------------------------------------------------------------

/// A file read while uploads replace it is one of the versions, whole, under its own size: the size came
/// from a look at the path before the open, so a rename in between sent one file's length with the other's bytes.
#[test]
fn a_file_read_while_it_is_replaced_is_one_version_whole() {
    let (_d, s) = store();
    let id = run(&s);
    s.put_artifact(&id, "race.bin", &mut &[b'a'; 100][..])
        .unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|t| {
        t.spawn(|| {
            for i in 0..300 {
                let body = if i % 2 == 0 {
                    vec![b'b'; 200_000]
                } else {
                    vec![b'a'; 100]
                };
                s.put_artifact(&id, "race.bin", &mut &body[..]).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let (info, reader) = s.open_artifact(&id, "race.bin").unwrap();
            let bytes = read_all(reader);
            assert_eq!(info.size, Some(bytes.len() as u64));
            let want = if bytes.len() == 100 { b'a' } else { b'b' };
            assert!(bytes.iter().all(|&b| b == want), "a mix of two versions");
        }
    });
}

#[test]
fn uploads_and_run_ends_are_announced_apart_from_metric_commits() {
    let (_d, s) = store();
    let id = run(&s);
    let mut artifacts = s.subscribe_uploads_and_run_ends();
    artifacts.borrow_and_update();
    s.write_batch(&id, batch(vec![scalars("loss", &[1.0, 2.0])]))
        .unwrap();
    assert!(
        !artifacts.has_changed().unwrap(),
        "a metric commit does not wake artifact followers"
    );
    s.put_artifact(&id, "logs/a.txt", &mut &b"x"[..]).unwrap();
    assert!(artifacts.has_changed().unwrap());
    let seq = *artifacts.borrow_and_update();
    let written = s
        .events_since(&EventFilter::default(), seq - 1, 10)
        .unwrap();
    assert!(matches!(
        &written[0].body,
        EventBody::ArtifactWritten { path, .. } if path == "logs/a.txt"
    ));
    assert_eq!(
        *s.subscribe().borrow(),
        seq,
        "the event stream saw the same commit"
    );
    // A run's end is announced too (its logs/ child runs end with it); other run changes are not.
    let tag = RunPatch {
        set_tags: [("k".to_string(), "v".to_string())].into(),
        ..Default::default()
    };
    s.update_run(&id, tag).unwrap();
    assert!(!artifacts.has_changed().unwrap(), "a tag on a running run");
    let end = RunPatch {
        status: Some(RunStatus::Completed),
        ..Default::default()
    };
    s.update_run(&id, end).unwrap();
    assert!(artifacts.has_changed().unwrap(), "the run ended");
    artifacts.borrow_and_update();
    let tag = RunPatch {
        set_tags: [("k".to_string(), "after".to_string())].into(),
        ..Default::default()
    };
    s.update_run(&id, tag).unwrap();
    assert!(!artifacts.has_changed().unwrap(), "a tag on an ended run");
}

/// The run's events of one type after seq `after`.
fn events_of_type(s: &EmbeddedStore, id: &RunId, ty: &str, after: u64) -> Vec<Event> {
    let filter = EventFilter {
        run_id: Some(id.clone()),
        types: vec![ty.into()],
        ..Default::default()
    };
    s.events_since(&filter, after, 10_000).unwrap()
}

#[test]
fn points_logged_one_at_a_time_keep_one_event_per_series() {
    let (_d, s) = store();
    let id = run(&s);
    let points_events = |after: u64| {
        let events = events_of_type(&s, &id, "points", after);
        let ranges = events.iter().map(|e| match &e.body {
            EventBody::Points {
                name,
                from_index,
                count,
                last_value,
                ..
            } => (name.clone(), *from_index, *count, last_value.clone()),
            other => panic!("not a points event: {other:?}"),
        });
        (events.last().map(|e| e.seq), ranges.collect::<Vec<_>>())
    };
    s.write_batch(&id, batch(vec![scalars("loss", &[1.0])]))
        .unwrap();
    let (seen, _) = points_events(0);
    for i in 1..5 {
        let b = batch(vec![
            scalars("loss", &[1.0 + i as f64]),
            scalars("acc", &[i as f64]),
        ]);
        s.write_batch(&id, b).unwrap();
    }
    let (_, all) = points_events(0);
    assert_eq!(
        all,
        vec![
            ("loss".into(), 0, 5, serde_json::json!(5.0)),
            ("acc".into(), 0, 4, serde_json::json!(4.0))
        ],
        "each series' events merged into one, in the order of their newest commit"
    );
    let (_, after_first) = points_events(seen.unwrap());
    assert_eq!(
        after_first, all,
        "a reader past the first event still gets every point"
    );
    let newest = s
        .events_since(&EventFilter::default(), seen.unwrap(), 100)
        .unwrap();
    let EventBody::Points {
        replaced: Some(r), ..
    } = newest[0].body
    else {
        panic!(
            "the merged loss event says what it replaced: {:?}",
            newest[0]
        );
    };
    assert_eq!(r.end, 4, "the replaced event covered loss's first 4 points");
    assert!(r.seq > seen.unwrap() && r.seq < newest[0].seq);

    s.write_batch(&id, batch(vec![scalars("loss", &[0.0; 995])]))
        .unwrap();
    s.write_batch(&id, batch(vec![scalars("loss", &[7.0])]))
        .unwrap();
    let (_, all) = points_events(0);
    let loss: Vec<_> = all
        .iter()
        .filter(|r| r.0 == "loss")
        .map(|r| (r.1, r.2))
        .collect();
    assert_eq!(
        loss,
        vec![(0, 1000), (1000, 1)],
        "a merged event covers 1,000 points at most"
    );
}

#[test]
fn output_appended_a_line_at_a_time_keeps_one_event_per_stream() {
    let (_d, s) = store();
    let id = run(&s);
    let appends = |after: u64| {
        let events = events_of_type(&s, &id, "log_appended", after);
        let ranges = events.iter().map(|e| match &e.body {
            EventBody::LogAppended {
                stream,
                offset,
                length,
                replaced,
            } => (stream.clone(), *offset, *length, replaced.map(|r| r.end)),
            other => panic!("not a log event: {other:?}"),
        });
        (events.last().map(|e| e.seq), ranges.collect::<Vec<_>>())
    };
    s.append_log(&id, "stdout", b"line 0\n").unwrap();
    let (seen, _) = appends(0);
    for i in 1..5 {
        s.append_log(&id, "stdout", format!("line {i}\n").as_bytes())
            .unwrap();
    }
    s.append_log(&id, "stderr", b"oops\n").unwrap();
    assert_eq!(
        appends(0).1,
        vec![
            ("stdout".into(), 0, 35, Some(28)),
            ("stderr".into(), 0, 5, None)
        ],
        "each stream's appends merged into one event, naming the part the replaced one covered"
    );
    assert_eq!(
        appends(seen.unwrap()).1,
        appends(0).1,
        "a reader past the first event still gets every byte"
    );
    assert_eq!(
        s.read_log(&id, "stdout", 0, 35).unwrap().data,
        "line 0\nline 1\nline 2\nline 3\nline 4\n"
    );
    let big = vec![b'x'; 40 * 1024];
    s.append_log(&id, "stdout", &big).unwrap();
    s.append_log(&id, "stdout", &big).unwrap();
    let stdout: Vec<_> = appends(0)
        .1
        .into_iter()
        .filter(|a| a.0 == "stdout")
        .map(|a| (a.1, a.2))
        .collect();
    assert_eq!(
        stdout,
        vec![(0, 35 + 40 * 1024), (35 + 40 * 1024, 40 * 1024)],
        "a merged event covers 64 KiB at most"
    );
}

#[test]
fn events_are_ordered_and_filtered() {
    let (_d, s) = store();
    let rx = s.subscribe();
    let exp = s
        .create_experiment(NewExperiment {
            name: "e".into(),
            ..Default::default()
        })
        .unwrap();
    let a = s
        .create_run(NewRun {
            experiment_id: exp.id,
            ..Default::default()
        })
        .unwrap()
        .id;
    let b = run(&s);
    s.write_batch(
        &a,
        batch(vec![scalars("loss", &[1.0, 2.0]), scalars("acc", &[0.5])]),
    )
    .unwrap();
    s.append_log(&b, "stdout", b"hi").unwrap();
    s.update_run(
        &a,
        RunPatch {
            status: Some(RunStatus::Completed),
            ..Default::default()
        },
    )
    .unwrap();
    let all_events = s.events_since(&EventFilter::default(), 0, 100).unwrap();
    assert!(all_events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert_eq!(*rx.borrow(), all_events.last().unwrap().seq);
    let of_a = s
        .events_since(
            &EventFilter {
                run_id: Some(a.clone()),
                ..Default::default()
            },
            0,
            100,
        )
        .unwrap();
    let bodies: Vec<_> = of_a.iter().map(|e| e.body.clone()).collect();
    assert!(matches!(bodies[0], EventBody::RunCreated { .. }));
    assert_eq!(
        bodies[1],
        EventBody::Points {
            name: "loss".into(),
            kind: MetricKind::Scalar,
            from_index: 0,
            count: 2,
            last_step: Some(1),
            last_value: serde_json::json!(2.0),
            replaced: None,
        }
    );
    assert!(matches!(bodies[2], EventBody::Points { ref name, .. } if name == "acc"));
    assert_eq!(
        bodies[3],
        EventBody::RunUpdated {
            status: RunStatus::Completed,
            status_changed: true
        }
    );
    assert_eq!(bodies.len(), 4);
    let of_exp = s
        .events_since(
            &EventFilter {
                experiment_id: Some(exp.id),
                ..Default::default()
            },
            0,
            100,
        )
        .unwrap();
    assert_eq!(
        of_exp.len(),
        5,
        "experiment created + the 4 events of run a"
    );
    let later = s
        .events_since(&EventFilter::default(), of_a[1].seq, 2)
        .unwrap();
    assert_eq!(
        later.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![of_a[1].seq + 1, of_a[1].seq + 2]
    );
    let logs = s
        .events_since(
            &EventFilter {
                run_id: Some(b),
                ..Default::default()
            },
            0,
            10,
        )
        .unwrap();
    assert_eq!(
        logs[1].body,
        EventBody::LogAppended {
            stream: "stdout".into(),
            offset: 0,
            length: 2,
            replaced: None
        }
    );
    let typed = |types: &[&str]| {
        let filter = EventFilter {
            run_id: Some(a.clone()),
            types: types.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        s.events_since(&filter, 0, 100).unwrap()
    };
    let points = typed(&["points"]);
    assert_eq!(
        points.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![of_a[1].seq, of_a[2].seq],
        "only run a's points events, in seq order"
    );
    assert_eq!(typed(&["run_created", "run_updated"]).len(), 2);
    assert!(typed(&["artifact_written"]).is_empty());
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (id, seq) = {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let id = run(&s);
        s.write_batch(
            &id,
            batch(vec![scalars(
                "loss",
                &(0..5000).map(f64::from).collect::<Vec<_>>(),
            )]),
        )
        .unwrap();
        s.append_log(&id, "stdout", b"abc").unwrap();
        s.put_artifact(&id, "f.txt", &mut &b"f"[..]).unwrap();
        (id, *s.subscribe().borrow())
    };
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(*s.subscribe().borrow(), seq);
    assert_eq!(s.get_run(&id).unwrap().metrics[0].count, 5000);
    s.write_batch(&id, batch(vec![scalars("loss", &[1.0])]))
        .unwrap();
    let got = s.read_scalars(&id, "loss", &all()).unwrap();
    assert_eq!((got.len(), got.steps[5000]), (5001, 5000));
    assert_eq!(s.read_log(&id, "stdout", 0, 10).unwrap().data, "abc");
    assert_eq!(s.list_artifacts(&id, None, false).unwrap().len(), 1);
    // Two stores on one directory (two processes in real life) see each other's commits.
    let other = EmbeddedStore::open(dir.path()).unwrap();
    other
        .write_batch(&id, batch(vec![scalars("loss", &[2.0])]))
        .unwrap();
    s.write_batch(&id, batch(vec![scalars("loss", &[3.0])]))
        .unwrap();
    let got = s.read_scalars(&id, "loss", &all()).unwrap();
    assert_eq!(&got.steps[5000..], &[5000, 5001, 5002]);
    assert_eq!(schema_version(dir.path()), super::schema::VERSION);
}

/// A directory written by version 6 (metric blocks keyed by series and first index, WITHOUT ROWID, summary
/// after the data) opens with every point, its overviews and its open fragments, and takes appends.
#[test]
fn version_6_blocks_move_to_the_indexed_table() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f64> = (0..9000).map(|i| f64::from(i) * 0.5).collect();
    let id = {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let id = run(&s);
        s.write_batch(&id, batch(vec![scalars("loss", &values[..8900])]))
            .unwrap();
        // Fragments after the full blocks: the open region must survive the move too.
        for chunk in values[8900..].chunks(25) {
            s.write_batch(&id, batch(vec![scalars("loss", chunk)]))
                .unwrap();
        }
        id
    };
    let rows_before = block_rows(dir.path());
    assert!(rows_before.len() > 3, "full blocks and fragments");
    write_blocks_as_version_6(dir.path());
    assert_eq!(schema_version(dir.path()), 6);

    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(schema_version(dir.path()), super::schema::VERSION);
    assert_eq!(block_rows(dir.path()), rows_before);
    let got = s.read_scalars(&id, "loss", &all()).unwrap();
    assert_eq!(got.values.iter().map(|v| v.0).collect::<Vec<_>>(), values);
    let overview = s.read_downsampled(&id, "loss", &all(), 10).unwrap();
    assert_eq!(overview.values.last().map(|v| v.0), Some(4499.5));
    s.write_batch(&id, batch(vec![scalars("loss", &[-1.0])]))
        .unwrap();
    let got = s.read_scalars(&id, "loss", &all()).unwrap();
    assert_eq!(
        (got.len(), got.values[9000].0, got.steps[9000]),
        (9001, -1.0, 9000)
    );
}

/// A series' top point (MLflow's "latest metric") is the greatest by step, time and value, kept as points come
/// in any order; a directory of version 8 starts each series from its last point.
#[test]
fn series_keep_their_top_point_and_version_8_directories_start_from_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let points = |steps: &[i64], values: &[f64]| ScalarWrite {
        steps: Some(steps.iter().map(|s| Some(*s)).collect()),
        times: Some(vec![WallTime(1000); steps.len()]),
        ..scalars("acc", values)
    };
    let top = |s: &EmbeddedStore, id: &RunId| {
        let info = s.metric_info(id, "acc").unwrap();
        match info.top {
            Some(t) => (t.step, t.value.0),
            None => (info.last_step.unwrap(), info.last_value.as_f64().unwrap()),
        }
    };
    let id = {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let id = run(&s);
        s.write_batch(&id, batch(vec![points(&[10, 2], &[0.5, 0.7])]))
            .unwrap();
        s.write_batch(&id, batch(vec![points(&[5], &[0.9])]))
            .unwrap();
        assert_eq!(top(&s, &id), (10, 0.5), "not the last logged (5, 0.9)");
        s.write_batch(&id, batch(vec![points(&[10], &[0.6])]))
            .unwrap();
        assert_eq!(
            top(&s, &id),
            (10, 0.6),
            "same step and time: the greater value"
        );
        s.write_batch(&id, batch(vec![points(&[12], &[0.2])]))
            .unwrap();
        let info = s.metric_info(&id, "acc").unwrap();
        assert_eq!(info.top, None, "the last point is the top: nothing stored");
        s.write_batch(&id, batch(vec![points(&[10], &[0.9])]))
            .unwrap();
        assert_eq!(
            top(&s, &id),
            (12, 0.2),
            "a top stored as NULL was the last point"
        );
        id
    };
    let c = rusqlite::Connection::open(dir.path().join("flightlog.db")).unwrap();
    c.execute_batch(
        "ALTER TABLE series DROP COLUMN top_step; ALTER TABLE series DROP COLUMN top_time;
         ALTER TABLE series DROP COLUMN top_value; PRAGMA user_version = 8;",
    )
    .unwrap();
    drop(c);
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(schema_version(dir.path()), super::schema::VERSION);
    assert_eq!(top(&s, &id), (10, 0.9), "the last point, taken for the top");
    s.write_batch(&id, batch(vec![points(&[11], &[0.1])]))
        .unwrap();
    assert_eq!(top(&s, &id), (11, 0.1));
}

/// (series, first index, count) of every stored block, in key order.
fn block_rows(dir: &std::path::Path) -> Vec<(i64, i64, i64)> {
    let c = rusqlite::Connection::open(dir.join("flightlog.db")).unwrap();
    let mut st = c
        .prepare("SELECT series_id, first_index, count FROM blocks ORDER BY series_id, first_index")
        .unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

/// Rewrites the blocks table as schema version 6 laid it out, and marks the directory version 6.
fn write_blocks_as_version_6(dir: &std::path::Path) {
    let c = rusqlite::Connection::open(dir.join("flightlog.db")).unwrap();
    c.execute_batch(
        "BEGIN;
         CREATE TABLE blocks_v6 (series_id INTEGER NOT NULL, first_index INTEGER NOT NULL, count INTEGER NOT NULL,
             min_step INTEGER NOT NULL, max_step INTEGER NOT NULL, min_value REAL, max_value REAL,
             encoding INTEGER NOT NULL, data BLOB NOT NULL, summary BLOB,
             PRIMARY KEY(series_id, first_index)) WITHOUT ROWID;
         INSERT INTO blocks_v6 SELECT series_id, first_index, count, min_step, max_step, min_value, max_value,
             encoding, data, summary FROM blocks;
         DROP TABLE blocks;
         ALTER TABLE blocks_v6 RENAME TO blocks;
         PRAGMA user_version = 6;
         COMMIT;",
    )
    .unwrap();
}

fn schema_version(dir: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(dir.join("flightlog.db")).unwrap();
    c.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[test]
fn concurrent_writers_lose_nothing() {
    let (_d, s) = store();
    let s = Arc::new(s);
    let runs: Vec<RunId> = (0..4).map(|_| run(&s)).collect();
    std::thread::scope(|scope| {
        for t in 0..16 {
            let (s, run) = (s.clone(), runs[t % 4].clone());
            scope.spawn(move || {
                for i in 0..100 {
                    let b = Batch {
                        batch_id: Some(format!("{t}-{i}")),
                        logs: vec![LogAppend {
                            stream: "stdout".into(),
                            data: format!("{t}:{i}\n"),
                        }],
                        ..batch(vec![
                            scalars("shared", &[i as f64]),
                            scalars(&format!("own{t}"), &[i as f64, i as f64]),
                        ])
                    };
                    s.write_batch(&run, b).unwrap();
                }
            });
        }
    });
    for (r, run) in runs.iter().enumerate() {
        assert_eq!(
            s.read_scalars(run, "shared", &all()).unwrap().steps,
            (0..400).collect::<Vec<_>>()
        );
        for t in (r..16).step_by(4) {
            assert_eq!(
                s.read_scalars(run, &format!("own{t}"), &all())
                    .unwrap()
                    .len(),
                200
            );
        }
        let log = s.read_log(run, "stdout", 0, 1 << 20).unwrap();
        assert_eq!(log.data.lines().count(), 400);
    }
    let events = s.events_since(&EventFilter::default(), 0, 100_000).unwrap();
    assert!(events.windows(2).all(|w| w[1].seq > w[0].seq));
    let ends = replayed_point_ranges(&events);
    for (r, run) in runs.iter().enumerate() {
        assert_eq!(ends[&(run.clone(), "shared".to_string())], 400);
        for t in (r..16).step_by(4) {
            assert_eq!(ends[&(run.clone(), format!("own{t}"))], 200);
        }
    }
}

/// Replays the points events in seq order, checking each continues its series where the last one ended (a
/// reader following the log gets every point once); returns where each series ended.
fn replayed_point_ranges(events: &[Event]) -> BTreeMap<(RunId, String), u64> {
    let mut ends = BTreeMap::new();
    for e in events {
        if let EventBody::Points {
            name,
            from_index,
            count,
            ..
        } = &e.body
        {
            let end = ends
                .entry((e.run_id.clone().unwrap(), name.clone()))
                .or_insert(0);
            assert_eq!(*from_index, *end, "event {} of {name} leaves a gap", e.seq);
            *end += count;
        }
    }
    ends
}

#[test]
fn reopen_is_the_only_way_out_of_a_terminal_state() {
    let (_d, s) = store();
    let id = run(&s);
    let done = RunPatch {
        status: Some(RunStatus::Completed),
        ..Default::default()
    };
    s.update_run(&id, done.clone()).unwrap();
    let again = RunPatch {
        status: Some(RunStatus::Running),
        ..Default::default()
    };
    assert!(matches!(
        s.update_run(&id, again.clone()),
        Err(Error::IllegalTransition { .. })
    ));
    let reopened = s
        .update_run(
            &id,
            RunPatch {
                reopen: true,
                ..again
            },
        )
        .unwrap();
    assert_eq!(reopened.status, RunStatus::Running);
    assert_eq!(reopened.end_time, None);
    let finished = s.update_run(&id, done).unwrap();
    assert_eq!(finished.status, RunStatus::Completed);
    assert!(finished.end_time.is_some());
}

#[test]
fn documents_round_trip_by_kind() {
    let (_d, s) = store();
    let body = serde_json::json!({"name": "m", "n": 1});
    s.put_document("k", "b", &body).unwrap();
    s.put_document("k", "a", &serde_json::json!({})).unwrap();
    s.put_document("other", "a", &serde_json::json!(1)).unwrap();
    assert_eq!(s.get_document("k", "b").unwrap(), Some(body));
    assert_eq!(s.get_document("k", "zz").unwrap(), None);
    let ids: Vec<String> = s
        .list_documents("k")
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(s.delete_document("k", "a").unwrap());
    assert!(!s.delete_document("k", "a").unwrap());
}

#[test]
fn document_items_append_once_each_in_order_and_go_with_the_document() {
    let (_d, s) = store();
    let j = |v: i64| serde_json::json!({"v": v});
    s.put_document("k", "m", &serde_json::json!({})).unwrap();
    s.append_document_items("k", "m", &[j(2), j(1)]).unwrap();
    s.append_document_items("k", "m", &[j(1), j(3), j(3)])
        .unwrap();
    s.append_document_items("k", "other", &[j(9)]).unwrap();
    assert_eq!(s.document_items("k", "m").unwrap(), vec![j(2), j(1), j(3)]);
    assert!(s.document_items("k", "none").unwrap().is_empty());
    let huge = serde_json::json!("x".repeat(70_000));
    assert!(matches!(
        s.append_document_items("k", "m", &[j(4), huge]),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(
        s.document_items("k", "m").unwrap().len(),
        3,
        "nothing of a rejected append"
    );
    assert!(s.delete_document("k", "m").unwrap());
    assert!(s.document_items("k", "m").unwrap().is_empty());
    assert_eq!(s.document_items("k", "other").unwrap(), vec![j(9)]);
}

/// The size of the store's write-ahead log.
fn wal_len(dir: &tempfile::TempDir) -> u64 {
    std::fs::metadata(dir.path().join("flightlog.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// A store whose log holds 50 commits of run `x` (5,000 points) not yet folded in.
fn store_with_logged_commits() -> (tempfile::TempDir, EmbeddedStore, RunId) {
    let (dir, s) = store();
    let id = run(&s);
    for i in 0..50 {
        s.write_batch(&id, batch(vec![scalars("x", &[i as f64; 100])]))
            .unwrap();
    }
    assert!(wal_len(&dir) > 0, "commits go to the log first");
    (dir, s, id)
}

#[test]
fn a_steady_stream_of_reads_cannot_hold_off_the_log_truncation() {
    let (dir, s, id) = store_with_logged_commits();
    // Reads without a pause: a blocked truncation is retried, and readers that began after the log was copied
    // in no longer hold it back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while wal_len(&dir) > 0 && std::time::Instant::now() < deadline {
        assert_eq!(s.read_scalars(&id, "x", &all()).unwrap().len(), 5000);
    }
    assert_eq!(
        wal_len(&dir),
        0,
        "the log is truncated although reads never paused"
    );
}

#[test]
fn the_log_is_folded_in_and_truncated_once_writes_pause() {
    let (dir, s, id) = store_with_logged_commits();
    // A reader in the middle of a read blocks the truncation; it is retried once the reader is done.
    let reader = rusqlite::Connection::open(dir.path().join("flightlog.db")).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let blocks: i64 = reader
        .query_row("SELECT count(*) FROM blocks", [], |r| r.get(0))
        .unwrap();
    assert!(blocks > 0);
    std::thread::sleep(std::time::Duration::from_millis(100));
    reader.execute_batch("COMMIT").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while wal_len(&dir) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(wal_len(&dir), 0, "the idle writer truncates the log");
    assert_eq!(s.read_scalars(&id, "x", &all()).unwrap().len(), 5000);
}

#[test]
fn a_store_dropped_in_a_forked_child_leaves_the_parents_threads_alone() {
    let (_d, s) = store();
    let id = run(&s);
    // SAFETY: the child drops the store and leaves with _exit; with the guard that drop only bumps a count.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(s);
        unsafe { libc::_exit(0) };
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut status = 0;
    let exited = loop {
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            break true;
        }
        if std::time::Instant::now() >= deadline {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            unsafe { libc::waitpid(pid, &mut status, 0) };
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(
        exited,
        "the child hung dropping the store (joining threads it does not have)"
    );
    assert_eq!(status, 0);
    // The parent's store is untouched and goes on.
    s.write_batch(&id, batch(vec![scalars("after", &[1.0])]))
        .unwrap();
    assert_eq!(s.read_scalars(&id, "after", &all()).unwrap().len(), 1);
}
