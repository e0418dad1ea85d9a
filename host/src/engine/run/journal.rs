//! A task attempt's HTTP replay journal, kept in the run's store (see
//! `runtime::http::replay` for the semantics and `store::journal` for the
//! rows). Each write asserts this host still owns the run, and is charged to
//! the run's stored-bytes budget like any other guest data.

use std::sync::Arc;

use crate::model::{EventBody, NodeKey, RunId};
use crate::runtime::{CallJournal, JournalFuture, OutputBudget, RecordedCall};
use crate::store::{Commit, HttpCall, Op, Store};

/// The journal of one attempt of one node.
pub(super) struct StoreJournal {
    pub(super) store: Store,
    pub(super) run_id: RunId,
    pub(super) owner_id: String,
    pub(super) key: NodeKey,
    pub(super) attempt: u32,
    pub(super) budget: Arc<OutputBudget>,
}

impl StoreJournal {
    fn commit(&self) -> Commit {
        Commit::new(self.run_id.clone()).op(Op::AssertOwner {
            owner_id: self.owner_id.clone(),
        })
    }
}

impl CallJournal for StoreJournal {
    fn last_seq(&self) -> JournalFuture<'_, Option<u32>> {
        Box::pin(async move {
            let (run_id, key) = (self.run_id.clone(), self.key.clone());
            self.store
                .read(move |r| r.last_http_call(&run_id, &key))
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn get(&self, seq: u32) -> JournalFuture<'_, Option<RecordedCall>> {
        Box::pin(async move {
            let (run_id, key) = (self.run_id.clone(), self.key.clone());
            let call = self
                .store
                .read(move |r| r.http_call(&run_id, &key, seq))
                .await
                .map_err(|e| e.to_string())?;
            Ok(call.map(|c| RecordedCall {
                seq: c.seq,
                digest: c.digest,
                status: c.status,
                headers_json: c.headers_json,
                body: c.body,
            }))
        })
    }

    fn record(&self, call: RecordedCall) -> JournalFuture<'_, ()> {
        Box::pin(async move {
            let call = HttpCall {
                seq: call.seq,
                attempt: self.attempt,
                digest: call.digest,
                status: call.status,
                headers_json: call.headers_json,
                body: call.body,
            };
            self.budget
                .try_charge("a journaled HTTP response", call.stored_bytes())
                .map_err(|e| e.to_string())?;
            let commit = self.commit().op(Op::RecordHttpCall {
                key: self.key.clone(),
                call,
            });
            self.store
                .commit(commit)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }

    fn diverged(&self, seq: u32, replayed: u32) -> JournalFuture<'_, ()> {
        Box::pin(async move {
            tracing::info!(
                run = %self.run_id,
                node = %self.key.node_id,
                seq,
                replayed,
                "HTTP replay diverged; calls go out from here"
            );
            let commit = self
                .commit()
                .op(Op::DropHttpCalls {
                    key: self.key.clone(),
                    from_seq: seq,
                })
                .event(EventBody::HttpReplayDiverged {
                    node_id: self.key.node_id.to_string(),
                    iteration: self.key.iteration,
                    attempt: self.attempt,
                    call_seq: seq,
                    replayed,
                });
            let outcome = self.store.commit(commit).await.map_err(|e| e.to_string())?;
            let stored: usize = outcome.events.iter().map(|e| e.json.len()).sum();
            self.budget.charge(stored as u64);
            Ok(())
        })
    }
}
