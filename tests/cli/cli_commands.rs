//! The CLI end to end through the built binary: the availability and reservation commands,
//! JSON output, configuration precedence, JSON logs, and a closed stdout pipe.
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use codex::market::{RequestId, U256};
use codex::sales::ledger::{AvailabilityId, Ledger, Limits, ReservationId, SlotAsk};
use codex::store::{Options, Store};
use serde_json::Value;

fn codex(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_codex"));
    cmd.env_clear().env("HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const ADD: &[&str] = &[
    "availability",
    "add",
    "--duration",
    "30d",
    "--min-price-per-byte-per-second",
    "10",
    "--total-collateral",
    "1000000000000",
    "--json",
    "--total-size",
];

fn add(home: &Path, env: &[(&str, &str)], size: &str) -> Output {
    let mut args = ADD.to_vec();
    args.push(size);
    codex(home, env, &args)
}

#[test]
fn availability_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let d = home.join("data");
    let ds = d.to_str().unwrap();
    let env = [("CODEX_DATA_DIR", ds)];
    let a = &json_lines(&ok(&add(home, &env, "1GiB")))[0];
    assert_eq!(a["totalSize"], 1u64 << 30);
    assert_eq!(a["freeSize"], 1u64 << 30);
    assert_eq!(a["duration"], 2_592_000);
    assert_eq!(a["minPricePerBytePerSecond"], "10");
    assert_eq!(a["totalCollateral"], "1000000000000");
    assert_eq!(a["totalRemainingCollateral"], "1000000000000");
    assert_eq!(a["enabled"], true);
    assert_eq!(a["until"], 0);
    let id = a["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 66);
    // A second one, disabled, with amounts beyond u128.
    let big = U256::MAX.to_string();
    let mut args = ADD.to_vec();
    args.extend(["500MiB", "--disabled"]);
    args[5] = &big;
    let b = &json_lines(&ok(&codex(home, &env, &args)))[0];
    assert_eq!(b["minPricePerBytePerSecond"], big.as_str());
    assert_eq!(b["enabled"], false);

    let list = json_lines(&ok(&codex(home, &env, &["availability", "list", "--json"])));
    assert_eq!(list.len(), 2);
    let table = ok(&codex(home, &env, &["availability", "list"]));
    assert_eq!(table.lines().count(), 3);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains(&id) && table.contains("1GiB") && table.contains("500MiB"));

    // show and update by prefix
    let prefix = &id[..8];
    let shown = json_lines(&ok(&codex(
        home,
        &env,
        &["availability", "show", prefix, "--json"],
    )));
    assert_eq!(&shown[0], a);
    let text = ok(&codex(home, &env, &["availability", "show", &id[2..10]]));
    assert!(
        text.contains("reservations") && text.contains(&id),
        "{text}"
    );
    let u = &json_lines(&ok(&codex(
        home,
        &env,
        &[
            "availability",
            "update",
            prefix,
            "--total-size",
            "2GiB",
            "--duration",
            "2w",
            "--until",
            "4000000000",
            "--disabled",
            "--json",
        ],
    )))[0];
    assert_eq!(u["totalSize"], 2u64 << 30);
    assert_eq!(u["freeSize"], 2u64 << 30);
    assert_eq!(u["duration"], 1_209_600);
    assert_eq!(u["until"], 4_000_000_000u64);
    assert_eq!(u["enabled"], false);

    // reservations (created by the library, as the node does) and their listing
    {
        let mut s = Store::open(&d, Options::cli()).unwrap();
        let av = s.resolve_availability(&id).unwrap();
        s.update_availability(
            av,
            codex::sales::ledger::AvailabilityUpdate {
                enabled: Some(true),
                ..Default::default()
            },
            Limits {
                quota: u64::MAX,
                now: 0,
            },
        )
        .unwrap();
        let ask = SlotAsk {
            request_id: RequestId::from([3; 32]),
            slot_index: 2,
            slot_size: 1 << 20,
            duration: 86_400,
            price_per_byte_per_second: U256::from(10),
            collateral_per_byte: U256::from(5),
            valid_until: 3_000_000_000,
        };
        s.create_reservation(ReservationId([4; 32]), av, &ask)
            .unwrap();
        s.record_download(ReservationId([4; 32]), 1000).unwrap();
        assert_eq!(s.availability(av).unwrap().free_size, (2 << 30) - (1 << 20));
        let _ = AvailabilityId::default();
    }
    let rs = json_lines(&ok(&codex(home, &env, &["reservation", "list", "--json"])));
    assert_eq!(rs.len(), 1);
    let r = &rs[0];
    assert_eq!(r["availabilityId"], id.as_str());
    assert_eq!(r["size"], (1u64 << 20) - 1000);
    assert_eq!(r["slotSize"], 1u64 << 20);
    assert_eq!(r["downloaded"], 1000);
    assert_eq!(r["slotIndex"], 2);
    assert_eq!(r["validUntil"], 3_000_000_000u64);
    assert_eq!(r["collateral"], "5242880");
    assert_eq!(r["requestId"], format!("0x{}", "03".repeat(32)));
    let other = b["id"].as_str().unwrap();
    let none = ok(&codex(
        home,
        &env,
        &["reservation", "list", "--availability", other, "--json"],
    ));
    assert_eq!(none, "");
    let mine = ok(&codex(
        home,
        &env,
        &["reservation", "list", "--availability", prefix],
    ));
    assert_eq!(mine.lines().count(), 2, "{mine}");

    // remove: refused while held, then the other one goes
    let held = codex(home, &env, &["availability", "remove", prefix]);
    assert_eq!(held.status.code(), Some(2));
    let removed = ok(&codex(home, &env, &["availability", "remove", other]));
    assert_eq!(removed.trim(), other);
    let list = json_lines(&ok(&codex(home, &env, &["availability", "list", "--json"])));
    assert_eq!(list.len(), 1);
    let v = ok(&codex(home, &env, &["version"]));
    assert!(v.starts_with("codex "), "{v}");
}

