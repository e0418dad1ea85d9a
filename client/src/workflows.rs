//! The workflows a host knows (`GET /v1/workflows`, `GET /v1/workflows/:path`).

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Client, Error};

/// One workflow under the host's root dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowInfo {
    /// Relative to the root dir: a workflow path that starts it.
    pub path: String,
    /// `component` (a `.wasm` file) or `crate` (a guest crate the host builds).
    pub kind: String,
    /// `ready`, `not-built`, `outdated` (a crate whose sources changed since
    /// its last build) or `failed` (see `error`).
    pub state: String,
    /// Its `describe` name, when ready.
    #[serde(default)]
    pub name: Option<String>,
    /// Its `describe` version, when ready.
    #[serde(default)]
    pub version: Option<String>,
    /// The component's hash, when ready.
    #[serde(default)]
    pub hash: Option<String>,
    /// The JSON Schema every run's input must match, when it has one.
    #[serde(default)]
    pub input_schema: Option<Value>,
    /// Why it does not load or build: `{code, message}`.
    #[serde(default)]
    pub error: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /v1/workflows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowList {
    /// Sorted by path.
    pub workflows: Vec<WorkflowInfo>,
    /// The host's scan limits stopped the listing: there may be more.
    #[serde(default)]
    pub truncated: bool,
}

impl Client {
    /// The workflows under the host's root dir. Guest crates are built only
    /// with `build` (otherwise they are reported from their last build).
    ///
    /// ```no_run
    /// # async fn demo(client: smithers_client::Client) -> Result<(), smithers_client::Error> {
    /// for workflow in client.list_workflows(false).await?.workflows {
    ///     println!("{} {} {:?}", workflow.path, workflow.state, workflow.input_schema);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_workflows(&self, build: bool) -> Result<WorkflowList, Error> {
        let query = if build {
            vec![("build", "true".to_string())]
        } else {
            Vec::new()
        };
        self.call::<(), _>(Method::GET, &["v1", "workflows"], &query, None)
            .await
    }

    /// One workflow (`path` relative to the root dir), loaded, and built if
    /// it is a crate; 404 `NOT_FOUND` if it names nothing.
    pub async fn get_workflow(&self, path: &str) -> Result<WorkflowInfo, Error> {
        self.call::<(), _>(Method::GET, &["v1", "workflows", path], &[], None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_path_is_one_encoded_segment() {
        let client = Client::new("http://127.0.0.1:7331").unwrap();
        let url = client
            .url(&["v1", "workflows", "flows/hello.wasm"])
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:7331/v1/workflows/flows%2Fhello.wasm"
        );
    }
}
