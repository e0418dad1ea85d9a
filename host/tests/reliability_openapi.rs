//! The OpenAPI description matches the server: every route of the server
//! router is described (and nothing else), every described operation is
//! routed and answers only documented statuses and codes, and the real
//! binary serves the document.

mod common;
mod http_support;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use smithers_host::http::openapi::{OPERATIONS, document};
use smithers_host::http::{ApiState, router};
use tower::ServiceExt;

/// `/v1/runs/{run_id}` and `/v1/runs/{runId}` both become `/v1/runs/{}`.
fn normalize(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// The (METHOD, path) pairs a router serves, read from its `Debug` output
/// (axum exposes no route listing): `RouteId(n): "/path"` in the path
/// router's node, and `RouteId(n): MethodRouter(… allow_header: Bytes(b"GET,HEAD"))`
/// in its routes. HEAD rides along with GET and is not an operation.
fn served_routes(router: &axum::Router) -> BTreeSet<(String, String)> {
    let debug = format!("{router:?}");
    let main = debug
        .split("fallback_router")
        .next()
        .expect("path router first");
    let (routes, node) = main.split_once("node: Node").expect("node after routes");
    let id_after = |text: &str| -> u32 {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().expect("route id")
    };
    let mut paths = std::collections::BTreeMap::new();
    for chunk in node.split("RouteId(").skip(1) {
        let id = id_after(chunk);
        let path = chunk.split('"').nth(1).expect("quoted path");
        paths.insert(id, path.to_string());
    }
    let mut served = BTreeSet::new();
    for chunk in routes.split("RouteId(").skip(1) {
        let id = id_after(chunk);
        let allow = chunk
            .split("allow_header: Bytes(b\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no allow header for route {id}: {chunk}"));
        for method in allow.split(',').filter(|m| *m != "HEAD") {
            served.insert((method.to_string(), normalize(&paths[&id])));
        }
    }
    assert!(served.len() > 10, "could not read the router: {debug}");
    served
}

fn in_process_router(host: &common::TestHost) -> axum::Router {
    let state = ApiState::new(host.app.engine.clone(), &Default::default());
    router(state, Default::default())
}

#[tokio::test]
async fn every_route_of_the_server_router_is_documented_and_nothing_else() {
    let host = common::TestHost::new();
    let served = served_routes(&in_process_router(&host));
    let documented: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|o| (o.method.to_uppercase(), normalize(o.path)))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from host/src/http/openapi/: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );
    // And the served document lists exactly the table.
    let doc = document();
    let mut in_doc = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            in_doc.insert((method.to_uppercase(), normalize(path)));
        }
    }
    assert_eq!(in_doc, documented);
}

fn concrete(path: &str) -> String {
    path.replace("{runId}", "no-such-run")
        .replace("{nodeId}", "gate")
        .replace("{name}", "go")
}

/// The statuses an operation documents, each with its codes (200: none).
fn documented_answers(method: &str, path: &str) -> Vec<(u16, Vec<String>)> {
    let doc = document();
    let responses = doc["paths"][path][method]["responses"]
        .as_object()
        .expect("responses");
    responses
        .iter()
        .map(|(status, response)| {
            let codes = response["x-error-codes"]
                .as_array()
                .map(|a| a.iter().map(|c| c.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            (status.parse().unwrap(), codes)
        })
        .collect()
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_answers_as_documented() {
    let host = common::TestHost::new();
    let router = in_process_router(&host);
    for operation in OPERATIONS {
        let uri = concrete(operation.path);
        let mut request = Request::builder()
            .method(operation.method.to_uppercase().as_str())
            .uri(&uri)
            .header("host", "127.0.0.1");
        let body = if operation.method == "post" {
            request = request.header("content-type", "application/json");
            Body::from("{}")
        } else {
            Body::empty()
        };
        let response = router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let is_stream = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
        let text = if is_stream {
            String::new()
        } else {
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8_lossy(&bytes).to_string()
        };
        assert!(
            !text.contains("Route not found"),
            "{} {uri} is documented but not routed",
            operation.method
        );
        let answers = documented_answers(operation.method, operation.path);
        let (_, codes) = answers
            .iter()
            .find(|(s, _)| *s == status)
            .unwrap_or_else(|| {
                panic!(
                    "{} {uri}: status {status} is not documented: {text}",
                    operation.method
                )
            });
        if status != 200 {
            let body: Value = serde_json::from_str(&text).unwrap();
            let code = body["error"]["code"].as_str().unwrap();
            assert!(
                codes.iter().any(|c| c == code),
                "{} {uri}: {code} is not documented for {status}",
                operation.method
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_its_description_behind_the_token() {
    let server = http_support::Server::with(http_support::Options {
        token: Some("sekret".into()),
        ..Default::default()
    });
    let (status, body) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(body, document());
    assert_eq!(body["openapi"], "3.1.0");
    let anonymous = reqwest::get(server.url("/openapi.json")).await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}
