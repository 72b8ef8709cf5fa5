//! The validated configuration, built once before any work starts.
//!
//! Every setting comes from the first of these that has it:
//! 1. the command-line option (`--storage-quota 8GiB`);
//! 2. the environment variable `CODEX_<OPTION>` (upper case, dashes as underscores:
//!    `CODEX_STORAGE_QUOTA=8GiB`); an empty variable counts as unset;
//! 3. the TOML file named by `--config-file` (or `CODEX_CONFIG_FILE`), whose keys are the
//!    long option names (`storage-quota = "8GiB"`); unknown keys are refused;
//! 4. the default.
//!
//! [`Sources`] holds layers 2 and 3 so that subcommands with their own layered options
//! (`run --eth-provider`, ...) resolve them the same way; such options add their key to
//! [`FILE_KEYS`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::logging::{LogFormat, LogLevel};

/// Keys a config file may contain (the long option names).
pub const FILE_KEYS: &[&str] = &[
    "data-dir",
    "storage-quota",
    "log-level",
    "log-format",
    // The chain options (crate::chain::settings::KEYS).
    "eth-provider",
    "eth-private-key",
    "marketplace-address",
    "eth-timeout",
    "eth-confirmations",
    "eth-ca-file",
    // The options of `codex run` (crate::cli::run).
    "queue-size",
    "max-workers",
    "data-source",
    "simulate-proof-failures",
    "reward-recipient",
    "from-block",
    "download-timeout",
    "api-bindaddr",
    "api-port",
    "api-cors-origin",
    "metrics",
    "metrics-address",
    "metrics-port",
    "validator",
    "validator-max-slots",
    "validator-groups",
    "validator-group-index",
];

/// The default storage quota: 20 GiB.
pub const DEFAULT_STORAGE_QUOTA: u64 = 20 << 30;

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line option `--<key>`.
    Cli,
    /// The environment variable of that name.
    Env(String),
    /// A config file.
    File(PathBuf),
    /// The built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Cli => f.write_str("command line"),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::File(p) => write!(f, "config file {}", p.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// Configuration errors. All are usage errors (exit 2) except [`ConfigError::Io`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file does not exist.
    #[error("config file {0} does not exist")]
    FileMissing(PathBuf),
    /// The config file exists but cannot be read (permissions, a directory, I/O).
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    /// A key that is not a codex option.
    #[error("config file {path}: unknown key {key:?} (known: {known})")]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    /// A value of the wrong TOML type (tables, arrays, dates).
    #[error("config file {path}: key {key:?} must be a string, integer or boolean")]
    BadType { path: PathBuf, key: String },
    /// A value that fails its option's parser.
    #[error("invalid --{key} {value:?} (from {origin}): {message}")]
    Invalid {
        key: &'static str,
        value: String,
        origin: Origin,
        message: String,
    },
    /// No data directory: neither --data-dir, XDG_DATA_HOME nor HOME is set.
    #[error("no data directory: set --data-dir, CODEX_DATA_DIR, XDG_DATA_HOME or HOME")]
    NoDataDir,
}

impl ConfigError {
    /// Whether the environment is at fault (an unreadable file), not the user's input.
    pub fn is_environment(&self) -> bool {
        matches!(self, ConfigError::Io { .. })
    }
}

/// The environment-variable and config-file layers.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    env: BTreeMap<String, String>,
    file: Option<(PathBuf, BTreeMap<String, String>)>,
}

/// The environment variable of an option: `data-dir` → `CODEX_DATA_DIR`.
pub fn env_name(key: &str) -> String {
    format!("CODEX_{}", key.to_ascii_uppercase().replace('-', "_"))
}

