//! API fuzzing: proptest throws malformed requests at every route of the real
//! `smithers-host` binary over raw TCP (so nothing is sanitised on the way):
//! wrong methods, odd path segments (percent-encoded `/`, `..`, invalid
//! UTF-8, over-long ids), garbage query values, broken and hostile headers
//! (bad tokens, foreign Hosts, obs-text bytes, hundreds of headers), bodies
//! that are random JSON, field-aware JSON with every type in every field,
//! deeply nested, over the size limit, invalid UTF-8, truncated or random
//! bytes, with honest, short, long or chunked (even broken) framing, sent at
//! once, slowly, or cut off.
//!
//! The properties, checked on every answer:
//! - never a 5xx;
//! - every answer the application produced (it carries `x-content-type-options`)
//!   is a 200 or a 4xx whose body is the `{"error":{"code","message"}}` envelope
//!   with a code of `ErrorCode` answered with that code's status;
//! - only requests that are not HTTP at all (garbage request lines, header
//!   injection, oversize heads) may get hyper's bare protocol error instead;
//! - a connection closes without an answer only when the client cut its
//!   request short or sent garbage;
//! - after the campaign the server is alive and its log has no panic and no
//!   internal error.
//!
//! `RELIABILITY_FUZZ_CASES` sets the number of cases (default 2 000, the CI
//! short form); `RELIABILITY_SEED` replays a campaign. The figures are printed.

mod common;
mod http_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Value, json};
use smithers_host::http::openapi::{ERROR_CODES, OPERATIONS};

use http_support::{Options, Server, script, task};

const TOKEN: &str = "fuzz-token";
/// A small body limit keeps over-limit cases cheap; the default limit is
/// exercised by `http_api.rs`.
const MAX_BODY: usize = 64 * 1024;
/// Replaced by the server's address in header values.
const ADDR: &[u8] = b"{addr}";

#[derive(Debug, Clone)]
enum Framing {
    /// `Content-Length` equal to the body.
    Length,
    /// `Content-Length` smaller than the body (the rest is trailing garbage).
    Short(usize),
    /// `Content-Length` larger than the body; the client then half-closes.
    Long(usize),
    /// Chunked, in chunks of this size.
    Chunked(usize),
    /// Chunked with a broken chunk size line.
    ChunkedBroken,
    /// No framing header (the body becomes a second, garbage request).
    None,
}

#[derive(Debug, Clone)]
enum Delivery {
    Whole,
    /// In `pieces` writes with a pause between them.
    Slow {
        pieces: usize,
        pause_ms: u64,
    },
    /// The first half, then the client closes its sending side.
    Cut,
}

#[derive(Clone)]
struct Case {
    /// 0: the server with a token; 1: the one without (Host/Origin gate).
    server: usize,
    method: String,
    target: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    framing: Framing,
    delivery: Delivery,
    /// Not HTTP/1.1 at all: hyper may answer a bare 4xx or close.
    garbage: bool,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let wire = self.bytes("ADDR");
        let shown = wire.escape_ascii().to_string();
        let shown = if shown.len() > 1500 {
            format!("{}…({} bytes)", &shown[..1500], wire.len())
        } else {
            shown
        };
        write!(
            f,
            "Case {{ server: {}, garbage: {}, framing: {:?}, delivery: {:?}, wire: \"{shown}\" }}",
            self.server, self.garbage, self.framing, self.delivery
        )
    }
}

impl Case {
    fn bytes(&self, addr: &str) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(&replace(value, ADDR, addr.as_bytes()));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Connection: close\r\n");
        match &self.framing {
            Framing::Length => header_line(&mut out, "Content-Length", self.body.len()),
            Framing::Short(by) => header_line(
                &mut out,
                "Content-Length",
                self.body.len().saturating_sub(*by),
            ),
            Framing::Long(by) => header_line(&mut out, "Content-Length", self.body.len() + by),
            Framing::Chunked(_) | Framing::ChunkedBroken => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n")
            }
            Framing::None => {}
        }
        out.extend_from_slice(b"\r\n");
        match &self.framing {
            Framing::Chunked(size) => {
                for chunk in self.body.chunks((*size).max(1)) {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            Framing::ChunkedBroken => {
                out.extend_from_slice(b"zz; not-hex\r\n");
                out.extend_from_slice(&self.body);
            }
            _ => out.extend_from_slice(&self.body),
        }
        out
    }

    /// The client itself cut the request short.
    fn cut_short(&self) -> bool {
        matches!(self.delivery, Delivery::Cut) || matches!(self.framing, Framing::Long(_))
    }
}

