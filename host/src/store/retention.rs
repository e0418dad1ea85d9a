//! Retention in the database: removing a terminal run with every row keyed
//! by it, in bounded steps, and giving the freed pages back to the file
//! system.
//!
//! Which runs may go is the engine's rule; a removal step re-checks it inside
//! its transaction (the run may have been resumed since it was chosen), then
//! marks the run as being removed (`owner_id` = [`COLLECTING_OWNER`]) so that
//! a removal cut short by a crash is finished by the next pass and the
//! half-removed run is never resumed. Children go first and the run row last,
//! so a run is never gone while rows of it remain. A frame tree is shared by
//! every frame with the same content and is removed only when no frame names
//! it any more.
//!
//! Space: a database created by this host uses `auto_vacuum = INCREMENTAL`,
//! so freed pages can be handed back a bounded number at a time
//! ([`Maintenance::Reclaim`]). Older databases (`auto_vacuum = NONE`) need
//! one full `VACUUM` to switch ([`Maintenance::ConvertToIncremental`]), which
//! rewrites the whole file and is refused when the disk lacks room for it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use super::StoreError;
use super::read::Reader;
use crate::model::{RunId, RunStatus};

/// `runs.owner_id` of a run whose removal has begun.
pub const COLLECTING_OWNER: &str = "smithers:gc";

/// Which runs a removal may take: terminal runs of these statuses that ended
/// (or, without an end time, were created) at or before `ended_before_ms`,
/// and any run whose removal has begun.
#[derive(Debug, Clone)]
pub struct CollectRule {
    /// Latest end time collected.
    pub ended_before_ms: i64,
    /// Terminal statuses collected.
    pub statuses: Vec<RunStatus>,
}

impl CollectRule {
    fn takes(&self, status: RunStatus) -> bool {
        status.is_terminal() && self.statuses.contains(&status)
    }

    fn status_flags(&self) -> [bool; 3] {
        [
            self.takes(RunStatus::Finished),
            self.takes(RunStatus::Failed),
            self.takes(RunStatus::Cancelled),
        ]
    }
}

/// Rows removed (or, in a dry run, that would be).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    /// Runs.
    pub runs: u64,
    /// Events (frames included).
    pub events: u64,
    /// Frames (their `FrameCommitted` events).
    pub frames: u64,
    /// Stored frame trees no remaining frame names (not counted in a dry run).
    pub frame_trees: u64,
    /// Node rows, with their outputs.
    pub nodes: u64,
    /// Task attempts.
    pub attempts: u64,
    /// Approval requests and decisions.
    pub approvals: u64,
    /// Signals.
    pub signals: u64,
    /// Loop states.
    pub loops: u64,
    /// Component versions the runs used.
    pub versions: u64,
    /// Journaled outbound HTTP calls.
    pub http_calls: u64,
}

impl std::ops::AddAssign for Removed {
    fn add_assign(&mut self, other: Self) {
        self.runs += other.runs;
        self.events += other.events;
        self.frames += other.frames;
        self.frame_trees += other.frame_trees;
        self.nodes += other.nodes;
        self.attempts += other.attempts;
        self.approvals += other.approvals;
        self.signals += other.signals;
        self.loops += other.loops;
        self.versions += other.versions;
        self.http_calls += other.http_calls;
    }
}

/// What one removal step did.
#[derive(Debug, Clone, Copy, Default)]
pub struct CollectStep {
    /// Rows it removed.
    pub removed: Removed,
    /// The run is gone.
    pub done: bool,
}

/// A run a removal may take.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The run.
    pub run_id: RunId,
    /// Its status.
    pub status: RunStatus,
    /// `describe().name` of its workflow.
    pub workflow_name: String,
    /// When it ended (its creation time if it never did).
    pub ended_at_ms: i64,
}

/// The database's `auto_vacuum` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoVacuum {
    /// Freed pages stay in the file until a full `VACUUM`.
    None,
    /// Freed pages are returned at every commit.
    Full,
    /// Freed pages are returned on request, a bounded number at a time.
    Incremental,
}

