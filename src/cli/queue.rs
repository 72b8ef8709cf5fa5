//! `codex queue show`: the running node's slot queue, and why recent requests were or
//! were not taken.
use std::io::Write;

use argh::FromArgs;
use serde_json::Value;

use super::node_api::{self, text as s};
use super::{CliError, Context, Run};
use crate::table;

/// Inspect the running node's slot queue.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "queue")]
pub struct QueueArgs {
    #[argh(subcommand)]
    pub command: QueueCommand,
}

/// The queue subcommands.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum QueueCommand {
    Show(ShowArgs),
}

impl Run for QueueArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        match self.command {
            QueueCommand::Show(a) => a.run(ctx),
        }
    }
}

/// Show the queue in priority order, its state and workers, and for each request seen
/// lately whether it was taken or which rule of which availability refused it.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct ShowArgs {
    /// address of the node's REST API (default 127.0.0.1; env CODEX_API_BINDADDR)
    #[argh(option, arg_name = "IP")]
    pub api_bindaddr: Option<String>,
    /// port of the node's REST API (default 8080; env CODEX_API_PORT)
    #[argh(option, arg_name = "PORT")]
    pub api_port: Option<String>,
    /// print JSON lines: one object for the queue's state, then one per item (`"item"`),
    /// then one per recent request (`"request"`)
    #[argh(switch)]
    pub json: bool,
}

fn short(v: &Value) -> String {
    let t = s(v);
    if t.len() > 14 && t.starts_with("0x") {
        format!("{}…{}", &t[..8], &t[t.len() - 4..])
    } else {
        t
    }
}

impl Run for ShowArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let base = node_api::api_base(ctx, self.api_bindaddr.as_deref(), self.api_port.as_deref())?;
        let q = node_api::get(&base, "/sales/queue")?;
        let out = ctx.out();
        let empty = Vec::new();
        let items = q["items"].as_array().unwrap_or(&empty);
        let recent = q["recentRequests"].as_array().unwrap_or(&empty);
        if self.json {
            let mut head = q.clone();
            if let Some(o) = head.as_object_mut() {
                o.remove("items");
                o.remove("recentRequests");
                o.insert("kind".into(), "queue".into());
            }
            writeln!(out, "{head}")?;
            for i in items {
                let mut i = i.clone();
                i["kind"] = "item".into();
                writeln!(out, "{i}")?;
            }
            for r in recent {
                let mut r = r.clone();
                r["kind"] = "request".into();
                writeln!(out, "{r}")?;
            }
            return Ok(());
        }
        let paused = if q["paused"] == true {
            format!("paused ({})", s(&q["pausedBecause"]))
        } else if q["running"] == true {
            "running".into()
        } else {
            "stopped".into()
        };
        writeln!(
            out,
            "queue: {} of {} slots, {paused}; workers {} busy, {} free",
            s(&q["length"]),
            s(&q["capacity"]),
            s(&q["workersBusy"]),
            s(&q["workersFree"])
        )?;
        if !items.is_empty() {
            writeln!(out)?;
            let mut rows = vec![[
                "REQUEST",
                "SLOT",
                "SIZE",
                "DURATION",
                "PRICE",
                "COLLATERAL",
                "EXPIRY",
                "PROFIT",
                "SEEN",
            ]
            .map(String::from)
            .to_vec()];
            for i in items {
                rows.push(vec![
                    short(&i["requestId"]),
                    s(&i["slotIndex"]),
                    s(&i["slotSize"]),
                    s(&i["duration"]),
                    s(&i["pricePerBytePerSecond"]),
                    s(&i["collateral"]),
                    s(&i["expiry"]),
                    s(&i["profitability"]),
                    s(&i["seen"]),
                ]);
            }
            table::write_table(out, &rows)?;
        }
        if !recent.is_empty() {
            writeln!(out, "\nrecent requests (newest first):")?;
            for r in recent {
                writeln!(
                    out,
                    "{}  {} slots of {} bytes for {} s at {}/byte/s: {}",
                    short(&r["requestId"]),
                    s(&r["slots"]),
                    s(&r["slotSize"]),
                    s(&r["duration"]),
                    s(&r["pricePerBytePerSecond"]),
                    s(&r["verdict"])
                )?;
                for t in r["taken"].as_array().unwrap_or(&empty) {
                    writeln!(out, "    slot {}: {}", s(&t["slotIndex"]), s(&t["state"]))?;
                }
                for f in r["refusals"].as_array().unwrap_or(&empty) {
                    let who = f.get("availabilityId").map_or("-".to_string(), short);
                    writeln!(out, "    {who}: {} ({})", s(&f["rule"]), s(&f["reason"]))?;
                }
                if let Some(more) = r["refusalsNotListed"].as_u64().filter(|n| *n > 0) {
                    let by_rule = r["refusalsByRule"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k} {v}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "    … and {more} more availabilities (all refusals by rule: {by_rule})"
                    )?;
                }
            }
        }
        Ok(())
    }
}
