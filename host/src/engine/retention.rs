//! Retention: removing old runs and giving their space back.
//!
//! The rules live here: only a finished, failed or cancelled run is ever
//! removed (a live or parked one never is, whatever its age), only one that
//! ended before the cutoff, and never one a driver of this process holds.
//! While a run is being removed its driver slot is taken (it counts as an
//! active run meanwhile), so a resume arriving then cannot start it; the
//! store re-checks the rule in each step's transaction. Removal goes in steps of at most [`STEP_ROWS`] rows
//! and the space comes back [`RECLAIM_PAGES`] pages at a time, so the one
//! writer is never held for long and runs keep committing during a pass.
//!
//! A server runs a pass when it starts and then periodically
//! ([`Engine::retain`]); `smithers-host gc` runs one pass.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{Engine, EngineError};
use crate::model::{RunId, RunStatus, now_ms};
use crate::store::{
    AutoVacuum, Candidate, CollectRule, Commit, DiskUsage, Maintenance, Op, Removed, StoreError,
};

/// Most rows one removal step deletes.
const STEP_ROWS: u32 = 1000;

/// Most free pages one reclaim step returns to the file system.
const RECLAIM_PAGES: u32 = 2048;

/// Runs read per page of candidates.
const CANDIDATES_PER_PAGE: u32 = 200;

/// Most runs a report lists one by one (the counts cover all of them).
const LISTED_RUNS: usize = 1000;

/// What a pass removes.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Runs that ended at least this long ago.
    pub older_than: Duration,
    /// Of these statuses (terminal ones only; others are ignored).
    pub statuses: Vec<RunStatus>,
    /// Count what would go, remove nothing.
    pub dry_run: bool,
    /// The pass has the database to itself (`smithers-host gc`): it may
    /// convert a database without incremental auto-vacuum (one full
    /// `VACUUM`, which holds the writer for as long as it takes) and empty
    /// the WAL at the end. A server's periodic pass never does either.
    pub exclusive: bool,
}

impl Retention {
    /// The statuses a pass may remove when none are named.
    pub const TERMINAL: [RunStatus; 3] =
        [RunStatus::Finished, RunStatus::Failed, RunStatus::Cancelled];
}

/// A removed run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovedRun {
    /// The run.
    pub run_id: RunId,
    /// Its status.
    pub status: RunStatus,
    /// `describe().name` of its workflow.
    pub workflow_name: String,
    /// When it ended.
    pub ended_at_ms: i64,
}

/// What became of the free space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vacuum {
    /// Nothing to do (a dry run, or nothing removed and nothing free).
    None,
    /// Free pages were returned to the file system.
    Incremental,
    /// The database was converted to incremental auto-vacuum (a full
    /// `VACUUM`, once).
    Converted,
    /// The database returns pages at every commit already.
    Full,
    /// The database needs the one-off conversion, which this pass may not do.
    NeedsConversion,
}

/// What a pass did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Nothing was removed.
    pub dry_run: bool,
    /// Runs that ended at or before this time were taken.
    pub cutoff_ms: i64,
    /// Rows removed, all runs together.
    pub removed: Removed,
    /// Runs removed per status.
    pub by_status: BTreeMap<&'static str, u64>,
    /// The runs, oldest first (the first 1000).
    pub runs: Vec<RemovedRun>,
    /// Runs removed but not listed in `runs`.
    pub unlisted_runs: u64,
    /// Candidates left alone because they changed (resumed) or were busy.
    pub skipped_runs: u64,
    /// What became of the free space.
    pub vacuum: Vacuum,
    /// Bytes returned to the file system (after the next checkpoint).
    pub reclaimed_bytes: u64,
    /// Why the conversion could not run, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vacuum_error: Option<String>,
    /// The database files before the pass.
    pub database_before: DiskUsage,
    /// The database files after it (for a server's pass, before the next
    /// checkpoint moves the WAL into the file).
    pub database_after: DiskUsage,
}

impl Engine {
    /// Sizes of the database file and its WAL.
    pub fn database_size(&self) -> DiskUsage {
        self.inner.store.disk_usage()
    }

    /// One retention pass: removes (or counts) the runs `retention` takes,
    /// then returns the freed space.
    pub async fn collect(&self, retention: &Retention) -> Result<GcReport, EngineError> {
        let cutoff_ms = now_ms()
            .saturating_sub(i64::try_from(retention.older_than.as_millis()).unwrap_or(i64::MAX));
        let rule = CollectRule {
            ended_before_ms: cutoff_ms,
            statuses: retention
                .statuses
                .iter()
                .copied()
                .filter(|s| s.is_terminal())
                .collect(),
        };
        let mut report = GcReport {
            dry_run: retention.dry_run,
            cutoff_ms,
            removed: Removed::default(),
            by_status: BTreeMap::new(),
            runs: Vec::new(),
            unlisted_runs: 0,
            skipped_runs: 0,
            vacuum: Vacuum::None,
            reclaimed_bytes: 0,
            vacuum_error: None,
            database_before: self.database_size(),
            database_after: DiskUsage::default(),
        };
        let mut after: Option<(i64, RunId)> = None;
        loop {
            let (page_rule, page_after) = (rule.clone(), after.clone());
            let page = self
                .inner
                .store
                .read(move |r| {
                    r.collect_candidates(
                        &page_rule,
                        page_after.as_ref().map(|(t, id)| (*t, id)),
                        CANDIDATES_PER_PAGE,
                    )
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.ended_at_ms, last.run_id.clone()));
            for candidate in page {
                self.inner.check_running()?;
                let removed = if retention.dry_run {
                    self.count(&candidate).await?
                } else {
                    self.remove(&candidate, &rule).await?
                };
                match removed {
                    Some(removed) => report.add(candidate, removed),
                    None => report.skipped_runs += 1,
                }
            }
        }
        if !retention.dry_run {
            self.reclaim(retention, &mut report).await?;
            if retention.exclusive {
                self.inner.store.maintain(Maintenance::Checkpoint).await?;
            }
        }
        report.database_after = self.database_size();
        Ok(report)
    }