/// Work on the database file itself, done by the writer between commits.
#[derive(Debug, Clone, Copy)]
pub enum Maintenance {
    /// Returns at most this many free pages to the file system (incremental
    /// vacuum); answers the bytes returned.
    Reclaim {
        /// Most pages returned by this step.
        max_pages: u32,
    },
    /// Switches a database to incremental auto-vacuum with one full `VACUUM`
    /// (which also returns every free page); answers the bytes returned.
    ConvertToIncremental,
    /// Copies the WAL into the database file and empties it, waiting for
    /// readers (so the file sizes say where the space went); answers 0.
    Checkpoint,
}

/// Sizes of the database files, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskUsage {
    /// The database file.
    pub file_bytes: u64,
    /// Its write-ahead log.
    pub wal_bytes: u64,
}

impl DiskUsage {
    /// File and WAL together.
    pub fn total(&self) -> u64 {
        self.file_bytes + self.wal_bytes
    }
}

/// Sizes of the database at `path` and of its WAL (0 for a missing file).
pub fn disk_usage(path: &Path) -> DiskUsage {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    DiskUsage {
        file_bytes: size(path),
        wal_bytes: size(&PathBuf::from(wal)),
    }
}

/// Sets incremental auto-vacuum on a database that has no table yet (the
/// mode is fixed when the first table is created).
pub(super) fn prefer_incremental(conn: &Connection) -> Result<(), StoreError> {
    let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))?;
    if tables == 0 {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    Ok(())
}

/// One removal step of `run_id`: at most `max_rows` child rows, then the run
/// row once none is left. `Conflict` when the rule does not take the run.
pub(super) fn collect_step(
    tx: &Transaction<'_>,
    run_id: &RunId,
    rule: &CollectRule,
    max_rows: u32,
) -> Result<CollectStep, StoreError> {
    let run = run_id.as_str();
    let row: Option<(String, i64, Option<String>)> = tx
        .query_row(
            "SELECT status, COALESCE(finished_at_ms, created_at_ms), owner_id
             FROM runs WHERE run_id = ?1",
            [run],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let (status, ended, owner) =
        row.ok_or_else(|| StoreError::NotFound(format!("run {run_id} does not exist")))?;
    let status = RunStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown run status {status:?}")))?;
    let begun = owner.as_deref() == Some(COLLECTING_OWNER);
    if !status.is_terminal() || !(begun || rule.takes(status) && ended <= rule.ended_before_ms) {
        return Err(StoreError::Conflict(format!(
            "run {run_id} is {status} and no longer collectable"
        )));
    }
    if !begun {
        tx.execute(
            "UPDATE runs SET owner_id = ?2 WHERE run_id = ?1",
            params![run, COLLECTING_OWNER],
        )?;
    }
    let mut budget = Budget {
        left: u64::from(max_rows),
        all_gone: true,
    };
    let mut removed = Removed::default();
    let limit = budget.left;
    let (events, frames, trees) = delete_events(tx, run, limit)?;
    removed.events = budget.spend(events, limit);
    removed.frames = frames;
    removed.frame_trees = trees;
    for (table, key, count) in [
        ("attempts", "attempt_pk", &mut removed.attempts),
        ("nodes", "node_pk", &mut removed.nodes),
        ("signals", "seq", &mut removed.signals),
        ("approvals", "node_id, iteration", &mut removed.approvals),
        ("loops", "loop_id", &mut removed.loops),
        ("run_versions", "hash", &mut removed.versions),
        ("http_calls", "call_pk", &mut removed.http_calls),
    ] {
        let limit = budget.left;
        let deleted = tx
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE run_id = ?1 AND ({key}) IN
                   (SELECT {key} FROM {table} WHERE run_id = ?1 LIMIT ?2)"
            ))?
            .execute(params![run, limit as i64])? as u64;
        *count = budget.spend(deleted, limit);
    }
    if budget.all_gone {
        removed.runs = tx.execute("DELETE FROM runs WHERE run_id = ?1", [run])? as u64;
    }
    Ok(CollectStep {
        removed,
        done: budget.all_gone,
    })
}

