//! `codex sale list|show`: the live sales (from the running node) and the history of ended
//! ones (from the database, so it works while the node is down).
use std::io::Write;

use argh::FromArgs;
use serde_json::Value;

use super::node_api::{self, text as s};
use super::{CliError, Context, Run};
use crate::market::{RequestId, SlotId};
use crate::sales::ledger::Ledger;
use crate::store::history::HistoryFilter;
use crate::table;

/// Inspect sales: live ones and the history of ended ones.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "sale")]
pub struct SaleArgs {
    #[argh(subcommand)]
    pub command: SaleCommand,
}

/// The sale subcommands.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum SaleCommand {
    List(ListArgs),
    Show(ShowArgs),
}

impl Run for SaleArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        match self.command {
            SaleCommand::List(a) => a.run(ctx),
            SaleCommand::Show(a) => a.run(ctx),
        }
    }
}

/// List live sales (asked of the running node; from the database's reservations when it is
/// down), and with --all the ended ones too, newest first.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListArgs {
    /// also list ended sales (the history kept in the database)
    #[argh(switch)]
    pub all: bool,
    /// only the sales of this request (0x-hex id)
    #[argh(option, arg_name = "REQUEST_ID")]
    pub request: Option<String>,
    /// address of the node's REST API (default 127.0.0.1; env CODEX_API_BINDADDR)
    #[argh(option, arg_name = "IP")]
    pub api_bindaddr: Option<String>,
    /// port of the node's REST API (default 8080; env CODEX_API_PORT)
    #[argh(option, arg_name = "PORT")]
    pub api_port: Option<String>,
    /// print one JSON object per line
    #[argh(switch)]
    pub json: bool,
}

/// Show one sale: live details from the node, and its entries in the history.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct ShowArgs {
    /// the slot: its slot id, or REQUEST_ID:SLOT_INDEX
    #[argh(positional, arg_name = "SLOT")]
    pub slot: String,
    /// address of the node's REST API (default 127.0.0.1; env CODEX_API_BINDADDR)
    #[argh(option, arg_name = "IP")]
    pub api_bindaddr: Option<String>,
    /// port of the node's REST API (default 8080; env CODEX_API_PORT)
    #[argh(option, arg_name = "PORT")]
    pub api_port: Option<String>,
    /// print one JSON object per line
    #[argh(switch)]
    pub json: bool,
}

/// Live sales from the node, or None when it does not answer (then the caller falls back
/// to the database).
fn live(
    ctx: &Context,
    ip: Option<&str>,
    port: Option<&str>,
) -> Result<Option<Vec<Value>>, CliError> {
    let base = node_api::api_base(ctx, ip, port)?;
    match node_api::get(&base, "/sales/live") {
        Ok(Value::Array(v)) => Ok(Some(v)),
        Ok(other) => Err(CliError::NodeAnswer {
            url: base,
            status: 200,
            body: format!("not a list of sales: {other}"),
        }),
        Err(CliError::NodeDown { url, reason }) => {
            log::debug!("no node answers at {url} ({reason}); live sales from the database");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Live sales as the database knows them (the node is down): one per reservation.
fn from_reservations(ctx: &mut Context) -> Result<Vec<Value>, CliError> {
    let store = ctx.existing_store()?;
    Ok(store
        .reservations()?
        .iter()
        .map(|r| {
            serde_json::json!({
                "slotId": crate::market::SlotId::of(r.request_id, r.slot_index).to_string(),
                "requestId": r.request_id.to_string(),
                "slotIndex": r.slot_index,
                "state": "unknown (the node is not running)",
                "reservationId": r.id.to_string(),
                "slotSize": r.slot_size,
                "endsAt": r.valid_until,
            })
        })
        .collect())
}

fn history(ctx: &mut Context, filter: &HistoryFilter) -> Result<Vec<Value>, CliError> {
    let store = ctx.existing_store()?;
    Ok(store
        .sale_history(filter)?
        .iter()
        .map(crate::api::json::history_entry)
        .collect())
}

fn parse_request(text: &str) -> Result<RequestId, CliError> {
    text.parse::<RequestId>().map_err(|_| {
        CliError::Usage(format!(
            "{text:?} is not a request id (0x and 64 hex digits); see codex sale list --help"
        ))
    })
}

/// `codex sale show`'s SLOT argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotArg {
    /// A slot id.
    Id(SlotId),
    /// REQUEST_ID:SLOT_INDEX.
    Index(RequestId, u64),
}

/// Parses a slot as `codex sale show` takes it: its slot id, or REQUEST_ID:SLOT_INDEX.
pub(crate) fn parse_slot_arg(text: &str) -> Result<SlotArg, CliError> {
    match text.split_once(':') {
        Some((r, i)) => Ok(SlotArg::Index(
            parse_request(r)?,
            i.parse::<u64>().map_err(|_| {
                CliError::Usage(format!(
                    "{i:?} is not a slot index; see codex sale show --help"
                ))
            })?,
        )),
        None => text.parse::<SlotId>().map(SlotArg::Id).map_err(|_| {
            CliError::Usage(format!(
                "{text:?} is neither a slot id nor REQUEST_ID:SLOT_INDEX; see codex sale show --help"
            ))
        }),
    }
}

impl Run for ListArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let request = self.request.as_deref().map(parse_request).transpose()?;
        let mut sales = match live(ctx, self.api_bindaddr.as_deref(), self.api_port.as_deref())? {
            Some(v) => v,
            None => from_reservations(ctx)?,
        };
        if let Some(r) = request {
            let r = r.to_string();
            sales.retain(|v| v["requestId"] == r.as_str());
        }
        let ended = if self.all {
            history(
                ctx,
                &HistoryFilter {
                    request_id: request,
                    ..HistoryFilter::default()
                },
            )?
        } else {
            Vec::new()
        };
        let out = ctx.out();
        if self.json {
            for v in &sales {
                writeln!(out, "{v}")?;
            }
            for v in &ended {
                writeln!(out, "{v}")?;
            }
            return Ok(());
        }
        let mut rows = vec![[
            "SLOT ID",
            "REQUEST",
            "SLOT",
            "STATE",
            "SINCE",
            "WAITING FOR",
            "EXPECTED PAYOUT",
        ]
        .map(String::from)
        .to_vec()];
        for v in &sales {
            rows.push(vec![
                s(&v["slotId"]),
                s(&v["requestId"]),
                s(&v["slotIndex"]),
                s(&v["state"]),
                s(&v["since"]),
                s(&v["waitingFor"]),
                s(&v["expectedPayout"]),
            ]);
        }
        if sales.is_empty() {
            writeln!(out, "no live sales")?;
        } else {
            table::write_table(out, &rows)?;
        }
        if self.all && ended.is_empty() {
            writeln!(out, "no ended sales in the history")?;
        } else if self.all {
            writeln!(out, "ended sales, newest first:")?;
            let mut rows = vec![[
                "SLOT ID", "REQUEST", "SLOT", "OUTCOME", "ENDED", "PAYOUT", "RETURNED", "LOST",
            ]
            .map(String::from)
            .to_vec()];
            for v in &ended {
                rows.push(vec![
                    s(&v["slotId"]),
                    s(&v["requestId"]),
                    s(&v["slotIndex"]),
                    s(&v["outcome"]),
                    s(&v["endedAt"]),
                    s(&v["payout"]),
                    s(&v["collateralReturned"]),
                    s(&v["collateralLost"]),
                ]);
            }
            table::write_table(out, &rows)?;
        }
        Ok(())
    }
}

