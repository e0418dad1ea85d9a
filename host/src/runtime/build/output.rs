//! Reading what a confined cargo printed, as untrusted text.
//!
//! cargo's stdout (JSON messages) can carry lines a procedural macro printed,
//! and its stderr what a build script printed; both are the crate author's.
//! This module takes only the artifact path (which the caller still checks)
//! and the compiler's errors, and turns what reaches a client or a log into
//! plain text: no terminal escapes or control characters, host paths of the
//! build dir replaced, at most [`MAX_MESSAGE_BYTES`] and [`MAX_MESSAGE_LINES`].

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Longest build error message returned to a client.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Most lines of a build error message.
pub const MAX_MESSAGE_LINES: usize = 200;

/// What cargo's JSON stream said about one build.
#[derive(Debug, Default)]
pub(super) struct CargoReport {
    /// The `.wasm` file cargo reported for the wanted manifest.
    pub artifact: Option<PathBuf>,
    /// The compiler's rendered errors, in order.
    pub errors: Vec<String>,
}

/// Parses cargo's `--message-format=json` stdout.
pub(super) fn parse(stdout: &[u8], manifest: &Path) -> CargoReport {
    let mut report = CargoReport::default();
    for line in stdout.split(|b| *b == b'\n') {
        let Ok(message) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        match message.get("reason").and_then(Value::as_str) {
            Some("compiler-message") => {
                let level = message.pointer("/message/level").and_then(Value::as_str);
                if !matches!(
                    level,
                    Some("error") | Some("error: internal compiler error")
                ) {
                    continue;
                }
                if let Some(rendered) = message.pointer("/message/rendered").and_then(Value::as_str)
                {
                    report.errors.push(rendered.to_string());
                }
            }
            Some("compiler-artifact") => {
                let from_manifest = message
                    .get("manifest_path")
                    .and_then(Value::as_str)
                    .map(Path::new);
                if from_manifest != Some(manifest) {
                    continue;
                }
                if let Some(wasm) = message
                    .get("filenames")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .find(|f| f.ends_with(".wasm"))
                {
                    report.artifact = Some(PathBuf::from(wasm));
                }
            }
            _ => {}
        }
    }
    report
}

/// The last `lines` lines of cargo's own stderr (its errors and a failed
/// build script's output).
pub(super) fn stderr_tail(stderr: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(stderr);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A hint for the usual reasons an offline, read-only build fails.
pub(super) fn hint(stderr: &[u8], manifest: &Path) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let offline = [
        "offline",
        "no matching package",
        "failed to download",
        "failed to load source",
    ]
    .iter()
    .any(|needle| text.contains(needle));
    offline.then(|| {
        format!(
            "hint: guest builds are offline: the crate's dependencies must be in the host's \
             cargo cache. Review the manifest, then run `cargo fetch --manifest-path {}` \
             (it downloads and runs no build script).",
            manifest.display()
        )
    })
}

/// A hint for a crate that belongs to a cargo workspace outside the root dir
/// (the examples of this repository, say): names the directory the operator
/// may let builds read. Only the operator's files (outside the root) are read.
pub(super) fn workspace_hint(stderr: &[u8], crate_dir: &Path, root: &Path) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    if !text.contains("failed to find a workspace root")
        && !text.contains("believes it's in a workspace")
    {
        return None;
    }
    let workspace = crate_dir.ancestors().skip(1).find(|dir| {
        !dir.starts_with(root)
            && std::fs::read(dir.join("Cargo.toml")).is_ok_and(|m| {
                m.len() < 1 << 20 && String::from_utf8_lossy(&m).contains("[workspace]")
            })
    })?;
    Some(format!(
        "hint: the crate belongs to the cargo workspace {}, outside the root dir; builds see only \
         the root dir unless the operator passes --build-source {}",
        workspace.display(),
        workspace.display()
    ))
}

/// Untrusted build output made safe to show: escape sequences and control
/// characters removed, the build dir's host path replaced, bounded.
pub fn sanitize(text: &str, build_dir: &Path) -> String {
    let build_dir = build_dir.display().to_string();
    let text = if build_dir.len() > 1 {
        text.replace(&build_dir, "<build-dir>")
    } else {
        text.to_string()
    };
    let mut clean = String::with_capacity(text.len().min(MAX_MESSAGE_BYTES));
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // CSI and other ESC sequences: drop up to the final byte.
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\n' | '\t' => clean.push(c),
            c if c.is_control() => {}
            c => clean.push(c),
        }
    }
    bound(&clean)
}

fn bound(text: &str) -> String {
    let mut out = String::new();
    let mut cut = false;
    for (n, line) in text.lines().enumerate() {
        if n >= MAX_MESSAGE_LINES || out.len() + line.len() + 1 > MAX_MESSAGE_BYTES {
            cut = true;
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    if cut {
        out.push_str("… (the rest of the build output was cut)\n");
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_control_characters_are_removed_and_the_text_is_bounded() {
        let text = "\u{1b}[31merror\u{1b}[0m: bad\u{7}\r\n  --> /state/build/x.rs\n";
        assert_eq!(
            sanitize(text, Path::new("/state/build")),
            "error: bad\n  --> <build-dir>/x.rs"
        );
        let flood = "x".repeat(100) + "\n";
        let long = sanitize(&flood.repeat(10_000), Path::new("/b"));
        assert!(long.len() <= MAX_MESSAGE_BYTES + 64, "{}", long.len());
        assert!(long.lines().count() <= MAX_MESSAGE_LINES + 1);
        assert!(long.ends_with("cut)"));
        let one_line = sanitize(&"y".repeat(1 << 20), Path::new("/b"));
        assert!(one_line.len() < 100, "a single huge line is cut whole");
    }

    #[test]
    fn only_the_wanted_manifest_names_the_artifact() {
        let stdout = concat!(
            r#"{"reason":"compiler-artifact","manifest_path":"/other/Cargo.toml","filenames":["/t/other.wasm"]}"#,
            "\n",
            r#"{"reason":"compiler-message","message":{"level":"warning","rendered":"warning: w"}}"#,
            "\n",
            r#"{"reason":"compiler-message","message":{"level":"error","rendered":"error: e"}}"#,
            "\nnot json\n",
            r#"{"reason":"compiler-artifact","manifest_path":"/c/Cargo.toml","filenames":["/t/c.d","/t/c.wasm"]}"#,
        );
        let report = parse(stdout.as_bytes(), Path::new("/c/Cargo.toml"));
        assert_eq!(report.artifact, Some(PathBuf::from("/t/c.wasm")));
        assert_eq!(report.errors, ["error: e"]);
    }
}
