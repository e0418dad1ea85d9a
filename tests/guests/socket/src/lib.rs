//! `fixture-socket`: a workflow whose task opens a TCP connection, so the component imports
//! `wasi:sockets`. The host links no sockets: loading this component must fail with a clear
//! error (and if it ever loaded, the task would fail to connect).
//!
//! Task `connect` outputs `{"connected": bool, "error"?: string}`.

use std::net::TcpStream;

use smithers_sdk::serde_json::json;
use smithers_sdk::{Ctx, Node, task};

fn build(_ctx: &Ctx) -> Node {
    task("connect", |_| {
        Ok(match TcpStream::connect("127.0.0.1:1") {
            Ok(_) => json!({ "connected": true }),
            Err(err) => json!({ "connected": false, "error": err.to_string() }),
        })
    })
}

smithers_sdk::workflow!(name: "socket", build: build);