impl Run for ShowArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let slot = parse_slot_arg(&self.slot)?;
        let (request, index) = match slot {
            SlotArg::Index(r, i) => (Some(r), Some(i)),
            SlotArg::Id(_) => (None, None),
        };
        let matches = |v: &Value| match slot {
            SlotArg::Index(r, i) => v["requestId"] == r.to_string().as_str() && v["slotIndex"] == i,
            SlotArg::Id(id) => v["slotId"]
                .as_str()
                .is_some_and(|got| got.eq_ignore_ascii_case(&id.to_string())),
        };
        let live = match live(ctx, self.api_bindaddr.as_deref(), self.api_port.as_deref())? {
            Some(v) => v,
            None => from_reservations(ctx)?,
        };
        let live: Vec<Value> = live.into_iter().filter(|v| matches(v)).collect();
        let ended: Vec<Value> = history(
            ctx,
            &HistoryFilter {
                request_id: request,
                slot_index: index,
                ..HistoryFilter::default()
            },
        )?
        .into_iter()
        .filter(|v| matches(v))
        .collect();
        if live.is_empty() && ended.is_empty() {
            return Err(CliError::Usage(format!(
                "no sale of slot {} is live or in the history",
                self.slot
            )));
        }
        let out = ctx.out();
        for v in live.iter().chain(&ended) {
            if self.json {
                writeln!(out, "{v}")?;
            } else {
                if let Some(o) = v.as_object() {
                    for (k, val) in o {
                        writeln!(out, "{k}: {}", s(val))?;
                    }
                }
                writeln!(out)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_its_id_or_request_and_index() {
        let hex = "25de9f1b7dcf43dbd9bbce5b1caab929f7540e3c9bd7d86564d8cd74e93ae75a";
        let id = SlotArg::Id(format!("0x{hex}").parse().unwrap());
        assert_eq!(parse_slot_arg(&format!("0x{hex}")).ok(), Some(id));
        // Without 0x, as every id is taken; show compares the id as it prints.
        assert_eq!(parse_slot_arg(hex).ok(), Some(id));
        let request: RequestId = format!("0x{hex}").parse().unwrap();
        assert_eq!(
            parse_slot_arg(&format!("{hex}:18446744073709551615")).ok(),
            Some(SlotArg::Index(request, u64::MAX))
        );
        assert!(parse_slot_arg(&format!("{hex}:-1")).is_err());
        assert!(parse_slot_arg(&format!("{hex}:")).is_err());
        assert!(parse_slot_arg("0x12:1").is_err());
        assert!(parse_slot_arg("0x12").is_err());
    }
}
