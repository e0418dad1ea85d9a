//! What a run has stored, against what it may store.
//!
//! The runtime charges a guest's own data (`emit`, `log`, captured output,
//! task outputs) to the run's [`OutputBudget`] before it leaves the call;
//! the driver charges frame trees before storing them and its own events
//! after committing them, and on resume starts from what the run already
//! stored. This module only counts and words the refusal: the driver loop
//! decides to fail the run once the budget is exceeded.

use serde_json::json;

use super::Driver;
use crate::model::ErrorInfo;
use crate::runtime::OUTPUT_LIMIT_EXCEEDED;
use crate::store::{CommitOutcome, StoreError};

impl Driver {
    /// Counts what the run stored before this driver (a resumed run): a
    /// run that already holds its limit fails again at once instead of
    /// growing by one more budget per resume.
    pub(super) async fn count_stored(&mut self) -> Result<(), StoreError> {
        let id = self.run_id.clone();
        let stored = self.engine.store.read(move |r| r.stored_bytes(&id)).await?;
        self.budget.charge(stored);
        Ok(())
    }

    /// Charges the events a driver commit stored. Outputs in the commit were
    /// charged by the runtime, trees by `frame`.
    pub(super) fn charge_events(&self, outcome: &CommitOutcome) {
        let stored: usize = outcome.events.iter().map(|e| e.json.len()).sum();
        self.budget.charge(stored as u64);
    }

    /// The run's error once it has stored its limit.
    pub(super) fn output_limit_error(&self) -> ErrorInfo {
        let (used, limit) = (self.budget.used(), self.budget.limit());
        ErrorInfo::new(
            OUTPUT_LIMIT_EXCEEDED,
            format!(
                "the run reached the {limit} bytes of events, outputs and frames it may store; \
                 it stores nothing more (raise --max-run-stored-bytes and resume it to continue)"
            ),
        )
        .with_details(json!({ "storedBytes": used, "limitBytes": limit }))
    }
}
