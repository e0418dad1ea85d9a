//! `files`: write a file under the project's root directory, then read it back.
//!
//! Input: `{"path": "out/hello.txt", "content": "hello from smithers\n"}` (both optional;
//! these are the defaults).
//!
//! * `write` creates the parent directories and writes `content` to `path`; outputs
//!   `{"path": <path>, "bytes": n}`;
//! * `read` reads it back; outputs `{"content": <content>, "bytes": n}`.
//!
//! Shows: plain `std::fs` through WASI. The host preopens only the root directory, at `/`;
//! relative paths resolve from it, and nothing outside it can be reached.

use std::fs;
use std::path::Path;

use smithers_sdk::serde::Deserialize;
use smithers_sdk::serde_json::json;
use smithers_sdk::{Ctx, Node, sequence, task};

#[derive(Deserialize)]
#[serde(crate = "smithers_sdk::serde", default)]
struct Input {
    path: String,
    content: String,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            path: "out/hello.txt".to_owned(),
            content: "hello from smithers\n".to_owned(),
        }
    }
}

fn build(_ctx: &Ctx) -> Node {
    sequence([
        task("write", |t| {
            let input: Input = t.input()?;
            if let Some(parent) = Path::new(&input.path).parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&input.path, &input.content)?;
            Ok(json!({ "path": input.path, "bytes": input.content.len() }))
        }),
        task("read", |t| {
            let input: Input = t.input()?;
            let content = fs::read_to_string(&input.path)?;
            Ok(json!({ "bytes": content.len(), "content": content }))
        }),
    ])
}

smithers_sdk::workflow!(name: "files", build: build);

#[cfg(test)]
mod tests {
    use smithers_sdk::TaskCtx;

    use super::*;

    #[test]
    fn writes_then_reads_back() {
        let dir = std::env::temp_dir().join(format!("example-files-{}", std::process::id()));
        let path = dir.join("sub/hello.txt").to_string_lossy().into_owned();
        let ctx = Ctx::new(json!({"path": path, "content": "hi\n"}));
        let written = build(&ctx)
            .run_task(&TaskCtx::new(ctx.clone(), "write", 0, 1))
            .unwrap();
        assert_eq!(written, json!({"path": path, "bytes": 3}));
        let read = build(&ctx)
            .run_task(&TaskCtx::new(ctx, "read", 0, 1))
            .unwrap();
        assert_eq!(read, json!({"content": "hi\n", "bytes": 3}));
        fs::remove_dir_all(dir).unwrap();
    }
}
