//! Ids as people type them: the availability or reservation whose id is or starts with a
//! hex prefix, or an error naming the candidates when the prefix is ambiguous.

use super::columns::blob32;
use super::{Store, StoreError};
use crate::sales::ledger::{AvailabilityId, ReservationId};

impl Store {
    fn resolve(&self, table: &str, kind: &'static str, text: &str) -> Result<[u8; 32], StoreError> {
        let hex = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        if hex.len() < 4 || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::BadId(text.to_string()));
        }
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT id FROM {table} WHERE hex(id) LIKE ?1 || '%' ORDER BY id LIMIT 11"
        ))?;
        let ids: Vec<[u8; 32]> = stmt
            .query_map([hex.to_ascii_uppercase()], |r| blob32(r, 0))?
            .collect::<Result<_, _>>()?;
        let prefix = format!("0x{}", hex.to_ascii_lowercase());
        match ids.as_slice() {
            [] => Err(StoreError::IdNotFound { kind, prefix }),
            [one] => Ok(*one),
            many => {
                let mut candidates: Vec<String> = many
                    .iter()
                    .take(10)
                    .map(|b| AvailabilityId(*b).to_string())
                    .collect();
                if many.len() > 10 {
                    candidates.push("...".into());
                }
                Err(StoreError::AmbiguousId {
                    kind,
                    prefix,
                    candidates,
                })
            }
        }
    }

    /// The availability whose id is or starts with `text` (at least 4 hex digits).
    pub fn resolve_availability(&self, text: &str) -> Result<AvailabilityId, StoreError> {
        self.resolve("availabilities", "availability", text)
            .map(AvailabilityId)
    }

    /// The reservation whose id is or starts with `text` (at least 4 hex digits).
    pub fn resolve_reservation(&self, text: &str) -> Result<ReservationId, StoreError> {
        self.resolve("reservations", "reservation", text)
            .map(ReservationId)
    }
}
