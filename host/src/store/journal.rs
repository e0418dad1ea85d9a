//! The replay journal of outbound HTTP calls (`http_calls`): what a task
//! attempt's calls got, so that an attempt re-executed after a crash or a
//! resume is answered from here instead of calling out again.
//!
//! A node's journal belongs to one *execution* of it, which may span several
//! attempts: it is kept when the attempt before the new one was interrupted
//! (`cancelled`: the host stopped, or the run was cancelled and resumed) and
//! emptied when a new attempt follows a failure (a retry must really retry).

use rusqlite::{OptionalExtension, Transaction, params};

use super::StoreError;
use super::read::Reader;
use crate::model::{NodeKey, RunId};

/// One journaled call: the request's digest and the response the guest got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// Position among the calls of the node's execution, from 0.
    pub seq: u32,
    /// The attempt that made the call.
    pub attempt: u32,
    /// Digest of the request as the guest made it (method, URL, headers
    /// with secret placeholders, body).
    pub digest: String,
    /// Response status.
    pub status: u16,
    /// Response headers as JSON (see `runtime::http::replay`).
    pub headers_json: String,
    /// Response body.
    pub body: bytes::Bytes,
}

impl HttpCall {
    /// Bytes the call takes in the store (charged to the run's budget).
    pub fn stored_bytes(&self) -> u64 {
        (self.digest.len() + self.headers_json.len() + self.body.len()) as u64
    }
}

impl Reader<'_> {
    /// The highest seq journaled for a node's current execution, if any.
    pub fn last_http_call(&self, run_id: &RunId, key: &NodeKey) -> Result<Option<u32>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT MAX(seq) FROM http_calls WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
            )?
            .query_row(params![run_id.as_str(), &*key.node_id, key.iteration], |row| {
                row.get(0)
            })?)
    }

    /// The journaled call at `seq` of a node's current execution.
    pub fn http_call(
        &self,
        run_id: &RunId,
        key: &NodeKey,
        seq: u32,
    ) -> Result<Option<HttpCall>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT seq, attempt, request_digest, status, headers_json, body FROM http_calls
                 WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3 AND seq = ?4",
            )?
            .query_row(
                params![run_id.as_str(), &*key.node_id, key.iteration, seq],
                |row| {
                    Ok(HttpCall {
                        seq: row.get(0)?,
                        attempt: row.get(1)?,
                        digest: row.get(2)?,
                        status: row.get(3)?,
                        headers_json: row.get(4)?,
                        body: bytes::Bytes::from(row.get::<_, Vec<u8>>(5)?),
                    })
                },
            )
            .optional()?)
    }
}

/// Stores a completed call (replacing a stale one at the same seq).
pub(super) fn record(
    tx: &Transaction<'_>,
    run: &str,
    key: &NodeKey,
    call: &HttpCall,
    now: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO http_calls (run_id, node_id, iteration, seq, attempt,
            request_digest, status, headers_json, body, recorded_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        run,
        &*key.node_id,
        key.iteration,
        call.seq,
        call.attempt,
        call.digest,
        call.status,
        call.headers_json,
        &call.body[..],
        now
    ])?;
    Ok(())
}

/// Forgets the calls from `from_seq` on (the guest asked for something else
/// there: the rest of the journal no longer describes this execution).
pub(super) fn drop_from(
    tx: &Transaction<'_>,
    run: &str,
    key: &NodeKey,
    from_seq: u32,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "DELETE FROM http_calls WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3 AND seq >= ?4",
    )?
    .execute(params![run, &*key.node_id, key.iteration, from_seq])?;
    Ok(())
}

/// Called as attempt `attempt` of `key` starts: keeps the journal only when
/// the attempt before it was interrupted, so a retry after a failure calls
/// out afresh.
pub(super) fn on_attempt_start(
    tx: &Transaction<'_>,
    run: &str,
    key: &NodeKey,
    attempt: u32,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "DELETE FROM http_calls WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3
           AND NOT EXISTS (SELECT 1 FROM attempts WHERE run_id = ?1 AND node_id = ?2
                             AND iteration = ?3 AND attempt = ?4 - 1 AND state = 'cancelled')",
    )?
    .execute(params![run, &*key.node_id, key.iteration, attempt])?;
    Ok(())
}
