//! Following a run's event log: history from the database, then live events
//! as they are committed, exactly once and in order.
//!
//! A follower subscribes to the run's broadcast channel *before* reading
//! history, so nothing committed in between is missed; it drops live events
//! it already read from history, and whenever it sees a gap (it lagged behind
//! a burst, or the channel was replaced) it goes back to the database from
//! its own watermark. Slow followers therefore cost the engine nothing.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::model::RunId;
use crate::store::{Store, StoreError, StoredEvent};

/// History rows read per query.
const PAGE: u32 = 500;

/// Events of `run_id` with `seq > after_seq`, ending after the terminal event
/// (or at once if the run is already over and nothing is left to send).
pub fn follow(
    store: Store,
    run_id: RunId,
    after_seq: i64,
) -> impl Stream<Item = Result<Arc<StoredEvent>, StoreError>> + Send + 'static {
    async_stream::try_stream! {
        let mut last = after_seq;
        'resubscribe: loop {
            let mut live = store.hub().subscribe(&run_id);
            // History first, page by page.
            loop {
                let (id, from) = (run_id.clone(), last);
                let page = store.read(move |r| r.events_after(&id, from, PAGE)).await?;
                let full = page.len() as u32 == PAGE;
                for event in page {
                    last = event.seq as i64;
                    let terminal = event.is_terminal();
                    yield Arc::new(event);
                    if terminal {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            let id = run_id.clone();
            let run = store.read(move |r| r.run(&id)).await?;
            match run {
                None => return,
                Some(run) if run.status.is_terminal() => {
                    // The run ended after the history read above: its last
                    // events were committed with that status, so one more
                    // read has them all.
                    let (id, from) = (run_id.clone(), last);
                    let rest = store.read(move |r| r.events_after(&id, from, u32::MAX)).await?;
                    for event in rest {
                        let terminal = event.is_terminal();
                        yield Arc::new(event);
                        if terminal {
                            return;
                        }
                    }
                    return;
                }
                Some(_) => {}
            }
            // Then live events.
            loop {
                match live.recv().await {
                    Ok(event) if (event.seq as i64) <= last => continue,
                    Ok(event) if event.seq as i64 == last + 1 => {
                        last = event.seq as i64;
                        let terminal = event.is_terminal();
                        yield event;
                        if terminal {
                            return;
                        }
                    }
                    // A gap, a lag or a replaced channel: catch up from history.
                    Ok(_) | Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => continue 'resubscribe,
                }
            }
        }
    }
}
