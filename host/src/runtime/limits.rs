//! What one guest may consume, and the accounting that enforces it.
//!
//! [`GuestLimits`] gathers the operator's bounds on a guest: how long a call
//! may run, how much one `emit`, `log`, captured stream or task output may
//! hold, and how many bytes one run may store. [`OutputBudget`] counts a
//! run's stored bytes across every call of that run; [`GuestLimiter`] is the
//! per-store wasmtime limiter that remembers which limit a guest hit, so a
//! refused `memory.grow` is reported as a memory-limit error rather than an
//! opaque `unreachable`. Nothing here stores, publishes or decides the fate
//! of a run: callers turn a refusal into a task or run failure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::ResourceLimiter;

use super::{GuestFault, TaskError};

/// Most tables and table elements a workflow instance may create.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 16;

/// Longest guest-chosen error message (a task error, a render error) the
/// host keeps; the rest is cut. Errors are stored several times (attempt,
/// node, events, run) and shown in every status answer.
pub(crate) const MAX_ERROR_MESSAGE_BYTES: usize = 4096;
/// Longest guest-chosen error code.
pub(crate) const MAX_ERROR_CODE_BYTES: usize = 64;
/// Largest guest-chosen error `details` JSON kept; larger details are dropped.
pub(crate) const MAX_ERROR_DETAILS_BYTES: usize = 16 * 1024;

/// Wire code of every refusal of this module.
pub const OUTPUT_LIMIT_EXCEEDED: &str = "OUTPUT_LIMIT_EXCEEDED";

/// The operator's bounds on a guest. `Default` is what `smithers-host`
/// ships with; each field has a command-line flag.
#[derive(Debug, Clone)]
pub struct GuestLimits {
    /// Deadline of a task that sets no `timeoutMs`.
    pub task_timeout: Duration,
    /// Longest deadline any task gets: a larger `timeoutMs` is clamped to it.
    pub max_task_timeout: Duration,
    /// Deadline of `describe` and of each `render`.
    pub render_timeout: Duration,
    /// Largest JSON text one `emit` may stream; a larger one fails the task.
    pub max_emit_bytes: usize,
    /// Largest message one `log` keeps; the rest is cut.
    pub max_log_bytes: usize,
    /// Captured stdout, and stderr, of one call; the rest is cut.
    pub max_stdio_bytes: usize,
    /// Largest output (JSON text) a task may return; a larger one fails it.
    pub max_task_output_bytes: usize,
    /// Bytes one run may store: its events (with every `emit`, `log` and
    /// captured output), its task outputs and the frame trees it rendered.
    pub max_run_stored_bytes: u64,
}

impl Default for GuestLimits {
    fn default() -> Self {
        Self {
            task_timeout: Duration::from_secs(15 * 60),
            max_task_timeout: Duration::from_secs(60 * 60),
            render_timeout: Duration::from_secs(10),
            max_emit_bytes: 1024 * 1024,
            max_log_bytes: 64 * 1024,
            max_stdio_bytes: 1024 * 1024,
            max_task_output_bytes: 1024 * 1024,
            max_run_stored_bytes: 256 * 1024 * 1024,
        }
    }
}

impl GuestLimits {
    /// Deadline of a task whose author asked for `requested_ms` (or nothing).
    /// Clamped rather than refused: the bound the operator set holds either
    /// way, and a workflow that asks for more than one host allows still
    /// runs there, failing only if a task really takes that long.
    pub fn task_deadline(&self, requested_ms: Option<u64>) -> Duration {
        requested_ms
            .map_or(self.task_timeout, Duration::from_millis)
            .min(self.max_task_timeout)
    }
}

/// A guest tried to store more than a limit allows. Raised as a trap from
/// the host functions (its message becomes the task's error), or returned
/// by [`OutputBudget::try_charge`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// One call carried more than its own cap.
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    PerCall {
        /// `an emit`, `the task's output`...
        what: &'static str,
        /// Its size.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// The run has no room left for it.
    #[error(
        "the run has stored {used} of the {limit} bytes it may store; \
         {what} of {size} more bytes does not fit"
    )]
    Run {
        /// What did not fit.
        what: &'static str,
        /// Its size.
        size: u64,
        /// Bytes the run had stored.
        used: u64,
        /// The run's limit.
        limit: u64,
    },
}

/// Bytes one run has stored, against its limit. Shared by the run's driver
/// and every task call of the run; a guest's own data (`emit`, `log`,
/// captured output, task outputs, frame trees) is charged *before* it is
/// stored and refused when it does not fit, the host's bookkeeping events
/// after they were committed. Once the limit is reached the budget stays
/// exceeded, and the driver fails the run.
#[derive(Debug)]
pub struct OutputBudget {
    limit: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
}

