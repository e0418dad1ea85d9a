//! `smithers-host new NAME`: a standalone workflow crate of one's own.
//!
//! The crate builds anywhere, outside this repository: its own `[workspace]`,
//! `smithers-sdk` as its only dependency — by path to the SDK this host was
//! built from when that checkout still exists (with the version, so the
//! manifest stays publishable), otherwise the published version — a typed
//! input, two tasks around an approval, a native test and a README with the
//! commands to run it. Then `cargo fetch` fills the cargo cache and writes
//! `Cargo.lock` (the host's guest builds are offline). The files are ours, so
//! running cargo on them on the host is safe; nothing here reads the root dir.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use clap::Args;

use super::{EXIT_FINISHED, EXIT_REFUSED, EXIT_USAGE};
use crate::runtime::build::host_sdk_dir;

/// Options of `smithers-host new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Name of the workflow and of its crate directory (lowercase letters,
    /// digits, `-` and `_`, starting with a letter).
    pub name: String,
    /// Directory to create the crate in (default: the current directory).
    #[arg(long, value_name = "PATH", default_value = ".")]
    pub dir: PathBuf,
    /// Do not run `cargo fetch` (then run it before the first build).
    #[arg(long)]
    pub no_fetch: bool,
}

/// The SDK version a new crate depends on.
const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the crate gets the SDK from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// The SDK of the checkout this host was built from.
    Checkout(PathBuf),
    /// The published crate.
    Registry,
}

impl SdkSource {
    /// The checkout's SDK when it is still there, else the registry.
    pub fn detect() -> Self {
        match host_sdk_dir() {
            Some(dir) => Self::Checkout(dir),
            None => Self::Registry,
        }
    }

    fn dependency(&self) -> String {
        match self {
            Self::Checkout(dir) => format!(
                "smithers-sdk = {{ path = {:?}, version = \"{SDK_VERSION}\" }}",
                dir.display().to_string()
            ),
            Self::Registry => format!("smithers-sdk = \"{SDK_VERSION}\""),
        }
    }

    fn explained(&self) -> String {
        match self {
            Self::Checkout(dir) => format!(
                "`smithers-sdk` comes from the smithers-host checkout this crate was made from \
                 ({}), by path. The host shows that directory to its sandboxed guest builds. \
                 To build elsewhere, replace the path with `smithers-sdk = \"{SDK_VERSION}\"` \
                 (the published crate).",
                dir.display()
            ),
            Self::Registry => format!(
                "`smithers-sdk` is the published crate, version {SDK_VERSION}, from crates.io."
            ),
        }
    }
}

/// `new`: writes the crate, then fetches its dependencies.
pub async fn new(args: NewArgs) -> u8 {
    if let Err(why) = check_name(&args.name) {
        eprintln!("smithers-host new: {why}");
        return EXIT_USAGE;
    }
    let dir = match std::path::absolute(args.dir.join(&args.name)) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("smithers-host new: {}: {e}", args.dir.display());
            return EXIT_USAGE;
        }
    };
    if dir.exists() {
        eprintln!(
            "smithers-host new: {} already exists; choose another name or --dir",
            dir.display()
        );
        return EXIT_REFUSED;
    }
    let sdk = SdkSource::detect();
    if let Err(e) = write_crate(&dir, &args.name, &sdk) {
        eprintln!("smithers-host new: cannot write {}: {e}", dir.display());
        return EXIT_REFUSED;
    }
    println!("created the workflow crate {}", dir.display());
    if !args.no_fetch && !fetch(&dir).await {
        eprintln!(
            "smithers-host new: `cargo fetch` failed; run `cargo fetch --manifest-path {}` \
             before the first build (guest builds are offline)",
            dir.join("Cargo.toml").display()
        );
    }
    let root = args.dir.display();
    println!(
        "\nrun it (from {root}, its root dir):\n  smithers-host run {name} --input '{{\"topic\":\"tea\"}}'\n\
         serve it with every workflow of that directory:\n  smithers-host --root-dir {root}\n\
         test it natively:\n  cargo test --manifest-path {manifest}",
        name = args.name,
        manifest = dir.join("Cargo.toml").display(),
    );
    EXIT_FINISHED
}

/// Crate names cargo and the host both accept, without surprises in paths.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64;
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a usable name: use lowercase letters, digits, '-' and '_', \
             starting with a letter (at most 64 characters)"
        ))
    }
}

fn write_crate(dir: &Path, name: &str, sdk: &SdkSource) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(dir.join("Cargo.toml"), manifest(name, sdk))?;
    std::fs::write(dir.join("src/lib.rs"), LIB_RS.replace("{name}", name))?;
    std::fs::write(dir.join("README.md"), readme(name, sdk))?;
    std::fs::write(dir.join(".gitignore"), "/target\n")
}

fn manifest(name: &str, sdk: &SdkSource) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         # A WebAssembly component for smithers-host (target wasm32-wasip2).\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\n{}\n\n\
         # A workspace of its own: the crate builds wherever it is.\n[workspace]\n",
        sdk.dependency()
    )
}

fn readme(name: &str, sdk: &SdkSource) -> String {
    README_MD
        .replace("{name}", name)
        .replace("{sdk}", &sdk.explained())
}

