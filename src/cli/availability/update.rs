//! `codex availability update`.
use argh::FromArgs;

use crate::cli::{CliError, Context, Run};
use crate::market::U256;
use crate::sales::ledger::{AvailabilityUpdate, Ledger};
use crate::units::{amount_arg, duration_arg, parse_unix_seconds, size_arg};

/// Change any of an availability's fields except its free size, and print it.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "update")]
pub struct UpdateArgs {
    /// the availability's id or a unique prefix of at least 4 hex digits
    #[argh(positional, arg_name = "ID")]
    pub id: String,
    /// new total size; not below the bytes its reservations hold
    #[argh(option, arg_name = "SIZE", from_str_fn(size_arg))]
    pub total_size: Option<u64>,
    /// new longest request duration accepted
    #[argh(option, arg_name = "DURATION", from_str_fn(duration_arg))]
    pub duration: Option<u64>,
    /// new lowest price accepted per byte per second
    #[argh(option, arg_name = "AMOUNT", from_str_fn(amount_arg))]
    pub min_price_per_byte_per_second: Option<U256>,
    /// new collateral budget; the collateral already committed stays committed
    #[argh(option, arg_name = "AMOUNT", from_str_fn(amount_arg))]
    pub total_collateral: Option<U256>,
    /// new latest request end (unix seconds); 0 = unlimited
    #[argh(option, arg_name = "UNIX_SECONDS", from_str_fn(parse_unix_seconds))]
    pub until: Option<u64>,
    /// let it match new slots
    #[argh(switch)]
    pub enabled: bool,
    /// stop matching new slots (live reservations are unaffected)
    #[argh(switch)]
    pub disabled: bool,
    /// print one JSON object
    #[argh(switch)]
    pub json: bool,
}

impl Run for UpdateArgs {
    fn run(self, ctx: &mut Context) -> Result<(), CliError> {
        if self.enabled && self.disabled {
            return Err(CliError::Usage(
                "--enabled and --disabled cannot be used together".into(),
            ));
        }
        let update = AvailabilityUpdate {
            total_size: self.total_size,
            duration: self.duration,
            min_price_per_byte_per_second: self.min_price_per_byte_per_second,
            total_collateral: self.total_collateral,
            enabled: match (self.enabled, self.disabled) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            until: self.until,
        };
        if update.is_empty() {
            return Err(CliError::Usage(
                "nothing to update: give at least one of --total-size, --duration, --min-price-per-byte-per-second, --total-collateral, --until, --enabled, --disabled".into(),
            ));
        }
        let limits = ctx.limits();
        let store = ctx.existing_store()?;
        let id = store.resolve_availability(&self.id)?;
        let change = store.update_availability(id, update, limits)?;
        let n = store.reservations_of(id)?.len();
        log::debug!("updated availability {id}");
        super::print(ctx, &change.after, n, self.json)
    }
}
