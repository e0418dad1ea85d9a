//! HTTPS on the HTTP surfaces, against the real binary, with a self-signed
//! certificate made by the test (`rcgen`): server mode answers over TLS
//! (HTTP/1.1 and HTTP/2 by ALPN) and not over plain HTTP, the `client`
//! subcommand reaches it when told to trust the certificate and refuses
//! otherwise, the gateway serves HTTPS from its config, unusable key files
//! stop the host with a message that names them without quoting them, and a
//! token served beyond loopback without TLS is warned about.

mod common;
mod http_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use http_support::{Options, Server};
use serde_json::json;

const TOKEN: &str = "tls-test-token-0123456789";

/// A self-signed certificate for `localhost` and 127.0.0.1, written as
/// `cert.pem` and `key.pem` in a temporary dir.
struct Certificate {
    dir: tempfile::TempDir,
    pem: String,
}

impl Certificate {
    fn new() -> Self {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem = made.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        Self { dir, pem }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert().display().to_string(),
            "--tls-key".into(),
            self.key().display().to_string(),
        ]
    }
}

fn tls_server(cert: &Certificate) -> Server {
    Server::with(Options {
        token: Some(TOKEN.into()),
        install: vec!["fixture-scripted".into()],
        extra_args: cert.args(),
        ca_pem: Some(cert.pem.clone().into_bytes()),
        ..Options::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_speaks_https_and_only_https() {
    let cert = Certificate::new();
    let server = tls_server(&cert);
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );

    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let run = server
        .start_run(
            "fixture-scripted.wasm",
            http_support::script(http_support::task("t", json!({}))),
        )
        .await;
    server.wait_status(&run, "finished").await;

    // HTTP/2 is offered by ALPN and works.
    let h2 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(server.url("/health")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);

    // Plain HTTP to the same port gets no answer.
    let plain = http_support::client(None)
        .get(format!("http://{}/health", server.addr))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // Nor does a client that does not trust the certificate.
    let untrusting = http_support::client(None)
        .get(server.url("/health"))
        .send()
        .await;
    assert!(untrusting.is_err(), "an untrusted certificate was accepted");
    // The server is still fine after both.
    assert_eq!(server.get("/health").await.0, 200);
}

fn client_command(server: &Server, extra: &[&str]) -> std::process::Output {
    Command::new(common::host_binary())
        .arg("client")
        .arg("--url")
        .arg(&server.base)
        .arg("--api-key")
        .arg(TOKEN)
        .args(extra)
        .env_remove("SMITHERS_CA_CERT")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_subcommand_trusts_only_what_it_is_told() {
    let cert = Certificate::new();
    let server = tls_server(&cert);
    let cert_path = cert.cert().display().to_string();

    let trusted = client_command(&server, &["--ca-cert", &cert_path, "runs", "--json"]);
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&trusted.stdout).expect("JSON runs list");

    let refused = client_command(&server, &["runs"]);
    assert!(
        !refused.status.success(),
        "an untrusted certificate was accepted"
    );

    let missing = client_command(&server, &["--ca-cert", "/nonexistent/ca.pem", "runs"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/ca.pem"));
}

/// Starts the binary with `args` and returns (exit code, stderr) once it
/// exited; panics if it starts listening instead.
fn refused(args: &[String]) -> (Option<i32>, String) {
    common::refused(
        Command::new(common::host_binary()).args(args),
        &format!("the host started with {args:?}"),
    )
}

#[test]
fn unusable_certificate_files_stop_the_host_naming_them() {
    let cert = Certificate::new();
    let dirs = tempfile::tempdir().unwrap();
    std::fs::create_dir(dirs.path().join("root")).unwrap();
    let base = |extra: Vec<String>| {
        let mut args = vec![
            "--port".to_string(),
            "0".into(),
            "--root-dir".into(),
            dirs.path().join("root").display().to_string(),
            "--state-dir".into(),
            dirs.path().join("state").display().to_string(),
        ];
        args.extend(extra);
        args
    };
    // A key file that holds something else (here: a secret-looking line).
    let bogus = dirs.path().join("bogus.pem");
    std::fs::write(&bogus, "not-a-key SECRET-CONTENT-42\n").unwrap();
    let (code, stderr) = refused(&base(vec![
        "--tls-cert".into(),
        cert.cert().display().to_string(),
        "--tls-key".into(),
        bogus.display().to_string(),
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("bogus.pem"), "{stderr}");
    assert!(
        !stderr.contains("SECRET-CONTENT-42"),
        "the file was quoted: {stderr}"
    );

    // A key that is not the certificate's.
    let other = Certificate::new();
    let (_, stderr) = refused(&base(vec![
        "--tls-cert".into(),
        cert.cert().display().to_string(),
        "--tls-key".into(),
        other.key().display().to_string(),
    ]));
    assert!(stderr.contains("TLS certificate"), "{stderr}");

    // One without the other.
    let (code, stderr) = refused(&base(vec![
        "--tls-cert".into(),
        cert.cert().display().to_string(),
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_served_beyond_loopback_without_tls_is_warned_about() {
    let server = Server::with(Options {
        token: Some(TOKEN.into()),
        extra_args: vec!["--host".into(), "0.0.0.0".into()],
        ..Options::default()
    });
    assert!(
        server.log().contains("without TLS"),
        "no warning:\n{}",
        server.log()
    );
    let cert = Certificate::new();
    let mut args = vec!["--host".to_string(), "0.0.0.0".into()];
    args.extend(cert.args());
    let quiet = Server::with(Options {
        token: Some(TOKEN.into()),
        extra_args: args,
        ca_pem: Some(cert.pem.clone().into_bytes()),
        ..Options::default()
    });
    assert!(!quiet.log().contains("without TLS"), "{}", quiet.log());
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_serves_https_from_its_config() {
    let cert = Certificate::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let config = format!(
        "[listen]\nport = 0\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.cert().display().to_string(),
        cert.key().display().to_string()
    );
    let config = write(dir.path(), "gateway.toml", &config);
    let mut child = Command::new(common::host_binary())
        .arg("gateway")
        .arg("--config")
        .arg(&config)
        .arg("--root-dir")
        .arg(&root)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = common::wait_for_line(&mut child, "smithers-host gateway listening on ");
    let url = url.expect("the gateway did not start");
    assert!(url.starts_with("https://"), "{url}");
    let client = http_support::client(Some(cert.pem.as_bytes()));
    let health = client.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}
