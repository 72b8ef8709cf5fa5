//! Bad input, table-driven: each case runs the built binary against a database with
//! availabilities and a reservation, and checks the one-line message, the exit code, an
//! empty stdout, and that the database files are byte-for-byte unchanged.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use codex::market::{RequestId, U256};
use codex::sales::ledger::{
    AvailabilityId, Ledger, Limits, NewAvailability, ReservationId, SlotAsk,
};
use codex::store::{Options, Store, DB_FILE};

const A: &str = "0xabcd000000000000000000000000000000000000000000000000000000000000";
const B: &str = "0xabcd111111111111111111111111111111111111111111111111111111111111";
const C: &str = "0x1234000000000000000000000000000000000000000000000000000000000000";

fn id(hex: &str) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 + 2 * i..4 + 2 * i], 16).unwrap();
    }
    b
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Three availabilities of 1 GiB each (A and B share the prefix abcd); A holds one
/// reservation of 100 bytes whose request ends in ten days.
fn fixture(dir: &Path) {
    let mut s = Store::open(dir, Options::cli()).unwrap();
    let lim = Limits {
        quota: u64::MAX,
        now: 0,
    };
    for hex in [A, B, C] {
        let new = NewAvailability {
            total_size: 1 << 30,
            duration: 30 * 86_400,
            min_price_per_byte_per_second: U256::from(10),
            total_collateral: U256::from(1_000_000_000_000u64),
            enabled: true,
            until: 0,
        };
        s.create_availability(AvailabilityId(id(hex)), new, lim)
            .unwrap();
    }
    let ask = SlotAsk {
        request_id: RequestId::from([9; 32]),
        slot_index: 0,
        slot_size: 100,
        duration: 86_400,
        price_per_byte_per_second: U256::from(10),
        collateral_per_byte: U256::from(1),
        valid_until: now() + 10 * 86_400,
    };
    s.create_reservation(ReservationId([5; 32]), AvailabilityId(id(A)), &ask)
        .unwrap();
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.ends_with("-shm") && e.path().is_file() {
                m.insert(name, std::fs::read(e.path()).unwrap());
            }
        }
    }
    m
}

#[derive(Clone, Copy)]
enum Setup {
    /// The fixture database.
    Db,
    /// codex.sqlite is a text file.
    NotSqlite,
    /// The fixture, then its schema version set to 99.
    NewerSchema,
}

struct Case {
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    setup: Setup,
    code: i32,
    message: &'static str,
}

const fn case(args: &'static [&'static str], code: i32, message: &'static str) -> Case {
    Case {
        args,
        env: &[],
        setup: Setup::Db,
        code,
        message,
    }
}

const ADD: &str = "availability";
const TWO_256: &str =
    "115792089237316195423570985008687907853269984665640564039457584007913129639936";

