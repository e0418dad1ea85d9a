//! Live fan-out of committed events.
//!
//! The writer publishes here after each commit, in commit order. Listeners
//! are never trusted to keep up: a broadcast channel drops what a slow
//! listener missed and tells it so, and the listener then re-reads the gap
//! from the database (its own watermark), so the engine never waits on anyone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::model::RunId;

/// Capacity of each run's channel before slow listeners start lagging.
const RUN_CHANNEL_CAPACITY: usize = 1024;
/// Capacity of the all-runs channel.
const ALL_CHANNEL_CAPACITY: usize = 8192;

/// A committed event as stored: its seq, type and the exact JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Run it belongs to.
    pub run_id: RunId,
    /// Position in the run's log.
    pub seq: u64,
    /// `type` of the event.
    pub event_type: String,
    /// Commit time.
    pub timestamp_ms: i64,
    /// The wire JSON.
    pub json: String,
}

impl StoredEvent {
    /// True for `RunFinished`, `RunFailed` and `RunCancelled`.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.event_type.as_str(),
            "RunFinished" | "RunFailed" | "RunCancelled"
        )
    }
}

/// A listener of one run's events; see [`EventHub::subscribe`].
pub struct Subscription {
    receiver: Option<broadcast::Receiver<Arc<StoredEvent>>>,
    hub: EventHub,
    run_id: RunId,
}

impl Subscription {
    /// The next event; `Lagged` or `Closed` tell the listener to catch up
    /// from the database.
    pub async fn recv(&mut self) -> Result<Arc<StoredEvent>, broadcast::error::RecvError> {
        match self.receiver.as_mut() {
            Some(receiver) => receiver.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut runs = self.hub.inner.runs.lock().expect("hub lock");
        // Dropped under the lock, so that no subscribe slips in between.
        drop(self.receiver.take());
        if runs
            .get(&self.run_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            runs.remove(&self.run_id);
        }
    }
}

/// Per-run and global broadcast channels.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    runs: Mutex<HashMap<RunId, broadcast::Sender<Arc<StoredEvent>>>>,
    all: broadcast::Sender<Arc<StoredEvent>>,
}

impl Default for EventHub {
    fn default() -> Self {
        let (all, _) = broadcast::channel(ALL_CHANNEL_CAPACITY);
        Self {
            inner: Arc::new(HubInner {
                runs: Mutex::new(HashMap::new()),
                all,
            }),
        }
    }
}

impl EventHub {
    /// Listens to the events of one run committed from now on. The run's
    /// channel is dropped with its last subscription (or at the run's
    /// terminal event), so following a finished or idle run leaves nothing
    /// behind.
    pub fn subscribe(&self, run_id: &RunId) -> Subscription {
        let mut runs = self.inner.runs.lock().expect("hub lock");
        let receiver = runs
            .entry(run_id.clone())
            .or_insert_with(|| broadcast::channel(RUN_CHANNEL_CAPACITY).0)
            .subscribe();
        Subscription {
            receiver: Some(receiver),
            hub: self.clone(),
            run_id: run_id.clone(),
        }
    }

    /// Number of runs with a channel (live listeners or a run in flight).
    pub fn channels(&self) -> usize {
        self.inner.runs.lock().expect("hub lock").len()
    }

    /// Listens to the events of every run committed from now on.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.inner.all.subscribe()
    }

    /// Number of live listeners of one run.
    pub fn listeners(&self, run_id: &RunId) -> usize {
        let runs = self.inner.runs.lock().expect("hub lock");
        runs.get(run_id).map_or(0, |tx| tx.receiver_count())
    }

    /// Total live per-run listeners.
    pub fn total_listeners(&self) -> usize {
        let runs = self.inner.runs.lock().expect("hub lock");
        runs.values().map(|tx| tx.receiver_count()).sum()
    }

    /// Publishes committed events, in order.
    pub(super) fn publish(&self, events: &[Arc<StoredEvent>]) {
        if events.is_empty() {
            return;
        }
        let mut runs = self.inner.runs.lock().expect("hub lock");
        for event in events {
            let mut drop_channel = false;
            if let Some(tx) = runs.get(&event.run_id) {
                drop_channel = tx.send(event.clone()).is_err();
                // Once the run's log is closed nobody can need the channel;
                // listeners that still hold receivers drain what is buffered.
                drop_channel |= event.is_terminal();
            }
            if drop_channel {
                runs.remove(&event.run_id);
            }
            let _ = self.inner.all.send(event.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(run: &RunId, seq: u64, event_type: &str) -> Arc<StoredEvent> {
        Arc::new(StoredEvent {
            run_id: run.clone(),
            seq,
            event_type: event_type.into(),
            timestamp_ms: 0,
            json: "{}".into(),
        })
    }

    /// Following a finished run used to leave its channel (1024 slots) in
    /// the map for ever: nothing would be published for it again.
    #[test]
    fn the_last_subscription_takes_the_channel_with_it() {
        let hub = EventHub::default();
        let finished = RunId::parse("finished-run").unwrap();
        for _ in 0..3 {
            drop(hub.subscribe(&finished));
        }
        assert_eq!(hub.channels(), 0);

        let live = RunId::parse("live-run").unwrap();
        let mut first = hub.subscribe(&live);
        let second = hub.subscribe(&live);
        drop(second);
        assert_eq!(hub.channels(), 1, "a subscription remains");
        hub.publish(&[event(&live, 0, "NodeStarted")]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(runtime.block_on(first.recv()).unwrap().seq, 0);
        drop(first);
        assert_eq!(hub.channels(), 0);
    }
}
