//! Logging to stderr, configured as the reference node's is.
//!
//! `--log-level LEVEL[;LEVEL:topic,topic...]`: the first segment is the global level
//! (trace, debug, info, notice, warn, error, fatal; case-insensitive; notice = info and
//! fatal = error here), each further segment a level for some topics. A topic names a part of
//! codex (see [`TOPICS`]); an unknown topic is reported with the warning "Unrecognized
//! logging topic" and otherwise ignored.
//!
//! `--log-format auto|colors|nocolors|json|none`: text lines, with ANSI colours or not
//! (`auto`: colours when stderr is a terminal), one JSON object per line
//! (`{"ts":"…","level":"INFO","topic":"codex::store","msg":"…"}`), or nothing.
//!
//! The logger is a few lines over `log`: simplelog has neither per-module levels nor JSON.

use std::io::{IsTerminal, Write};
use std::sync::{OnceLock, RwLock};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Topic names accepted in `--log-level` and the module paths they select.
/// The reference's topic names map to the modules that do that work here.
pub const TOPICS: &[(&str, &[&str])] = &[
    ("sales", &["codex::sales", "codex::proving"]),
    ("slotqueue", &["codex::sales::queue"]),
    ("reservations", &["codex::sales::ledger", "codex::store"]),
    ("statemachine", &["codex::sales"]),
    (
        "marketplace",
        &["codex::market", "codex::sales", "codex::chain"],
    ),
    ("market", &["codex::market"]),
    ("chain", &["codex::chain"]),
    ("contracts", &["codex::chain"]),
    ("proving", &["codex::proving"]),
    ("validator", &["codex::validator"]),
    ("clock", &["codex::node"]),
    ("node", &["codex::node"]),
    ("store", &["codex::store"]),
    ("cli", &["codex::cli", "codex::config"]),
];

/// A parsed `--log-level`. The default is `info` for everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel {
    /// The level of everything without a topic directive.
    pub global: LevelFilter,
    /// (module path prefix, level), most specific prefix first.
    pub modules: Vec<(String, LevelFilter)>,
    /// Topics that were not recognized (reported once the logger runs).
    pub unknown_topics: Vec<String>,
}

impl Default for LogLevel {
    fn default() -> Self {
        LogLevel {
            global: LevelFilter::Info,
            modules: Vec::new(),
            unknown_topics: Vec::new(),
        }
    }
}

fn parse_level(s: &str) -> Option<LevelFilter> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::Trace,
        "debug" => LevelFilter::Debug,
        "info" | "notice" => LevelFilter::Info,
        "warn" | "warning" => LevelFilter::Warn,
        "error" | "fatal" => LevelFilter::Error,
        "none" | "off" => LevelFilter::Off,
        _ => return None,
    })
}

const LEVEL_HELP: &str = "Please specify one of: trace, debug, info, notice, warn, error or fatal";

impl LogLevel {
    /// Parses `LEVEL[;LEVEL:topic,topic...]`.
    pub fn parse(s: &str) -> Result<LogLevel, String> {
        let mut segs = s.split(';');
        let first = segs.next().unwrap_or("");
        let global = parse_level(first).ok_or_else(|| {
            format!("Invalid value for --log-level {s:?}: unknown level {first:?}. {LEVEL_HELP}")
        })?;
        let mut modules = Vec::new();
        let mut unknown_topics = Vec::new();
        for seg in segs.filter(|s| !s.trim().is_empty()) {
            let (lvl, topics) = seg.split_once(':').ok_or_else(|| {
                format!("Invalid value for --log-level {s:?}: {seg:?} is not LEVEL:topic,topic")
            })?;
            let level = parse_level(lvl).ok_or_else(|| {
                format!("Invalid value for --log-level {s:?}: unknown level {lvl:?}. {LEVEL_HELP}")
            })?;
            for topic in topics.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                match TOPICS
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(topic))
                {
                    Some((_, paths)) => {
                        for p in *paths {
                            modules.retain(|(m, _): &(String, LevelFilter)| m != p);
                            modules.push((p.to_string(), level));
                        }
                    }
                    None => unknown_topics.push(topic.to_string()),
                }
            }
        }
        modules.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
        Ok(LogLevel {
            global,
            modules,
            unknown_topics,
        })
    }

    /// The level that applies to a log target (a module path).
    pub fn level_for(&self, target: &str) -> LevelFilter {
        self.modules
            .iter()
            .find(|(m, _)| {
                target == m
                    || (target.starts_with(m.as_str()) && target[m.len()..].starts_with("::"))
            })
            .map_or(self.global, |(_, l)| *l)
    }

    fn max(&self) -> LevelFilter {
        self.modules
            .iter()
            .map(|(_, l)| *l)
            .fold(self.global, std::cmp::max)
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Colours when stderr is a terminal.
    Auto,
    /// Text with ANSI colours.
    Colors,
    /// Plain text.
    NoColors,
    /// One JSON object per line.
    Json,
    /// No logging.
    None,
}