fn header_line(out: &mut Vec<u8>, name: &str, value: usize) {
    out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fn percent_encode(raw: &[u8]) -> String {
    raw.iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- strategies ----

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["fz-approval", "fz-done", "fz-signal", "no-such-run", "gate", "go"])
            .prop_map(str::to_string),
        2 => "[a-zA-Z0-9._~-]{1,24}",
        1 => prop::sample::select(vec!["%2F", "%2e%2e", "..", ".", "%ff%fe", "%00", "%", "%zz", "%C0%AF", "a%20b", "%E2%80%AE"])
            .prop_map(str::to_string),
        1 => "[a-z]{257,400}",
        1 => prop::collection::vec(any::<u8>(), 1..16).prop_map(|b| percent_encode(&b)),
        1 => ".{1,12}".prop_map(|s: String| percent_encode(s.as_bytes())),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(vec!["limit", "afterSeq", "afterFrameNo", "status", "workflow"])
            .prop_map(str::to_string),
        1 => "[a-zA-Z%]{1,8}",
    ];
    let value = prop_oneof![
        3 => prop::sample::select(vec![
            "", "1", "-1", "0", "1.7", "abc", "Infinity", "-Infinity", "NaN", "1e400", "1e-400",
            "%ff", "99999999999999999999", " 5 ", "0x10", "%2B1", "running", "finished", "null",
        ])
        .prop_map(str::to_string),
        1 => "[ -~]{0,12}".prop_map(|s: String| percent_encode(s.as_bytes())),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(|b| percent_encode(&b)),
    ];
    prop::collection::vec((key, value), 0..4).prop_map(|pairs| {
        if pairs.is_empty() {
            return String::new();
        }
        let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("?{}", joined.join("&"))
    })
}

/// `(method, target, garbage)`.
fn request_line() -> impl Strategy<Value = (String, Vec<u8>, bool)> {
    let documented = (
        prop::sample::select(OPERATIONS.to_vec()),
        segment(),
        segment(),
        query(),
        prop_oneof![9 => Just(None), 1 => prop::sample::select(vec!["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT"]).prop_map(Some)],
    )
        .prop_map(|(operation, a, b, query, other_method)| {
            let path = operation
                .path
                .replace("{runId}", &a)
                .replace("{nodeId}", &b)
                .replace("{name}", &b);
            let method = other_method.unwrap_or(operation.method).to_uppercase();
            (method, format!("{path}{query}").into_bytes(), false)
        });
    let random_path = (
        prop::collection::vec(segment(), 0..6),
        query(),
        prop::sample::select(vec!["GET", "POST"]),
    )
        .prop_map(|(segments, query, method)| {
            (
                method.to_string(),
                format!("/{}{query}", segments.join("/")).into_bytes(),
                false,
            )
        });
    let garbage = prop_oneof![
        (
            prop::collection::vec(any::<u8>(), 1..40),
            prop::sample::select(vec!["GET", "POST", "G\u{0}T", "", "POST POST"])
        )
            .prop_map(|(target, method)| (method.to_string(), target, true)),
        Just((
            "GET".to_string(),
            b"http://evil.com/v1/runs".to_vec(),
            false
        )),
        Just(("GET".to_string(), b"*".to_vec(), true)),
        Just(("GET".to_string(), vec![b'/'; 70_000], true)),
        Just((
            "GET".to_string(),
            b"/v1/runs HTTP/1.1\r\nX: y".to_vec(),
            true
        )),
    ];
    prop_oneof![8 => documented, 1 => random_path, 1 => garbage]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[ -~]{0,40}".prop_map(String::into_bytes),
        1 => prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff], 0..40),
    ]
}

/// A raw header: name and value bytes.
type Header = (Vec<u8>, Vec<u8>);