impl Sources {
    /// Reads the layers: `env` is the process environment (passed in for tests),
    /// `config_file` the `--config-file` value.
    pub fn load<I>(config_file: Option<&str>, env: I) -> Result<Sources, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut s = Sources {
            env: env.into_iter().collect(),
            file: None,
        };
        let file = config_file
            .map(str::to_string)
            .or_else(|| s.env_value("config-file"));
        if let Some(path) = file {
            let path = PathBuf::from(path);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ConfigError::FileMissing(path))
                }
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(ConfigError::Parse {
                        path,
                        message: "not UTF-8 text".into(),
                    })
                }
                Err(source) => return Err(ConfigError::Io { path, source }),
            };
            let values = parse_file(&path, &text)?;
            s.file = Some((path, values));
        }
        Ok(s)
    }

    /// The layers of a config file's text alone (no environment); `path` names the file in
    /// errors. What [`Sources::load`] does once it has read the file: the decoder fuzz
    /// harness feeds it text directly.
    #[doc(hidden)]
    pub fn from_file_text(path: &Path, text: &str) -> Result<Sources, ConfigError> {
        Ok(Sources {
            env: BTreeMap::new(),
            file: Some((path.to_path_buf(), parse_file(path, text)?)),
        })
    }

    fn env_value(&self, key: &str) -> Option<String> {
        self.env
            .get(&env_name(key))
            .filter(|v| !v.is_empty())
            .cloned()
    }

    /// A raw environment variable (not `CODEX_`-prefixed), e.g. `HOME`.
    pub fn raw_env(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value of option `key`: the CLI value if given, else the environment, else the
    /// config file; None when no layer has it.
    pub fn get(&self, key: &str, cli: Option<&str>) -> Option<(String, Origin)> {
        if let Some(v) = cli {
            return Some((v.to_string(), Origin::Cli));
        }
        if let Some(v) = self.env_value(key) {
            return Some((v, Origin::Env(env_name(key))));
        }
        let (path, values) = self.file.as_ref()?;
        values
            .get(key)
            .map(|v| (v.clone(), Origin::File(path.clone())))
    }

    /// Resolves and parses option `key`, or its default.
    pub fn parse<T>(
        &self,
        key: &'static str,
        cli: Option<&str>,
        default: impl FnOnce() -> T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.get(key, cli) {
            None => Ok(default()),
            Some((value, origin)) => parse(&value).map_err(|message| ConfigError::Invalid {
                key,
                value,
                origin,
                message,
            }),
        }
    }

    /// The config file in use, if any.
    pub fn config_file(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }
}

/// A config file's text as option values: a TOML table whose keys are all in [`FILE_KEYS`]
/// and whose values are strings, integers or booleans.
fn parse_file(path: &Path, text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
    let mut values = BTreeMap::new();
    for (key, v) in table {
        if !FILE_KEYS.contains(&key.as_str()) {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key,
                known: FILE_KEYS.join(", "),
            });
        }
        let v = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError::BadType {
                    path: path.to_path_buf(),
                    key,
                })
            }
        };
        values.insert(key, v);
    }
    Ok(values)
}

/// The global options as given on the command line (all optional strings: the layering
/// and parsing happen in [`Config::resolve`]).
#[derive(Debug, Clone, Default)]
pub struct GlobalArgs {
    pub data_dir: Option<String>,
    pub config_file: Option<String>,
    pub storage_quota: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

/// The validated global configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where codex keeps its database (`codex.sqlite`).
    pub data_dir: PathBuf,
    /// Upper bound of Σ total_size over all availabilities, bytes.
    pub storage_quota: u64,
    /// The parsed `--log-level`.
    pub log_level: LogLevel,
    /// The parsed `--log-format`.
    pub log_format: LogFormat,
    /// The layers, for subcommands' own layered options.
    pub sources: Sources,
}

impl Config {
    /// Applies the precedence rules to every global option and validates the result.
    pub fn resolve<I>(args: &GlobalArgs, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let sources = Sources::load(args.config_file.as_deref(), env)?;
        let data_dir = match sources.get("data-dir", args.data_dir.as_deref()) {
            Some((v, origin)) if v.is_empty() => {
                return Err(ConfigError::Invalid {
                    key: "data-dir",
                    value: v,
                    origin,
                    message: "must not be empty".into(),
                })
            }
            Some((v, _)) => PathBuf::from(v),
            None => default_data_dir(&sources).ok_or(ConfigError::NoDataDir)?,
        };
        let storage_quota = sources.parse(
            "storage-quota",
            args.storage_quota.as_deref(),
            || DEFAULT_STORAGE_QUOTA,
            crate::units::size_arg,
        )?;
        let log_level = sources.parse(
            "log-level",
            args.log_level.as_deref(),
            LogLevel::default,
            LogLevel::parse,
        )?;
        let log_format = sources.parse(
            "log-format",
            args.log_format.as_deref(),
            || LogFormat::Auto,
            LogFormat::parse,
        )?;
        Ok(Config {
            data_dir,
            storage_quota,
            log_level,
            log_format,
            sources,
        })
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(crate::store::DB_FILE)
    }
}

