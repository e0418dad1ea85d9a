//! Durable replay of a task's outbound HTTP calls.
//!
//! Every call a task attempt makes gets a seq, in the order the guest made
//! it. A call that got a response is journaled (request digest → status,
//! headers, body) *before* the guest sees the response, through the
//! engine's [`CallJournal`]. When the node's execution resumes after a crash
//! (or a cancel and resume), the new attempt's calls are matched by seq
//! against what was journaled: the same request is answered from the journal
//! without calling out; the first different one stops replay (reported once,
//! the journal from there on forgotten) and every call from there goes out.
//! A call the journal does not hold (past its end) simply goes out.
//!
//! The digest covers what the guest asked — method, URL, headers (holding
//! secret placeholders, never values) and body — so a journal never holds a
//! secret, and neither does a response: the host redacted it before it was
//! recorded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A boxed future borrowing the journal.
pub type JournalFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// A recorded response, as the journal stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    /// Position among the calls of the node's execution, from 0.
    pub seq: u32,
    /// Digest of the request (see [`digest`]).
    pub digest: String,
    /// Response status.
    pub status: u16,
    /// Response headers as JSON: `[[name, value]]`, a value that is not
    /// UTF-8 as `{"base64": ...}`.
    pub headers_json: String,
    /// Response body (whole: the host reads it before answering).
    pub body: Bytes,
}

/// Where a task's calls are journaled; the engine implements it over the
/// run's store, bound to one node, iteration and attempt.
pub trait CallJournal: Send + Sync {
    /// The highest seq journaled for this node's execution, if any.
    fn last_seq(&self) -> JournalFuture<'_, Option<u32>>;
    /// The call journaled at `seq`.
    fn get(&self, seq: u32) -> JournalFuture<'_, Option<RecordedCall>>;
    /// Journals a completed call; the guest sees the response only once
    /// this succeeded.
    fn record(&self, call: RecordedCall) -> JournalFuture<'_, ()>;
    /// Replay stopped at `seq` (the guest asked for something else after
    /// `replayed` calls were answered from the journal): forgets the journal
    /// from `seq` on and reports it.
    fn diverged(&self, seq: u32, replayed: u32) -> JournalFuture<'_, ()>;
}

/// What to do with one call.
pub(super) enum Answer {
    /// Answer with this recorded response; nothing is sent.
    Replay(RecordedCall),
    /// Send it, then journal the response.
    Live,
}

/// The replay state of one attempt.
pub(super) struct Replay {
    journal: Arc<dyn CallJournal>,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Read on the first call (most tasks never make one): the journal's
    /// last seq, past which no call is looked up. Calls themselves are read
    /// one at a time, so a large journal is never held in memory whole.
    last_seq: Option<Option<u32>>,
    /// Seq from which every call goes out.
    diverged_at: Option<u32>,
    /// Calls answered from the journal.
    replayed: u32,
}

