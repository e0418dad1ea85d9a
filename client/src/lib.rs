//! A Rust client for smithers-host's HTTP API (and the Smithers server it is
//! compatible with): the functions of Smithers' PI client — run, resume,
//! approve, deny, stream events, status, frames, cancel, list runs — plus
//! signals, the pending-approvals list, what a run produced (one node's
//! iterations, the run's outputs) and the workflows a host knows.
//!
//! This crate speaks only HTTP: it never links the engine, so it builds in
//! seconds and works against any host it can reach. Errors keep the server's
//! envelope code ([`Error::code`]) and HTTP status; [`Client::stream_events`]
//! survives dropped connections and server restarts without losing or
//! repeating an event.
//!
//! ```no_run
//! use futures::StreamExt;
//! use serde_json::json;
//! use smithers_client::{Client, Decision, EventKind, RunWorkflow};
//!
//! # async fn demo() -> Result<(), smithers_client::Error> {
//! // http://127.0.0.1:7331 unless told otherwise; Bearer token if given.
//! let client = Client::builder().api_key("sk-my-token").build()?;
//! let run = client
//!     .run_workflow(&RunWorkflow::new("approval").input(json!({"target": "prod"})))
//!     .await?;
//! let mut events = client.stream_events(&run.run_id);
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     println!("{} {}", event.seq, event.type_name());
//!     if let EventKind::NodeWaitingApproval { node_id, .. } = &event.kind {
//!         client
//!             .approve(&run.run_id, node_id, &Decision::with_note("looks good"))
//!             .await?;
//!     }
//! } // ends after RunFinished, RunFailed or RunCancelled
//! println!("{}", client.get_status(&run.run_id).await?.status);
//! # Ok(()) }
//! ```
//!
//! Without the `rustls` feature only `http://` URLs work.

mod error;
pub mod events;
pub mod outputs;
pub mod sse;
pub mod types;
mod workflows;

use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;

pub use error::Error;
pub use events::{Event, EventKind, EventStream, StreamOptions};
pub use outputs::{
    AttemptView, IterationView, NodeQuery, NodeView, OutputView, OutputsPage, OutputsQuery,
};
pub use types::{
    AttemptState, CancelOutcome, Decision, ErrorInfo, Frame, FramesQuery, ListRuns, NodeState,
    PendingApproval, RunAccepted, RunState, RunStatus, RunStatusView, RunSummary, RunWorkflow,
    Signal, SignalReceipt,
};
pub use workflows::{WorkflowInfo, WorkflowList};

/// Where a client connects when told nothing: Smithers' default.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:7331";

/// How long a request (other than an event stream) may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to one server. Cheap to clone (connections are pooled).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    api_key: Option<String>,
    timeout: Duration,
}

/// Configures a [`Client`].
///
/// ```
/// let client = smithers_client::Client::builder()
///     .base_url("http://127.0.0.1:7400")
///     .api_key("secret")
///     .build()
///     .unwrap();
/// assert_eq!(client.base_url().as_str(), "http://127.0.0.1:7400/");
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    api_key: Option<String>,
    timeout: Duration,
    roots_pem: Vec<Vec<u8>>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_string(),
            api_key: None,
            timeout: DEFAULT_TIMEOUT,
            roots_pem: Vec::new(),
        }
    }
}

