//! `fixture-v2`: version 2 of the hot-reload workflow (`fixture-v1` and `fixture-v2` differ
//! only in what `finish` returns).
//!
//! `prepare` outputs `{"prepared": true}`; `gate` is an approval; `finish` outputs
//! `{"version": 2}`. A run started on v1 and resumed after the file was replaced by v2
//! keeps `prepare`'s committed output and runs v2's `finish`.

use smithers_sdk::serde_json::json;
use smithers_sdk::{Ctx, Node, approval, sequence, task};

fn build(_ctx: &Ctx) -> Node {
    sequence([
        task("prepare", |_| Ok(json!({ "prepared": true }))),
        approval("gate").title("Continue?"),
        task("finish", |_| Ok(json!({ "version": 2 }))),
    ])
}

smithers_sdk::workflow!(name: "hot-reload", version: "2", build: build);