/// Headers and whether they make the request garbage.
fn headers(server: usize) -> impl Strategy<Value = (Vec<Header>, bool)> {
    let host: BoxedStrategy<Option<Vec<u8>>> = if server == 1 {
        prop_oneof![
            8 => Just(Some(ADDR.to_vec())),
            1 => prop::sample::select(vec!["evil.com", "localhost", "[::1]:1", "127.0.0.1.evil.com", "", "foo.localhost"])
                .prop_map(|h| Some(h.as_bytes().to_vec())),
            1 => header_value().prop_map(Some),
            1 => Just(None),
        ]
        .boxed()
    } else {
        prop_oneof![9 => Just(Some(ADDR.to_vec())), 1 => header_value().prop_map(Some)].boxed()
    };
    let auth: BoxedStrategy<Option<(Vec<u8>, Vec<u8>)>> = if server == 0 {
        prop_oneof![
            12 => Just(Some((b"Authorization".to_vec(), format!("Bearer {TOKEN}").into_bytes()))),
            2 => Just(Some((b"x-smithers-key".to_vec(), TOKEN.as_bytes().to_vec()))),
            1 => Just(None),
            1 => header_value().prop_map(|v| Some((b"Authorization".to_vec(), v))),
            1 => Just(Some((b"Authorization".to_vec(), b"Bearer fuzz-tokeN".to_vec()))),
        ]
        .boxed()
    } else {
        Just(None).boxed()
    };
    let named = prop::sample::select(vec![
        "Origin",
        "Content-Type",
        "Last-Event-ID",
        "Accept",
        "Expect",
        "Upgrade",
        "Content-Encoding",
        "Cookie",
        "X-Forwarded-Host",
    ]);
    let extra = prop::collection::vec(
        prop_oneof![
            3 => (named, header_value()).prop_map(|(n, v)| (n.as_bytes().to_vec(), v)),
            1 => ("[a-zA-Z0-9-]{1,20}", header_value()).prop_map(|(n, v)| (n.into_bytes(), v)),
        ],
        0..4,
    );
    let hostile = prop_oneof![
        50 => Just((vec![], false)),
        1 => Just((vec![(b"X-Big".to_vec(), vec![b'a'; 500_000])], true)),
        1 => Just(((0..200).map(|i| (format!("X-H{i}").into_bytes(), b"v".to_vec())).collect(), true)),
        1 => Just((vec![(b"X-Inject".to_vec(), b"a\rb".to_vec())], true)),
        1 => Just((vec![(b"Bad Name".to_vec(), b"v".to_vec())], true)),
        1 => Just((vec![(b"X-Nul".to_vec(), b"a\0b".to_vec())], true)),
    ];
    (host, auth, extra, hostile).prop_map(|(host, auth, extra, (hostile, garbage))| {
        let mut headers = Vec::new();
        if let Some(host) = host {
            headers.push((b"Host".to_vec(), host));
        }
        headers.extend(auth);
        headers.extend(extra);
        headers.extend(hostile);
        (headers, garbage)
    })
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,20}".prop_map(Value::from),
        prop::sample::select(vec![
            "fixture-scripted.wasm",
            "broken.wasm",
            "dir",
            "../x",
            "/etc/passwd",
            "",
            ".",
            "fz-approval",
            "gate"
        ])
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects with the fields the handlers read, each of any type.
fn field_aware() -> impl Strategy<Value = Value> {
    let fields = vec![
        "workflowPath",
        "input",
        "runId",
        "resume",
        "config",
        "iteration",
        "note",
        "decidedBy",
        "data",
        "correlationId",
        "receivedBy",
    ];
    let value = prop_oneof![
        3 => json_value(),
        1 => json_value().prop_map(|v| json!({ "maxConcurrency": v })),
        1 => prop::sample::select(vec![
            json!({ "root": { "task": { "id": "t" } } }),
            json!({ "root": { "approval": { "id": "gate" } } }),
            json!(0), json!(-1), json!(1.5), json!(4294967296u64), json!("0"), json!(true),
        ]),
    ];
    prop::collection::btree_map(prop::sample::select(fields), value, 0..6)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

/// Starts of the scripted fixture with any input and run id.
fn start_like() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["fixture-scripted.wasm", "broken.wasm", "dir", "missing.wasm"]),
        prop_oneof![json_value(), Just(json!({ "root": { "task": { "id": "t" } } }))],
        prop_oneof![Just(Value::Null), "[a-z0-9-]{1,8}".prop_map(Value::from), json_leaf()],
        any::<bool>(),
    )
        .prop_map(|(path, input, run_id, resume)| {
            json!({ "workflowPath": path, "input": input, "runId": run_id, "resume": resume })
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => start_like().prop_map(|v| v.to_string().into_bytes()),
        4 => field_aware().prop_map(|v| v.to_string().into_bytes()),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => (1usize..2000, any::<bool>(), any::<bool>()).prop_map(|(depth, object, closed)| {
            let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
            let mut s = open.repeat(depth);
            s.push('1');
            if closed {
                s.push_str(&close.repeat(depth));
            }
            s.into_bytes()
        }),
        1 => (MAX_BODY - 64..MAX_BODY * 2).prop_map(|size| {
            let mut s = String::from("{\"workflowPath\":\"");
            s.push_str(&"x".repeat(size.saturating_sub(20)));
            s.push_str("\"}");
            s.into_bytes()
        }),
        1 => prop::collection::vec(any::<u8>(), 1..8).prop_map(|bad| {
            let mut s = b"{\"workflowPath\":\"".to_vec();
            s.extend(bad.iter().map(|b| b | 0x80));
            s.extend_from_slice(b"\",\"note\":\"\xff\xfe\"}");
            s
        }),
        1 => prop::collection::vec(any::<u8>(), 0..300),
        1 => (field_aware(), 0usize..40).prop_map(|(v, cut)| {
            let mut s = v.to_string().into_bytes();
            s.truncate(s.len().saturating_sub(cut + 1));
            s
        }),
        2 => Just(Vec::new()),
    ]
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        10 => Just(Framing::Length),
        1 => (1usize..20).prop_map(Framing::Short),
        1 => (1usize..100).prop_map(Framing::Long),
        2 => (1usize..64).prop_map(Framing::Chunked),
        1 => Just(Framing::ChunkedBroken),
        1 => Just(Framing::None),
    ]
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![
        16 => Just(Delivery::Whole),
        1 => (2usize..6, 1u64..25).prop_map(|(pieces, pause_ms)| Delivery::Slow { pieces, pause_ms }),
        1 => Just(Delivery::Cut),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (0usize..2).prop_flat_map(|server| {
        (
            request_line(),
            headers(server),
            body(),
            framing(),
            delivery(),
        )
            .prop_map(
                move |(
                    (method, target, bad_line),
                    (headers, bad_headers),
                    body,
                    framing,
                    delivery,
                )| {
                    let garbage = bad_line
                        || bad_headers
                        || method.is_empty()
                        || method.contains(['\0', ' '])
                        || target.iter().any(|b| !b.is_ascii_graphic())
                        || headers
                            .iter()
                            .any(|(_, v)| v.iter().any(|&b| b < 0x20 && b != b'\t'));
                    Case {
                        server,
                        method,
                        target,
                        headers,
                        body,
                        framing,
                        delivery,
                        garbage,
                    }
                },
            )
    })
}