impl ClientBuilder {
    /// The server's URL (a path prefix is kept: `https://proxy/smithers`).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Token sent as `Authorization: Bearer <key>`; empty means none.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.api_key = (!key.is_empty()).then_some(key);
        self
    }

    /// Time limit of each request; event streams use their own idle limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Also trusts the certificate(s) in this PEM text for `https://` (a
    /// private CA, or a server's self-signed certificate), on top of the
    /// public web roots. Needs the `rustls` feature to have an effect on
    /// `build`, which refuses it otherwise.
    pub fn root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots_pem.push(pem.into());
        self
    }

    /// Builds the client; fails on a URL that cannot be a base.
    pub fn build(self) -> Result<Client, Error> {
        let base = Url::parse(&self.base_url)
            .map_err(|e| Error::Invalid(format!("base URL {:?}: {e}", self.base_url)))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Invalid(format!(
                "base URL {:?} must be http:// or https://",
                self.base_url
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        let http = with_roots(http, &self.roots_pem)?
            .build()
            .map_err(|e| Error::Invalid(format!("cannot set up HTTP: {e}")))?;
        Ok(Client {
            http,
            base,
            api_key: self.api_key,
            timeout: self.timeout,
        })
    }
}

#[cfg(feature = "rustls")]
fn with_roots(
    mut http: reqwest::ClientBuilder,
    roots: &[Vec<u8>],
) -> Result<reqwest::ClientBuilder, Error> {
    for pem in roots {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| Error::Invalid(format!("a root certificate is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Invalid(
                "a root certificate PEM holds no certificate".into(),
            ));
        }
        for cert in certs {
            http = http.add_root_certificate(cert);
        }
    }
    Ok(http)
}

#[cfg(not(feature = "rustls"))]
fn with_roots(
    http: reqwest::ClientBuilder,
    roots: &[Vec<u8>],
) -> Result<reqwest::ClientBuilder, Error> {
    if roots.is_empty() {
        Ok(http)
    } else {
        Err(Error::Invalid(
            "root certificates need smithers-client's `rustls` feature".into(),
        ))
    }
}

impl Client {
    /// A builder with the defaults (`http://127.0.0.1:7331`, no key, 30 s).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client for `base_url` without a key.
    pub fn new(base_url: &str) -> Result<Self, Error> {
        Self::builder().base_url(base_url).build()
    }

    /// The server's URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Starts a run (`POST /v1/runs`); the server validates the workflow
    /// before it answers.
    ///
    /// ```no_run
    /// # async fn demo(client: smithers_client::Client) -> Result<(), smithers_client::Error> {
    /// use smithers_client::RunWorkflow;
    /// let run = client
    ///     .run_workflow(&RunWorkflow::new("hello").input(serde_json::json!({"name": "Ada"})))
    ///     .await?;
    /// println!("started {}", run.run_id);
    /// # Ok(()) }
    /// ```
    pub async fn run_workflow(&self, request: &RunWorkflow) -> Result<RunAccepted, Error> {
        self.call(Method::POST, &["v1", "runs"], &[], Some(request))
            .await
    }

    /// Resumes a run. With a workflow path this is the PI client's call
    /// (`POST /v1/runs` with `resume: true`, Smithers needs the path);
    /// without, `POST /v1/runs/:id/resume` (the run remembers its workflow).
    /// `status: "running"` in the answer means it was already running.
    pub async fn resume(
        &self,
        run_id: &str,
        workflow_path: Option<&str>,
    ) -> Result<RunAccepted, Error> {
        match workflow_path {
            Some(path) => {
                let body = json!({ "workflowPath": path, "runId": run_id, "resume": true });
                self.call(Method::POST, &["v1", "runs"], &[], Some(&body))
                    .await
            }
            None => {
                self.call(
                    Method::POST,
                    &["v1", "runs", run_id, "resume"],
                    &[],
                    Some(&json!({})),
                )
                .await
            }
        }
    }

