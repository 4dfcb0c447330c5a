//! Replaying journals left on disk: by `flightlog sync`, and in the background when a client starts.

use crate::http::{normalize_uri, Http, SendError};
use crate::journal::{self, read_acked, try_lock, write_acked};
use crate::queue::{send_entry, Sent};
use flightlog_model::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// Journal files found.
    pub files_found: u64,
    /// Files fully delivered and removed.
    pub files_completed: u64,
    /// Files skipped because another process holds them (a live client, or a concurrent replay).
    pub files_locked: u64,
    /// Files written for another server than the one asked for.
    pub files_other_server: u64,
    /// Entries delivered (batches, run creations and changes), and the points in them.
    pub entries_sent: u64,
    pub points_sent: u64,
    /// Batches the server had already stored (re-sent after a crash): not stored twice.
    pub duplicate_batches: u64,
    /// Entries the server refused (invalid data); dropped with a warning.
    pub entries_rejected: u64,
    /// Entries left on disk because the server could not be reached.
    pub entries_left: u64,
    /// Torn or corrupt tails ignored (a process killed mid-write).
    pub torn_records: u64,
    /// Messages for the entries refused and files that could not be read.
    pub errors: Vec<String>,
    /// Set when the server could not be reached: the remaining journals are left for a later try.
    pub unreachable: Option<String>,
}

/// Sends every `*.journal` in `spool_dir`, oldest file first, each record once in file order, and removes each
/// file once all of it is delivered. Files locked by another process are skipped (no two replays of a file at
/// once). With `uri_filter`, only journals written for that server are replayed; without, each goes to the
/// server named in its header. A missing folder is an empty spool.
pub fn replay_spool(spool_dir: &Path, uri_filter: Option<&str>) -> Result<ReplayReport> {
    replay_spool_with_progress(spool_dir, uri_filter, &mut |_, _| {})
}

