//! `flightlog tensorboard`: exports runs into a logdir, starts the real `tensorboard` executable on it, prints
//! its URL, re-exports while the runs are still logging, and on Ctrl-C stops it and cleans up.

use crate::tb_export::{export, RunReport, Selection};
use crate::tensorboard_cmd::{stop_on_signals, stop_requested, Bridge, LaunchArgs};
use crate::{CliError, EXIT_ERROR};
use flightlog_model::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long TensorBoard may take to print its URL.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn run(b: &Bridge, args: LaunchArgs) -> Result<(), CliError> {
    let exe = find_on_path("tensorboard").ok_or_else(|| {
        CliError::with_hint(
            EXIT_ERROR,
            "the `tensorboard` executable was not found on PATH",
            "install it with `pip install tensorboard` (in the Python environment whose bin/ is on PATH), then run this again",
        )
    })?;
    let (logdir, temporary) = match &args.logdir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("flightlog-tensorboard-{}", std::process::id())),
            true,
        ),
    };
    let sel = Selection {
        runs: args.runs.clone(),
        experiment: args.experiment.clone(),
        recursive: !args.no_recursive,
    };
    let result = serve(b, &exe, &logdir, &sel, &args);
    if temporary {
        let _ = std::fs::remove_dir_all(&logdir);
    }
    result
}

fn serve(
    b: &Bridge,
    exe: &Path,
    logdir: &Path,
    sel: &Selection,
    args: &LaunchArgs,
) -> Result<(), CliError> {
    // Before anything is announced: a Ctrl-C from then on stops TensorBoard and cleans up.
    stop_on_signals();
    let reports = export(b, logdir, sel)?;
    let mut command = Command::new(exe);
    die_with_parent(&mut command);
    let mut child = command
        .arg("--logdir")
        .arg(logdir)
        .args(["--port", &args.port.to_string(), "--host", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CliError::new(EXIT_ERROR, format!("cannot start {}: {e}", exe.display())))?;
    let url = match wait_for_url(&mut child) {
        Ok(u) => u,
        Err(e) => {
            stop(&mut child);
            return Err(e);
        }
    };
    // Nobody reads the announcement (stdout closed): there is no one to serve either.
    if let Err(e) = announce(b.json, &url, logdir, &child, reports.len()) {
        stop(&mut child);
        return Err(e);
    }
    let result = keep_in_sync(b, logdir, sel, &reports, &mut child, args.interval);
    stop(&mut child);
    result
}

/// TensorBoard gets SIGTERM when this process dies, however it dies (a second Ctrl-C, kill -9): it would
/// otherwise keep serving a temp folder on its port for good.
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: runs in the forked child before exec and only calls prctl, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

fn announce(
    json: bool,
    url: &str,
    logdir: &Path,
    child: &Child,
    runs: usize,
) -> Result<(), CliError> {
    let mut out = std::io::stdout();
    if json {
        let v = serde_json::json!({"url": url, "logdir": logdir.display().to_string(), "pid": child.id(), "runs": runs});
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "TensorBoard at {url} ({runs} run(s) in {}); Ctrl-C to stop",
            logdir.display()
        )?;
    }
    Ok(out.flush()?)
}

/// Reads TensorBoard's stderr until it prints `TensorBoard <version> at <url>`; keeps draining it afterwards
/// (a full pipe would block TensorBoard). The last lines are kept for the error if it exits first.
fn wait_for_url(child: &mut Child) -> Result<String, CliError> {
    let Some(stderr) = child.stderr.take() else {
        return Err(CliError::new(
            EXIT_ERROR,
            "tensorboard's output is not readable",
        ));
    };
    let (tx, rx) = mpsc::channel::<Result<String, String>>();
    std::thread::spawn(move || {
        let mut last = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(url) = url_in(&line) {
                    sent = tx.send(Ok(url)).is_ok();
                    continue;
                }
                last.push(line);
                if last.len() > 20 {
                    last.remove(0);
                }
            }
        }
        if !sent {
            let _ = tx.send(Err(last.join("\n")));
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(url)) => Ok(url),
        Ok(Err(output)) => Err(CliError::new(
            EXIT_ERROR,
            format!("tensorboard exited before serving:\n{output}"),
        )),
        Err(_) => Err(CliError::new(
            EXIT_ERROR,
            format!(
                "tensorboard printed no URL within {} s",
                START_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// The URL of TensorBoard's start line, e.g. `TensorBoard 2.21.0 at http://127.0.0.1:6006/ (Press CTRL+C to quit)`.
pub fn url_in(line: &str) -> Option<String> {
    let rest = &line[line.find("TensorBoard ")?..];
    let at = rest.find(" at http")?;
    let url = rest[at + 4..].split_whitespace().next()?;
    Some(url.to_string())
}

/// Until a signal: re-exports every `interval` seconds while a run is active and its metrics changed; an
/// exit of TensorBoard itself is an error.
fn keep_in_sync(
    b: &Bridge,
    logdir: &Path,
    sel: &Selection,
    reports: &[RunReport],
    child: &mut Child,
    interval: u64,
) -> Result<(), CliError> {
    let mut last = fingerprint(b, reports).ok();
    let mut next = Instant::now() + Duration::from_secs(interval.max(1));
    while !stop_requested() {
        std::thread::sleep(Duration::from_millis(100));
        if stop_requested() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CliError::new(
                EXIT_ERROR,
                format!("tensorboard exited ({status})"),
            ));
        }
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + Duration::from_secs(interval.max(1));
        let now = fingerprint(b, reports).ok();
        if now.is_some() && now != last {
            export(b, logdir, sel)?;
            last = now;
        }
    }
    Ok(())
}

/// A metric's name, count and last time.
type MetricMark = (String, u64, Option<WallTime>);

/// What changes when an active run logs: each active run's metric counts and last times. `None` once every
/// run has ended (nothing more to follow).
fn fingerprint(b: &Bridge, reports: &[RunReport]) -> Result<Option<Vec<MetricMark>>> {
    let mut out = Vec::new();
    let mut active = false;
    for r in reports {
        let id: RunId = r.run_id.parse()?;
        let run = b.client.get_run(&id)?;
        active |= !run.status.is_terminal();
        out.extend(
            run.metrics
                .into_iter()
                .map(|m| (m.name, m.count, m.last_time)),
        );
    }
    Ok(active.then_some(out))
}

/// Asks TensorBoard to stop (SIGTERM), then kills it if it has not within 5 s.
fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The first executable file called `name` in a PATH folder.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_from_the_start_line() {
        assert_eq!(
            super::url_in("TensorBoard 2.21.0 at http://127.0.0.1:6006/ (Press CTRL+C to quit)")
                .as_deref(),
            Some("http://127.0.0.1:6006/")
        );
        assert_eq!(super::url_in("I1122 loading"), None);
    }
}
