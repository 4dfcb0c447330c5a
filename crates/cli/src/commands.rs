//! The client subcommands: they talk to a server through `flightlog_client`.

use crate::cli::{ArtifactsCmd, Cli, Command, ExperimentsCmd, RunsCmd};
use crate::output::{self, print_json, Table};
use crate::{CliError, EXIT_ERROR, EXIT_UNREACHABLE};
use flightlog_client::{Client, ClientConfig};
use flightlog_model::*;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn run(cli: Cli) -> Result<(), CliError> {
    let client = Client::new(ClientConfig {
        uri: cli.server.clone(),
        replay_on_start: false,
        ..Default::default()
    });
    let ctx = Ctx {
        client,
        json: cli.json,
        server: flightlog_client::normalize_uri(&cli.server),
    };
    let result = match cli.command {
        Command::Experiments(ExperimentsCmd::Ls { all }) => ctx.experiments_ls(all),
        Command::Runs(RunsCmd::Ls {
            experiment,
            status,
            limit,
        }) => ctx.runs_ls(experiment, status, limit),
        Command::Runs(RunsCmd::Show { run }) => ctx.runs_show(&run),
        Command::Runs(RunsCmd::Cancel { run }) => ctx.runs_cancel(&run),
        Command::Runs(RunsCmd::Wait(a)) => crate::submit_cmd::wait(&ctx.client, ctx.json, a),
        Command::Metrics { run, name, csv } => ctx.metrics(&run, name.as_deref(), csv),
        Command::Logs {
            run,
            stream,
            follow,
        } => ctx.logs(&run, stream.as_deref(), follow),
        Command::Artifacts(ArtifactsCmd::Ls {
            run,
            path,
            recursive,
        }) => ctx.artifacts_ls(&run, path.as_deref(), recursive),
        Command::Artifacts(ArtifactsCmd::Get { run, path, output }) => {
            ctx.artifacts_get(&run, &path, output)
        }
        Command::Artifacts(ArtifactsCmd::Put { run, local, dest }) => {
            ctx.artifacts_put(&run, &local, dest)
        }
        Command::Sync { spool, all } => ctx.sync(spool, all),
        Command::Server { .. }
        | Command::Submit(_)
        | Command::Completions { .. }
        | Command::Export(_)
        | Command::Import(_)
        | Command::Tensorboard(_) => {
            unreachable!("handled by the caller")
        }
    };
    result.map_err(|e| ctx.explain(e))
}

struct Ctx {
    client: Client,
    json: bool,
    server: String,
}

fn parse_run(s: &str) -> Result<RunId, CliError> {
    s.trim().parse::<RunId>().map_err(CliError::from)
}