/// Rows a removal step may still delete.
struct Budget {
    left: u64,
    /// Every table had fewer rows of the run than the step could take.
    all_gone: bool,
}

impl Budget {
    fn spend(&mut self, deleted: u64, limit: u64) -> u64 {
        self.left -= deleted;
        self.all_gone &= deleted < limit;
        deleted
    }
}

/// Deletes at most `limit` events of a run, then the frame trees that no
/// frame names any more. Returns (events, frames, trees) removed.
fn delete_events(
    tx: &Transaction<'_>,
    run: &str,
    limit: u64,
) -> Result<(u64, u64, u64), StoreError> {
    if limit == 0 {
        return Ok((0, 0, 0));
    }
    let mut frames = 0;
    let mut events = 0;
    let mut hashes = BTreeSet::new();
    let mut stmt = tx.prepare_cached(
        "DELETE FROM events WHERE event_id IN
           (SELECT event_id FROM events WHERE run_id = ?1 LIMIT ?2)
         RETURNING type, CASE WHEN type = 'FrameCommitted'
             THEN json_extract(payload_json, '$.xmlHash') END",
    )?;
    let mut rows = stmt.query(params![run, limit as i64])?;
    while let Some(row) = rows.next()? {
        events += 1;
        if let Some(hash) = row.get::<_, Option<String>>(1)? {
            frames += 1;
            hashes.insert(hash);
        }
    }
    drop(rows);
    let mut trees = 0;
    // Uses the partial index on FrameCommitted hashes (migration V4).
    let mut orphan = tx.prepare_cached(
        "DELETE FROM frame_trees WHERE tree_hash = ?1 AND NOT EXISTS
           (SELECT 1 FROM events WHERE type = 'FrameCommitted'
              AND json_extract(payload_json, '$.xmlHash') = ?1)",
    )?;
    for hash in &hashes {
        trees += orphan.execute([hash])? as u64;
    }
    Ok((events, frames, trees))
}

/// Applies a maintenance job on the writer's connection, outside any
/// transaction; answers the bytes returned to the file system.
pub(super) fn maintain(
    conn: &Connection,
    path: &Path,
    job: Maintenance,
) -> Result<u64, StoreError> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let page_size = page_size.max(0) as u64;
    match job {
        Maintenance::Reclaim { max_pages } => {
            // The pragma returns one row per page it frees.
            let mut stmt =
                conn.prepare(&format!("PRAGMA incremental_vacuum({})", max_pages.max(1)))?;
            let mut rows = stmt.query([])?;
            let mut pages = 0u64;
            while rows.next()?.is_some() {
                pages += 1;
            }
            Ok(pages * page_size)
        }
        Maintenance::ConvertToIncremental => {
            let (pages, free): (i64, i64) = conn.query_row(
                "SELECT (SELECT page_count FROM pragma_page_count),
                        (SELECT freelist_count FROM pragma_freelist_count)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let live = (pages - free).max(0) as u64 * page_size;
            // VACUUM writes a compacted copy to a temporary file, then the
            // whole database through the WAL: room for both, with a margin.
            let needed = live.saturating_mul(2) + (64 << 20);
            let available = available_bytes(path)?;
            if available < needed {
                return Err(StoreError::Unavailable(format!(
                    "converting the database needs about {} MiB free next to it, and {} MiB are; \
                     free some space or run the conversion later",
                    needed >> 20,
                    available >> 20
                )));
            }
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            conn.execute_batch("VACUUM")?;
            Ok(free.max(0) as u64 * page_size)
        }
        Maintenance::Checkpoint => {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(0)
        }
    }
}

/// Bytes an unprivileged writer may still use on the file system of `path`.
fn available_bytes(path: &Path) -> Result<u64, StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let stat = rustix::fs::statvfs(dir)
        .map_err(|e| StoreError::Unavailable(format!("cannot measure free space: {e}")))?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