    /// Runs a pass now and then every `every`, until the engine shuts down;
    /// a failed pass is logged and the next one tries again.
    pub fn retain(&self, retention: Retention, every: Duration) {
        let engine = self.clone();
        let stop = self.inner.background.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut warned = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                match engine.collect(&retention).await {
                    Ok(report) => {
                        if report.removed.runs > 0 {
                            tracing::info!(
                                runs = report.removed.runs,
                                events = report.removed.events,
                                reclaimed_bytes = report.reclaimed_bytes,
                                "retention removed old runs"
                            );
                        }
                        if report.vacuum == Vacuum::NeedsConversion && !warned {
                            warned = true;
                            tracing::warn!(
                                "the database predates incremental auto-vacuum: removed runs \
                                 leave free pages that new runs reuse, but the file does not \
                                 shrink until `smithers-host gc` converts it once (with the \
                                 server stopped)"
                            );
                        }
                    }
                    Err(EngineError::ShuttingDown) => return,
                    Err(e) => tracing::warn!(error = %e, "retention pass failed"),
                }
            }
        });
    }

    async fn count(&self, candidate: &Candidate) -> Result<Option<Removed>, EngineError> {
        if self.is_active(&candidate.run_id) {
            return Ok(None);
        }
        let id = candidate.run_id.clone();
        Ok(Some(
            self.inner.store.read(move |r| r.collect_count(&id)).await?,
        ))
    }

    /// Removes one run in bounded steps, holding its driver slot meanwhile.
    /// `None` when it is busy or no longer collectable.
    async fn remove(
        &self,
        candidate: &Candidate,
        rule: &CollectRule,
    ) -> Result<Option<Removed>, EngineError> {
        let inner = &self.inner;
        let run_id = &candidate.run_id;
        if inner.reserve(run_id).is_none() {
            return Ok(None);
        }
        let mut total = Removed::default();
        let result = loop {
            let step = Commit::new(run_id.clone()).op(Op::CollectRun {
                rule: rule.clone(),
                max_rows: STEP_ROWS,
            });
            match inner.store.commit(step).await {
                Ok(outcome) => {
                    let step = outcome.collected.unwrap_or_default();
                    total += step.removed;
                    if step.done {
                        break Ok(Some(total));
                    }
                }
                Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => break Ok(None),
                Err(e) => break Err(e.into()),
            }
            if let Err(e) = inner.check_running() {
                break Err(e);
            }
            // Let the commits that queued meanwhile go first.
            tokio::task::yield_now().await;
        };
        inner.release(run_id);
        result
    }

    /// Returns the pages the pass freed to the file system.
    async fn reclaim(
        &self,
        retention: &Retention,
        report: &mut GcReport,
    ) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let (mode, free) = store
            .read(|r| Ok((r.auto_vacuum()?, r.free_bytes()?)))
            .await?;
        report.vacuum = match mode {
            AutoVacuum::Full => Vacuum::Full,
            _ if free == 0 && report.removed.runs == 0 => Vacuum::None,
            AutoVacuum::Incremental => {
                loop {
                    let bytes = store
                        .maintain(Maintenance::Reclaim {
                            max_pages: RECLAIM_PAGES,
                        })
                        .await?;
                    report.reclaimed_bytes += bytes;
                    if bytes == 0 {
                        break;
                    }
                    self.inner.check_running()?;
                    tokio::task::yield_now().await;
                }
                Vacuum::Incremental
            }
            AutoVacuum::None if !retention.exclusive => Vacuum::NeedsConversion,
            AutoVacuum::None => match store.maintain(Maintenance::ConvertToIncremental).await {
                Ok(bytes) => {
                    report.reclaimed_bytes += bytes;
                    Vacuum::Converted
                }
                Err(StoreError::Unavailable(why)) => {
                    report.vacuum_error = Some(why);
                    Vacuum::NeedsConversion
                }
                Err(e) => return Err(e.into()),
            },
        };
        Ok(())
    }
}

impl GcReport {
    fn add(&mut self, run: Candidate, removed: Removed) {
        self.removed += removed;
        *self.by_status.entry(run.status.as_str()).or_insert(0) += 1;
        if self.runs.len() < LISTED_RUNS {
            self.runs.push(RemovedRun {
                run_id: run.run_id,
                status: run.status,
                workflow_name: run.workflow_name,
                ended_at_ms: run.ended_at_ms,
            });
        } else {
            self.unlisted_runs += 1;
        }
    }
}