fn cases() -> Vec<Case> {
    vec![
        // sizes
        case(&[ADD, "add", "--total-size", "0", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 2, "Total size must be larger then zero"),
        case(&[ADD, "add", "--total-size", "-1", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 2, "negative size \"-1\""),
        case(&[ADD, "add", "--total-size", "18446744073709551616", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 2, "size \"18446744073709551616\" is too large"),
        case(&[ADD, "add", "--total-size", "16384PiB", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 2, "size \"16384PiB\" is too large"),
        case(&[ADD, "add", "--total-size", "lots", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 2, "invalid size \"lots\""),
        case(&[ADD, "add", "--total-size", "1.5GiB", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 2, "size \"1.5GiB\" is not a whole number"),
        // durations
        case(&[ADD, "add", "--total-size", "1GiB", "--duration", "0", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 2, "duration must be larger then zero"),
        case(&[ADD, "add", "--total-size", "1GiB", "--duration", "-5s", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 2, "negative duration \"-5s\""),
        case(&[ADD, "add", "--total-size", "1GiB", "--duration", "5y", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 2, "invalid duration \"5y\""),
        case(&[ADD, "add", "--total-size", "1GiB", "--duration", "99999999999999999999w", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 2, "is too large"),
        // amounts
        case(&[ADD, "add", "--total-size", "1GiB", "--duration", "1d", "--min-price-per-byte-per-second", "0", "--total-collateral", "1"], 2, "minPricePerBytePerSecond must be larger then zero"),
        case(&[ADD, "add", "--total-size", "1GiB", "--duration", "1d", "--min-price-per-byte-per-second", "-1", "--total-collateral", "1"], 2, "negative amount \"-1\""),
        case(&[ADD, "add", "--total-size", "1GiB", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", TWO_256], 2, "the maximum is 2^256 − 1"),
        case(&[ADD, "add", "--total-size", "1GiB", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "1e18"], 2, "invalid amount \"1e18\""),
        case(&[ADD, "add", "--total-size", "1GiB", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "0"], 2, "totalCollateral must be larger then zero"),
        case(&[ADD, "add", "--total-size", "1GiB", "--duration", "1d", "--min-price-per-byte-per-second", "1.5", "--total-collateral", "1"], 2, "amount \"1.5\" is not a whole number"),
        // until
        case(&[ADD, "add", "--total-size", "1GiB", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "1", "--until", "-1"], 2, "Cannot set until to a negative value"),
        case(&[ADD, "add", "--total-size", "1GiB", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "1", "--until", "1000"], 2, "Cannot set until to a time in the past: 1000"),
        case(&[ADD, "update", A, "--until", "{tomorrow}"], 2, "Until parameter must be greater or equal to the longest currently hosted slot"),
        // quota
        case(&[ADD, "add", "--total-size", "18GiB", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 2, "Not enough storage quota: 19327352832 bytes requested, 18253611008 of 21474836480 available"),
        Case { env: &[("CODEX_STORAGE_QUOTA", "3GiB")], ..case(&[ADD, "update", "0x1234", "--total-size", "2GiB"], 2, "Not enough storage quota") },
        // totalSize below what reservations hold; collateral below committed
        case(&[ADD, "update", "0xabcd00", "--total-size", "99"], 2, "New totalSize must be larger then current totalSize - freeSize, which is currently: 100"),
        case(&[ADD, "update", "0xabcd00", "--total-collateral", "99"], 2, "totalCollateral 99 is below the collateral already committed: 100"),
        case(&[ADD, "update", "0x1234", "--enabled", "--disabled"], 2, "--enabled and --disabled cannot be used together"),
        case(&[ADD, "update", "0x1234"], 2, "nothing to update"),
        // ids
        case(&[ADD, "show", "zzzz"], 2, "invalid id \"zzzz\""),
        case(&[ADD, "show", "abc"], 2, "invalid id \"abc\""),
        case(&[ADD, "show", "0xffff"], 2, "no availability with id 0xffff"),
        case(&[ADD, "show", "abcd"], 2, "ambiguous availability id 0xabcd: it matches 0xabcd0000"),
        case(&[ADD, "remove", "0XABCD"], 2, "ambiguous availability id 0xabcd: it matches"),
        case(&["reservation", "list", "--availability", "0xfff0"], 2, "no availability with id 0xfff0"),
        // removing an availability that holds reservations
        case(&[ADD, "remove", "abcd00"], 2, "has 1 reservation(s)"),
        // unknown options and commands
        case(&[ADD, "list", "--bogus"], 2, "Unrecognized argument: --bogus"),
        case(&["frobnicate"], 2, "Unrecognized argument: frobnicate (see codex --help)"),
        case(&[ADD, "add", "--total-size", "1GiB"], 2, "Required options not provided: --duration --min-price-per-byte-per-second --total-collateral (see codex availability add --help)"),
        case(&["sale", "show"], 2, "Required positional arguments not provided: SLOT (see codex sale show --help)"),
        // global options and configuration
        case(&["--log-level", "loud", ADD, "list"], 2, "Invalid value for --log-level"),
        case(&["--log-format", "xml", ADD, "list"], 2, "Invalid value for --log-format"),
        case(&["--storage-quota", "much", ADD, "list"], 2, "invalid --storage-quota \"much\""),
        Case { env: &[("CODEX_STORAGE_QUOTA", "-1")], ..case(&[ADD, "list"], 2, "(from environment variable CODEX_STORAGE_QUOTA)") },
        case(&["--config-file", "{dir}/corrupt.toml", ADD, "list"], 2, "is not valid TOML"),
        case(&["--config-file", "{dir}/unknown.toml", ADD, "list"], 2, "unknown key \"storage_quota\""),
        case(&["--config-file", "{dir}/missing.toml", ADD, "list"], 2, "missing.toml does not exist"),
        case(&["--config-file", "{dir}/folder.toml", ADD, "list"], 1, "cannot read config file"),
        // the environment: data dir, foreign and newer databases
        case(&["--data-dir", "{dir}/codex.sqlite/sub", ADD, "list"], 1, "cannot read data directory"),
        case(&["--data-dir", "{dir}/codex.sqlite/sub", ADD, "add", "--total-size", "1GiB", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 1, "cannot create data directory"),
        Case { setup: Setup::NotSqlite, ..case(&[ADD, "list"], 1, "is not a codex database") },
        // the subcommands that ask the running node ({closed}: a port nothing listens on;
        // {http}: a web server that is not codex)
        case(&["queue", "show", "--api-port", "abc"], 2, "invalid --api-port \"abc\""),
        case(&["status", "--api-port", "70000"], 2, "invalid --api-port \"70000\""),
        case(&["queue", "show", "--api-port", "0"], 2, "port 0 is not a node's port"),
        case(&["sale", "list", "--api-bindaddr", "nowhere"], 2, "invalid --api-bindaddr \"nowhere\""),
        Case { env: &[("CODEX_API_PORT", "http")], ..case(&["status"], 2, "(from environment variable CODEX_API_PORT)") },
        case(&["queue", "show", "--api-port", "{closed}"], 4, "no codex node answers at http://127.0.0.1:{closed}/api/codex/v1"),
        case(&["status", "--api-port", "{closed}", "--json"], 4, "is `codex run` running, with this --api-port?"),
        case(&["queue", "show", "--api-port", "{http}"], 4, "the server there answered 404 and is not a codex node"),
        case(&["status", "--api-port", "{http}"], 4, "at http://127.0.0.1:{http}/api/codex/v1"),
        case(&["sale", "show", "zzz", "--api-port", "{closed}"], 2, "\"zzz\" is neither a slot id nor REQUEST_ID:SLOT_INDEX"),
        case(&["sale", "show", "0x1234:x", "--api-port", "{closed}"], 2, "\"0x1234\" is not a request id"),
        case(&["sale", "show", "0x0909090909090909090909090909090909090909090909090909090909090909:x", "--api-port", "{closed}"], 2, "\"x\" is not a slot index"),
        case(&["sale", "show", "0x0909090909090909090909090909090909090909090909090909090909090909:7", "--api-port", "{closed}"], 2, "no sale of slot 0x0909090909090909090909090909090909090909090909090909090909090909:7 is live or in the history"),
        case(&["sale", "list", "--request", "0x12", "--api-port", "{closed}"], 2, "\"0x12\" is not a request id"),
        // codex run's validator options (checked before the key, the chain or any file)
        case(&["run", "--validator", "--validator-groups", "1"], 2, "invalid --validator-groups \"1\" (from command line): must be from 2 to 65535"),
        case(&["run", "--validator", "--validator-groups", "70000"], 2, "invalid --validator-groups \"70000\" (from command line): must be from 2 to 65535"),
        case(&["run", "--validator", "--validator-group-index", "2", "--validator-groups", "2"], 2, "invalid --validator-group-index \"2\" (from command line): must be less than the number of groups (2)"),
        case(&["run", "--validator", "--validator-max-slots", "x"], 2, "invalid --validator-max-slots \"x\" (from command line): not a whole number"),
        case(&["run", "--validator", "--validator-group-index", "1"], 2, "--validator-group-index 1 needs --validator-groups"),
        case(&["run", "--data-source", "http://x/{cid}", "--validator-groups", "2"], 2, "--validator-groups is an option of the validator: add --validator"),
        case(&["run"], 2, "codex run needs --data-source URL_TEMPLATE (where slot data is downloaded from, e.g. http://host/data/{cid}), or --validator"),
        Case { env: &[("CODEX_VALIDATOR", "true"), ("CODEX_VALIDATOR_GROUPS", "-2")], ..case(&["run"], 2, "invalid --validator-groups \"-2\" (from environment variable CODEX_VALIDATOR_GROUPS)") },
        Case { env: &[("CODEX_VALIDATOR", "maybe")], ..case(&["run"], 2, "invalid --validator \"maybe\" (from environment variable CODEX_VALIDATOR): must be true or false") },
        case(&["queue"], 2, "One of the following subcommands must be present"),
        case(&["queue", "show", "--bogus"], 2, "Unrecognized argument: --bogus"),
        case(&["status", "extra"], 2, "Unrecognized argument: extra"),
        Case { setup: Setup::NewerSchema, ..case(&[ADD, "list"], 1, "has schema version 99, newer than this codex supports (4)") },
        Case { setup: Setup::NewerSchema, ..case(&[ADD, "add", "--total-size", "1GiB", "--duration", "1d", "--min-price-per-byte-per-second", "1", "--total-collateral", "1"], 1, "upgrade codex") },
    ]
}

#[test]
fn bad_input_is_refused_with_a_message_and_changes_nothing() {
    let cases = cases();
    assert!(cases.len() >= 25);
    let tomorrow = (now() + 86_400).to_string();
    // A port nothing listens on, and a web server that is not a codex node.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = web.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in web.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            );
        }
    });
    let fill = |a: &str, d: &str| {
        a.replace("{dir}", d)
            .replace("{tomorrow}", &tomorrow)
            .replace("{closed}", &closed)
            .replace("{http}", &http)
    };
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        match c.setup {
            Setup::Db => fixture(&dir),
            Setup::NotSqlite => {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(
                    dir.join(DB_FILE),
                    "these are not the bytes you are looking for\n".repeat(200),
                )
                .unwrap();
            }
            Setup::NewerSchema => {
                fixture(&dir);
                let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
                conn.pragma_update(None, "user_version", 99).unwrap();
            }
        }
        std::fs::write(dir.join("corrupt.toml"), "storage-quota = \"1GiB\n[[[").unwrap();
        std::fs::write(dir.join("unknown.toml"), "storage_quota = \"1GiB\"\n").unwrap();
        std::fs::create_dir(dir.join("folder.toml")).unwrap();
        let before = snapshot(&dir);
        let d = dir.to_str().unwrap();
        let args: Vec<String> = c.args.iter().map(|a| fill(a, d)).collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_codex"));
        cmd.env_clear()
            .env("HOME", tmp.path())
            .env("CODEX_DATA_DIR", d);
        for (k, v) in c.env {
            cmd.env(k, v);
        }
        let out = cmd.args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut problems = Vec::new();
        if out.status.code() != Some(c.code) {
            problems.push(format!("exit {:?}, want {}", out.status.code(), c.code));
        }
        let message = fill(c.message, d);
        if !stderr.contains(&message) {
            problems.push(format!("message lacks {message:?}"));
        }
        if stderr.trim_end().lines().count() != 1 {
            problems.push("stderr is not one line".to_string());
        }
        if !stdout.is_empty() {
            problems.push(format!("stdout not empty: {stdout:?}"));
        }
        if snapshot(&dir) != before {
            problems.push("database files changed".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "case {i} {args:?}: {}\n    stderr: {stderr}",
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
