//! Deadlines of guest calls. Every `describe`, `render` and `run-task` call
//! runs under one: the guest yields to the executor at every epoch tick, so
//! dropping its future at the deadline stops it within a tick. This module
//! only races the call against the clock and the cancel token; what a
//! timeout means for a run is the engine's business.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::GuestFault;

/// What a deadline bounds, for the fault it raises.
#[derive(Debug, Clone, Copy)]
pub(super) enum Call {
    Describe,
    Render,
    Task,
}

impl Call {
    fn timeout_fault(self, limit: Duration) -> GuestFault {
        let ms = limit.as_millis();
        match self {
            Self::Describe => GuestFault::new(
                "RENDER_TIMEOUT",
                format!("describe did not return within {ms} ms"),
            ),
            Self::Render => GuestFault::new(
                "RENDER_TIMEOUT",
                format!("render did not return within {ms} ms"),
            ),
            Self::Task => GuestFault::new(
                "TASK_TIMEOUT",
                format!("the task did not finish within {ms} ms"),
            ),
        }
    }
}

/// Runs a guest call until it completes, the deadline passes or `cancel`
/// fires. Dropping the call's future abandons the store (and kills any bash
/// process tree the guest started); the store is never reused. Every call
/// has a deadline: a guest call never runs unbounded.
pub(super) async fn with_deadline<T>(
    kind: Call,
    timeout: Duration,
    cancel: &CancellationToken,
    call: impl std::future::Future<Output = T>,
) -> Result<T, GuestFault> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(GuestFault::new("CANCELLED", "the task was cancelled")),
        _ = tokio::time::sleep(timeout) => Err(kind.timeout_fault(timeout)),
        value = call => Ok(value),
    }
}