impl Replay {
    pub(super) fn new(journal: Arc<dyn CallJournal>) -> Self {
        Self {
            journal,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// Decides how call `seq` with request digest `digest` is answered.
    pub(super) async fn answer(&self, seq: u32, digest: &str) -> Result<Answer, String> {
        let mut state = self.state.lock().await;
        let last_seq = match state.last_seq {
            Some(last) => last,
            None => *state.last_seq.insert(self.journal.last_seq().await?),
        };
        if last_seq.is_none_or(|last| seq > last) || state.diverged_at.is_some_and(|at| seq >= at) {
            return Ok(Answer::Live);
        }
        match self.journal.get(seq).await? {
            None => Ok(Answer::Live),
            Some(call) if call.digest == digest => {
                state.replayed += 1;
                Ok(Answer::Replay(call))
            }
            Some(_) => {
                state.diverged_at = Some(seq);
                let replayed = state.replayed;
                self.journal.diverged(seq, replayed).await?;
                Ok(Answer::Live)
            }
        }
    }

    /// Journals the response of call `seq`.
    pub(super) async fn record(
        &self,
        seq: u32,
        digest: String,
        status: StatusCode,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(), String> {
        let call = RecordedCall {
            seq,
            digest,
            status: status.as_u16(),
            headers_json: headers_to_json(headers),
            body: body.clone(),
        };
        self.journal.record(call).await
    }
}

/// The digest of a request as the guest made it.
pub(super) fn digest(method: &str, uri: &http::Uri, headers: &HeaderMap, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    // Each part is length-prefixed, so no two requests share an encoding.
    let mut part = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    part(method.as_bytes());
    part(uri.to_string().as_bytes());
    for (name, value) in headers {
        part(name.as_str().as_bytes());
        part(value.as_bytes());
    }
    part(body);
    hex::encode(hash.finalize())
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Value {
    Text(String),
    Binary { base64: String },
}

fn headers_to_json(headers: &HeaderMap) -> String {
    let pairs: Vec<(&str, Value)> = headers
        .iter()
        .map(|(name, value)| {
            let value = match value.to_str() {
                Ok(text) => Value::Text(text.to_string()),
                Err(_) => Value::Binary {
                    base64: base64::engine::general_purpose::STANDARD.encode(value.as_bytes()),
                },
            };
            (name.as_str(), value)
        })
        .collect();
    serde_json::to_string(&pairs).expect("headers serialize")
}

/// The headers a recorded call stored; a pair that does not decode (the
/// store was edited) is an error rather than a silently different response.
pub(super) fn headers_from_json(json: &str) -> Result<HeaderMap, String> {
    let bad = |what: &str| format!("a journaled response has a bad header ({what})");
    let pairs: Vec<(String, Value)> = serde_json::from_str(json).map_err(|_| bad("not JSON"))?;
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("name"))?;
        let value = match value {
            Value::Text(text) => HeaderValue::from_str(&text),
            Value::Binary { base64 } => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(base64)
                    .map_err(|_| bad("base64"))?;
                HeaderValue::from_bytes(&raw)
            }
        }
        .map_err(|_| bad("value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Memory {
        calls: Mutex<Vec<RecordedCall>>,
        diverged: Mutex<Vec<(u32, u32)>>,
    }

    impl CallJournal for Memory {
        fn last_seq(&self) -> JournalFuture<'_, Option<u32>> {
            Box::pin(async { Ok(self.calls.lock().unwrap().iter().map(|c| c.seq).max()) })
        }
        fn get(&self, seq: u32) -> JournalFuture<'_, Option<RecordedCall>> {
            Box::pin(async move {
                let calls = self.calls.lock().unwrap();
                Ok(calls.iter().find(|c| c.seq == seq).cloned())
            })
        }
        fn record(&self, call: RecordedCall) -> JournalFuture<'_, ()> {
            Box::pin(async move {
                self.calls.lock().unwrap().push(call);
                Ok(())
            })
        }
        fn diverged(&self, seq: u32, replayed: u32) -> JournalFuture<'_, ()> {
            Box::pin(async move {
                self.calls.lock().unwrap().retain(|c| c.seq < seq);
                self.diverged.lock().unwrap().push((seq, replayed));
                Ok(())
            })
        }
    }

    fn call(seq: u32, digest: &str) -> RecordedCall {
        RecordedCall {
            seq,
            digest: digest.into(),
            status: 200,
            headers_json: "[]".into(),
            body: Bytes::from(format!("answer {seq}")),
        }
    }

    #[tokio::test]
    async fn matching_calls_replay_and_the_first_different_one_ends_replay() {
        let journal = Arc::new(Memory::default());
        *journal.calls.lock().unwrap() = vec![call(0, "a"), call(1, "b"), call(2, "c")];
        let replay = Replay::new(journal.clone());
        assert!(matches!(replay.answer(0, "a").await, Ok(Answer::Replay(c)) if c.seq == 0));
        assert!(matches!(replay.answer(1, "x").await, Ok(Answer::Live)));
        // Once diverged, even a call that matches the old journal goes out.
        assert!(matches!(replay.answer(2, "c").await, Ok(Answer::Live)));
        assert_eq!(*journal.diverged.lock().unwrap(), vec![(1, 1)]);
        assert_eq!(journal.calls.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn calls_past_the_journal_go_out() {
        let journal = Arc::new(Memory::default());
        *journal.calls.lock().unwrap() = vec![call(0, "a")];
        let replay = Replay::new(journal.clone());
        assert!(matches!(replay.answer(0, "a").await, Ok(Answer::Replay(_))));
        assert!(matches!(replay.answer(1, "b").await, Ok(Answer::Live)));
        assert!(journal.diverged.lock().unwrap().is_empty());
    }

    #[test]
    fn headers_survive_the_journal_and_the_digest_sees_every_part() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("x-bin", HeaderValue::from_bytes(&[0xff, b'a']).unwrap());
        let back = headers_from_json(&headers_to_json(&headers)).unwrap();
        assert_eq!(back, headers);
        assert!(headers_from_json("[[\"x\", 1]]").is_err());

        let uri: http::Uri = "http://h/p".parse().unwrap();
        let base = digest("GET", &uri, &headers, b"");
        assert_eq!(base, digest("GET", &uri, &headers, b""));
        assert_ne!(base, digest("POST", &uri, &headers, b""));
        assert_ne!(base, digest("GET", &uri, &HeaderMap::new(), b""));
        assert_ne!(base, digest("GET", &uri, &headers, b"x"));
        let other: http::Uri = "http://h/q".parse().unwrap();
        assert_ne!(base, digest("GET", &other, &headers, b""));
    }
}
