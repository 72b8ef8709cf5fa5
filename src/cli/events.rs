//! `codex events`: decoded Marketplace events, one JSON object per line.
//!
//! Without `--follow` the command queries `eth_getLogs` in bounded ranges from `--from-block`
//! to `--to-block` (default: the head when it starts) and ends. With `--follow` it runs a
//! [`ChainClient`] in a mio loop: log and `newHeads` subscriptions, backfill after every
//! (re)connect, each event printed exactly once and in order, until interrupted (or until
//! `--to-block` has been passed). The chain position lives in memory only.
//!
//! SIGINT and SIGTERM end `--follow` cleanly with exit status 0: they arrive through
//! `signal-hook-mio` as readiness of their own token in the same mio `Poll` as the WebSocket,
//! so the loop finishes the turn it is in (every decoded event is written whole and flushed),
//! closes the connection and returns.
use std::io::Write;
use std::time::{Duration, Instant};

use argh::FromArgs;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::{CliError, Context, Run};
use crate::chain::client::{BlockingClient, ChainClient, ClientConfig, ClientOutput, Follow};
use crate::chain::event_loop::{EventLoop, CHAIN};
use crate::chain::rpc::{parse_logs, Log, LogSync, SyncEvent};
use crate::chain::ChainError;
use crate::market::events::decode_log;

/// Blocks per `eth_getLogs` query.
pub const MAX_RANGE: u64 = 1000;

/// Print decoded Marketplace events as JSON lines (blockNumber, transactionHash, logIndex,
/// event, fields); --follow keeps streaming through disconnects until interrupted.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "events")]
pub struct EventsArgs {
    /// first block to print events of (default 0)
    #[argh(option, arg_name = "N")]
    pub from_block: Option<u64>,
    /// last block (default: the current head; with --follow, no end)
    #[argh(option, arg_name = "N")]
    pub to_block: Option<u64>,
    /// keep printing new events as blocks arrive, reconnecting and backfilling after
    /// disconnects
    #[argh(switch)]
    pub follow: bool,
}

/// Prints one log as a JSON line; a log that is not a Marketplace event is reported on stderr
/// and skipped.
fn print_log(out: &mut impl Write, l: &Log) -> Result<(), CliError> {
    match decode_log(&crate::node::to_rpc_log(l)) {
        Ok(ev) => writeln!(out, "{}", ev.to_json_line())?,
        Err(e) => log::warn!(
            "skipping log {} of block {}: {e}",
            l.log_index,
            l.block_number
        ),
    }
    Ok(())
}

impl Run for EventsArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let settings = ctx.chain_settings()?;
        let from = self.from_block.unwrap_or(0);
        if let Some(to) = self.to_block {
            if to < from {
                return Err(CliError::Usage(format!(
                    "--to-block {to} is below --from-block {from}"
                )));
            }
        }
        // Installed before the first network call, so that an interrupt while codex connects
        // is not lost: it is handled as soon as the follow loop runs.
        let signals = if self.follow {
            Some(Signals::new([SIGINT, SIGTERM]).map_err(CliError::Signals)?)
        } else {
            None
        };
        let mut rpc = BlockingClient::connect_to(settings.provider.clone(), settings.timeout)?;
        let (_, marketplace) = rpc.verify(None, settings.marketplace)?;
        let Some(signals) = signals else {
            let head = rpc.block_number()?;
            let to = self.to_block.map_or(head, |t| t.min(head));
            let mut sync = LogSync::new(from, Some(to), MAX_RANGE);
            sync.on_head(head, false);
            let mut events = Vec::new();
            while let Some(range) = sync.next_range() {
                let v = rpc.call("eth_getLogs", range.params(marketplace))?;
                let logs = parse_logs(&v).map_err(|e| ChainError::BadResponse {
                    method: "eth_getLogs".into(),
                    reason: e.to_string(),
                })?;
                sync.on_range(range, logs, &mut events);
                for ev in events.drain(..) {
                    if let SyncEvent::Log(l) = ev {
                        print_log(ctx.out(), &l)?;
                    }
                }
            }
            return Ok(());
        };
        drop(rpc);
        follow(ctx, signals, &settings, marketplace, from, self.to_block)
    }
}

fn follow(
    ctx: &mut Context,
    signals: Signals,
    settings: &crate::chain::settings::ChainSettings,
    marketplace: alloy_primitives::Address,
    from: u64,
    to: Option<u64>,
) -> Result<(), CliError> {
    let mut config = ClientConfig::new(settings.provider.clone());
    config.call_timeout = settings.timeout;
    config.connect_timeout = settings.timeout;
    config.keepalive = settings.timeout;
    config.backoff_max = Duration::from_secs(30).max(settings.timeout);
    config.follow = Some(Follow {
        address: marketplace,
        from_block: from,
        to_block: to,
        max_range: MAX_RANGE,
    });
    let mut lp = EventLoop::new()?
        .with_signals(signals)
        .map_err(CliError::Signals)?;
    let now = Instant::now();
    let mut client = ChainClient::new(config, CHAIN, now, fastrand::Rng::new());
    loop {
        let turn = lp.turn(&mut client, None).map_err(CliError::Output)?;
        let mut wrote = false;
        while let Some(o) = client.poll_output() {
            match o {
                ClientOutput::Log(l) | ClientOutput::Removed(l) => {
                    print_log(ctx.out(), &l)?;
                    wrote = true;
                }
                ClientOutput::Connected => log::info!("connected to {}", settings.provider.url),
                ClientOutput::Disconnected(e) => log::warn!("{e}"),
                ClientOutput::Failed(e) => return Err(e.into()),
                ClientOutput::Processed(b) => log::debug!("processed up to block {b}"),
                ClientOutput::Head(_) | ClientOutput::Response { .. } => {}
            }
        }
        if wrote {
            ctx.out().flush()?;
        }
        if let Some(s) = turn.signal {
            let name = if s == SIGINT { "SIGINT" } else { "SIGTERM" };
            log::info!("{name} received; stopping");
            client.shutdown(lp.registry());
            return Ok(());
        }
        if client.sync().is_some_and(LogSync::is_done) {
            client.shutdown(lp.registry());
            return Ok(());
        }
    }
}
