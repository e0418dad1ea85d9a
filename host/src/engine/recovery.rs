//! Resuming the runs a previous host process left `running` (killed, or
//! stopped mid-run). A server does it in the background, after it started
//! listening: `/health` answers at once (saying `recovering` until the last
//! run is resumed), however many runs were in flight. A client that touches
//! a run meanwhile races nobody: each resume reserves its run first.

use std::sync::atomic::Ordering;

use super::{Engine, EngineError, ResumeOutcome};
use crate::model::RunId;

impl Engine {
    /// Resumes every run a previous host process left `running`.
    pub async fn recover(&self) -> Result<Vec<RunId>, EngineError> {
        let owner = self.inner.owner_id.clone();
        let runs = self
            .inner
            .store
            .read(move |r| r.runs_to_recover(&owner))
            .await?;
        let mut resumed = Vec::new();
        for run_id in runs {
            match self.inner.clone().resume(&run_id, None).await {
                Ok(ResumeOutcome::Resumed) => resumed.push(run_id),
                Ok(_) => {}
                Err(e) => tracing::error!(run = %run_id, error = %e, "cannot recover run"),
            }
        }
        if !resumed.is_empty() {
            tracing::info!(count = resumed.len(), "recovered interrupted runs");
        }
        Ok(resumed)
    }

    /// [`recover`](Self::recover) on its own task; [`recovering`](Self::recovering)
    /// is true from this call until it is done.
    pub fn recover_in_background(&self) {
        self.inner.recovering.store(true, Ordering::SeqCst);
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(e) = engine.recover().await {
                tracing::error!(error = %e, "cannot look for interrupted runs");
            }
            engine.inner.recovering.store(false, Ordering::SeqCst);
        });
    }

    /// Interrupted runs are still being resumed.
    pub fn recovering(&self) -> bool {
        self.inner.recovering.load(Ordering::SeqCst)
    }
}
