//! What a scripted task does when it runs: its behaviours, in the order README.md lists them.
//! Several of them misbehave on purpose (spin, exhaust memory or stack, panic, escape the
//! root); each is written so that the compiler cannot optimise the misbehaviour away.

use std::fs;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use smithers_sdk::serde_json::{Map, Value, json};
use smithers_sdk::tools::{self, BashOptions, Level};
use smithers_sdk::{TaskCtx, TaskError};

use crate::spec::{AppendLineSpec, TaskSpec};

const MIB: usize = 1 << 20;

/// Runs the task; with `notRetryable`, every failure is final.
pub fn run(spec: &TaskSpec, t: &TaskCtx) -> Result<Value, TaskError> {
    behave(spec, t).map_err(|err| {
        if spec.not_retryable {
            err.not_retryable()
        } else {
            err
        }
    })
}

fn behave(spec: &TaskSpec, t: &TaskCtx) -> Result<Value, TaskError> {
    for _ in 0..spec.repeat.unwrap_or(1) {
        if let Some(text) = &spec.stdout {
            println!("{text}");
        }
        if let Some(text) = &spec.stderr {
            eprintln!("{text}");
        }
        if let Some(value) = &spec.emit {
            tools::emit(value)?;
        }
        if let Some(text) = &spec.log {
            tools::log(Level::Info, text);
        }
    }
    if let Some(append) = &spec.append_line {
        append_line(append, t)?;
    }
    if let Some(ms) = spec.sleep_ms {
        std::thread::sleep(Duration::from_millis(ms));
    }
    if let Some(n) = spec.fail_attempts
        && t.attempt() <= n
    {
        return Err(TaskError::new(format!(
            "planned failure on attempt {}",
            t.attempt()
        )));
    }
    if let Some(message) = &spec.fail {
        return Err(TaskError::new(message.clone()));
    }
    if spec.spin {
        spin();
    }
    // Held until the task returns.
    let ballast = spec
        .alloc_mb
        .map(|mb| allocate(usize::try_from(mb).unwrap_or(usize::MAX)));
    if spec.alloc_forever {
        allocate_forever();
    }
    if spec.recurse {
        black_box(recurse(0));
    }
    if let Some(message) = &spec.panic {
        panic!("{message}");
    }
    if let Some(path) = &spec.read_file {
        return Ok(match fs::read_to_string(path) {
            Ok(content) => json!({ "ok": true, "content": content }),
            Err(err) => json!({ "ok": false, "error": err.to_string() }),
        });
    }
    if let Some(write) = &spec.write_file {
        return Ok(outcome(write_creating_parents(&write.path, &write.content)));
    }
    if let Some(link) = &spec.symlink {
        return Ok(outcome(symlink(&link.target, &link.link)));
    }
    if let Some(path) = &spec.list_dir {
        return Ok(match list_dir(path) {
            Ok(entries) => json!({ "ok": true, "entries": entries }),
            Err(err) => json!({ "ok": false, "error": err.to_string() }),
        });
    }
    if spec.env {
        let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
        let args: Vec<String> = std::env::args().collect();
        return Ok(json!({ "vars": vars, "args": args }));
    }
    if let Some(bash) = &spec.bash {
        let mut options = BashOptions::new();
        options.cwd = bash.cwd.clone();
        options.timeout_ms = bash.timeout_ms;
        options.max_output_bytes = bash.max_output_bytes;
        options.env = bash
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let out = tools::bash_with(&bash.command, options)?;
        return Ok(json!({
            "exitCode": out.exit_code,
            "stdout": out.stdout,
            "stderr": out.stderr,
            "truncated": out.truncated,
            "durationMs": out.duration_ms,
        }));
    }

    let mut output = match &spec.output {
        Some(output) => output.clone(),
        None => {
            let mut output =
                json!({ "node": t.node_id(), "iteration": t.iteration(), "attempt": t.attempt() });
            if let Some(k) = spec.done_at_iteration {
                output["done"] = json!(t.iteration() >= k);
            }
            output
        }
    };
    if let Some(nodes) = &spec.echo_outputs {
        let seen: Map<String, Value> = nodes
            .iter()
            .map(|node| (node.clone(), t.latest::<Value>(node).unwrap_or(Value::Null)))
            .collect();
        match &mut output {
            Value::Object(fields) => {
                fields.insert("seen".to_owned(), Value::Object(seen));
            }
            other => output = json!({ "output": other, "seen": seen }),
        }
    }
    if spec.echo_auth {
        let auth = t.render_ctx().auth().cloned().unwrap_or(Value::Null);
        match &mut output {
            Value::Object(fields) => {
                fields.insert("auth".to_owned(), auth);
            }
            other => output = json!({ "output": other, "auth": auth }),
        }
    }
    drop(black_box(ballast));
    Ok(output)
}

/// Appends one line to a file under the root, creating its parent directories.
pub fn append_line(spec: &AppendLineSpec, t: &TaskCtx) -> Result<(), TaskError> {
    let line = spec.line.as_deref().unwrap_or(t.node_id());
    let line = if spec.with_attempt {
        format!("{line} {}\n", t.attempt())
    } else {
        format!("{line}\n")
    };
    create_parents(&spec.path)?;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.path)?;
    file.write_all(line.as_bytes())?;
    file.flush()?;
    Ok(())
}

fn outcome(result: std::io::Result<()>) -> Value {
    match result {
        Ok(()) => json!({ "ok": true }),
        Err(err) => json!({ "ok": false, "error": err.to_string() }),
    }
}

fn create_parents(path: &str) -> std::io::Result<()> {
    match Path::new(path).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => fs::create_dir_all(parent),
        _ => Ok(()),
    }
}

fn write_creating_parents(path: &str, content: &str) -> std::io::Result<()> {
    create_parents(path)?;
    fs::write(path, content)
}

fn list_dir(path: &str) -> std::io::Result<Vec<String>> {
    let mut entries = fs::read_dir(path)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

/// `std::os::wasi::fs::symlink_path` is unstable, so this calls wasi-libc (linked by std)
/// directly.
#[cfg(target_os = "wasi")]
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    use std::ffi::{CString, c_char, c_int};

    unsafe extern "C" {
        fn symlink(target: *const c_char, link: *const c_char) -> c_int;
    }
    let invalid = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let target = CString::new(target).map_err(invalid)?;
    let link = CString::new(link).map_err(invalid)?;
    // SAFETY: both pointers are NUL-terminated strings that outlive the call, and wasi-libc's
    // `symlink` only reads them.
    match unsafe { symlink(target.as_ptr(), link.as_ptr()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(unix)]
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

/// Busy-loops forever; only an epoch interrupt (timeout, cancel) stops it.
/// Also used by `render` for a `renderSpin` node.
pub fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// `mib` MiB, every page written so that it is really there.
fn allocate(mib: usize) -> Vec<u8> {
    let mut block = vec![0u8; mib.saturating_mul(MIB)];
    for byte in block.iter_mut().step_by(4096) {
        *byte = 1;
    }
    black_box(block)
}

/// Grows until the allocator fails, which aborts (traps) the instance.
fn allocate_forever() -> ! {
    let mut blocks = Vec::new();
    loop {
        blocks.push(allocate(1));
        black_box(&blocks);
    }
}

/// Recursion the compiler cannot turn into a loop: each frame keeps a live buffer and adds to
/// the callee's result. It never reaches its base case, so the stack overflows (a trap).
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let frame = black_box([depth; 32]);
    let below = recurse(depth + 1);
    black_box(below.wrapping_add(frame[(depth % 32) as usize]))
}
