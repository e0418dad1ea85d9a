//! Bounded reads of what nodes produced: the iterations of one node with
//! their latest attempts, and a run's committed outputs in the order their
//! nodes were first mounted.
//!
//! A run may hold thousands of outputs of up to `--max-task-output-bytes`
//! each, so every query here reads its rows one at a time and stops at its
//! [`Bounds`]: after a cursor, at most `limit` rows and `max_bytes` of stored
//! JSON. The first row is always returned, so a row larger than the budget
//! still makes progress (its size is bounded where it was stored); a row past
//! the bound is never decoded. Which bounds apply is the engine's choice.

use rusqlite::params;

use super::StoreError;
use super::read::Reader;
use crate::model::{AttemptState, NodeKey, NodeState, RunId};

/// Where a bounded read starts and where it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Only rows after this cursor (an iteration, or an output's cursor).
    pub after: Option<u64>,
    /// Most rows (at least one is read).
    pub limit: u32,
    /// Most bytes of stored JSON over all rows, once one row is in.
    pub max_bytes: u64,
}

/// Rows of a bounded read, and whether more lie past the bound.
#[derive(Debug, Clone)]
pub struct Bounded<T> {
    /// The rows, in cursor order.
    pub rows: Vec<T>,
    /// A row past the bound exists.
    pub more: bool,
}

/// One iteration of a node.
#[derive(Debug, Clone)]
pub struct IterationRow {
    /// Loop iteration (0 outside loops).
    pub iteration: u32,
    /// State.
    pub state: NodeState,
    /// Display label.
    pub label: Option<String>,
    /// Last attempt number.
    pub last_attempt: Option<u32>,
    /// Last change of the row.
    pub updated_at_ms: i64,
    /// Committed output (JSON text).
    pub output_json: Option<String>,
    /// Error of the last failure (JSON text); kept after a later success.
    pub error_json: Option<String>,
    /// The latest attempts, oldest first.
    pub attempts: Vec<AttemptRow>,
    /// How many attempts there were in all.
    pub attempt_count: u32,
}

/// One attempt of a task.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// State.
    pub state: AttemptState,
    /// Start.
    pub started_at_ms: i64,
    /// End.
    pub finished_at_ms: Option<i64>,
    /// Why it failed (JSON text).
    pub error_json: Option<String>,
}

/// A committed output.
#[derive(Debug, Clone)]
pub struct OutputRow {
    /// Position in the run's outputs (resume after it with `Bounds::after`).
    pub cursor: u64,
    /// Node and iteration.
    pub key: NodeKey,
    /// State of the node (`finished`, or `skipped` with its default output).
    pub state: NodeState,
    /// Display label.
    pub label: Option<String>,
    /// The output (JSON text).
    pub output_json: String,
}

/// Rows taken so far against the bounds.
struct Budget {
    bounds: Bounds,
    taken: u32,
    bytes: u64,
}

impl Budget {
    fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            taken: 0,
            bytes: 0,
        }
    }

    /// The row limit is reached.
    fn full(&self) -> bool {
        self.taken > 0 && self.taken >= self.bounds.limit
    }

    /// Takes a row of `size` bytes if it fits (the first always does).
    fn take(&mut self, size: u64) -> bool {
        if self.full() || (self.taken > 0 && self.bytes + size > self.bounds.max_bytes) {
            return false;
        }
        self.taken += 1;
        self.bytes += size;
        true
    }

    /// The SQL `LIMIT` that reads one row past the limit, to tell whether more exist.
    fn sql_limit(&self) -> i64 {
        i64::from(self.bounds.limit.max(1)) + 1
    }

    /// The SQL lower bound of the cursor (`-1`: from the start).
    fn sql_after(&self) -> i64 {
        self.bounds
            .after
            .map_or(-1, |after| i64::try_from(after).unwrap_or(i64::MAX))
    }
}

fn corrupt(what: &str, raw: &str) -> StoreError {
    StoreError::Corrupt(format!("unknown {what} {raw:?}"))
}

fn size(bytes: Option<i64>) -> u64 {
    bytes.and_then(|b| u64::try_from(b).ok()).unwrap_or(0)
}