/// `$XDG_DATA_HOME/codex`, else `$HOME/.local/share/codex`.
fn default_data_dir(s: &Sources) -> Option<PathBuf> {
    if let Some(x) = s.raw_env("XDG_DATA_HOME") {
        return Some(Path::new(x).join("codex"));
    }
    s.raw_env("HOME")
        .map(|h| Path::new(h).join(".local/share/codex"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> (tempfile::TempDir, String) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("codex.toml");
        std::fs::write(&p, text).unwrap();
        let p = p.to_str().unwrap().to_string();
        (d, p)
    }

    #[test]
    fn every_precedence_step() {
        let (_d, path) =
            file("storage-quota = \"3GiB\"\ndata-dir = \"/from/file\"\nlog-format = \"json\"\n");
        // default
        let c = Config::resolve(&GlobalArgs::default(), env(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(c.storage_quota, DEFAULT_STORAGE_QUOTA);
        assert_eq!(c.data_dir, PathBuf::from("/home/u/.local/share/codex"));
        assert_eq!(c.log_format, LogFormat::Auto);
        // XDG_DATA_HOME beats HOME for the default
        let c = Config::resolve(
            &GlobalArgs::default(),
            env(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "/xdg")]),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/xdg/codex"));
        // file > default
        let args = GlobalArgs {
            config_file: Some(path.clone()),
            ..Default::default()
        };
        let c = Config::resolve(&args, env(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(c.storage_quota, 3 << 30);
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.log_format, LogFormat::Json);
        // env > file
        let e = env(&[
            ("CODEX_STORAGE_QUOTA", "4GiB"),
            ("CODEX_DATA_DIR", "/from/env"),
            ("CODEX_LOG_FORMAT", ""),
        ]);
        let c = Config::resolve(&args, e.clone()).unwrap();
        assert_eq!(c.storage_quota, 4 << 30);
        assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        assert_eq!(
            c.log_format,
            LogFormat::Json,
            "empty env var counts as unset"
        );
        // cli > env
        let args = GlobalArgs {
            config_file: Some(path),
            storage_quota: Some("5GiB".into()),
            data_dir: Some("/from/cli".into()),
            ..Default::default()
        };
        let c = Config::resolve(&args, e).unwrap();
        assert_eq!(c.storage_quota, 5 << 30);
        assert_eq!(c.data_dir, PathBuf::from("/from/cli"));
    }

    #[test]
    fn config_file_from_env() {
        let (_d, path) = file("storage-quota = 1024\n");
        let c = Config::resolve(
            &GlobalArgs::default(),
            env(&[("HOME", "/h"), ("CODEX_CONFIG_FILE", &path)]),
        )
        .unwrap();
        assert_eq!(c.storage_quota, 1024);
    }

    #[test]
    fn errors_name_value_and_origin() {
        let e = Config::resolve(
            &GlobalArgs::default(),
            env(&[("HOME", "/h"), ("CODEX_STORAGE_QUOTA", "lots")]),
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("--storage-quota")
                && m.contains("\"lots\"")
                && m.contains("CODEX_STORAGE_QUOTA"),
            "{m}"
        );
        assert!(!e.is_environment());
        let (_d, bad) = file("storage-quota = [1]\n");
        let args = GlobalArgs {
            config_file: Some(bad),
            ..Default::default()
        };
        assert!(matches!(
            Config::resolve(&args, env(&[("HOME", "/h")])),
            Err(ConfigError::BadType { .. })
        ));
        let (_d, bad) = file("storage_quota = 1\n");
        let args = GlobalArgs {
            config_file: Some(bad),
            ..Default::default()
        };
        assert!(matches!(
            Config::resolve(&args, env(&[("HOME", "/h")])),
            Err(ConfigError::UnknownKey { .. })
        ));
        let (_d, bad) = file("storage-quota = \n");
        let args = GlobalArgs {
            config_file: Some(bad),
            ..Default::default()
        };
        assert!(matches!(
            Config::resolve(&args, env(&[("HOME", "/h")])),
            Err(ConfigError::Parse { .. })
        ));
        let d = tempfile::tempdir().unwrap();
        let args = GlobalArgs {
            config_file: Some(d.path().to_str().unwrap().into()),
            ..Default::default()
        };
        let e = Config::resolve(&args, env(&[("HOME", "/h")])).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
        assert!(e.is_environment());
        assert!(matches!(
            Config::resolve(&GlobalArgs::default(), env(&[])),
            Err(ConfigError::NoDataDir)
        ));
    }
}

#[cfg(test)]
mod keys_tests {
    /// Every chain option is a file key too (the two lists must not drift apart).
    #[test]
    fn file_keys_hold_every_chain_key() {
        for k in crate::chain::settings::KEYS {
            assert!(
                super::FILE_KEYS.contains(k),
                "{k} is missing from FILE_KEYS"
            );
        }
    }
}