/// `cargo fetch` on the new crate: downloads its dependencies into the cargo
/// cache and writes `Cargo.lock`; runs no build script.
async fn fetch(dir: &Path) -> bool {
    println!("fetching its dependencies (cargo fetch)...");
    tokio::process::Command::new("cargo")
        .arg("fetch")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

const LIB_RS: &str = r#"//! `{name}`: a workflow made by `smithers-host new`.
//!
//! Input: `{"topic": "tea"}` (optional; the topic defaults to `the weather`). The host checks
//! every input against the JSON Schema derived from `Input`: `{"topic": 3}` is refused with
//! `INVALID_INPUT` at `/topic` before anything starts.
//!
//! * `draft` writes a short note about the topic: `{"text": ..., "words": n}`;
//! * `review` parks the run until someone approves or denies the note (a denial fails the run);
//! * `publish` returns `{"published": <text>, "approvedBy": <who>}`.

use smithers_sdk::schemars::JsonSchema;
use smithers_sdk::serde::{Deserialize, Serialize};
use smithers_sdk::serde_json::json;
use smithers_sdk::{ApprovalDecision, Ctx, Node, OnDeny, approval, sequence, task};

/// The run's input (its doc comments become the schema's descriptions).
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "smithers_sdk::serde", default)]
#[schemars(crate = "smithers_sdk::schemars")]
struct Input {
    /// What the note is about.
    topic: String,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            topic: "the weather".to_owned(),
        }
    }
}

/// The output of `draft`, read by the approval and by `publish`.
#[derive(Serialize, Deserialize)]
#[serde(crate = "smithers_sdk::serde")]
struct Draft {
    text: String,
    words: usize,
}

/// The tree for the run's current state: render must be a pure function of `ctx`.
fn build(ctx: &Ctx) -> Node {
    let summary = match ctx.latest::<Draft>("draft") {
        Ok(draft) => draft.text,
        Err(_) => "The note is being written.".to_owned(),
    };
    sequence([
        task("draft", |t| {
            let input: Input = t.input()?;
            let text = format!("A short note about {}.", input.topic);
            Ok(Draft {
                words: text.split_whitespace().count(),
                text,
            })
        }),
        approval("review")
            .title("Publish this note?")
            .summary(summary)
            .on_deny(OnDeny::Fail),
        task("publish", |t| {
            let draft: Draft = t.latest("draft")?;
            let decision: ApprovalDecision = t.latest("review")?;
            Ok(json!({ "published": draft.text, "approvedBy": decision.decided_by }))
        }),
    ])
}

smithers_sdk::workflow!(name: "{name}", build: build, input: Input);

#[cfg(test)]
mod tests {
    use smithers_sdk::TaskCtx;

    use super::*;

    #[test]
    fn the_draft_is_about_the_topic_and_waits_for_review() {
        let ctx = Ctx::new(json!({ "topic": "tea" }));
        let ids: Vec<String> = build(&ctx)
            .render(&ctx)
            .unwrap()
            .into_iter()
            .map(|n| n.id)
            .collect();
        assert_eq!(ids, ["$seq:0", "draft", "review", "publish"]);
        let draft = build(&ctx)
            .run_task(&TaskCtx::new(ctx, "draft", 0, 1))
            .unwrap();
        assert_eq!(draft, json!({ "text": "A short note about tea.", "words": 5 }));
    }
}
"#;

const README_MD: &str = r#"# {name}

A durable workflow for [smithers-host](https://github.com/smithers-host/smithers-host), made by
`smithers-host new`: `draft` writes a note, `review` waits for an approval, `publish` returns
the approved note. The tree is in `src/lib.rs`.

## Run it

From the directory that holds this crate (the root dir; the host builds the crate in its
sandbox the first time, which takes about a minute):

```sh
smithers-host run {name} --input '{"topic":"tea"}'   # parks at `review` and prints the approve command
smithers-host approve RUN_ID review --note "ship it"   # the run finishes and prints its outputs
```

Or serve every workflow of the directory over HTTP and drive it with `curl` or
`smithers-host client`:

```sh
smithers-host --root-dir .
curl -s localhost:7331/v1/workflows/{name}           # its input schema, derived from `Input`
curl -s localhost:7331/v1/runs -d '{"workflowPath":"{name}","input":{"topic":"tea"}}'
curl -s localhost:7331/v1/runs/RUN_ID/outputs        # what its tasks returned
```

An input that does not match the schema (`{"topic": 3}`) is refused with 400
`INVALID_INPUT` and the JSON pointer of the offending value (`/topic`); nothing starts.

## Test it

```sh
cargo test          # the workflow's tree and tasks, natively, without a host
```

## Build it yourself

```sh
rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2   # target/wasm32-wasip2/release/{name}.wasm
```

The host builds offline, from the cargo cache: after changing dependencies, run `cargo fetch`.

## Where the SDK comes from

{sdk}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("demo").is_ok());
        assert!(check_name("my-flow_2").is_ok());
        for bad in ["", "Demo", "2fast", "a/b", "../x", "a b", "ü"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_sdk_has_the_version_new_crates_ask_for() {
        let sdk = include_str!("../../../guest-sdk/Cargo.toml");
        assert!(
            sdk.contains(&format!("\nversion = \"{SDK_VERSION}\"\n")),
            "guest-sdk/Cargo.toml and the host disagree on the version"
        );
    }

    #[test]
    fn the_manifest_names_the_sdk_with_its_version() {
        let checkout = manifest("demo", &SdkSource::Checkout("/src/guest-sdk".into()));
        assert!(checkout.contains(r#"smithers-sdk = { path = "/src/guest-sdk", version = ""#));
        assert!(checkout.contains("[workspace]"));
        let registry = manifest("demo", &SdkSource::Registry);
        assert!(registry.contains(&format!("smithers-sdk = \"{SDK_VERSION}\"")));
    }
}
