//! `fixture-http`: one task, `fetch`, that sends the HTTP request the run input describes
//! through the SDK's `tools::http` (so through the host's `wasi:http` and its policy).
//!
//! The output is also emitted (a `NodeOutput` event).
//!
//! Input: `{"method"?: "GET", "url": "...", "headers"?: [[name, value]], "body"?: "text",
//! "maxRedirects"?: n}`. Output: `{"status", "headers": {name: value}, "body": text, "url"}`.
//! A tool error (`HTTP_DENIED`, `HTTP_RESPONSE_TOO_LARGE`, ...) fails the task with its code.
//! `${secret:NAME}` in a header value or the body stands for the secret's placeholder.

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

fn build(_ctx: &Ctx) -> Node {
    task("fetch", |t| fetch(&t.input::<Value>()?))
}

smithers_sdk::workflow!(name: "http", build: build);
