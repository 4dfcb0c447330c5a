//! Where a submitted command runs: the [`ComputeTarget`] trait and its local-process implementation.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to start: the lifecycle hands this to a target and does not care how it is run.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub command: Vec<String>,
    pub working_dir: PathBuf,
    pub env: BTreeMap<String, String>,
}

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobExit {
    Code(i32),
    Signal(i32),
}

impl JobExit {
    /// The shell's convention: the code itself, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            JobExit::Code(c) => c,
            JobExit::Signal(s) => 128 + s,
        }
    }
}

/// A job that could not be started, with the reason and the shell's exit code for it (126/127).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartFailure {
    pub reason: String,
    pub code: i32,
}

/// A job's stdout or stderr.
pub type Output = Box<dyn Read + Send>;

/// A running job. Output arrives through the two readers; stopping is two-step so a job can clean up.
pub trait Job: Send {
    /// The job's stdout and stderr (each taken once).
    fn take_output(&mut self) -> (Option<Output>, Option<Output>);
    /// `Some` once the job's main process has ended.
    fn try_wait(&mut self) -> std::io::Result<Option<JobExit>>;
    /// Asks the whole job to stop (SIGTERM to the process group).
    fn terminate(&mut self);
    /// Stops the whole job now (SIGKILL to the process group).
    fn kill(&mut self);
    /// Whether any process of the job is still alive.
    fn alive(&mut self) -> bool;
}

/// Something that can run jobs: the local machine, or (later) a cluster scheduler.
pub trait ComputeTarget: Send + Sync {
    /// A short name recorded in the run's properties ("local").
    fn name(&self) -> &str;
    fn start(&self, spec: &JobSpec) -> Result<Box<dyn Job>, StartFailure>;
}

/// Runs the command as a child process in its own process group, so that stopping it stops everything it
/// started (a shell's children, data-loader workers) and a Ctrl-C at the terminal reaches only flightlog,
/// which then cancels the run in order.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalProcess;

impl ComputeTarget for LocalProcess {
    fn name(&self) -> &str {
        "local"
    }

    fn start(&self, spec: &JobSpec) -> Result<Box<dyn Job>, StartFailure> {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let Some((program, args)) = spec.command.split_first() else {
            return Err(StartFailure {
                reason: "empty command".into(),
                code: 127,
            });
        };
        let child = Command::new(program)
            .args(args)
            .current_dir(&spec.working_dir)
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| StartFailure {
                code: if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                },
                reason: format!("cannot execute '{program}': {e}"),
            })?;
        for fd in [
            child.stdout.as_ref().map(|p| p.as_raw_fd()),
            child.stderr.as_ref().map(|p| p.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        {
            widen_pipe(fd);
        }
        Ok(Box::new(LocalJob {
            pgid: child.id() as i32,
            child,
            exit: None,
        }))
    }
}

/// The pipe capacity asked for (Linux's default limit for unprivileged processes, `fs.pipe-max-size`).
#[cfg(target_os = "linux")]
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Widens an output pipe from 64 KiB, so a chatty job keeps writing while the capture gathers its lines
/// instead of blocking on a full pipe. Best effort: a refusal leaves the default.
fn widen_pipe(fd: std::os::fd::RawFd) {
    #[cfg(target_os = "linux")]
    // SAFETY: fcntl on a pipe descriptor we own; no memory is involved.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

struct LocalJob {
    child: Child,
    pgid: i32,
    exit: Option<JobExit>,
}

impl LocalJob {
    fn signal_group(&self, sig: i32) {
        // SAFETY: kill(2) with a negative pid signals the process group we created; no memory is involved.
        unsafe {
            libc::kill(-self.pgid, sig);
        }
    }
}

impl Job for LocalJob {
    fn take_output(&mut self) -> (Option<Output>, Option<Output>) {
        let out = self.child.stdout.take().map(|r| Box::new(r) as Output);
        let err = self.child.stderr.take().map(|r| Box::new(r) as Output);
        (out, err)
    }

    fn try_wait(&mut self) -> std::io::Result<Option<JobExit>> {
        use std::os::unix::process::ExitStatusExt;
        if self.exit.is_none() {
            if let Some(st) = self.child.try_wait()? {
                self.exit = Some(match (st.code(), st.signal()) {
                    (Some(c), _) => JobExit::Code(c),
                    (None, Some(s)) => JobExit::Signal(s),
                    (None, None) => JobExit::Code(1),
                });
            }
        }
        Ok(self.exit)
    }

    fn terminate(&mut self) {
        self.signal_group(libc::SIGTERM);
    }

    fn kill(&mut self) {
        self.signal_group(libc::SIGKILL);
    }

    fn alive(&mut self) -> bool {
        if matches!(self.try_wait(), Ok(None)) {
            return true;
        }
        // SAFETY: signal 0 only checks whether any process of the group exists.
        unsafe { libc::kill(-self.pgid, 0) == 0 }
    }
}

/// SIGTERM to the whole job, SIGKILL after `grace` if anything is left; returns the main process's exit.
pub fn stop(job: &mut dyn Job, grace: Duration) -> Option<JobExit> {
    job.terminate();
    let deadline = Instant::now() + grace;
    while job.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if job.alive() {
        job.kill();
        let hard = Instant::now() + Duration::from_secs(5);
        while job.alive() && Instant::now() < hard {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    job.try_wait().ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cmd: &[&str]) -> JobSpec {
        JobSpec {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            working_dir: std::env::temp_dir(),
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn unexecutable_commands_fail_to_start_with_the_os_reason() {
        let err = LocalProcess
            .start(&spec(&["/nonexistent/prog"]))
            .err()
            .unwrap();
        assert_eq!(err.code, 127);
        assert!(
            err.reason
                .starts_with("cannot execute '/nonexistent/prog': No such file or directory"),
            "{}",
            err.reason
        );
    }

    #[test]
    fn stop_ends_the_whole_group_even_when_sigterm_is_ignored() {
        let mut job = LocalProcess
            .start(&spec(&["sh", "-c", "trap '' TERM; sleep 30 & wait"]))
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        let exit = stop(job.as_mut(), Duration::from_millis(300));
        assert!(exit.is_some());
        assert!(!job.alive());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