impl LogFormat {
    /// Parses `auto|colors|nocolors|json|none`.
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" => LogFormat::Auto,
            "colors" => LogFormat::Colors,
            "nocolors" => LogFormat::NoColors,
            "json" => LogFormat::Json,
            "none" => LogFormat::None,
            _ => {
                return Err(format!(
                    "Invalid value for --log-format {s:?}: expected auto, colors, nocolors, json or none"
                ))
            }
        })
    }
}

struct Logger {
    level: RwLock<LogLevel>,
    format: LogFormat,
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), without a date crate.
fn timestamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Collects a record's key-value fields for the JSON format.
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for JsonFields {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let v = match value.to_u64() {
            Some(n) => serde_json::Value::from(n),
            None => serde_json::Value::from(value.to_string()),
        };
        self.0.insert(key.as_str().to_string(), v);
        Ok(())
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        self.format != LogFormat::None
            && match self.level.read() {
                Ok(l) => m.level() <= l.level_for(m.target()),
                Err(_) => false,
            }
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = match self.format {
            LogFormat::Json => {
                let mut v = serde_json::json!({
                    "ts": timestamp(),
                    "level": record.level().as_str(),
                    "topic": record.target(),
                    "msg": record.args().to_string(),
                });
                // Structured fields (full ids, where the text has short ones).
                let mut fields = JsonFields(serde_json::Map::new());
                let _ = record.key_values().visit(&mut fields);
                if let Some(obj) = v.as_object_mut() {
                    for (k, val) in fields.0 {
                        obj.entry(k).or_insert(val);
                    }
                }
                v.to_string()
            }
            LogFormat::Colors => {
                let colour = match record.level() {
                    Level::Error => "31",
                    Level::Warn => "33",
                    Level::Info => "32",
                    Level::Debug => "36",
                    Level::Trace => "90",
                };
                format!(
                    "\x1b[90m{}\x1b[0m \x1b[{colour}m{:<5}\x1b[0m \x1b[90m{}\x1b[0m {}",
                    timestamp(),
                    record.level(),
                    record.target(),
                    record.args()
                )
            }
            _ => format!(
                "{} {:<5} {} {}",
                timestamp(),
                record.level(),
                record.target(),
                record.args()
            ),
        };
        // A log line that cannot be written (stderr closed) is dropped.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Installs the logger (once per process; later calls keep the first configuration).
/// Reports unknown topics with the warning "Unrecognized logging topic".
pub fn init(level: &LogLevel, format: LogFormat) {
    let format = match format {
        LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Colors,
        LogFormat::Auto => LogFormat::NoColors,
        f => f,
    };
    let logger = LOGGER.get_or_init(|| Logger {
        level: RwLock::new(level.clone()),
        format,
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(if format == LogFormat::None {
            LevelFilter::Off
        } else {
            level.max()
        });
    }
    for t in &level.unknown_topics {
        log::warn!("Unrecognized logging topic: {t}");
    }
}

/// Changes the level of the installed logger at run time (the REST API's
/// `POST /debug/chronicles/loglevel`); unknown topics are ignored, as at start-up.
pub fn set_level(level: &LogLevel) {
    if let Some(logger) = LOGGER.get() {
        if let Ok(mut l) = logger.level.write() {
            *l = level.clone();
        }
        if logger.format != LogFormat::None {
            log::set_max_level(level.max());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_topics() {
        let l = LogLevel::parse("INFO;trace:sales,slotqueue;error:store").unwrap();
        assert_eq!(l.global, LevelFilter::Info);
        assert_eq!(l.level_for("codex::sales::queue"), LevelFilter::Trace);
        assert_eq!(l.level_for("codex::sales"), LevelFilter::Trace);
        assert_eq!(l.level_for("codex::salesman"), LevelFilter::Info);
        assert_eq!(l.level_for("codex::store::migrations"), LevelFilter::Error);
        assert_eq!(l.level_for("codex::cli"), LevelFilter::Info);
        assert_eq!(l.max(), LevelFilter::Trace);
        let l = LogLevel::parse("notice;debug:nosuchtopic").unwrap();
        assert_eq!(l.unknown_topics, vec!["nosuchtopic".to_string()]);
        let e = LogLevel::parse("loud").unwrap_err();
        assert!(e.starts_with("Invalid value for --log-level"), "{e}");
        assert!(LogLevel::parse("info;trace").is_err());
        assert!(LogLevel::parse("info;bogus:sales").is_err());
        assert_eq!(LogLevel::parse("fatal").unwrap().global, LevelFilter::Error);
    }

    #[test]
    fn formats() {
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse("NoColors"), Ok(LogFormat::NoColors));
        assert!(LogFormat::parse("xml").is_err());
    }

    #[test]
    fn timestamp_shape() {
        let t = timestamp();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }
}