fn progress_bar(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match len {
        Some(l) => ProgressBar::new(l),
        None => ProgressBar::no_length(),
    };
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

/// Names the server in a transport error ("cannot reach the flightlog server at URL: …"), once.
pub(crate) fn explain_unreachable(server: &str, e: CliError) -> CliError {
    if e.code == EXIT_UNREACHABLE && !e.message.contains(server) {
        CliError {
            message: format!(
                "cannot reach the flightlog server at {server}: {}",
                e.message
            ),
            ..e
        }
    } else {
        e
    }
}

impl Ctx {
    /// Adds the server URL to transport errors.
    fn explain(&self, e: CliError) -> CliError {
        explain_unreachable(&self.server, e)
    }

    // --- experiments ------------------------------------------------------------------------------------

    fn experiments_ls(&self, all: bool) -> Result<(), CliError> {
        let items = self.client.list_all_experiments(&ExperimentQuery {
            include_deleted: all,
            ..Default::default()
        })?;
        if self.json {
            return Ok(print_json(&items)?);
        }
        let mut t =
            Table::new(&["ID", "NAME", "RUNS", "LAST ACTIVITY", "CREATED"]).align_right(&[0, 2]);
        for e in &items {
            let mut name = e.name.clone();
            if e.lifecycle == Lifecycle::Deleted {
                name.push_str(" (deleted)");
            }
            t.row(vec![
                e.id.to_string(),
                name,
                e.run_count.to_string(),
                output::opt_time(e.last_activity),
                output::time(e.created_time),
            ]);
        }
        Ok(t.print()?)
    }

    // --- runs ---------------------------------------------------------------------------------------------

    fn resolve_experiment(&self, s: &str) -> Result<Experiment, CliError> {
        resolve_experiment(&self.client, s)
    }

    fn runs_ls(
        &self,
        experiment: Option<String>,
        status: Vec<String>,
        limit: u32,
    ) -> Result<(), CliError> {
        let mut q = RunQuery {
            limit: Some(limit),
            ..Default::default()
        };
        let mut exp_names = std::collections::HashMap::new();
        if let Some(e) = experiment {
            let exp = self.resolve_experiment(&e)?;
            q.experiment_ids.push(exp.id);
            exp_names.insert(exp.id, exp.name);
        }
        for s in &status {
            for part in s.split(',').filter(|p| !p.trim().is_empty()) {
                q.statuses.push(part.trim().parse::<RunStatus>()?);
            }
        }
        let page = self.client.list_runs(&q)?;
        if self.json {
            return Ok(print_json(&page.items)?);
        }
        if exp_names.is_empty() {
            if let Ok(exps) = self.client.list_all_experiments(&ExperimentQuery {
                include_deleted: true,
                ..Default::default()
            }) {
                exp_names.extend(exps.into_iter().map(|e| (e.id, e.name)));
            }
        }
        let now = WallTime::now();
        let mut t = Table::new(&["ID", "NAME", "STATUS", "EXPERIMENT", "CREATED", "DURATION"]);
        for r in &page.items {
            let exp = exp_names
                .get(&r.experiment_id)
                .cloned()
                .unwrap_or_else(|| r.experiment_id.to_string());
            t.row(vec![
                r.id.to_string(),
                output::cut(&r.display_name, 40),
                r.status.to_string(),
                output::cut(&exp, 30),
                output::time(r.created_time),
                run_duration(r, now),
            ]);
        }
        t.print()?;
        if page.next_page_token.is_some() {
            eprintln!("(more runs than --limit {limit}; raise it to see them)");
        }
        Ok(())
    }

    fn runs_show(&self, run: &str) -> Result<(), CliError> {
        let id = parse_run(run)?;
        let r = self.client.get_run(&id)?;
        if self.json {
            return Ok(print_json(&r)?);
        }
        let exp = self
            .client
            .get_experiment(r.experiment_id)
            .map(|e| e.name)
            .unwrap_or_default();
        let mut o = std::io::stdout().lock();
        let now = WallTime::now();
        writeln!(o, "Run:         {}", r.id)?;
        writeln!(o, "Name:        {}", r.display_name)?;
        writeln!(o, "Experiment:  {} ({})", exp, r.experiment_id)?;
        writeln!(o, "Status:      {}", r.status)?;
        if r.lifecycle == Lifecycle::Deleted {
            writeln!(o, "Lifecycle:   deleted")?;
        }
        if let Some(p) = &r.parent_id {
            writeln!(o, "Parent:      {p}")?;
        }
        if !r.description.is_empty() {
            writeln!(o, "Description: {}", r.description)?;
        }
        writeln!(o, "Created:     {}", output::time(r.created_time))?;
        writeln!(o, "Started:     {}", output::opt_time(r.start_time))?;
        writeln!(o, "Ended:       {}", output::opt_time(r.end_time))?;
        writeln!(o, "Duration:    {}", run_duration(&r, now))?;
        if !r.user.is_empty() || !r.host.is_empty() {
            writeln!(o, "User@host:   {}@{}", r.user, r.host)?;
        }
        if let Some(c) = &r.command {
            writeln!(o, "Command:     {c}")?;
        }
        if let Some(e) = &r.error {
            writeln!(o, "Error:       {}", e.message)?;
            if let Some(d) = &e.details {
                for line in d.lines() {
                    writeln!(o, "  {line}")?;
                }
            }
        }
        for (title, map) in [
            ("Tags", &r.tags),
            ("Params", &r.params),
            ("Properties", &r.properties),
        ] {
            if !map.is_empty() {
                writeln!(o, "{title}:")?;
                let w = map.keys().map(|k| k.chars().count()).max().unwrap_or(0);
                for (k, v) in map {
                    writeln!(o, "  {k:w$}  {v}")?;
                }
            }
        }
        if !r.metrics.is_empty() {
            writeln!(o, "Metrics:")?;
            drop(o);
            let t = metrics_table(&r.metrics);
            let text = t.render();
            let mut o = std::io::stdout().lock();
            for line in text.lines() {
                writeln!(o, "  {line}")?;
            }
        }
        Ok(())
    }

    /// A submitted run that is still active is asked to stop (CancelRequested): its submitter stops the
    /// process group and records Canceled, which this waits a while for. Any other run (an interactive one,
    /// or a submitted one asked before whose submitter is gone) is marked Canceled at once.
    fn runs_cancel(&self, run: &str) -> Result<(), CliError> {
        let id = parse_run(run)?;
        let r = flightlog_runner::wait::cancel_run(&self.client, &id, Duration::from_secs(20))?;
        if self.json {
            return Ok(print_json(&r)?);
        }
        match r.status {
            RunStatus::CancelRequested => println!(
                "run {} is CancelRequested: its submitting process stops it (cancel again to mark it Canceled now)",
                r.id
            ),
            s => println!("run {} is {s}", r.id),
        }
        Ok(())
    }

    // --- metrics ------------------------------------------------------------------------------------------

    fn metrics(&self, run: &str, name: Option<&str>, csv: bool) -> Result<(), CliError> {
        let id = parse_run(run)?;
        if let Some(name) = name {
            validate::name("metric name", name)?;
        }
        let Some(name) = name else {
            let items = self.client.list_metrics(&id)?;
            if self.json {
                return Ok(print_json(&items)?);
            }
            if csv {
                let mut o = std::io::stdout().lock();
                writeln!(o, "name,kind,count,last_step,last_time,last_value")?;
                for m in &items {
                    writeln!(
                        o,
                        "{},{},{},{},{},{}",
                        csv_field(&m.name),
                        m.kind,
                        m.count,
                        m.last_step.map(|s| s.to_string()).unwrap_or_default(),
                        m.last_time.map(output::iso_time).unwrap_or_default(),
                        csv_field(&csv_value(&m.last_value)),
                    )?;
                }
                return Ok(());
            }
            if items.is_empty() {
                eprintln!("run {id} has no metrics");
                return Ok(());
            }
            return Ok(metrics_table(&items).print()?);
        };
        let raw = self
            .client
            .read_metric_raw(&id, name, &ReadRange::default())?;
        if self.json {
            return Ok(print_json(&raw)?);
        }
        let mut o = std::io::stdout().lock();
        if raw.get("values").is_some() {
            #[derive(serde::Deserialize)]
            struct S {
                steps: Vec<i64>,
                times: Vec<WallTime>,
                values: Vec<F64>,
            }
            let s: S = serde_json::from_value(raw)
                .map_err(|e| CliError::new(EXIT_ERROR, format!("unexpected answer: {e}")))?;
            if s.steps.len() != s.values.len() || s.times.len() != s.values.len() {
                return Err(CliError::new(
                    EXIT_ERROR,
                    format!(
                        "unexpected answer: {} steps, {} times and {} values",
                        s.steps.len(),
                        s.times.len(),
                        s.values.len()
                    ),
                ));
            }
            if csv {
                writeln!(o, "step,time,value")?;
                for i in 0..s.values.len() {
                    writeln!(
                        o,
                        "{},{},{}",
                        s.steps[i],
                        output::iso_time(s.times[i]),
                        csv_number(s.values[i].0)
                    )?;
                }
                return Ok(o.flush()?);
            }
            drop(o);
            let mut t = Table::new(&["STEP", "TIME", "VALUE"]).align_right(&[0, 2]);
            for i in 0..s.values.len() {
                t.row(vec![
                    s.steps[i].to_string(),
                    output::time(s.times[i]),
                    output::number(s.values[i].0),
                ]);
            }
            return Ok(t.print()?);
        }
        let records: Vec<Record> =
            serde_json::from_value(raw.get("records").cloned().unwrap_or_default())
                .map_err(|e| CliError::new(EXIT_ERROR, format!("unexpected answer: {e}")))?;
        if csv {
            writeln!(o, "index,step,time,value")?;
            for r in &records {
                writeln!(
                    o,
                    "{},{},{},{}",
                    r.index,
                    r.step,
                    output::iso_time(r.time),
                    csv_field(&csv_value(&r.value))
                )?;
            }
            return Ok(o.flush()?);
        }
        drop(o);
        let mut t = Table::new(&["INDEX", "STEP", "TIME", "VALUE"]).align_right(&[0, 1]);
        for r in &records {
            t.row(vec![
                r.index.to_string(),
                r.step.to_string(),
                output::time(r.time),
                output::value(&r.value, 100),
            ]);
        }
        Ok(t.print()?)
    }

    // --- logs ---------------------------------------------------------------------------------------------

    fn logs(&self, run: &str, stream: Option<&str>, follow: bool) -> Result<(), CliError> {
        let id = parse_run(run)?;
        if let Some(s) = stream {
            validate::stream_name(s)?;
        }
        let run = self.client.get_run(&id)?;
        // Without --follow a stream that is not there is a typo, not output still to come.
        if let (Some(s), false) = (stream, follow) {
            let have: Vec<String> = self
                .client
                .list_logs(&id)?
                .into_iter()
                .map(|l| l.name)
                .collect();
            if !have.iter().any(|n| n == s) {
                let has = if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                };
                return Err(CliError::new(
                    crate::EXIT_NOT_FOUND,
                    format!("run {id} has no log stream '{s}' (its streams: {has})"),
                ));
            }
        }
        let mut follower = LogFollower {
            client: &self.client,
            run: id.clone(),
            only: stream.map(str::to_string),
            offsets: Default::default(),
            json: self.json,
        };
        if !follow {
            let streams = follower.streams()?;
            if self.json {
                let mut slices = Vec::new();
                for s in &streams {
                    slices.push(follower.read_all(s)?);
                }
                return Ok(print_json(&slices)?);
            }
            let many = streams.len() > 1;
            for s in &streams {
                if many {
                    println!("==> {s} <==");
                }
                follower.catch_up(s)?;
                if many {
                    println!();
                }
            }
            return Ok(());
        }
        // Follow: subscribe first, then print what exists, then what arrives (deduplicated by offset).
        let events = if run.status.is_terminal() {
            None
        } else {
            self.client_events(&id).ok()
        };
        for s in follower.streams()? {
            follower.catch_up(&s)?;
        }
        if run.status.is_terminal() {
            return Ok(());
        }
        match events {
            Some(reader) => follower.follow_sse(reader),
            None => follower.follow_polling(),
        }
    }

    fn client_events(&self, id: &RunId) -> Result<Box<dyn BufRead + Send>, CliError> {
        Ok(self.client.run_events(id, None)?)
    }

    // --- artifacts ------------------------------------------------------------------------------------------

    fn artifacts_ls(&self, run: &str, path: Option<&str>, recursive: bool) -> Result<(), CliError> {
        let id = parse_run(run)?;
        let items = self.client.list_artifacts(&id, path, recursive)?;
        if let Some(p) = path.filter(|p| items.is_empty() && !p.trim_matches('/').is_empty()) {
            return Err(Error::not_found(Entity::Artifact, p).into());
        }
        if self.json {
            return Ok(print_json(&items)?);
        }
        let mut t = Table::new(&["PATH", "SIZE", "MODIFIED"]).align_right(&[1]);
        for a in &items {
            let p = if a.is_dir {
                format!("{}/", a.path)
            } else {
                a.path.clone()
            };
            t.row(vec![
                p,
                a.size
                    .filter(|_| !a.is_dir)
                    .map(output::size)
                    .unwrap_or_else(|| "-".into()),
                output::opt_time(a.modified_time),
            ]);
        }
        if t.is_empty() {
            eprintln!("no artifacts");
            return Ok(());
        }
        Ok(t.print()?)
    }

    fn artifacts_get(&self, run: &str, path: &str, out: Option<PathBuf>) -> Result<(), CliError> {
        let id = parse_run(run)?;
        let path = validate::artifact_path(path)?;
        let base_name = path.rsplit('/').next().unwrap_or(&path).to_string();
        // A file?
        let file_dest = match &out {
            Some(o) if o.is_dir() => o.join(&base_name),
            Some(o) => o.clone(),
            None => PathBuf::from(&base_name),
        };
        let mut downloaded: Vec<serde_json::Value> = Vec::new();
        match self.download_one(&id, &path, &file_dest) {
            Ok(n) => downloaded.push(
                serde_json::json!({"path": path, "file": file_dest.to_string_lossy(), "size": n}),
            ),
            Err(Error::NotFound { .. }) => {
                // A folder: every file below it.
                let files = self.client.list_artifacts(&id, Some(&path), true)?;
                let files: Vec<ArtifactInfo> = files.into_iter().filter(|a| !a.is_dir).collect();
                if files.is_empty() {
                    return Err(Error::not_found(Entity::Artifact, &path).into());
                }
                let root = match &out {
                    Some(o) => o.clone(),
                    None => PathBuf::from(&base_name),
                };
                let prefix = format!("{path}/");
                for f in &files {
                    let rel = f.path.strip_prefix(&prefix).unwrap_or(&f.path);
                    let dest = root.join(rel);
                    let n = self.download_one(&id, &f.path, &dest)?;
                    downloaded.push(
                        serde_json::json!({"path": f.path, "file": dest.to_string_lossy(), "size": n}),
                    );
                }
            }
            Err(e) => return Err(e.into()),
        }
        if self.json {
            return Ok(print_json(&downloaded)?);
        }
        for d in &downloaded {
            println!(
                "{} -> {} ({})",
                d["path"].as_str().unwrap_or_default(),
                d["file"].as_str().unwrap_or_default(),
                output::size(d["size"].as_u64().unwrap_or(0))
            );
        }
        Ok(())
    }

    fn artifacts_put(&self, run: &str, local: &Path, dest: Option<String>) -> Result<(), CliError> {
        let id = parse_run(run)?;
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .ok_or_else(|| {
                CliError::new(
                    crate::EXIT_INVALID,
                    format!("'{}' names no file", local.display()),
                )
            })?;
        let dest = validate::artifact_path(dest.as_deref().unwrap_or(&name))?;
        let meta = std::fs::metadata(local).map_err(|e| {
            CliError::new(
                crate::EXIT_INVALID,
                format!("cannot read '{}': {e}", local.display()),
            )
        })?;
        let files = if meta.is_dir() {
            let (files, links) = folder_files(local, &dest)?;
            if links > 0 {
                eprintln!(
                    "flightlog: left out {links} symbolic link(s) under '{}' (links are not followed)",
                    local.display()
                );
            }
            if files.is_empty() {
                eprintln!("flightlog: nothing to upload in '{}'", local.display());
                return Ok(());
            }
            files
        } else {
            vec![(local.to_path_buf(), dest)]
        };
        let mut uploaded = Vec::new();
        let mut failed: Vec<(PathBuf, Error)> = Vec::new();
        for (file, path) in &files {
            let len = std::fs::metadata(file).map(|m| m.len()).ok();
            let pb = progress_bar(len, path);
            let info = self
                .client
                .put_artifact_with_progress(&id, path, file, &mut |done| pb.set_position(done));
            pb.finish_and_clear();
            match info {
                Ok(a) => {
                    if !self.json {
                        println!(
                            "{} -> {} ({})",
                            file.display(),
                            a.path,
                            output::size(a.size.unwrap_or(0))
                        );
                    }
                    uploaded.push(a);
                }
                Err(e) if files.len() == 1 => return Err(e.into()),
                // The server is gone: the files left would each fail the same way.
                Err(e @ Error::Transport(_)) => {
                    failed.push((file.clone(), e));
                    break;
                }
                Err(e) => {
                    eprintln!("flightlog: {}: {e}", file.display());
                    failed.push((file.clone(), e));
                }
            }
        }
        if self.json {
            print_json(&uploaded)?;
        }
        let Some((_, first)) = failed.first() else {
            return Ok(());
        };
        let code = CliError::from(first.clone()).code;
        let not_tried = files.len() - uploaded.len() - failed.len();
        let mut msg = format!(
            "{} of {} file(s) uploaded; failed: {}",
            uploaded.len(),
            files.len(),
            failed
                .iter()
                .map(|(f, _)| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if not_tried > 0 {
            msg.push_str(&format!("; {not_tried} not tried ({first})"));
        }
        Err(CliError::new(code, msg))
    }

    fn download_one(&self, id: &RunId, path: &str, dest: &Path) -> Result<u64, Error> {
        let pb = progress_bar(None, path);
        let r = self
            .client
            .download_artifact_with_progress(id, path, dest, &mut |done, total| {
                if let Some(t) = total {
                    pb.set_length(t);
                }
                pb.set_position(done);
            });
        pb.finish_and_clear();
        r
    }

    // --- sync ---------------------------------------------------------------------------------------------

    fn sync(&self, spool: Option<PathBuf>, all: bool) -> Result<(), CliError> {
        let dir = spool.unwrap_or_else(flightlog_client::default_spool_dir);
        let pb = if std::io::stderr().is_terminal() {
            let pb = ProgressBar::new(0);
            pb.set_style(
                ProgressStyle::with_template("sync [{bar:30}] {pos}/{len} entries")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            pb
        } else {
            ProgressBar::hidden()
        };
        let filter = if all {
            None
        } else {
            Some(self.server.as_str())
        };
        let report = flightlog_client::replay::replay_spool_with_progress(
            &dir,
            filter,
            &mut |done, total| {
                pb.set_length(total);
                pb.set_position(done);
            },
        )?;
        pb.finish_and_clear();
        if self.json {
            print_json(&report)?;
        } else {
            println!(
                "sent {} entries ({} points) from {} of {} journal file(s) in {}",
                report.entries_sent,
                report.points_sent,
                report.files_completed,
                report.files_found,
                dir.display()
            );
            if report.duplicate_batches > 0 {
                println!(
                    "{} batch(es) were already stored (not stored twice)",
                    report.duplicate_batches
                );
            }
            if report.files_locked > 0 {
                println!(
                    "{} journal file(s) skipped: in use by a running client or another sync",
                    report.files_locked
                );
            }
            if report.files_other_server > 0 {
                println!(
                    "{} journal file(s) are for another server (use --all to send each to its own)",
                    report.files_other_server
                );
            }
            if report.torn_records > 0 {
                println!(
                    "{} torn record(s) ignored (a process was killed mid-write)",
                    report.torn_records
                );
            }
            for e in &report.errors {
                eprintln!("warning: {e}");
            }
        }
        if let Some(u) = &report.unreachable {
            return Err(CliError::with_hint(
                EXIT_UNREACHABLE,
                format!("cannot reach the flightlog server at {}: {u}; {} entries left in the spool", self.server, report.entries_left),
                "is `flightlog server` running? set --server or FLIGHTLOG_TRACKING_URI, then run `flightlog sync` again",
            ));
        }
        if report.entries_rejected > 0 {
            return Err(CliError::new(
                EXIT_ERROR,
                format!(
                    "the server refused {} spooled entries (see the warnings)",
                    report.entries_rejected
                ),
            ));
        }
        Ok(())
    }
}

fn run_duration(r: &Run, now: WallTime) -> String {
    match (r.start_time, r.end_time) {
        // Times come from clients: one far off (or an end before the start) shows no duration, never wraps.
        (Some(s), Some(e)) => e.0.checked_sub(s.0).map_or("-".into(), output::duration_us),
        (Some(s), None) if !r.status.is_terminal() => match now.0.checked_sub(s.0) {
            Some(d) => format!("{} (running)", output::duration_us(d)),
            None => "-".into(),
        },
        _ => "-".into(),
    }
}

fn metrics_table(items: &[SeriesInfo]) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "KIND",
        "COUNT",
        "LAST STEP",
        "LAST VALUE",
        "MIN",
        "MAX",
    ])
    .align_right(&[2, 3]);
    for m in items {
        t.row(vec![
            m.name.clone(),
            m.kind.to_string(),
            m.count.to_string(),
            m.last_step
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            output::value(&m.last_value, 40),
            m.min
                .map(|v| output::number(v.0))
                .unwrap_or_else(|| "-".into()),
            m.max
                .map(|v| output::number(v.0))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn csv_number(v: f64) -> String {
    flightlog_model::non_finite_name(v).map_or_else(|| v.to_string(), str::to_string)
}

/// Prints log streams from remembered offsets, so nothing is printed twice whichever way new data is learned of.
struct LogFollower<'a> {
    client: &'a Client,
    run: RunId,
    only: Option<String>,
    offsets: std::collections::BTreeMap<String, u64>,
    json: bool,
}

impl LogFollower<'_> {
    fn wants(&self, stream: &str) -> bool {
        self.only.as_deref().is_none_or(|s| s == stream)
    }

    /// The streams to show: the one asked for, or all (stdout first, then stderr, then the rest by name).
    fn streams(&self) -> Result<Vec<String>, CliError> {
        if let Some(s) = &self.only {
            return Ok(vec![s.clone()]);
        }
        let mut names: Vec<String> = self
            .client
            .list_logs(&self.run)?
            .into_iter()
            .map(|l| l.name)
            .collect();
        names.sort_by_key(|n| (n != "stdout", n != "stderr", n.clone()));
        Ok(names)
    }

    fn read_all(&mut self, stream: &str) -> Result<LogSlice, CliError> {
        let mut offset = 0;
        let mut data = String::new();
        loop {
            let s = match self.client.read_log(&self.run, stream, offset, None) {
                Ok(s) => s,
                Err(Error::NotFound {
                    entity: Entity::LogStream,
                    ..
                }) if offset == 0 => {
                    return Ok(LogSlice {
                        stream: stream.into(),
                        offset: 0,
                        next_offset: 0,
                        length: 0,
                        data,
                    })
                }
                Err(e) => return Err(e.into()),
            };
            data.push_str(&s.data);
            let done = s.next_offset >= s.length || s.next_offset == offset;
            offset = s.next_offset;
            if done {
                return Ok(LogSlice {
                    stream: stream.into(),
                    offset: 0,
                    next_offset: offset,
                    length: s.length,
                    data,
                });
            }
        }
    }

    /// Prints a stream from its remembered offset to its current end.
    fn catch_up(&mut self, stream: &str) -> Result<(), CliError> {
        let mut offset = *self.offsets.get(stream).unwrap_or(&0);
        loop {
            let s = match self.client.read_log(&self.run, stream, offset, None) {
                Ok(s) => s,
                // A stream that does not exist yet is an empty one.
                Err(Error::NotFound { .. }) if offset == 0 && self.only.is_some() => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            self.emit(stream, offset, &s.data)?;
            let done = s.next_offset >= s.length || s.next_offset == offset;
            offset = s.next_offset;
            self.offsets.insert(stream.to_string(), offset);
            if done {
                return Ok(());
            }
        }
    }

    fn emit(&self, stream: &str, offset: u64, data: &str) -> Result<(), CliError> {
        if data.is_empty() {
            return Ok(());
        }
        let mut o = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer(
                &mut o,
                &serde_json::json!({"stream": stream, "offset": offset, "data": data}),
            )
            .map_err(std::io::Error::other)?;
            o.write_all(b"\n")?;
        } else {
            o.write_all(data.as_bytes())?;
        }
        o.flush()?;
        Ok(())
    }

    /// One `log_appended` event: prints what is new in it; fetches any gap first.
    fn on_append(
        &mut self,
        stream: &str,
        offset: u64,
        length: u64,
        data: Option<&str>,
    ) -> Result<(), CliError> {
        if !self.wants(stream) {
            return Ok(());
        }
        let have = *self.offsets.get(stream).unwrap_or(&0);
        let end = offset.saturating_add(length);
        match log_news(have, offset..end, data) {
            LogNews::Nothing => Ok(()),
            LogNews::Text(text) => {
                self.emit(stream, have, text)?;
                self.offsets.insert(stream.to_string(), end);
                Ok(())
            }
            LogNews::Read(_) => self.catch_up(stream),
        }
    }

    fn follow_sse(&mut self, mut reader: Box<dyn BufRead + Send>) -> Result<(), CliError> {
        let mut event_type = String::new();
        let mut data = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).unwrap_or_default();
            if n == 0 {
                // The stream ended (server restarting?): fall back to polling.
                return self.follow_polling();
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if !data.is_empty() && self.on_event(&event_type, &data)? {
                    return Ok(());
                }
                event_type.clear();
                data.clear();
            } else if let Some(v) = l.strip_prefix("event:") {
                event_type = v.trim_start().to_string();
            } else if let Some(v) = l.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }

    /// Handles one SSE message; `true` when the run has ended.
    fn on_event(&mut self, event_type: &str, data: &str) -> Result<bool, CliError> {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
            return Ok(false);
        };
        let ty = if event_type.is_empty() {
            v["type"].as_str().unwrap_or_default().to_string()
        } else {
            event_type.to_string()
        };
        match ty.as_str() {
            "log_appended" => {
                let stream = v["stream"].as_str().unwrap_or_default().to_string();
                let offset = v["offset"].as_u64().unwrap_or(0);
                let length = v["length"].as_u64().unwrap_or(0);
                self.on_append(&stream, offset, length, v["data"].as_str())?;
                Ok(false)
            }
            "run_updated" => {
                let status = v["status"]
                    .as_str()
                    .and_then(|s| s.parse::<RunStatus>().ok());
                if status.is_some_and(RunStatus::is_terminal) {
                    self.final_catch_up()?;
                    return Ok(true);
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    fn final_catch_up(&mut self) -> Result<(), CliError> {
        for s in self.streams()? {
            self.catch_up(&s)?;
        }
        Ok(())
    }

    fn follow_polling(&mut self) -> Result<(), CliError> {
        let mut failures = 0;
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let status = match self.client.get_run(&self.run) {
                Ok(r) => {
                    failures = 0;
                    r.status
                }
                Err(Error::Transport(e)) if failures < 20 => {
                    failures += 1;
                    tracing::debug!("poll failed: {e}");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            self.final_catch_up()?;
            if status.is_terminal() {
                return Ok(());
            }
        }
    }
}

/// The files under `dir` to upload, each with its artifact path under `prefix`, and how many symbolic links
/// were left out. Links are not followed (as `submit` snapshots leave them out): a link back to a parent made
/// the walk upload the tree again and again (two made it endless), and a link could reach outside the folder.
fn folder_files(dir: &Path, prefix: &str) -> Result<(Vec<(PathBuf, String)>, usize), CliError> {
    let (mut files, mut links) = (Vec::new(), 0);
    let mut stack = vec![(dir.to_path_buf(), prefix.to_string())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            CliError::new(
                crate::EXIT_INVALID,
                format!("cannot read '{}': {e}", dir.display()),
            )
        })?;
        for e in entries.flatten() {
            let child = format!("{prefix}/{}", e.file_name().to_string_lossy());
            match e.file_type() {
                Ok(t) if t.is_symlink() => links += 1,
                Ok(t) if t.is_dir() => stack.push((e.path(), child)),
                Ok(t) if t.is_file() => files.push((e.path(), child)),
                _ => {}
            }
        }
    }
    files.sort();
    Ok((files, links))
}

/// The experiment `-e` names: `id:N`, `name:X`, or either. A name made of digits (a year, a ticket number) can
/// also be another experiment's id; that is refused rather than guessed, since a guess silently showed or
/// exported the other experiment's runs.
pub(crate) fn resolve_experiment(client: &Client, s: &str) -> Result<Experiment, CliError> {
    if let Some(id) = s.strip_prefix("id:") {
        return Ok(client.get_experiment(id.trim().parse::<ExperimentId>()?)?);
    }
    if let Some(name) = s.strip_prefix("name:") {
        return Ok(client.get_experiment_by_name(name)?);
    }
    if s.trim().is_empty() {
        return Err(CliError::new(
            crate::EXIT_INVALID,
            "the experiment is empty: give its id or name",
        ));
    }
    let by_id = match s.parse::<ExperimentId>() {
        Ok(id) => found(client.get_experiment(id))?,
        Err(_) => None,
    };
    let by_name = found(client.get_experiment_by_name(s))?;
    match (by_id, by_name) {
        (Some(a), Some(b)) if a.id != b.id => Err(CliError::new(
            crate::EXIT_INVALID,
            format!(
                "'{s}' is both experiment {} ({}) and the name of experiment {}; pass 'id:{s}' or 'name:{s}'",
                a.id, a.name, b.id
            ),
        )),
        (Some(e), _) | (None, Some(e)) => Ok(e),
        (None, None) => Err(Error::not_found(Entity::Experiment, s).into()),
    }
}

/// `Ok(None)` for a NotFound, any other error as it is.
fn found<T>(r: Result<T, Error>) -> Result<Option<T>, CliError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