impl Reader<'_> {
    /// Runs the rule takes, by end time then id, after `after` (the last one
    /// of the previous page).
    pub fn collect_candidates(
        &self,
        rule: &CollectRule,
        after: Option<(i64, &RunId)>,
        limit: u32,
    ) -> Result<Vec<Candidate>, StoreError> {
        let [finished, failed, cancelled] = rule.status_flags();
        let (after_ended, after_id) = match after {
            Some((ended, id)) => (ended, id.as_str()),
            None => (i64::MIN, ""),
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT run_id, status, workflow_name, ended FROM (
                 SELECT run_id, status, workflow_name, owner_id,
                        COALESCE(finished_at_ms, created_at_ms) AS ended
                 FROM runs WHERE status IN ('finished', 'failed', 'cancelled'))
             WHERE ((ended <= ?1 AND ((?2 AND status = 'finished') OR (?3 AND status = 'failed')
                                      OR (?4 AND status = 'cancelled')))
                    OR owner_id = ?5)
               AND (ended, run_id) > (?6, ?7)
             ORDER BY ended, run_id LIMIT ?8",
        )?;
        let rows = stmt
            .query_map(
                params![
                    rule.ended_before_ms,
                    finished,
                    failed,
                    cancelled,
                    COLLECTING_OWNER,
                    after_ended,
                    after_id,
                    limit
                ],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, status, workflow_name, ended_at_ms)| {
                Ok(Candidate {
                    run_id: RunId::parse(&id).map_err(StoreError::Corrupt)?,
                    status: RunStatus::parse(&status).ok_or_else(|| {
                        StoreError::Corrupt(format!("unknown run status {status:?}"))
                    })?,
                    workflow_name,
                    ended_at_ms,
                })
            })
            .collect()
    }

    /// The rows removing a run would delete (frame trees are not counted:
    /// whether one is still named elsewhere is known only when removing).
    pub fn collect_count(&self, run_id: &RunId) -> Result<Removed, StoreError> {
        let count = |sql: &str| -> Result<u64, StoreError> {
            let n: i64 = self
                .conn
                .prepare_cached(sql)?
                .query_row([run_id.as_str()], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        };
        Ok(Removed {
            runs: count("SELECT COUNT(*) FROM runs WHERE run_id = ?1")?,
            events: count("SELECT COUNT(*) FROM events WHERE run_id = ?1")?,
            frames: count(
                "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND type = 'FrameCommitted'",
            )?,
            frame_trees: 0,
            nodes: count("SELECT COUNT(*) FROM nodes WHERE run_id = ?1")?,
            attempts: count("SELECT COUNT(*) FROM attempts WHERE run_id = ?1")?,
            approvals: count("SELECT COUNT(*) FROM approvals WHERE run_id = ?1")?,
            signals: count("SELECT COUNT(*) FROM signals WHERE run_id = ?1")?,
            loops: count("SELECT COUNT(*) FROM loops WHERE run_id = ?1")?,
            versions: count("SELECT COUNT(*) FROM run_versions WHERE run_id = ?1")?,
            http_calls: count("SELECT COUNT(*) FROM http_calls WHERE run_id = ?1")?,
        })
    }

    /// The database's auto-vacuum mode.
    pub fn auto_vacuum(&self) -> Result<AutoVacuum, StoreError> {
        // The pragma answers from the file header as this connection last
        // read it; a read refreshes that (another connection may have just
        // converted the file).
        self.conn
            .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })?;
        let mode: i64 = self
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        Ok(match mode {
            1 => AutoVacuum::Full,
            2 => AutoVacuum::Incremental,
            _ => AutoVacuum::None,
        })
    }

    /// Bytes in free pages: what removing rows left for a vacuum to return.
    pub fn free_bytes(&self) -> Result<u64, StoreError> {
        let bytes: i64 = self.conn.query_row(
            "SELECT (SELECT freelist_count FROM pragma_freelist_count)
                  * (SELECT page_size FROM pragma_page_size)",
            [],
            |r| r.get(0),
        )?;
        Ok(bytes.max(0) as u64)
    }
}

#[cfg(test)]
mod tests;
