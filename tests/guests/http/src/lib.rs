//! `fixture-http`: one task, `fetch`, that sends the HTTP request the run input describes
//! through the SDK's `tools::http` (so through the host's `wasi:http` and its policy).
//!
//! The output is also emitted (a `NodeOutput` event).
//!
//! Input: `{"method"?: "GET", "url": "...", "headers"?: [[name, value]], "body"?: "text",
//! "maxRedirects"?: n}`. Output: `{"status", "headers": {name: value}, "body": text, "url"}`.
//! A tool error (`HTTP_DENIED`, `HTTP_RESPONSE_TOO_LARGE`, ...) fails the task with its code.
//! `${secret:NAME}` in a header value or the body stands for the secret's placeholder.
//!
//! With `"sequence": {"url", "count", "tagFile"?, "failOn"?}` instead, it sends `count` GETs
//! one after the other, `{url}?i={i}&tag={tag}` (call i's tag is the i-th of the
//! comma-separated tags in `tagFile` in the root dir, read before each call, or its last;
//! `a` without one), and outputs `{"bodies": [...], "micros": [...]}` (each call's duration
//! as the guest saw it, for the benchmark); a body equal to
//! `failOn` fails the attempt (retryable). `"retries": n` gives the task n retries.

use smithers_sdk::serde_json::{Map, Value, json};
use smithers_sdk::tools::http;
use smithers_sdk::{Ctx, Node, TaskError, task};

/// Replaces each `${secret:NAME}` by the secret's placeholder.
fn expand(text: &str) -> Result<String, TaskError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${secret:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "${secret:".len()..];
        let end = after
            .find('}')
            .ok_or_else(|| TaskError::new("unclosed ${secret:"))?;
        out.push_str(&smithers_sdk::tools::secret(&after[..end])?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn fetch(input: &Value) -> Result<Value, TaskError> {
    let url = input["url"]
        .as_str()
        .ok_or_else(|| TaskError::new("input.url is required"))?;
    let method = input["method"].as_str().unwrap_or("GET");
    let mut request = http::Request::new(method, url);
    for pair in input["headers"].as_array().into_iter().flatten() {
        let name = pair[0].as_str().unwrap_or_default();
        let value = pair[1].as_str().unwrap_or_default();
        request = request.header(name, expand(value)?);
    }
    if let Some(body) = input["body"].as_str() {
        request = request.body(expand(body)?);
    }
    if let Some(max) = input["maxRedirects"].as_u64() {
        request = request.max_redirects(max as u32);
    }
    let response = http::request(request)?;
    let headers: Map<String, Value> = response
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), Value::String(v.clone())))
        .collect();
    let output = json!({
        "status": response.status,
        "headers": headers,
        "body": response.text(),
        "url": response.url,
    });
    // Also streamed, so tests over HTTP read it from the run's events.
    smithers_sdk::tools::emit(&output)?;
    Ok(output)
}

fn sequence(spec: &Value) -> Result<Value, TaskError> {
    let url = spec["url"]
        .as_str()
        .ok_or_else(|| TaskError::new("sequence.url is required"))?;
    let mut bodies = Vec::new();
    let mut micros = Vec::new();
    for i in 0..spec["count"].as_u64().unwrap_or(1) {
        let tag = match spec["tagFile"].as_str() {
            Some(file) => {
                let tags = std::fs::read_to_string(format!("/{file}"))
                    .map_err(|e| TaskError::new(format!("reading {file}: {e}")))?;
                let tags: Vec<&str> = tags.trim().split(',').collect();
                tags[(i as usize).min(tags.len() - 1)].to_string()
            }
            None => "a".to_string(),
        };
        let started = std::time::Instant::now();
        let body = http::get(&format!("{url}?i={i}&tag={tag}"))?.text();
        micros.push(started.elapsed().as_micros() as u64);
        if spec["failOn"].as_str() == Some(body.as_str()) {
            return Err(TaskError::new(format!("call {i} answered {body}")));
        }
        bodies.push(body);
    }
    Ok(json!({ "bodies": bodies, "micros": micros }))
}

fn build(ctx: &Ctx) -> Node {
    let input = ctx.input::<Value>().unwrap_or_default();
    let node = task("fetch", |t| {
        let input = t.input::<Value>()?;
        match input.get("sequence") {
            Some(spec) => sequence(spec),
            None => fetch(&input),
        }
    });
    match input["retries"].as_u64() {
        Some(n) => node.retries(n as u32),
        None => node,
    }
}

smithers_sdk::workflow!(name: "http", build: build);
