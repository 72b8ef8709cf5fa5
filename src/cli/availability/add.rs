//! `codex availability add`.
use argh::FromArgs;

use crate::cli::{CliError, Context, Run};
use crate::market::U256;
use crate::sales::ledger::{self, AvailabilityId, Ledger, NewAvailability};
use crate::units::{amount_arg, duration_arg, parse_unix_seconds, size_arg};

/// Offer storage for sale: add an availability and print it.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "add")]
pub struct AddArgs {
    /// bytes offered in total, e.g. 1073741824, 500MiB, 1GB, 2TiB
    #[argh(option, arg_name = "SIZE", from_str_fn(size_arg))]
    pub total_size: u64,
    /// longest request duration accepted, e.g. 90s, 12h, 30d, 2w
    #[argh(option, arg_name = "DURATION", from_str_fn(duration_arg))]
    pub duration: u64,
    /// lowest price accepted per byte per second, in token base units
    #[argh(option, arg_name = "AMOUNT", from_str_fn(amount_arg))]
    pub min_price_per_byte_per_second: U256,
    /// collateral budget, in token base units
    #[argh(option, arg_name = "AMOUNT", from_str_fn(amount_arg))]
    pub total_collateral: U256,
    /// latest request end (unix seconds) this availability may serve; 0 = unlimited
    #[argh(option, arg_name = "UNIX_SECONDS", from_str_fn(parse_unix_seconds))]
    pub until: Option<u64>,
    /// add it disabled (it matches no slot until enabled)
    #[argh(switch)]
    pub disabled: bool,
    /// print one JSON object
    #[argh(switch)]
    pub json: bool,
}

impl Run for AddArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        let new = NewAvailability {
            total_size: self.total_size,
            duration: self.duration,
            min_price_per_byte_per_second: self.min_price_per_byte_per_second,
            total_collateral: self.total_collateral,
            enabled: !self.disabled,
            until: self.until.unwrap_or(0),
        };
        let limits = ctx.limits();
        let id = AvailabilityId::random(&mut fastrand::Rng::new());
        // Everything but the quota can be checked before the database is touched.
        ledger::new_availability(id, &new, limits, 0)?;
        let a = ctx.store()?.create_availability(id, new, limits)?;
        log::debug!("added availability {}", a.id);
        super::print(ctx, &a, 0, self.json)
    }
}