/// Like [`replay_spool`], calling `progress(entries_done, entries_total_known)` as it goes.
pub fn replay_spool_with_progress(
    spool_dir: &Path,
    uri_filter: Option<&str>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayReport> {
    let mut report = ReplayReport::default();
    // What killed clients had queued but not sent becomes journals first.
    if let Err(e) = crate::crashlog::recover_all(spool_dir) {
        report.errors.push(format!(
            "cannot recover crash logs in {}: {e}",
            spool_dir.display()
        ));
    }
    let entries = match std::fs::read_dir(spool_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => {
            return Err(Error::storage(format!(
                "cannot read the spool folder {}: {e}",
                spool_dir.display()
            )))
        }
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .map(|p| {
            (
                std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH),
                p,
            )
        })
        .collect();
    files.sort();
    report.files_found = files.len() as u64;
    let filter = uri_filter.map(normalize_uri);
    let mut done_total = 0u64;
    let mut known_total = 0u64;
    // Clients one of whose journals is held by another process: their later journals wait too, since a
    // client's entries must arrive in order (a run's creation in the older one, its batches in the newer).
    let mut held: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (_, path) in files {
        if report.unreachable.is_some() {
            break;
        }
        let client = journal_client(&path);
        if held.contains(&client) {
            report.files_locked += 1;
            continue;
        }
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                report.errors.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        match try_lock(&file) {
            Ok(true) => {}
            Ok(false) => {
                report.files_locked += 1;
                held.insert(client);
                continue;
            }
            Err(e) => {
                report
                    .errors
                    .push(format!("{}: cannot lock: {e}", path.display()));
                continue;
            }
        }
        // Another replay may have finished and removed it between listing and locking.
        if !path.exists() {
            continue;
        }
        let contents = match journal::read_journal(&mut file) {
            Ok(c) => c,
            Err(e) => {
                report.errors.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let uri = normalize_uri(&contents.header.uri);
        if let Some(f) = &filter {
            if *f != uri {
                report.files_other_server += 1;
                continue;
            }
        }
        if let Some(why) = &contents.torn {
            tracing::warn!(
                "{}: ignoring a torn or corrupt tail ({why})",
                path.display()
            );
            report.torn_records += 1;
        }
        let acked = read_acked(&path) as usize;
        known_total += contents.records.len().saturating_sub(acked) as u64;
        let http = Http::new(&uri, Duration::from_secs(60));
        let mut done = acked;
        for rec in contents.records.iter().skip(acked) {
            match send_with_retry(&http, &rec.entry) {
                Ok(Sent::Batch {
                    duplicate,
                    rejected,
                }) => {
                    report.entries_sent += 1;
                    report.points_sent += rec
                        .entry
                        .points()
                        .saturating_sub(rejected.as_ref().map_or(0, |r| r.0))
                        as u64;
                    if duplicate {
                        report.duplicate_batches += 1;
                    }
                    if let Some((n, e)) = rejected {
                        report.entries_rejected += 1;
                        report.errors.push(format!(
                            "{}: {n} points of entry {} refused by the server: {e}",
                            path.display(),
                            rec.seq
                        ));
                    }
                }
                Ok(Sent::Other) => report.entries_sent += 1,
                Err(SendError::Reject(e)) => {
                    report.entries_rejected += 1;
                    report.errors.push(format!(
                        "{}: entry {} refused by the server: {e}",
                        path.display(),
                        rec.seq
                    ));
                }
                Err(SendError::Retry(e)) => {
                    report.entries_left += (contents.records.len() - done) as u64;
                    report.unreachable = Some(e.to_string());
                    break;
                }
            }
            done += 1;
            done_total += 1;
            progress(done_total, known_total);
            if let Err(e) = write_acked(&path, done as u64) {
                tracing::warn!("{}: cannot record progress: {e}", path.display());
            }
        }
        if done == contents.records.len() {
            journal::remove_journal(&path);
            report.files_completed += 1;
        }
        // The lock goes with `file`.
    }
    Ok(report)
}

/// The client that wrote a journal: its name is `<client-id>-<n>.journal`.
fn journal_client(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map_or(String::new(), |s| s.to_string_lossy().into_owned());
    match stem.rsplit_once('-') {
        Some((client, n)) if n.bytes().all(|b| b.is_ascii_digit()) => client.to_string(),
        _ => stem,
    }
}

/// A few quick retries for a server that is restarting; then the caller gives up on this replay.
fn send_with_retry(http: &Http, entry: &journal::JournalEntry) -> Result<Sent, SendError> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        match send_entry(http, entry) {
            Err(SendError::Retry(e)) if attempt < 3 => {
                tracing::debug!("replay: retrying after {e}");
                std::thread::sleep(delay);
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{JournalEntry, JournalRecord, JournalWriter};
    use flightlog_model::{NewRun, RunId};

    #[test]
    fn a_clients_later_journals_wait_while_an_earlier_one_is_held() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens there: a journal the replay tried to send would leave it unreachable.
        let uri = "http://127.0.0.1:9";
        let record = || JournalRecord {
            seq: 1,
            entry: JournalEntry::CreateRun(NewRun {
                id: Some(RunId::new()),
                ..Default::default()
            }),
        };
        let mut older = JournalWriter::create(dir.path(), uri, "dead").unwrap();
        older.append(&[record()]).unwrap();
        std::thread::sleep(Duration::from_millis(20)); // files are replayed by age
        let mut newer = JournalWriter::create(dir.path(), uri, "dead").unwrap();
        newer.append(&[record()]).unwrap();
        drop(newer); // the newer one is free; the older one is still held (another replayer has it)
        let report = replay_spool(dir.path(), None).unwrap();
        assert_eq!(report.files_locked, 2, "{report:?}");
        assert!(
            report.unreachable.is_none(),
            "the newer journal was not sent ahead of the older: {report:?}"
        );
        drop(older);
        assert_eq!(journal_client(Path::new("/s/ab-12-3.journal")), "ab-12");
    }
}
