//! Who may hold an event stream (SSE) open: at most `max_total` streams at
//! once, and at most `max_per_client` from one client address. Server mode
//! has a single token, so a limit per token would be the global one; the
//! client address is what tells one caller from another (behind a reverse
//! proxy every stream comes from the proxy's address: lower the global
//! limit there, or raise the per-client one).
//!
//! A stream holds a [`StreamSlot`] for as long as its body lives; the slot
//! frees itself on drop, when the stream ends or the client goes away. This
//! module only counts; the SSE handler decides what a stream carries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::error::{ApiError, ErrorCode};

/// Limits on open SSE streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Most open streams in the process.
    pub max_total: usize,
    /// Most open streams from one client address.
    pub max_per_client: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_total: 1024,
            max_per_client: 256,
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_client: HashMap<Option<IpAddr>, usize>,
}

/// The open streams of one server.
#[derive(Debug)]
pub struct Subscribers {
    limits: StreamLimits,
    counts: Mutex<Counts>,
}

impl Subscribers {
    /// No stream open yet.
    pub fn new(limits: StreamLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Each change is a pair of counter updates made before anything can
        // panic, so a poisoned lock still holds consistent counts.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new stream from `client`, or 429 `TOO_MANY_STREAMS`.
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<StreamSlot, ApiError> {
        let mut counts = self.counts();
        let mine = counts.by_client.get(&client).copied().unwrap_or(0);
        if mine >= self.limits.max_per_client {
            return Err(refusal(
                "Too many event streams open from this client",
                "client",
                self.limits.max_per_client,
            ));
        }
        if counts.total >= self.limits.max_total {
            return Err(refusal(
                "Too many event streams open on this server",
                "server",
                self.limits.max_total,
            ));
        }
        counts.total += 1;
        *counts.by_client.entry(client).or_default() += 1;
        Ok(StreamSlot {
            owner: self.clone(),
            client,
        })
    }
}

fn refusal(message: &str, scope: &str, limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::TooManyStreams,
        format!("{message} (limit {limit})"),
    )
    .with_details(json!({ "scope": scope, "limit": limit }))
}

/// One open stream; frees its place when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    owner: Arc<Subscribers>,
    client: Option<IpAddr>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn each_client_and_the_server_have_their_own_ceiling() {
        let subscribers = Subscribers::new(StreamLimits {
            max_total: 3,
            max_per_client: 2,
        });
        let a1 = subscribers.admit(ip(1)).unwrap();
        let _a2 = subscribers.admit(ip(1)).unwrap();
        let refused = subscribers.admit(ip(1)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::TooManyStreams);
        assert_eq!(refused.details.unwrap()["scope"], "client");
        let _b1 = subscribers.admit(ip(2)).unwrap();
        let refused = subscribers.admit(ip(2)).unwrap_err();
        assert_eq!(refused.details.unwrap()["scope"], "server");
        drop(a1);
        assert!(subscribers.admit(ip(2)).is_ok());
        assert_eq!(subscribers.counts().by_client.len(), 2);
    }
}
