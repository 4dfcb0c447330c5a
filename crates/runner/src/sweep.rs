//! Sweeps: one child run per combination of parameter values under a parent run, at most N at once.

use crate::error::RunnerError;
use crate::lifecycle::{self, CancelFlags, Finished, Submission, EXIT_CANCELED, TARGET_PROPERTY};
use crate::target::ComputeTarget;
use crate::tracker::Tracker;
use crate::workdir::ChildDir;
use flightlog_model::{ErrorDetails, NewRun, Run, RunStatus, SeriesInfo};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What became of one combination of a sweep.
#[derive(Clone, Debug)]
pub enum ChildOutcome {
    /// Its run was made and ended.
    Ran(Finished),
    /// The sweep was canceled before it started. No run is made for it (it would only clutter the run list as
    /// a Canceled run that never ran).
    NotStarted,
    /// It could not be submitted: why.
    Failed(String),
}

impl ChildOutcome {
    /// The status it counts as toward the parent's.
    fn status(&self) -> RunStatus {
        match self {
            ChildOutcome::Ran(f) => f.status,
            ChildOutcome::NotStarted => RunStatus::Canceled,
            ChildOutcome::Failed(_) => RunStatus::Failed,
        }
    }

    /// Why it has no run, if it has none.
    pub fn error(&self) -> Option<String> {
        match self {
            ChildOutcome::Ran(_) => None,
            ChildOutcome::NotStarted => Some("not started: the sweep was canceled".into()),
            ChildOutcome::Failed(why) => Some(why.clone()),
        }
    }
}

/// One `--sweep NAME=V1,V2,...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Axis {
    pub name: String,
    pub values: Vec<String>,
}

/// Parses `NAME=V1,V2,...` (values may not be empty; names are placeholder names).
pub fn parse_axis(s: &str) -> Result<Axis, RunnerError> {
    let bad = |why: &str| RunnerError::BadSweep(format!("'{s}' {why}"));
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| bad("is not NAME=V1,V2,..."))?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || "_-.".contains(c))
    {
        return Err(bad("needs a name of letters, digits, '_', '-' or '.'"));
    }
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
    if values.iter().any(String::is_empty) {
        return Err(bad("has an empty value"));
    }
    Ok(Axis {
        name: name.to_string(),
        values,
    })
}

/// Every combination, the first axis varying slowest.
pub fn combinations(axes: &[Axis]) -> Vec<BTreeMap<String, String>> {
    let mut out = vec![BTreeMap::new()];
    for axis in axes {
        out = out
            .into_iter()
            .flat_map(|combo| {
                axis.values.iter().map(move |v| {
                    let mut c = combo.clone();
                    c.insert(axis.name.clone(), v.clone());
                    c
                })
            })
            .collect();
    }
    out
}

/// The command with each `{name}` replaced by the combination's value.
pub fn substitute(cmd: &[String], combo: &BTreeMap<String, String>) -> Vec<String> {
    cmd.iter().map(|arg| substitute_arg(arg, combo)).collect()
}

