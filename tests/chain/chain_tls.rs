//! `wss://` for real: codex against anvil behind a TLS-terminating proxy whose certificate
//! is self-signed (made by rcgen here), trusted with `--eth-ca-file` or not at all.
use crate::support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::codex::{codex, run, Running};
use support::devchain::{request_storage, Devchain};
use support::tls::{TestCert, TlsProxy};

const T: Duration = Duration::from_secs(60);

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn request_ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["event"], "StorageRequested", "{l}");
            v["requestId"].as_str().unwrap().to_string()
        })
        .collect()
}

fn events(dir: &Path, url: &str, ca: Option<&Path>) -> Output {
    let mut c = codex(dir);
    c.args(["--eth-provider", url, "--eth-timeout", "10s"]);
    if let Some(ca) = ca {
        c.arg("--eth-ca-file").arg(ca);
    }
    c.args(["events", "--from-block", "0"]);
    run(c)
}

#[test]
fn wss_with_a_trusted_self_signed_certificate() {
    let chain = Devchain::start(&[]);
    let mut rpc = chain.rpc();
    let mut ids = vec![request_storage(&mut rpc, &chain, 1, 1).to_string()];
    let cert = TestCert::self_signed(&["127.0.0.1", "localhost"]);
    let proxy = TlsProxy::start(([127, 0, 0, 1], chain.anvil.port).into(), &cert);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    cert.write_pem(&ca);

    // One-shot, with the option.
    let out = events(dir.path(), &proxy.wss_url(), Some(&ca));
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(request_ids(&lines), ids);

    // The same from the environment.
    let mut c = codex(dir.path());
    c.env("CODEX_ETH_CA_FILE", &ca)
        .args(["--eth-provider", &proxy.wss_url(), "events"]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);

    // Following over TLS: the backfill, then a live event, then SIGTERM.
    let mut c = codex(dir.path());
    c.args(["--eth-provider", &proxy.wss_url()])
        .arg("--eth-ca-file")
        .arg(&ca)
        .args(["events", "--follow", "--from-block", "0"]);
    let mut follow = Running::spawn(c);
    follow.wait_lines(1, T);
    ids.push(request_storage(&mut rpc, &chain, 1, 2).to_string());
    follow.wait_lines(2, T);
    follow.signal("TERM");
    let status = follow.finish(T);
    assert_eq!(status.code(), Some(0));
    assert_eq!(request_ids(&follow.seen), ids);
    assert!(proxy.errors().is_empty(), "{:?}", proxy.errors());
}

#[test]
fn wss_refuses_an_untrusted_certificate() {
    let chain = Devchain::start(&[]);
    let cert = TestCert::self_signed(&["127.0.0.1", "localhost"]);
    let proxy = TlsProxy::start(([127, 0, 0, 1], chain.anvil.port).into(), &cert);
    let dir = tempfile::tempdir().unwrap();

    // No --eth-ca-file: the Mozilla roots do not know this certificate.
    let out = events(dir.path(), &proxy.wss_url(), None);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&proxy.wss_url()) && err.contains("TLS") && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert!(err.contains("--eth-ca-file"), "{err}");

    // A trusted certificate, but not for this address.
    let other = TestCert::self_signed(&["node.example.org"]);
    let proxy2 = TlsProxy::start(([127, 0, 0, 1], chain.anvil.port).into(), &other);
    let ca = dir.path().join("other.pem");
    other.write_pem(&ca);
    let out = events(dir.path(), &proxy2.wss_url(), Some(&ca));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("TLS") && err.contains("not valid for name \"127.0.0.1\""),
        "{err}"
    );
}

#[test]
fn bad_ca_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::self_signed(&["127.0.0.1"]);
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not-pem.txt");
    std::fs::write(&not_pem, "just some text\n").unwrap();
    let bad_base64 = dir.path().join("bad-base64.pem");
    std::fs::write(
        &bad_base64,
        "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let unterminated = dir.path().join("unterminated.pem");
    let pem = cert.pem.replace("-----END CERTIFICATE-----", "");
    std::fs::write(&unterminated, pem).unwrap();
    let bad_der = dir.path().join("bad-der.pem");
    std::fs::write(
        &bad_der,
        format!(
            "{}-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
            cert.pem
        ),
    )
    .unwrap();
    let cases = [
        (&missing, "cannot read it"),
        (&not_pem, "no PEM certificate"),
        (&bad_base64, "not a valid PEM file"),
        (&unterminated, "not a valid PEM file"),
        (&bad_der, "certificate 2 in it is not usable"),
    ];
    for (file, why) in cases {
        // The provider is never contacted: the port is closed, yet this is a usage error.
        let out = events(dir.path(), "wss://127.0.0.1:9", Some(file));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", file.display());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("--eth-ca-file")
                && err.contains(file.to_str().unwrap())
                && err.contains(why),
            "{}: {err}",
            file.display()
        );
    }
}
