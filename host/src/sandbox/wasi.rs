//! The WASI context of a workflow instance.
//!
//! Starts closed and opens exactly one thing: the root dir, preopened at the
//! guest path `/` for task instances (cap-std underneath refuses `..`,
//! absolute and symlink escapes). No environment variables, no arguments, no
//! stdin, no network (sockets are not even linked, see `runtime`). Output to
//! stdout/stderr is captured up to a cap and surfaced as `NodeOutput` events.
//! `render` instances get no filesystem at all: rendering must be a pure
//! function of its context.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// A capped, shared capture buffer for a guest output stream. Writes beyond
/// the cap are accepted and dropped, so a chatty guest is truncated rather
/// than trapped.
#[derive(Clone, Debug)]
pub struct CapturedOutput {
    inner: Arc<Mutex<Capture>>,
}

#[derive(Debug)]
struct Capture {
    bytes: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl CapturedOutput {
    /// An empty capture holding at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Capture {
                bytes: Vec::new(),
                cap,
                truncated: false,
            })),
        }
    }

    /// Takes what was captured so far (lossy UTF-8) and whether bytes were dropped.
    pub fn take(&self) -> (String, bool) {
        let mut capture = self.inner.lock().expect("capture lock");
        let bytes = std::mem::take(&mut capture.bytes);
        let truncated = std::mem::replace(&mut capture.truncated, false);
        (String::from_utf8_lossy(&bytes).into_owned(), truncated)
    }

    fn write(&self, buf: &[u8]) {
        let mut capture = self.inner.lock().expect("capture lock");
        let room = capture.cap.saturating_sub(capture.bytes.len());
        if buf.len() > room {
            capture.truncated = true;
        }
        let keep = buf.len().min(room);
        capture.bytes.extend_from_slice(&buf[..keep]);
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// WASI for a `run-task` instance: the root dir at `/`, captured output,
/// and `env` — only what the host chose (the operator's secrets as
/// placeholders), never the host's own environment.
pub fn task_context(
    root_dir: &Path,
    stdout: &CapturedOutput,
    stderr: &CapturedOutput,
    env: &[(String, String)],
) -> std::io::Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    builder.envs(env);
    builder
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .preopened_dir(root_dir, "/", FsPerms::ReadWrite)
        .map_err(|e| std::io::Error::other(format!("cannot open the root dir: {e}")))?;
    Ok(builder.build())
}

/// WASI for a `describe`/`render` instance: no filesystem, output captured.
pub fn render_context(stdout: &CapturedOutput, stderr: &CapturedOutput) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_output_is_capped_and_reports_truncation() {
        let out = CapturedOutput::new(5);
        out.write(b"hello world");
        assert_eq!(out.take(), ("hello".to_string(), true));
        out.write(b"ok");
        assert_eq!(out.take(), ("ok".to_string(), false));
    }
}