/// One pass over the argument: a value that itself holds `{other}` stays as it is (replacing one
/// placeholder after another would substitute into values already put in).
fn substitute_arg(arg: &str, combo: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let from_brace = &rest[open..];
        let found = combo.iter().find_map(|(k, v)| {
            let after = from_brace.strip_prefix('{')?.strip_prefix(k.as_str())?;
            Some((v, after.strip_prefix('}')?))
        });
        match found {
            Some((value, after)) => {
                out.push_str(value);
                rest = after;
            }
            None => {
                out.push('{');
                rest = &from_brace[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Refuses duplicate axes and axes the command never mentions (a typo would silently run copies).
pub fn check(cmd: &[String], axes: &[Axis]) -> Result<(), RunnerError> {
    for (i, a) in axes.iter().enumerate() {
        if axes[..i].iter().any(|b| b.name == a.name) {
            return Err(RunnerError::BadSweep(format!(
                "'{}' is given twice",
                a.name
            )));
        }
        let placeholder = format!("{{{}}}", a.name);
        if !cmd.iter().any(|c| c.contains(&placeholder)) {
            return Err(RunnerError::BadSweep(format!(
                "the command has no {placeholder} placeholder"
            )));
        }
    }
    Ok(())
}

/// A finished sweep: the parent's outcome and each child's, in combination order.
#[derive(Clone, Debug)]
pub struct SweepOutcome {
    pub parent: Finished,
    pub children: Vec<ChildOutcome>,
    /// The summary table (also the parent's `stdout` log and `sweep_summary.json` artifact).
    pub summary: String,
}

/// Runs the sweep: the parent (Running, holding the snapshot), then the children, at most `parallel` at
/// once; the parent ends Failed if any child failed, Canceled if any was canceled, else Completed.
pub fn run_sweep(
    tracker: Arc<dyn Tracker>,
    target: &dyn ComputeTarget,
    base: &Submission,
    axes: &[Axis],
    parallel: usize,
    on_created: &(dyn Fn(&Run) + Sync),
) -> Result<SweepOutcome, RunnerError> {
    if axes.is_empty() {
        return Err(RunnerError::BadSweep("no --sweep given".into()));
    }
    check(&base.command, axes)?;
    let prepared = lifecycle::prepare(tracker.as_ref(), base)?;
    let parent = create_parent(
        tracker.as_ref(),
        target,
        base,
        axes,
        &prepared.experiment_id,
    )?;
    on_created(&parent);
    lifecycle::upload_snapshot(tracker.as_ref(), &parent.id, &prepared.snapshot)?;
    // A cancel of the parent (`runs cancel PARENT`) or Ctrl-C stops the running children and starts no more.
    let cancel = CancelFlags::watch(tracker.as_ref(), &parent.id, None);
    let combos = combinations(axes);
    let results: Vec<Mutex<Option<ChildOutcome>>> =
        combos.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let side_by_side = parallel.clamp(1, combos.len());
    std::thread::scope(|s| {
        for _ in 0..side_by_side {
            s.spawn(|| loop {
                if cancel.requested() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(combo) = combos.get(i) else { return };
                let mut sub = base.clone();
                sub.command = substitute(&base.command, combo);
                sub.params = combo.clone();
                sub.parent_id = Some(parent.id.clone());
                sub.snapshot = false;
                sub.display_name = Some(child_name(combo));
                sub.canceled_with = Some(cancel.run_canceled());
                // Children side by side each get a working dir of their own (dropped when it has ended).
                let own_dir = (side_by_side > 1)
                    .then(|| ChildDir::create(&prepared.source_dir, &parent.id, &child_name(combo)))
                    .transpose();
                let r = match own_dir {
                    Ok(dir) => {
                        sub.working_dir = dir.as_ref().map(|d| d.path().to_path_buf());
                        lifecycle::execute(
                            tracker.clone(),
                            target,
                            &sub,
                            prepared.clone(),
                            &mut |r| on_created(r),
                        )
                        .map_or_else(|e| ChildOutcome::Failed(e.to_string()), ChildOutcome::Ran)
                    }
                    Err(e) => ChildOutcome::Failed(format!("cannot make its working dir: {e}")),
                };
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    drop(cancel);
    let children: Vec<ChildOutcome> = results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .ok()
                .flatten()
                .unwrap_or(ChildOutcome::NotStarted)
        })
        .collect();
    finish_parent(tracker.as_ref(), &parent, &combos, children)
}

fn child_name(combo: &BTreeMap<String, String>) -> String {
    combo
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn create_parent(
    tracker: &dyn Tracker,
    target: &dyn ComputeTarget,
    base: &Submission,
    axes: &[Axis],
    experiment_id: &str,
) -> Result<Run, RunnerError> {
    let spec = axes
        .iter()
        .map(|a| format!("{}={}", a.name, a.values.join(",")))
        .collect::<Vec<_>>()
        .join(" ");
    let properties = BTreeMap::from([
        (TARGET_PROPERTY.to_string(), target.name().to_string()),
        ("sweep".to_string(), spec),
        (
            "command".to_string(),
            crate::props::command_line(&base.command),
        ),
    ]);
    Ok(tracker.create_run(&NewRun {
        experiment_id: experiment_id.parse()?,
        display_name: Some(base.display_name.clone().unwrap_or_else(|| "sweep".into())),
        status: Some(RunStatus::Running),
        tags: base.tags.clone(),
        properties,
        host: crate::props::hostname(),
        command: Some(crate::props::command_line(&base.command)),
        ..Default::default()
    })?)
}

/// The parent's status from its children's: Failed if any failed (or could not be submitted), else Canceled
/// if any was canceled or never started, else Completed.
fn parent_status(children: &[ChildOutcome]) -> RunStatus {
    if children.iter().any(|c| c.status() == RunStatus::Failed) {
        RunStatus::Failed
    } else if children.iter().any(|c| c.status() == RunStatus::Canceled) {
        RunStatus::Canceled
    } else {
        RunStatus::Completed
    }
}

fn finish_parent(
    tracker: &dyn Tracker,
    parent: &Run,
    combos: &[BTreeMap<String, String>],
    children: Vec<ChildOutcome>,
) -> Result<SweepOutcome, RunnerError> {
    let mut rows = Vec::new();
    for (combo, child) in combos.iter().zip(&children) {
        let run = match child {
            ChildOutcome::Ran(f) => tracker.get_run(&f.run_id).ok(),
            ChildOutcome::NotStarted | ChildOutcome::Failed(_) => None,
        };
        rows.push(summary_row(combo, child, run.as_ref()));
    }
    let summary = summary_table(&rows);
    let json = serde_json::to_vec_pretty(&rows).unwrap_or_default();
    let _ = tracker.put_bytes(&parent.id, "sweep_summary.json", &json);
    let _ = tracker.log_text(&parent.id, "stdout", &summary);
    tracker.flush(std::time::Duration::from_secs(30));
    let status = parent_status(&children);
    let failed = children
        .iter()
        .filter(|c| c.status() != RunStatus::Completed)
        .count();
    let error = (status != RunStatus::Completed).then(|| ErrorDetails {
        message: format!("{failed} of {} child runs did not complete", children.len()),
        code: None,
        details: Some(lifecycle::last_bytes(&summary)),
    });
    let exit_code = |s: RunStatus| match s {
        RunStatus::Completed => 0,
        RunStatus::Canceled => EXIT_CANCELED,
        _ => 1,
    };
    let patch = lifecycle::outcome_patch(status, error.clone(), exit_code(status));
    let run = match tracker.update_run(&parent.id, &patch) {
        // Canceled meanwhile by someone else: that end stands.
        Err(flightlog_model::Error::IllegalTransition { .. }) => tracker.get_run(&parent.id)?,
        other => other?,
    };
    let exit_code = exit_code(run.status);
    Ok(SweepOutcome {
        parent: Finished {
            run_id: parent.id.clone(),
            status: run.status,
            exit_code,
            error,
        },
        children,
        summary,
    })
}

/// One child's row: run id, status, params and the last value of each metric.
fn summary_row(
    combo: &BTreeMap<String, String>,
    child: &ChildOutcome,
    run: Option<&Run>,
) -> serde_json::Value {
    let metrics: BTreeMap<&str, &serde_json::Value> = run
        .map(|r| {
            r.metrics
                .iter()
                .map(|m: &SeriesInfo| (m.name.as_str(), &m.last_value))
                .collect()
        })
        .unwrap_or_default();
    match child {
        ChildOutcome::Ran(f) => serde_json::json!({
            "run_id": f.run_id, "status": f.status, "exit_code": f.exit_code,
            "params": combo, "metrics": metrics,
        }),
        ChildOutcome::NotStarted | ChildOutcome::Failed(_) => {
            serde_json::json!({"status": "NotStarted", "error": child.error(), "params": combo})
        }
    }
}

/// The rows as an aligned text table: RUN STATUS <params...> <metrics...>.
fn summary_table(rows: &[serde_json::Value]) -> String {
    let mut params: Vec<String> = Vec::new();
    let mut metrics: Vec<String> = Vec::new();
    for r in rows {
        for (key, list) in [("params", &mut params), ("metrics", &mut metrics)] {
            if let Some(o) = r[key].as_object() {
                for k in o.keys() {
                    if !list.contains(k) {
                        list.push(k.clone());
                    }
                }
            }
        }
    }
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut table: Vec<Vec<String>> = vec![["RUN", "STATUS"]
        .iter()
        .map(|s| s.to_string())
        .chain(params.iter().cloned())
        .chain(metrics.iter().cloned())
        .collect()];
    for r in rows {
        let mut line = vec![cell(&r["run_id"]), cell(&r["status"])];
        line.extend(params.iter().map(|p| cell(&r["params"][p])));
        line.extend(metrics.iter().map(|m| cell(&r["metrics"][m])));
        table.push(line);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| {
            table
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &table {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed child fails the parent; else one canceled or never started cancels it.
    #[test]
    fn the_parents_status_follows_its_childrens() {
        let ran = |status| {
            ChildOutcome::Ran(Finished {
                run_id: flightlog_model::RunId::new(),
                status,
                exit_code: 0,
                error: None,
            })
        };
        let done = ran(RunStatus::Completed);
        let failed = ChildOutcome::Failed("no such target".into());
        let cases = [
            (vec![done.clone(), done.clone()], RunStatus::Completed),
            (
                vec![done.clone(), ChildOutcome::NotStarted],
                RunStatus::Canceled,
            ),
            (
                vec![ran(RunStatus::Canceled), done.clone()],
                RunStatus::Canceled,
            ),
            (
                vec![ChildOutcome::NotStarted, failed.clone()],
                RunStatus::Failed,
            ),
            (
                vec![done.clone(), ran(RunStatus::Failed)],
                RunStatus::Failed,
            ),
        ];
        for (children, want) in cases {
            assert_eq!(parent_status(&children), want, "{children:?}");
        }
        assert_eq!(done.error(), None);
        assert_eq!(failed.error().as_deref(), Some("no such target"));
        assert!(ChildOutcome::NotStarted
            .error()
            .unwrap()
            .contains("the sweep was canceled"));
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn axes_combinations_and_placeholders() {
        let a = parse_axis("alpha=0.1,0.2").unwrap();
        let d = parse_axis("depth=3,5").unwrap();
        let combos = combinations(&[a.clone(), d.clone()]);
        assert_eq!(combos.len(), 4);
        assert_eq!(child_name(&combos[1]), "alpha=0.1 depth=5");
        let cmd = strings(&[
            "python",
            "train.py",
            "--alpha",
            "{alpha}",
            "--depth={depth}",
        ]);
        assert_eq!(
            substitute(&cmd, &combos[2]),
            strings(&["python", "train.py", "--alpha", "0.2", "--depth=3"])
        );
        assert!(check(&cmd, &[a.clone(), d]).is_ok());
        // A value holding another placeholder is put in as it is, once.
        let combo = BTreeMap::from([
            ("a".to_string(), "{b}".to_string()),
            ("b".to_string(), "1".to_string()),
        ]);
        assert_eq!(
            substitute(&strings(&["{a}-{b}", "{c}{", "{{b}}"]), &combo),
            strings(&["{b}-1", "{c}{", "{1}"])
        );
        let e = check(&strings(&["true"]), std::slice::from_ref(&a)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad --sweep: the command has no {alpha} placeholder"
        );
        let e = check(&cmd, &[a.clone(), a]).unwrap_err();
        assert_eq!(e.to_string(), "bad --sweep: 'alpha' is given twice");
        assert_eq!(
            parse_axis("alpha").unwrap_err().to_string(),
            "bad --sweep: 'alpha' is not NAME=V1,V2,..."
        );
        assert!(parse_axis("a=1,,2").is_err());
    }

    #[test]
    fn the_summary_lists_params_and_metrics() {
        let rows = vec![
            serde_json::json!({"run_id": "r1", "status": "Completed", "params": {"a": "1"}, "metrics": {"loss": 0.5}}),
            serde_json::json!({"run_id": "r2", "status": "Failed", "params": {"a": "2"}, "metrics": {}}),
        ];
        assert_eq!(
            summary_table(&rows),
            "RUN  STATUS     a  loss\nr1   Completed  1  0.5\nr2   Failed     2  -\n"
        );
    }
}
