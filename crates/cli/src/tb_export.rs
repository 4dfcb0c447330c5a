//! `flightlog export tensorboard`: picks the runs and prints what was written; the export itself is
//! `flightlog_tensorboard::export` (shared with the launcher and the Python SDK).

use crate::output::{print_json, Table};
use crate::tensorboard_cmd::{Bridge, ExportArgs};
use crate::CliError;
use flightlog_model::*;
use flightlog_tensorboard::export::{self as tb, ExportError, ExportSource};
use std::path::Path;

pub(crate) use flightlog_tensorboard::export::RunReport;

/// Which runs to export.
pub(crate) struct Selection {
    /// Run ids; empty: the experiment's top-level runs.
    pub runs: Vec<String>,
    pub experiment: Option<String>,
    /// Child runs too, nested in their parent's folder.
    pub recursive: bool,
}

pub(crate) fn run(b: &Bridge, args: ExportArgs) -> Result<(), CliError> {
    let sel = Selection {
        runs: args.run.into_iter().collect(),
        experiment: args.experiment,
        recursive: !args.no_recursive,
    };
    let reports = export(b, &args.logdir, &sel)?;
    print_report(b.json, &args.logdir, &reports)
}

impl From<ExportError> for CliError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Source(e) => e.into(),
            ExportError::Io(e) => e.into(),
        }
    }
}

/// The client as the export's source of runs.
impl ExportSource for Bridge {
    fn list_runs(&self, query: &RunQuery) -> Result<Vec<Run>> {
        Page::collect_all(|page_token| {
            self.client.list_runs(&RunQuery {
                page_token,
                ..query.clone()
            })
        })
    }
    fn list_metrics(&self, run: &RunId) -> Result<Vec<SeriesInfo>> {
        self.client.list_metrics(run)
    }
    fn read_scalars(&self, run: &RunId, name: &str) -> Result<ScalarSeries> {
        self.client
            .read_scalars_binary(run, name, &ReadRange::default())
    }
    fn read_records(&self, run: &RunId, name: &str) -> Result<Vec<Record>> {
        self.client.read_records(run, name, &ReadRange::default())
    }
    fn artifact_bytes(&self, run: &RunId, path: &str) -> Result<Vec<u8>> {
        self.client.read_artifact(run, path)
    }
}

/// Exports the selected runs into `logdir`, replacing what an earlier export wrote there.
pub(crate) fn export(
    b: &Bridge,
    logdir: &Path,
    sel: &Selection,
) -> Result<Vec<RunReport>, CliError> {
    let tops = match &sel.experiment {
        _ if !sel.runs.is_empty() => sel
            .runs
            .iter()
            .map(|r| Ok(b.client.get_run(&r.trim().parse::<RunId>()?)?))
            .collect::<Result<Vec<Run>, CliError>>()?,
        Some(e) => tb::experiment_runs(b, crate::commands::resolve_experiment(&b.client, e)?.id)?,
        None => {
            return Err(CliError::new(
                crate::EXIT_USAGE,
                "give a RUN or --experiment",
            ))
        }
    };
    Ok(tb::export(b, logdir, tops, sel.recursive)?)
}

fn print_report(json: bool, logdir: &Path, reports: &[RunReport]) -> Result<(), CliError> {
    if json {
        let out = serde_json::json!({"logdir": logdir.display().to_string(), "runs": reports});
        return Ok(print_json(&out)?);
    }
    let mut t = Table::new(&["RUN", "NAME", "FOLDER", "SCALARS", "OTHER"]).align_right(&[3, 4]);
    for r in reports {
        t.row(vec![
            r.run_id.clone(),
            crate::output::cut(&r.name, 40),
            crate::output::cut(&r.dir, 60),
            r.scalar_points.to_string(),
            r.other_points.to_string(),
        ]);
        for s in &r.skipped {
            eprintln!("warning: {}: {s}", r.name);
        }
    }
    t.print()?;
    println!("exported {} run(s) to {}", reports.len(), logdir.display());
    Ok(())
}