// ---- the wire ----

#[derive(Debug)]
enum Outcome {
    Answer {
        status: u16,
        headers: BTreeMap<String, String>,
        body: Vec<u8>,
    },
    /// The connection closed (or reset) before a complete head arrived.
    Closed,
    /// Nothing within the read timeout.
    Silent,
}

fn exchange(addr: &str, request: Vec<u8>, delivery: &Delivery, half_close: bool) -> Outcome {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let delivery = delivery.clone();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        match delivery {
            Delivery::Whole => {
                writer.write_all(&request)?;
                if half_close {
                    writer.shutdown(Shutdown::Write)?;
                }
            }
            Delivery::Slow { pieces, pause_ms } => {
                let size = request.len().div_ceil(pieces).max(1);
                for piece in request.chunks(size) {
                    writer.write_all(piece)?;
                    std::thread::sleep(Duration::from_millis(pause_ms));
                }
                if half_close {
                    writer.shutdown(Shutdown::Write)?;
                }
            }
            Delivery::Cut => {
                writer.write_all(&request[..request.len() / 2])?;
                writer.shutdown(Shutdown::Write)?;
            }
        }
        Ok(())
    });
    let outcome = read_answer(stream);
    let _ = sender.join();
    outcome
}

fn read_answer(mut stream: TcpStream) -> Outcome {
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(pos) = find(&raw, b"\r\n\r\n") {
            break pos;
        }
        match stream.read(&mut buf) {
            Ok(0) => return Outcome::Closed,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                let _ = started;
                return Outcome::Silent;
            }
            Err(_) => return Outcome::Closed,
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[head_end + 4..].to_vec();
    let streaming = headers
        .get("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if !streaming {
        // Connection: close — the body ends with the connection.
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
            }
        }
        if headers
            .get("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            body = dechunk(&body);
        }
    }
    Outcome::Answer {
        status,
        headers,
        body,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(body, b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else { break };
        let rest = &body[line_end + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
    out
}

// ---- the properties ----

/// What the campaign saw, for the figures.
#[derive(Default)]
struct Figures {
    requests: usize,
    by_answer: BTreeMap<String, usize>,
}

fn classify(case: &Case, outcome: &Outcome) -> Result<String, String> {
    match outcome {
        Outcome::Silent => Err("no answer within 10 s".into()),
        Outcome::Closed => {
            if case.garbage || case.cut_short() || case.body.len() > MAX_BODY {
                Ok("closed without an answer".into())
            } else {
                Err("the connection closed without an answer".into())
            }
        }
        Outcome::Answer {
            status,
            headers,
            body,
        } => {
            if *status >= 500 || *status == 0 {
                return Err(format!(
                    "status {status}: {}",
                    String::from_utf8_lossy(body)
                ));
            }
            if !headers.contains_key("x-content-type-options") {
                // hyper's own answer to something that is not HTTP.
                return if case.garbage && [400, 408, 413, 414, 431].contains(status) {
                    Ok(format!("{status} (protocol)"))
                } else {
                    Err(format!(
                        "a bare {status} for a request that is HTTP: {}",
                        String::from_utf8_lossy(body)
                    ))
                };
            }
            match status {
                200 => Ok("200".into()),
                // A HEAD answer has the GET answer's head and no body.
                400..=499 if case.method == "HEAD" => {
                    if headers.get("content-type").map(String::as_str) == Some("application/json") {
                        Ok(format!("{status} (HEAD)"))
                    } else {
                        Err(format!(
                            "HEAD answered {status} without the JSON content type"
                        ))
                    }
                }
                400..=499 => {
                    let envelope: Value = serde_json::from_slice(body).map_err(|_| {
                        format!(
                            "{status} without a JSON envelope: {}",
                            String::from_utf8_lossy(body)
                        )
                    })?;
                    let code = envelope["error"]["code"]
                        .as_str()
                        .ok_or_else(|| format!("{status} without error.code: {envelope}"))?;
                    if !envelope["error"]["message"].is_string() {
                        return Err(format!("{status} without error.message: {envelope}"));
                    }
                    let known = ERROR_CODES
                        .iter()
                        .find(|c| c.as_str() == code)
                        .ok_or_else(|| format!("undocumented code {code}"))?;
                    if known.status().as_u16() != *status {
                        return Err(format!(
                            "{code} answered with {status}, documented {}",
                            known.status()
                        ));
                    }
                    Ok(format!("{status} {code}"))
                }
                other => Err(format!("unexpected status {other}")),
            }
        }
    }
}

fn cases_from_env() -> u32 {
    std::env::var("RELIABILITY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn seed_from_env() -> u64 {
    std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn start_server(token: Option<&str>) -> Server {
    let server = Server::with(Options {
        token: token.map(str::to_string),
        max_body_bytes: Some(MAX_BODY),
        install: vec!["fixture-scripted".into()],
        ..Default::default()
    });
    std::fs::write(server.root.path().join("broken.wasm"), b"\0asm not really").unwrap();
    std::fs::create_dir(server.root.path().join("dir")).unwrap();
    server
}

/// Runs for the run-scoped routes to act on: one parked on an approval, one
/// finished, one waiting for a signal.
fn seed_runs(server: &Server, token: Option<&str>) {
    let scripted = "fixture-scripted.wasm";
    let runs = [
        (
            "fz-approval",
            script(json!({ "approval": { "id": "gate" } })),
        ),
        ("fz-done", script(task("a", json!({})))),
        (
            "fz-signal",
            script(json!({ "signal": { "id": "w", "name": "go" } })),
        ),
    ];
    for (id, input) in runs {
        let body = json!({ "workflowPath": scripted, "runId": id, "input": input }).to_string();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!(
            "POST /v1/runs HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            server.addr,
            body.len()
        );
        match exchange(&server.addr, request.into_bytes(), &Delivery::Whole, false) {
            Outcome::Answer { status: 200, .. } => {}
            other => panic!("seeding {id}: {other:?}\n{}", server.log()),
        }
    }
}

fn assert_healthy(server: &Server) {
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr
    );
    match exchange(&server.addr, request.into_bytes(), &Delivery::Whole, false) {
        Outcome::Answer { status: 200, .. } => {}
        other => panic!("server unhealthy after the campaign: {other:?}"),
    }
    let log = server.log();
    for sign in ["panicked", "internal error", "SERVER_ERROR"] {
        assert!(!log.contains(sign), "server log shows {sign:?}:\n{log}");
    }
}

#[test]
fn malformed_requests_never_get_a_5xx_and_every_error_is_a_documented_envelope() {
    let servers = [start_server(Some(TOKEN)), start_server(None)];
    seed_runs(&servers[0], Some(TOKEN));
    seed_runs(&servers[1], None);
    let cases = cases_from_env();
    let seed = seed_from_env();
    println!("fuzz: {cases} cases, RELIABILITY_SEED={seed}");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        max_shrink_time: 60_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let figures = Mutex::new(Figures::default());
    let started = Instant::now();
    let result = runner.run(&case(), |case| {
        let server = &servers[case.server];
        let half_close = matches!(case.framing, Framing::Long(_));
        let outcome = exchange(
            &server.addr,
            case.bytes(&server.addr),
            &case.delivery,
            half_close,
        );
        let answer = classify(&case, &outcome).map_err(TestCaseError::fail)?;
        let mut figures = figures.lock().unwrap();
        figures.requests += 1;
        *figures.by_answer.entry(answer).or_default() += 1;
        Ok(())
    });
    let figures = figures.into_inner().unwrap();
    println!(
        "fuzz: {} requests in {:.1} s; answers:",
        figures.requests,
        started.elapsed().as_secs_f64()
    );
    for (answer, count) in &figures.by_answer {
        println!("  {count:>6}  {answer}");
    }
    let server_errors: usize = figures
        .by_answer
        .iter()
        .filter(|(a, _)| a.starts_with('5'))
        .map(|(_, n)| n)
        .sum();
    println!("fuzz: 5xx answers: {server_errors}");
    if let Err(e) = result {
        panic!(
            "{e}\nRELIABILITY_SEED={seed}\nlogs:\n{}\n{}",
            servers[0].log(),
            servers[1].log()
        );
    }
    assert!(figures.requests >= cases as usize);
    for server in &servers {
        assert_healthy(server);
    }
}

// ---- defects the fuzzers found, pinned ----

/// Found by this campaign: axum's own plain-text rejection leaked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_segment_that_is_not_utf8_is_an_invalid_request_envelope() {
    let server = Server::start();
    for path in [
        "/v1/runs/%80",
        "/v1/runs/%ff%fe/cancel",
        "/v1/runs/x/nodes/%C0%AF/approve",
    ] {
        let method = if path.ends_with("/v1/runs/%80") {
            "GET"
        } else {
            "POST"
        };
        let response = server
            .raw(&format!("{method} {path} HTTP/1.1\r\nHost: localhost"), b"")
            .await;
        assert_eq!(response.status, 400, "{path}: {}", response.body);
        assert_eq!(
            response.json()["error"]["code"],
            "INVALID_REQUEST",
            "{path}"
        );
    }
}

/// Found by schemathesis: an empty `Last-Event-ID` was read as 0 and
/// skipped event 0; a malformed `afterSeq` was ignored when the header won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_resume_points_must_be_numbers() {
    let server = Server::with(Options {
        install: vec!["fixture-scripted".into()],
        ..Default::default()
    });
    let run = server
        .start_run("fixture-scripted.wasm", script(task("a", json!({}))))
        .await;
    server.wait_status(&run, "finished").await;
    let events = format!("/v1/runs/{run}/events");
    for (query, header) in [
        ("", "Last-Event-ID: "),
        ("?afterSeq=abc", "Last-Event-ID: 2"),
    ] {
        let response = server
            .raw(
                &format!("GET {events}{query} HTTP/1.1\r\nHost: localhost\r\n{header}"),
                b"",
            )
            .await;
        assert_eq!(response.status, 400, "{query} {header}: {}", response.body);
        assert_eq!(response.json()["error"]["code"], "INVALID_REQUEST");
    }
    // A well-formed header still wins over afterSeq.
    let mut sse = server
        .sse(&format!("{events}?afterSeq=0"), &[("last-event-id", "1")])
        .await;
    let first = sse.next_event().await.unwrap();
    assert_eq!(first.seq(), 2);
}
