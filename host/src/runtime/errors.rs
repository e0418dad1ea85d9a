//! What can go wrong loading a component or calling a guest, as data: the
//! load errors (each with its wire code) and the faults of a guest call
//! (traps, limits, deadlines), classified from wasmtime's errors.
//!
//! Messages quote what the component said or contained (import names,
//! `describe` errors) only stripped and cut ([`clipped`]): the component is
//! the workflow author's, and an error must never echo it at length.

use wasmtime::Store;

use super::HostState;
use super::limits::{LimitExceeded, OUTPUT_LIMIT_EXCEEDED};

/// Longest message a load error carries: what it quotes (import names,
/// guest errors) came from the component, not from us.
const MAX_LOAD_MESSAGE_CHARS: usize = 2000;

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid component.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// The component needs an import this host does not provide (e.g. sockets).
    #[error("{0}")]
    UnsatisfiedImport(String),
    /// The component does not export the `smithers:workflow` world.
    #[error("{0}")]
    MissingExports(String),
    /// `describe` failed.
    #[error("describe() failed: {0}")]
    Describe(String),
    /// The file is larger than the operator allows.
    #[error("the component is {size} bytes, more than the limit of {limit} (--max-component-mb)")]
    TooLarge {
        /// Its size (at least).
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl LoadError {
    /// Wire code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) | Self::TooLarge { .. } => "WORKFLOW_INVALID_COMPONENT",
            Self::UnsatisfiedImport(_) => "WORKFLOW_UNSUPPORTED_IMPORT",
            Self::MissingExports(_) => "WORKFLOW_MISSING_EXPORTS",
            Self::Describe(_) => "WORKFLOW_DESCRIBE_FAILED",
        }
    }
}

/// A failure of a guest call that is not the guest's own `Err` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFault {
    /// `TASK_TIMEOUT`, `RENDER_TIMEOUT`, `CANCELLED`, `GUEST_MEMORY_LIMIT`,
    /// `GUEST_STACK_OVERFLOW`, `GUEST_TRAP`, `OUTPUT_LIMIT_EXCEEDED`,
    /// `INSTANTIATION_FAILED`.
    pub code: &'static str,
    /// What happened.
    pub message: String,
}

impl GuestFault {
    pub(super) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Whether another attempt could succeed. Output that did not fit would
    /// not fit the next time either (and a retry would only store more).
    pub fn retryable(&self) -> bool {
        self.code != OUTPUT_LIMIT_EXCEEDED
    }
}

/// A message quoting the component, without control characters and at most
/// [`MAX_LOAD_MESSAGE_CHARS`] long.
pub(crate) fn clipped(text: String) -> String {
    let mut clean: String = text
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .take(MAX_LOAD_MESSAGE_CHARS)
        .collect();
    if text.chars().count() > MAX_LOAD_MESSAGE_CHARS {
        clean.push_str("… (cut)");
    }
    clean
}

/// At most `max_chars` characters of `text` (then `…`), control characters
/// escaped: for quoting what a client or a guest wrote (a path, a JSON
/// pointer) inside a message, keeping its characters readable.
pub(crate) fn escaped_prefix(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Classifies a trap or host error raised during a call. Messages name the
/// trap and the innermost guest functions, never a full backtrace.
pub(super) fn fault_of(error: &wasmtime::Error, store: &Store<HostState>) -> GuestFault {
    if let Some(exceeded) = error.downcast_ref::<LimitExceeded>() {
        return GuestFault::new(OUTPUT_LIMIT_EXCEEDED, exceeded.to_string());
    }
    if store.data().limiter.hit_memory_limit() {
        return GuestFault::new(
            "GUEST_MEMORY_LIMIT",
            format!(
                "the workflow exceeded its memory limit of {} MiB",
                store.data().limiter.max_memory_bytes() / (1024 * 1024)
            ),
        );
    }
    let frames: Vec<&wasmtime::FrameInfo> = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.frames().iter().collect())
        .unwrap_or_default();
    let location = frames
        .iter()
        .take(3)
        .map(|f| f.func_name().unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(" <- ");
    let at = if location.is_empty() {
        String::new()
    } else {
        format!(" in {location}")
    };
    let Some(trap) = error.downcast_ref::<wasmtime::Trap>() else {
        return GuestFault::new("GUEST_TRAP", format!("{error}"));
    };
    // Rust guests keep their call stack in linear memory and have no stack
    // probes: unbounded recursion ends as an out-of-bounds access inside a
    // run of identical frames rather than as wasm's own stack overflow.
    let recursing = frames.len() >= RECURSION_FRAMES
        && frames[..RECURSION_FRAMES]
            .iter()
            .all(|f| f.func_index() == frames[0].func_index());
    if *trap == wasmtime::Trap::StackOverflow
        || (*trap == wasmtime::Trap::MemoryOutOfBounds && recursing)
    {
        return GuestFault::new(
            "GUEST_STACK_OVERFLOW",
            format!("the workflow exhausted its stack (unbounded recursion?){at}"),
        );
    }
    GuestFault::new("GUEST_TRAP", format!("the workflow trapped: {trap}{at}"))
}

/// Identical innermost frames that identify runaway recursion.
const RECURSION_FRAMES: usize = 8;