    /// Approves a node waiting for approval. smithers-host then continues
    /// the run by itself; a node that is not waiting is a 409
    /// `NODE_NOT_WAITING`.
    ///
    /// ```no_run
    /// # async fn demo(client: smithers_client::Client) -> Result<(), smithers_client::Error> {
    /// use smithers_client::Decision;
    /// client.approve("deploy-1", "gate", &Decision::with_note("ship it")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn approve(
        &self,
        run_id: &str,
        node_id: &str,
        decision: &Decision,
    ) -> Result<RunAccepted, Error> {
        self.decide(run_id, node_id, decision, "approve").await
    }

    /// Denies a node waiting for approval.
    pub async fn deny(
        &self,
        run_id: &str,
        node_id: &str,
        decision: &Decision,
    ) -> Result<RunAccepted, Error> {
        self.decide(run_id, node_id, decision, "deny").await
    }

    async fn decide(
        &self,
        run_id: &str,
        node_id: &str,
        decision: &Decision,
        verb: &str,
    ) -> Result<RunAccepted, Error> {
        self.call(
            Method::POST,
            &["v1", "runs", run_id, "nodes", node_id, verb],
            &[],
            Some(decision),
        )
        .await
    }

    /// A run's events from the first one, each exactly once, ending after
    /// the terminal event. Reconnects by itself (see [`StreamOptions`]).
    ///
    /// ```no_run
    /// # async fn demo(client: smithers_client::Client) -> Result<(), smithers_client::Error> {
    /// use futures::StreamExt;
    /// let mut events = client.stream_events("hello-1");
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("{:>4} {}", event.seq, event.type_name());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream_events(&self, run_id: &str) -> EventStream {
        self.stream_events_with(run_id, StreamOptions::default())
    }

    /// [`Client::stream_events`] with options: resume after a seq, tune the
    /// reconnect backoff.
    pub fn stream_events_with(&self, run_id: &str, options: StreamOptions) -> EventStream {
        EventStream::new(self.clone(), run_id.to_string(), options)
    }

    /// A run's status (`GET /v1/runs/:id`); 404 `NOT_FOUND` if unknown.
    pub async fn get_status(&self, run_id: &str) -> Result<RunStatusView, Error> {
        self.call::<(), _>(Method::GET, &["v1", "runs", run_id], &[], None)
            .await
    }

    /// A run's render frames, newest first. The PI client's default `tail`
    /// is 20: pass `FramesQuery { limit: Some(20), ..}` to match it.
    pub async fn get_frames(&self, run_id: &str, query: &FramesQuery) -> Result<Vec<Frame>, Error> {
        let mut params = Vec::new();
        if let Some(limit) = query.limit {
            params.push(("limit", limit.to_string()));
        }
        if let Some(after) = query.after_frame_no {
            params.push(("afterFrameNo", after.to_string()));
        }
        self.call::<(), _>(
            Method::GET,
            &["v1", "runs", run_id, "frames"],
            &params,
            None,
        )
        .await
    }

    /// A node of a run at each of its iterations: state, attempts, output,
    /// error (`GET /v1/runs/:id/nodes/:node`, smithers-host). 404
    /// `RUN_NOT_FOUND` or `NODE_NOT_FOUND` when there is no such thing.
    ///
    /// ```no_run
    /// # async fn demo(client: smithers_client::Client) -> Result<(), smithers_client::Error> {
    /// use smithers_client::NodeQuery;
    /// let node = client.node("hello-1", "greet", &NodeQuery::default()).await?;
    /// println!("{:?}", node.iterations[0].output);
    /// # Ok(()) }
    /// ```
    pub async fn node(
        &self,
        run_id: &str,
        node_id: &str,
        query: &NodeQuery,
    ) -> Result<NodeView, Error> {
        let mut params = page_params(query.cursor.as_deref(), query.limit);
        if let Some(iteration) = query.iteration {
            params.push(("iteration", iteration.to_string()));
        }
        self.call::<(), _>(
            Method::GET,
            &["v1", "runs", run_id, "nodes", node_id],
            &params,
            None,
        )
        .await
    }

    /// A page of a run's committed outputs (`GET /v1/runs/:id/outputs`,
    /// smithers-host), in the order their nodes were first mounted.
    ///
    /// ```no_run
    /// # async fn demo(client: smithers_client::Client) -> Result<(), smithers_client::Error> {
    /// use smithers_client::OutputsQuery;
    /// let mut query = OutputsQuery::default();
    /// loop {
    ///     let page = client.outputs("hello-1", &query).await?;
    ///     for item in &page.outputs {
    ///         println!("{} {}", item.node_id, item.output);
    ///     }
    ///     match page.next_cursor {
    ///         Some(cursor) => query.cursor = Some(cursor),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn outputs(&self, run_id: &str, query: &OutputsQuery) -> Result<OutputsPage, Error> {
        let params = page_params(query.cursor.as_deref(), query.limit);
        self.call::<(), _>(
            Method::GET,
            &["v1", "runs", run_id, "outputs"],
            &params,
            None,
        )
        .await
    }

    /// Cancels a running or parked run; 409 `RUN_NOT_ACTIVE` once it ended.
    pub async fn cancel(&self, run_id: &str) -> Result<CancelOutcome, Error> {
        self.call(
            Method::POST,
            &["v1", "runs", run_id, "cancel"],
            &[],
            Some(&json!({})),
        )
        .await
    }

    /// Runs, newest first.
    ///
    /// ```no_run
    /// # async fn demo(client: smithers_client::Client) -> Result<(), smithers_client::Error> {
    /// use smithers_client::ListRuns;
    /// let failed = client
    ///     .list_runs(&ListRuns { status: Some("failed".into()), ..Default::default() })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn list_runs(&self, query: &ListRuns) -> Result<Vec<RunSummary>, Error> {
        let mut params = Vec::new();
        if let Some(limit) = query.limit {
            params.push(("limit", limit.to_string()));
        }
        if let Some(status) = &query.status {
            params.push(("status", status.clone()));
        }
        if let Some(workflow) = &query.workflow {
            params.push(("workflow", workflow.clone()));
        }
        self.call::<(), _>(Method::GET, &["v1", "runs"], &params, None)
            .await
    }

    /// Sends a signal to a run (`POST /v1/runs/:id/signals/:name`); a run
    /// waiting for it continues by itself.
    pub async fn signal(
        &self,
        run_id: &str,
        name: &str,
        signal: &Signal,
    ) -> Result<SignalReceipt, Error> {
        self.call(
            Method::POST,
            &["v1", "runs", run_id, "signals", name],
            &[],
            Some(signal),
        )
        .await
    }

    /// Pending approvals of every run, oldest first.
    pub async fn list_approvals(&self) -> Result<Vec<PendingApproval>, Error> {
        let list: types::ApprovalList = self
            .call::<(), _>(Method::GET, &["v1", "approvals"], &[], None)
            .await?;
        Ok(list.approvals)
    }

    /// `GET /health` (smithers-host only; never needs the key).
    pub async fn health(&self) -> Result<Value, Error> {
        self.call::<(), _>(Method::GET, &["health"], &[], None)
            .await
    }

    /// The URL of `segments` under the base, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url, Error> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Invalid(format!("base URL {} cannot take a path", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// A GET with the key, without a time limit (for streams).
    pub(crate) fn get_request(&self, url: Url) -> RequestBuilder {
        self.authorize(self.http.get(url))
    }

    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T, Error> {
        let mut url = self.url(segments)?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut request = self
            .authorize(self.http.request(method, url.clone()))
            .timeout(self.timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |source| Error::Transport {
            url: url.to_string(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let text = response.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(Error::from_answer(status.as_u16(), url.as_str(), &text));
        }
        serde_json::from_str(&text).map_err(|e| Error::Decode {
            url: url.to_string(),
            message: format!(
                "{e}; body starts with {:?}",
                text.chars().take(120).collect::<String>()
            ),
        })
    }
}

/// The `cursor` and `limit` query parameters of a paged route.
fn page_params(cursor: Option<&str>, limit: Option<u32>) -> Vec<(&'static str, String)> {
    let mut params = Vec::new();
    if let Some(cursor) = cursor {
        params.push(("cursor", cursor.to_string()));
    }
    if let Some(limit) = limit {
        params.push(("limit", limit.to_string()));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_under_the_base() {
        let client = Client::new("http://127.0.0.1:7331").unwrap();
        let url = client
            .url(&["v1", "runs", "a b", "nodes", "n?x", "approve"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:7331/v1/runs/a%20b/nodes/n%3Fx/approve"
        );
        let client = Client::new("http://proxy:1/smithers/").unwrap();
        assert_eq!(
            client.url(&["v1", "runs"]).unwrap().as_str(),
            "http://proxy:1/smithers/v1/runs"
        );
    }

    #[test]
    fn bad_base_urls_are_refused() {
        assert!(Client::new("127.0.0.1:7331").is_err());
        assert!(Client::new("ftp://x").is_err());
        assert_eq!(
            Client::builder().build().unwrap().base_url().as_str(),
            "http://127.0.0.1:7331/"
        );
    }
}