/// Commands that read, or change only what exists, create no files: against a data
/// directory that does not exist (a typo, a host not set up yet) they answer as an empty
/// store does and leave the directory absent. Only `availability add` creates the database.
#[test]
fn read_commands_create_no_database() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let d = home.join("not-yet").join("data");
    let ds = d.to_str().unwrap();
    let env = [("CODEX_DATA_DIR", ds)];
    assert_eq!(
        ok(&codex(home, &env, &["availability", "list", "--json"])),
        ""
    );
    assert_eq!(
        ok(&codex(home, &env, &["reservation", "list", "--json"])),
        ""
    );
    for (args, message) in [
        (
            &["availability", "show", "abcd"][..],
            "no availability with id 0xabcd",
        ),
        (
            &["availability", "remove", "abcd"][..],
            "no availability with id 0xabcd",
        ),
        (
            &["availability", "update", "abcd", "--total-size", "1GiB"][..],
            "no availability with id 0xabcd",
        ),
        (
            &["reservation", "list", "--availability", "abcd"][..],
            "no availability with id 0xabcd",
        ),
    ] {
        let o = codex(home, &env, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    assert!(
        !home.join("not-yet").exists(),
        "no directory or file was created"
    );
    // Adding creates it, and the readers then see what was added.
    ok(&add(home, &env, "1GiB"));
    assert!(d.join(codex::store::DB_FILE).is_file());
    assert_eq!(
        json_lines(&ok(&codex(home, &env, &["availability", "list", "--json"]))).len(),
        1
    );
}

#[test]
fn configuration_precedence_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let db_in = |dir: &Path| dir.join("codex.sqlite").exists();
    // default: $HOME/.local/share/codex
    ok(&add(home, &[], "1GiB"));
    assert!(db_in(&home.join(".local/share/codex")));
    // default: $XDG_DATA_HOME/codex wins over HOME
    let xdg = home.join("xdg");
    ok(&add(
        home,
        &[("XDG_DATA_HOME", xdg.to_str().unwrap())],
        "1GiB",
    ));
    assert!(db_in(&xdg.join("codex")));
    // file > default
    let file_dir = home.join("from-file");
    let cfg = home.join("codex.toml");
    std::fs::write(
        &cfg,
        format!(
            "data-dir = {:?}\nstorage-quota = \"1GiB\"\n",
            file_dir.to_str().unwrap()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    ok(&add(home, &[("CODEX_CONFIG_FILE", c)], "1GiB"));
    assert!(db_in(&file_dir));
    // the file's quota (1 GiB) is in force: a second GiB does not fit
    let o = add(home, &[("CODEX_CONFIG_FILE", c)], "1GiB");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Not enough storage quota"));
    // env > file
    let env_dir = home.join("from-env");
    let env = [
        ("CODEX_CONFIG_FILE", c),
        ("CODEX_DATA_DIR", env_dir.to_str().unwrap()),
        ("CODEX_STORAGE_QUOTA", "3GiB"),
    ];
    ok(&add(home, &env, "2GiB"));
    assert!(db_in(&env_dir));
    // cli > env: --storage-quota 2GiB refuses the next GiB that the env's 3 GiB allows
    let cli_quota = {
        let mut args = vec!["--storage-quota", "2GiB"];
        args.extend_from_slice(ADD);
        args.push("1GiB");
        codex(home, &env, &args)
    };
    assert_eq!(cli_quota.status.code(), Some(2));
    let cli_dir = home.join("from-cli");
    let mut args = vec!["--data-dir", cli_dir.to_str().unwrap(), "--config-file", c];
    args.extend_from_slice(ADD);
    args.push("1GiB");
    ok(&codex(home, &env, &args));
    assert!(db_in(&cli_dir));
    assert_eq!(
        json_lines(&ok(&codex(home, &env, &["availability", "list", "--json"]))).len(),
        1
    );
}

#[test]
fn json_logs_are_one_object_per_line_on_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let o = codex(
        home,
        &[("CODEX_LOG_FORMAT", "json")],
        &[
            "--log-level",
            "warn;debug:cli,store;trace:nosuchtopic",
            "availability",
            "add",
            "--total-size",
            "1GiB",
            "--duration",
            "1d",
            "--min-price-per-byte-per-second",
            "1",
            "--total-collateral",
            "1",
            "--json",
        ],
    );
    // Logs go to stderr only: stdout holds just the new availability.
    assert_eq!(json_lines(&ok(&o)).len(), 1);
    let err = String::from_utf8(o.stderr).unwrap();
    let lines = json_lines(&err);
    assert!(lines.len() >= 2, "{err}");
    for l in &lines {
        assert!(l["ts"].is_string() && l["level"].is_string() && l["msg"].is_string());
    }
    assert!(lines
        .iter()
        .any(|l| l["level"] == "WARN" && l["msg"] == "Unrecognized logging topic: nosuchtopic"));
    assert!(lines
        .iter()
        .any(|l| l["level"] == "DEBUG" && l["topic"].as_str().unwrap().starts_with("codex::cli")));
    // with JSON logs, an error is a JSON line too
    let o = codex(
        home,
        &[("CODEX_LOG_FORMAT", "json")],
        &["availability", "show", "beef"],
    );
    assert_eq!(o.status.code(), Some(2));
    let e = json_lines(&String::from_utf8(o.stderr).unwrap());
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["level"], "ERROR");
    assert_eq!(e[0]["msg"], "no availability with id 0xbeef");
    // the global level (warn) silences info elsewhere: the migration note of codex::store
    // (the database was created by this `add`) shows only because `store` was set to debug
    assert!(lines.iter().any(|l| l["topic"] == "codex::store"));
}

#[test]
fn closed_stdout_pipe_exits_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    {
        let mut s = Store::open(&d, Options::cli()).unwrap();
        let items = (0..1_000u32)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                (
                    AvailabilityId(id),
                    codex::sales::ledger::NewAvailability {
                        total_size: 1,
                        duration: 1,
                        min_price_per_byte_per_second: U256::from(1),
                        total_collateral: U256::from(1),
                        enabled: true,
                        until: 0,
                    },
                )
            })
            .collect();
        s.create_availabilities(
            items,
            Limits {
                quota: u64::MAX,
                now: 0,
            },
        )
        .unwrap();
    }
    // 1,000 JSON lines are far more than a pipe buffer holds, so closing the read end
    // before reading guarantees the writer meets EPIPE.
    let mut child = Command::new(env!("CARGO_BIN_EXE_codex"))
        .env_clear()
        .env("HOME", tmp.path())
        .args([
            "--data-dir",
            d.to_str().unwrap(),
            "availability",
            "list",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(err, "");
}
