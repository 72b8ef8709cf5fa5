//! Human-readable output: aligned tables and `key: value` blocks.
use std::io::{self, Write};

use crate::sales::ledger::{Availability, Reservation};
use crate::units::{format_duration, format_size};

/// Writes rows as left-aligned columns separated by two spaces; the first row is the header.
pub fn write_table(out: &mut impl Write, rows: &[Vec<String>]) -> io::Result<()> {
    let cols = rows.first().map_or(0, Vec::len);
    let mut widths = vec![0; cols];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn until(u: u64) -> String {
    if u == 0 {
        "-".into()
    } else {
        u.to_string()
    }
}

/// The availability list header.
pub fn availability_header() -> Vec<String> {
    [
        "ID",
        "TOTAL",
        "FREE",
        "DURATION",
        "MIN PRICE",
        "COLLATERAL",
        "REMAINING",
        "LOST",
        "ENABLED",
        "UNTIL",
    ]
    .map(String::from)
    .to_vec()
}

/// One availability as a table row.
pub fn availability_row(a: &Availability) -> Vec<String> {
    vec![
        a.id.to_string(),
        format_size(a.total_size),
        format_size(a.free_size),
        format_duration(a.duration),
        a.min_price_per_byte_per_second.to_string(),
        a.total_collateral.to_string(),
        a.total_remaining_collateral.to_string(),
        a.collateral_lost.to_string(),
        if a.enabled { "yes" } else { "no" }.into(),
        until(a.until),
    ]
}

/// The reservation list header.
pub fn reservation_header() -> Vec<String> {
    [
        "ID",
        "AVAILABILITY",
        "REQUEST",
        "SLOT",
        "SIZE",
        "DOWNLOADED",
        "COLLATERAL",
        "VALID UNTIL",
    ]
    .map(String::from)
    .to_vec()
}

/// One reservation as a table row.
pub fn reservation_row(r: &Reservation) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.availability_id.to_string(),
        r.request_id.to_string(),
        r.slot_index.to_string(),
        format_size(r.slot_size),
        format_size(r.downloaded),
        r.collateral.to_string(),
        r.valid_until.to_string(),
    ]
}

/// One availability as `key: value` lines, with the count of its reservations.
pub fn write_availability(
    out: &mut impl Write,
    a: &Availability,
    reservations: usize,
) -> io::Result<()> {
    let lines = [
        ("id", a.id.to_string()),
        (
            "total size",
            format!("{} ({} bytes)", format_size(a.total_size), a.total_size),
        ),
        (
            "free size",
            format!("{} ({} bytes)", format_size(a.free_size), a.free_size),
        ),
        (
            "duration",
            format!("{} ({} s)", format_duration(a.duration), a.duration),
        ),
        (
            "min price per byte per second",
            a.min_price_per_byte_per_second.to_string(),
        ),
        ("total collateral", a.total_collateral.to_string()),
        (
            "remaining collateral",
            a.total_remaining_collateral.to_string(),
        ),
        ("collateral lost", a.collateral_lost.to_string()),
        ("enabled", if a.enabled { "yes" } else { "no" }.to_string()),
        (
            "until",
            if a.until == 0 {
                "unlimited".into()
            } else {
                a.until.to_string()
            },
        ),
        ("reservations", reservations.to_string()),
    ];
    for (k, v) in lines {
        writeln!(out, "{k:<30} {v}")?;
    }
    Ok(())
}