impl Reader<'_> {
    /// Whether the run has rows for `node_id` (at any iteration).
    pub fn has_node(&self, run_id: &RunId, node_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM nodes WHERE run_id = ?1 AND node_id = ?2)",
            )?
            .query_row(params![run_id.as_str(), node_id], |row| row.get(0))?)
    }

    /// The iterations of a node in order (only `only` when given), each with
    /// its `attempts` latest attempts. An iteration weighs its output, its
    /// error and its attempts' errors.
    pub fn node_iterations(
        &self,
        run_id: &RunId,
        node_id: &str,
        only: Option<u32>,
        bounds: Bounds,
        attempts: u32,
    ) -> Result<Bounded<IterationRow>, StoreError> {
        let mut budget = Budget::new(bounds);
        let mut stmt = self.conn.prepare_cached(
            "SELECT iteration, state, label, last_attempt, updated_at_ms,
                    COALESCE(LENGTH(CAST(output_json AS BLOB)), 0)
                      + COALESCE(LENGTH(CAST(error_json AS BLOB)), 0),
                    output_json, error_json
             FROM nodes
             WHERE run_id = ?1 AND node_id = ?2 AND iteration > ?3 AND (?4 IS NULL OR iteration = ?4)
             ORDER BY iteration LIMIT ?5",
        )?;
        let mut rows = stmt.query(params![
            run_id.as_str(),
            node_id,
            budget.sql_after(),
            only,
            budget.sql_limit()
        ])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            if budget.full() {
                return Ok(Bounded {
                    rows: out,
                    more: true,
                });
            }
            let iteration: u32 = row.get(0)?;
            let (latest, attempt_count, attempt_bytes) =
                self.latest_attempts(run_id, node_id, iteration, attempts)?;
            if !budget.take(size(row.get(5)?) + attempt_bytes) {
                return Ok(Bounded {
                    rows: out,
                    more: true,
                });
            }
            let state: String = row.get(1)?;
            out.push(IterationRow {
                iteration,
                state: NodeState::parse(&state).ok_or_else(|| corrupt("node state", &state))?,
                label: row.get(2)?,
                last_attempt: row.get(3)?,
                updated_at_ms: row.get(4)?,
                output_json: row.get(6)?,
                error_json: row.get(7)?,
                attempts: latest,
                attempt_count,
            });
        }
        Ok(Bounded {
            rows: out,
            more: false,
        })
    }

    /// The `cap` latest attempts of one iteration (oldest first), how many
    /// there were, and the bytes of their errors.
    fn latest_attempts(
        &self,
        run_id: &RunId,
        node_id: &str,
        iteration: u32,
        cap: u32,
    ) -> Result<(Vec<AttemptRow>, u32, u64), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT attempt, state, started_at_ms, finished_at_ms, error_json,
                    COALESCE(LENGTH(CAST(error_json AS BLOB)), 0), COUNT(*) OVER ()
             FROM attempts WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3
             ORDER BY attempt DESC LIMIT ?4",
        )?;
        let mut rows = stmt.query(params![run_id.as_str(), node_id, iteration, cap])?;
        let (mut attempts, mut count, mut bytes) = (Vec::new(), 0, 0);
        while let Some(row) = rows.next()? {
            let state: String = row.get(1)?;
            bytes += size(row.get(5)?);
            count = row.get(6)?;
            attempts.push(AttemptRow {
                attempt: row.get(0)?,
                state: AttemptState::parse(&state)
                    .ok_or_else(|| corrupt("attempt state", &state))?,
                started_at_ms: row.get(2)?,
                finished_at_ms: row.get(3)?,
                error_json: row.get(4)?,
            });
        }
        attempts.reverse();
        Ok((attempts, count, bytes))
    }

    /// The run's committed outputs, in the order their nodes were first
    /// mounted. An output weighs its JSON text.
    pub fn outputs(
        &self,
        run_id: &RunId,
        bounds: Bounds,
    ) -> Result<Bounded<OutputRow>, StoreError> {
        let mut budget = Budget::new(bounds);
        let mut stmt = self.conn.prepare_cached(
            "SELECT node_pk, node_id, iteration, state, label,
                    LENGTH(CAST(output_json AS BLOB)), output_json
             FROM nodes WHERE run_id = ?1 AND output_json IS NOT NULL AND node_pk > ?2
             ORDER BY node_pk LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![
            run_id.as_str(),
            budget.sql_after(),
            budget.sql_limit()
        ])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            if !budget.take(size(row.get(5)?)) {
                return Ok(Bounded {
                    rows: out,
                    more: true,
                });
            }
            let state: String = row.get(3)?;
            out.push(OutputRow {
                cursor: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                key: NodeKey::new(row.get::<_, String>(1)?, row.get(2)?),
                state: NodeState::parse(&state).ok_or_else(|| corrupt("node state", &state))?,
                label: row.get(4)?,
                output_json: row.get(6)?,
            });
        }
        Ok(Bounded {
            rows: out,
            more: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(limit: u32, max_bytes: u64) -> Bounds {
        Bounds {
            after: None,
            limit,
            max_bytes,
        }
    }

    #[test]
    fn the_first_row_always_fits_and_later_ones_only_within_the_budget() {
        let mut budget = Budget::new(bounds(10, 100));
        assert!(budget.take(500), "a first row larger than the budget");
        assert!(!budget.take(1));
        let mut budget = Budget::new(bounds(10, 100));
        assert!(budget.take(60) && budget.take(40));
        assert!(!budget.take(1));
    }

    #[test]
    fn the_row_limit_holds_whatever_the_sizes() {
        let mut budget = Budget::new(bounds(2, u64::MAX));
        assert!(budget.take(0) && budget.take(0));
        assert!(budget.full());
        assert!(!budget.take(0));
        assert_eq!(
            budget.sql_limit(),
            3,
            "one row past the limit tells more exist"
        );
    }
}
