//! A Rust port of Smithers' PI plugin client (seed 000, contract §13),
//! function by function — same paths, bodies and headers, Bearer auth only —
//! driven against the real server: a client written for Smithers works.

mod common;
mod http_support;

use std::pin::pin;

use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};

use http_support::{Options, Server, script};

/// The PI plugin's configuration: `baseUrl` and `apiKey`.
struct Pi {
    base_url: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl Pi {
    fn headers(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.header("Authorization", format!("Bearer {key}")),
            None => request,
        }
    }

    /// POST helper: `Content-Type: application/json`, body `JSON.stringify(body ?? {})`,
    /// non-2xx → `Smithers HTTP <status>`.
    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        let request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        let response = self
            .headers(request)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("Smithers HTTP {}", response.status().as_u16()));
        }
        response.json().await.map_err(|e| e.to_string())
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let request = self.http.get(format!("{}{path}", self.base_url));
        let response = self
            .headers(request)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("Smithers HTTP {}", response.status().as_u16()));
        }
        response.json().await.map_err(|e| e.to_string())
    }

    async fn run_workflow(
        &self,
        workflow_path: &str,
        input: Value,
        run_id: Option<&str>,
    ) -> Result<Value, String> {
        let mut body = json!({ "workflowPath": workflow_path, "input": input });
        if let Some(run_id) = run_id {
            body["runId"] = json!(run_id);
        }
        self.post("/v1/runs", body).await
    }

    async fn resume(&self, workflow_path: &str, run_id: &str) -> Result<Value, String> {
        self.post(
            "/v1/runs",
            json!({ "workflowPath": workflow_path, "runId": run_id, "resume": true }),
        )
        .await
    }

    fn decision_body(iteration: Option<u32>, note: Option<&str>) -> Value {
        let mut body = Map::new();
        body.insert("iteration".into(), json!(iteration.unwrap_or(0)));
        if let Some(note) = note {
            body.insert("note".into(), json!(note));
        }
        Value::Object(body)
    }

    async fn approve(
        &self,
        run_id: &str,
        node_id: &str,
        iteration: Option<u32>,
        note: Option<&str>,
    ) -> Result<Value, String> {
        self.post(
            &format!("/v1/runs/{run_id}/nodes/{node_id}/approve"),
            Self::decision_body(iteration, note),
        )
        .await
    }

    async fn deny(
        &self,
        run_id: &str,
        node_id: &str,
        iteration: Option<u32>,
        note: Option<&str>,
    ) -> Result<Value, String> {
        self.post(
            &format!("/v1/runs/{run_id}/nodes/{node_id}/deny"),
            Self::decision_body(iteration, note),
        )
        .await
    }

    /// `streamEvents`: a non-ok response yields nothing; blocks split on a
    /// blank line, the first `data: ` line of each parsed as JSON.
    fn stream_events(&self, run_id: &str) -> impl Stream<Item = Value> + '_ {
        let url = format!("{}/v1/runs/{run_id}/events", self.base_url);
        async_stream::stream! {
            let Ok(response) = self.headers(self.http.get(url)).send().await else { return };
            if !response.status().is_success() {
                return;
            }
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if let Some(line) = block.lines().find(|l| l.starts_with("data: "))
                        && let Ok(event) = serde_json::from_str::<Value>(&line[6..])
                    {
                        yield event;
                    }
                }
            }
        }
    }

    async fn get_status(&self, run_id: &str) -> Result<Value, String> {
        self.get(&format!("/v1/runs/{run_id}")).await
    }

    async fn get_frames(&self, run_id: &str, tail: Option<u32>) -> Result<Value, String> {
        self.get(&format!(
            "/v1/runs/{run_id}/frames?limit={}",
            tail.unwrap_or(20)
        ))
        .await
    }

    async fn cancel(&self, run_id: &str) -> Result<Value, String> {
        self.post(&format!("/v1/runs/{run_id}/cancel"), json!({}))
            .await
    }

    async fn list_runs(&self, limit: Option<u32>, status: Option<&str>) -> Result<Value, String> {
        let mut params = Vec::new();
        if let Some(limit) = limit {
            params.push(format!("limit={limit}"));
        }
        if let Some(status) = status {
            params.push(format!("status={status}"));
        }
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        self.get(&format!("/v1/runs{query}")).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pi_client_drives_a_run_from_start_to_finish() {
    let server = Server::with(Options {
        token: Some("sk-my-token".into()),
        ..Options::default()
    });
    let approval = server.install("example-approval");
    let scripted = server.install("fixture-scripted");
    let pi = Pi {
        base_url: server.base.clone(),
        api_key: Some("sk-my-token".into()),
        http: reqwest::Client::new(),
    };

    // The seed's complete example: start, stream, approve on NodeWaitingApproval.
    let run = pi
        .run_workflow(&approval, json!({"target": "staging"}), None)
        .await
        .unwrap();
    let run_id = run["runId"].as_str().unwrap().to_string();
    let mut kinds = Vec::new();
    {
        let mut events = pin!(pi.stream_events(&run_id));
        while let Some(event) = events.next().await {
            let kind = event["type"].as_str().unwrap().to_string();
            if kind == "NodeWaitingApproval" {
                let node = event["nodeId"].as_str().unwrap();
                let approved = pi
                    .approve(&run_id, node, None, Some("Auto-approved for staging"))
                    .await
                    .unwrap();
                assert_eq!(approved, json!({"runId": run_id}));
            }
            kinds.push(kind);
        }
    }
    assert!(
        kinds.contains(&"NodeWaitingApproval".to_string()),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("RunFinished"),
        "{kinds:?}"
    );

    let status = pi.get_status(&run_id).await.unwrap();
    assert_eq!(status["status"], "finished");
    assert_eq!(status["workflowName"], "approval");
    assert!(status["startedAtMs"].is_i64() && status["summary"].is_object());

    let frames = pi.get_frames(&run_id, Some(5)).await.unwrap();
    let frames = frames.as_array().unwrap();
    assert!(!frames.is_empty() && frames.len() <= 5);
    assert!(frames[0]["frameNo"].is_u64());
    assert!(
        pi.get_frames(&run_id, None)
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len()
            <= 20
    );

    // resume of a finished run is accepted.
    let resumed = pi.resume(&approval, &run_id).await.unwrap();
    assert_eq!(resumed["runId"], run_id);

    // deny and cancel, with a custom run id.
    let denied = pi
        .run_workflow(&approval, json!({}), Some("pi-deny"))
        .await
        .unwrap();
    assert_eq!(denied["runId"], "pi-deny");
    server.wait_status("pi-deny", "waiting-approval").await;
    assert_eq!(
        pi.deny("pi-deny", "gate", Some(0), None).await.unwrap(),
        json!({"runId": "pi-deny"})
    );
    server.wait_status("pi-deny", "failed").await;

    let parked = pi
        .run_workflow(
            &scripted,
            script(json!({"approval": {"id": "gate"}})),
            Some("pi-cancel"),
        )
        .await
        .unwrap();
    assert_eq!(parked["runId"], "pi-cancel");
    server.wait_status("pi-cancel", "waiting-approval").await;
    let cancelled = pi.cancel("pi-cancel").await.unwrap();
    assert_eq!(cancelled["runId"], "pi-cancel");
    assert_eq!(
        pi.get_status("pi-cancel").await.unwrap()["status"],
        "cancelled"
    );

    let all = pi.list_runs(None, None).await.unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert!(
        pi.list_runs(Some(2), None)
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len()
            <= 2
    );
    let finished = pi.list_runs(Some(10), Some("finished")).await.unwrap();
    let finished = finished.as_array().unwrap();
    assert_eq!(finished.len(), 1);
    assert!(finished.iter().all(|r| r["status"] == "finished"));

    assert_eq!(
        pi.get_status("no-such-run").await.unwrap_err(),
        "Smithers HTTP 404"
    );
    let anonymous = Pi {
        api_key: None,
        ..pi
    };
    assert_eq!(
        anonymous.list_runs(None, None).await.unwrap_err(),
        "Smithers HTTP 401"
    );
    let mut nothing = pin!(anonymous.stream_events(&run_id));
    assert!(
        nothing.next().await.is_none(),
        "a refused stream yields nothing"
    );
}
