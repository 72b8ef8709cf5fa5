//! `codex status`: one screen for the whole host, asked of the running node. The exit code
//! tells healthy (0) from unhealthy (5) and from not running (4), so it serves as a health
//! check.
use std::io::Write;

use argh::FromArgs;

use super::node_api::{self, text as s};
use super::{CliError, Context, Run};

/// Show the host's state: chain, marketplace, balances, availabilities, queue, sales,
/// proofs, the validator and earnings; exits 0 when healthy, 5 when not, 4 when no node answers.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
pub struct StatusArgs {
    /// address of the node's REST API (default 127.0.0.1; env CODEX_API_BINDADDR)
    #[argh(option, arg_name = "IP")]
    pub api_bindaddr: Option<String>,
    /// port of the node's REST API (default 8080; env CODEX_API_PORT)
    #[argh(option, arg_name = "PORT")]
    pub api_port: Option<String>,
    /// print one JSON object
    #[argh(switch)]
    pub json: bool,
}

impl Run for StatusArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let base = node_api::api_base(ctx, self.api_bindaddr.as_deref(), self.api_port.as_deref())?;
        let st = node_api::get(&base, "/sales/status")?;
        let out = ctx.out();
        if self.json {
            writeln!(out, "{st}")?;
        } else {
            let c = &st["chain"];
            let m = &st["marketplace"];
            let h = &st["host"];
            let a = &st["availabilities"];
            let q = &st["queue"];
            let p = &st["proofs"];
            let e = &st["earnings"];
            let health = if st["healthy"] == true {
                "healthy"
            } else {
                "NOT HEALTHY"
            };
            writeln!(out, "node:           {health}")?;
            writeln!(
                out,
                "chain:          {} (chain id {}), head {}, last block {} s ago, {}, {} reconnects",
                s(&c["provider"]),
                s(&c["chainId"]),
                s(&c["head"]),
                s(&c["secondsSinceLastBlock"]),
                if c["connected"] == true {
                    format!("connected since {}", s(&c["connectedSince"]))
                } else {
                    "disconnected".into()
                },
                s(&c["reconnects"])
            )?;
            writeln!(
                out,
                "marketplace:    {} (token {}), period {} s, timeout {} s, downtime {}, repair reward {}%",
                s(&m["address"]),
                s(&m["token"]),
                s(&m["period"]),
                s(&m["timeout"]),
                s(&m["downtime"]),
                s(&m["repairRewardPercentage"])
            )?;
            writeln!(
                out,
                "host:           {}, {} wei, {} tokens{}",
                s(&h["address"]),
                s(&h["ethBalance"]),
                s(&h["tokenBalance"]),
                if h["selling"] == false {
                    "; sells nothing (no --data-source)"
                } else {
                    ""
                }
            )?;
            writeln!(
                out,
                "availabilities: {} bytes offered, {} free, {} committed; collateral {} ({} held)",
                s(&a["offered"]),
                s(&a["free"]),
                s(&a["committed"]),
                s(&a["collateral"]),
                s(&a["collateralHeld"])
            )?;
            writeln!(
                out,
                "queue:          {} of {}{}; workers {} busy, {} free",
                s(&q["length"]),
                s(&q["capacity"]),
                if q["paused"] == true {
                    format!(", paused ({})", s(&q["pausedBecause"]))
                } else {
                    String::new()
                },
                s(&q["workersBusy"]),
                s(&q["workersFree"])
            )?;
            let sales = st["sales"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| format!("{k} {}", s(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "none".into());
            writeln!(out, "sales:          {sales}")?;
            writeln!(
                out,
                "proofs:         {} submitted, {} failed, {} missed",
                s(&p["submitted"]),
                s(&p["failed"]),
                s(&p["missed"])
            )?;
            let v = &st["validator"];
            if v.is_object() {
                writeln!(
                    out,
                    "validator:      watching {} slots ({}, at most {}), {} proofs marked missing, {} tokens of rewards",
                    s(&v["watching"]),
                    match v["groups"].as_u64() {
                        Some(n) => format!("group {} of {n}", s(&v["groupIndex"])),
                        None => "every slot".into(),
                    },
                    match v["maxSlots"].as_u64() {
                        Some(0) => "no limit".into(),
                        _ => s(&v["maxSlots"]),
                    },
                    s(&v["marks"]),
                    s(&v["rewards"])
                )?;
            } else {
                writeln!(out, "validator:      off")?;
            }
            writeln!(
                out,
                "earnings:       {} sales ended, {} paid, {} collateral returned, {} lost",
                s(&e["salesEnded"]),
                s(&e["payout"]),
                s(&e["collateralReturned"]),
                s(&e["collateralLost"])
            )?;
        }
        if st["healthy"] != true {
            let why = if st["chain"]["connected"] != true {
                "not connected to the chain".to_string()
            } else {
                format!(
                    "no block for {} s",
                    s(&st["chain"]["secondsSinceLastBlock"])
                )
            };
            return Err(CliError::Unhealthy(why));
        }
        Ok(())
    }
}