impl OutputBudget {
    /// A budget of `limit` bytes of which `used` are already stored.
    pub fn new(limit: u64, used: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(used),
            exceeded: AtomicBool::new(used > limit),
        }
    }

    /// Reserves `size` bytes of guest data, or refuses (and marks the budget
    /// exceeded) when they do not fit.
    pub fn try_charge(&self, what: &'static str, size: u64) -> Result<(), LimitExceeded> {
        let refused = |used| LimitExceeded::Run {
            what,
            size,
            used,
            limit: self.limit,
        };
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let total = used.saturating_add(size);
            if total > self.limit {
                self.exceeded.store(true, Ordering::Relaxed);
                return Err(refused(used));
            }
            match self
                .used
                .compare_exchange_weak(used, total, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    /// Counts `size` bytes already stored (the host's own events).
    pub fn charge(&self, size: u64) {
        let before = self.used.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > self.limit {
            self.exceeded.store(true, Ordering::Relaxed);
        }
    }

    /// True once the run has stored its limit, or a charge was refused.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Bytes counted so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Most bytes the store adds around an event body besides the run id:
/// `"runId":`, `,"seq":` and `,"timestampMs":` with 20-digit values.
const EVENT_ENVELOPE_BYTES: usize = 71;

/// An upper bound of the bytes an event stores: its body's JSON (as the
/// store writes it, escaping included) plus the envelope. Counted without
/// building the text.
pub(crate) fn stored_event_bytes(body: &impl serde::Serialize, run_id: &str) -> u64 {
    (json_bytes(body) + json_bytes(run_id) + EVENT_ENVELOPE_BYTES) as u64
}

/// Length of `value`'s JSON text.
fn json_bytes(value: &(impl serde::Serialize + ?Sized)) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing an event into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Cuts `text` to at most `max` bytes on a character boundary; true if it
/// was cut.
pub(crate) fn cut(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let end = text.floor_char_boundary(max);
    text.truncate(end);
    true
}

/// Checks a task's output against its cap and charges it to the run.
pub(super) fn charge_output(
    limits: &GuestLimits,
    budget: &OutputBudget,
    output: &str,
) -> Result<(), GuestFault> {
    let size = output.len();
    if size > limits.max_task_output_bytes {
        let e = LimitExceeded::PerCall {
            what: "the task's output",
            size,
            limit: limits.max_task_output_bytes,
        };
        return Err(GuestFault::new(OUTPUT_LIMIT_EXCEEDED, e.to_string()));
    }
    budget
        .try_charge("the task's output", size as u64)
        .map_err(|e| GuestFault::new(OUTPUT_LIMIT_EXCEEDED, e.to_string()))
}

/// A guest's task error, cut to what the host stores: it is written to the
/// attempt, the node, `NodeFailed` and possibly `RunFailed`.
pub(super) fn bounded_task_error(mut error: TaskError) -> TaskError {
    cut(&mut error.code, MAX_ERROR_CODE_BYTES);
    if cut(&mut error.message, MAX_ERROR_MESSAGE_BYTES) {
        error.message.push_str(" [message truncated]");
    }
    if error
        .details
        .as_ref()
        .is_some_and(|d| d.len() > MAX_ERROR_DETAILS_BYTES)
    {
        error.details = None;
        error.message.push_str(" [details dropped: too large]");
    }
    error
}

pub(super) struct GuestLimiter {
    max_memory_bytes: u64,
    hit_memory_limit: bool,
}

impl GuestLimiter {
    pub(super) fn new(max_memory_bytes: u64) -> Self {
        Self {
            max_memory_bytes,
            hit_memory_limit: false,
        }
    }

    pub(super) fn hit_memory_limit(&self) -> bool {
        self.hit_memory_limit
    }

    pub(super) fn max_memory_bytes(&self) -> u64 {
        self.max_memory_bytes
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired as u64 <= self.max_memory_bytes;
        if !allowed {
            self.hit_memory_limit = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_deadline_defaults_and_is_clamped_to_the_maximum() {
        let limits = GuestLimits {
            task_timeout: Duration::from_secs(10),
            max_task_timeout: Duration::from_secs(60),
            ..GuestLimits::default()
        };
        assert_eq!(limits.task_deadline(None), Duration::from_secs(10));
        assert_eq!(limits.task_deadline(Some(500)), Duration::from_millis(500));
        assert_eq!(
            limits.task_deadline(Some(3_600_000)),
            Duration::from_secs(60)
        );
        let inverted = GuestLimits {
            task_timeout: Duration::from_secs(120),
            ..limits
        };
        assert_eq!(inverted.task_deadline(None), Duration::from_secs(60));
    }

    #[test]
    fn the_budget_refuses_what_does_not_fit_and_stays_exceeded() {
        let budget = OutputBudget::new(100, 40);
        assert_eq!(budget.try_charge("an emit", 60), Ok(()));
        assert!(!budget.exceeded());
        assert_eq!(
            budget.try_charge("an emit", 1),
            Err(LimitExceeded::Run {
                what: "an emit",
                size: 1,
                used: 100,
                limit: 100
            })
        );
        assert!(budget.exceeded());
        assert_eq!(budget.used(), 100);
    }

    #[test]
    fn bookkeeping_charges_may_overshoot_and_mark_the_budget_exceeded() {
        let budget = OutputBudget::new(100, 0);
        budget.charge(100);
        assert!(!budget.exceeded());
        budget.charge(1);
        assert!(budget.exceeded());
        assert!(OutputBudget::new(100, 101).exceeded());
    }

    #[test]
    fn an_event_is_charged_at_least_what_the_store_writes() {
        use crate::model::{Event, EventBody, RunId};
        let body = EventBody::NodeOutput {
            node_id: "n\u{1}\"".into(),
            iteration: u32::MAX,
            attempt: u32::MAX,
            text: "\u{0}\\\"x".repeat(100),
            stream: "log".into(),
        };
        let run_id = RunId::parse("r\"n").unwrap();
        let stored = Event {
            run_id: run_id.clone(),
            seq: u64::MAX,
            timestamp_ms: i64::MAX,
            body: body.clone(),
        }
        .to_json()
        .len() as u64;
        let charged = stored_event_bytes(&body, run_id.as_str());
        assert!(charged >= stored, "{charged} < {stored}");
        assert!(charged < stored + 72, "{charged} far above {stored}");
    }

    #[test]
    fn cut_never_splits_a_character() {
        let mut text = "aé".repeat(3);
        assert!(cut(&mut text, 2));
        assert_eq!(text, "a");
        let mut short = String::from("abc");
        assert!(!cut(&mut short, 3));
        assert_eq!(short, "abc");
    }
}
