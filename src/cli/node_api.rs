//! The CLI's side of the REST API: the subcommands that ask a running `codex run`
//! (`codex queue show`, `codex sale`, `codex status`) find it on `--api-bindaddr` and
//! `--api-port`, the same keys (and environment variables and config-file keys) that
//! `codex run` listens on.
use std::time::Duration;

use serde_json::Value;

use super::{CliError, Context};
use crate::api::rest::BASE;

/// The address of the node's REST API, from `--api-bindaddr`/`--api-port` (or their
/// environment variables and config-file keys); an unspecified bind address (0.0.0.0,
/// ::) is asked on loopback.
pub fn api_base(
    ctx: &Context,
    bindaddr: Option<&str>,
    port: Option<&str>,
) -> Result<String, CliError> {
    let sources = &ctx.config.sources;
    let ip = sources.parse(
        "api-bindaddr",
        bindaddr,
        || std::net::IpAddr::from([127, 0, 0, 1]),
        super::run::ip_arg,
    )?;
    let ip = if ip.is_unspecified() {
        if ip.is_ipv4() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        }
    } else {
        ip
    };
    let port = sources.parse("api-port", port, || 8080, ask_port)?;
    Ok(format!(
        "http://{}{BASE}",
        std::net::SocketAddr::new(ip, port)
    ))
}

/// A port to ask: `codex run --api-port 0` picks a free port, but a client must name the one
/// the node logged.
fn ask_port(v: &str) -> Result<u16, String> {
    match super::run::port_arg(v)? {
        0 => Err(
            "port 0 is not a node's port: give the one `codex run` logged (REST API on …)".into(),
        ),
        p => Ok(p),
    }
}

/// A JSON value as a table cell: strings without quotes, null as `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// GETs `path` (below the API's base) and parses the JSON answer.
pub fn get(base: &str, path: &str) -> Result<Value, CliError> {
    let url = format!("{base}{path}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(&url).call().map_err(|e| CliError::NodeDown {
        url: base.to_string(),
        reason: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| CliError::NodeDown {
            url: base.to_string(),
            reason: format!("reading the answer: {e}"),
        })?;
    // Every answer of codex's HTTP server names it (`Server: codex/…`).
    let codex = resp
        .headers()
        .get("server")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("codex/"));
    if !codex {
        return Err(CliError::NodeDown {
            url: base.to_string(),
            reason: format!("the server there answered {status} and is not a codex node"),
        });
    }
    if status != 200 {
        return Err(CliError::NodeAnswer {
            url,
            status,
            body: body.trim().to_string(),
        });
    }
    serde_json::from_str(&body).map_err(|e| CliError::NodeAnswer {
        url,
        status,
        body: format!("not JSON ({e})"),
    })
}
