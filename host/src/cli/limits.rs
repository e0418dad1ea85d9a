//! Flags of the guest limits (deadlines and output caps) and the duration
//! syntax they (and retention) take. Only parsing lives here; the limits themselves are
//! `runtime::GuestLimits`, whose defaults these flags repeat.

use std::time::Duration;

use clap::Args;

use crate::runtime::GuestLimits;

/// What a workflow may consume (see docs/security.md, "Guest limits").
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Guest limits")]
pub struct LimitArgs {
    /// Deadline of a task that sets no `timeoutMs` (e.g. `900s`, `15m`).
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub task_timeout: Duration,
    /// Longest deadline any task gets: a longer `timeoutMs` is clamped to it.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub max_task_timeout: Duration,
    /// Deadline of a workflow's `describe` and of each `render`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub render_timeout: Duration,
    /// Largest JSON one `emit` may stream; a larger one fails the task.
    #[arg(long, default_value_t = 1_048_576)]
    pub max_emit_bytes: usize,
    /// Largest message one `log` keeps (the rest is cut).
    #[arg(long, default_value_t = 65_536)]
    pub max_log_bytes: usize,
    /// Captured stdout, and stderr, of one guest call (the rest is cut).
    #[arg(long, default_value_t = 1_048_576)]
    pub max_stdio_bytes: usize,
    /// Largest output a task may return; a larger one fails the task.
    #[arg(long, default_value_t = 1_048_576)]
    pub max_task_output_bytes: usize,
    /// Bytes one run may store (events, logs, outputs, frames); past it the
    /// run fails with OUTPUT_LIMIT_EXCEEDED.
    #[arg(long, default_value_t = 268_435_456)]
    pub max_run_stored_bytes: u64,
}

impl LimitArgs {
    pub(super) fn guest_limits(&self) -> GuestLimits {
        GuestLimits {
            task_timeout: self.task_timeout,
            max_task_timeout: self.max_task_timeout,
            render_timeout: self.render_timeout,
            max_emit_bytes: self.max_emit_bytes,
            max_log_bytes: self.max_log_bytes,
            max_stdio_bytes: self.max_stdio_bytes,
            max_task_output_bytes: self.max_task_output_bytes,
            max_run_stored_bytes: self.max_run_stored_bytes,
        }
    }
}

/// `250ms`, `30s`, `15m`, `1h`, `30d`, or a bare number of seconds; never
/// zero.
pub(super) fn parse_duration(raw: &str) -> Result<Duration, String> {
    let duration = parse_age(raw)?;
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(duration)
}

/// How long ago, in the syntax of [`parse_duration`]; zero means now.
pub(super) fn parse_age(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a number with an optional unit: ms, s, m, h or d".to_string())?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(format!("unknown unit {unit:?}: use ms, s, m, h or d")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_seconds_and_are_never_zero() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_age("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_flag_defaults_are_the_runtime_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Probe {
            #[command(flatten)]
            limits: LimitArgs,
        }
        let parsed = Probe::parse_from(["probe"]).limits.guest_limits();
        let defaults = GuestLimits::default();
        assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
    }
}
