//! `kv-server --config FILE`: the server's flags, set from a TOML file or
//! from environment variables as well as from the command line.
//!
//! A setting can come from four places, and the first that has it wins:
//!
//! 1. the command line: `--data-dir /var/lib/kv`;
//! 2. an environment variable, `KV_` and the flag's long name in capitals
//!    with `_` for `-`: `KV_DATA_DIR=/var/lib/kv` ([`env_name`]);
//! 3. the config file, keyed by the flag's long name, as written after
//!    `--`: `data-dir = "/var/lib/kv"`, `insecure = true`;
//! 4. the flag's built-in default.
//!
//! # How
//!
//! [`with_env`] gives every flag its variable, which clap reads itself.
//! [`merge`] parses the command line leniently to learn where the file is
//! and which flags the command line or the environment already set, reads
//! the file, and turns each of its other settings into an argument,
//! `--name=value` (or `--name` for a flag that is `true`), placed before the
//! real ones. Parsing that for real then checks every value the same way
//! wherever it came from: its type and range, and the flags that need or
//! exclude each other, so a file that sets `token-file` without
//! `cluster-secret-file` is refused just as the command line would be
//! ([`Merged::note`] then says which flags came from the file or from
//! variables). Subcommands (kv-server's offline `inspect`, `certs`,
//! `tokens`) take neither: [`names_subcommand`] lets the caller leave the
//! variables out for them.
//!
//! A key that names no flag is refused, naming the key and the file: a
//! misspelt setting that were silently ignored could leave a node without
//! the TLS or the tokens its operator meant it to have. So are the key of
//! the config flag itself (a file names no other file) and values that are
//! no single string, number or boolean.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command};

/// The long name (and id) of the flag that names the config file.
pub const CONFIG_FLAG: &str = "config";

/// Why the config file cannot be used. Each message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file could not be read (missing, a directory, no permission).
    #[error("reading the config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("the config file {} is not valid TOML: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where and what, as the TOML parser says it.
        message: String,
    },
    /// A key that names no flag.
    #[error(
        "the config file {} sets {key:?}, which is not a setting{hint}; \
         the keys are the long flags' names, as --help lists them",
        path.display()
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// A suggestion, if the key resembles a flag's name.
        hint: String,
    },
    /// A key whose value cannot stand for its flag.
    #[error("the config file {} sets {key:?}: {reason}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What was expected.
        reason: String,
    },
}

/// The environment variable of the flag `--long`: `KV_` and the name in
/// capitals, `-` as `_` (`data-dir`: `KV_DATA_DIR`).
pub fn env_name(long: &str) -> String {
    format!("{}{}", kv_client::server_env::PREFIX, long.to_uppercase().replace('-', "_"))
}

/// `command` with an environment variable ([`env_name`]) for each of its
/// top-level flags but `--help` and `--version`. The variables are left out
/// of `--help`, whose text should say the rule once instead of thirty
/// times. A `true`/`false` flag's variable takes `true`, `false`, `yes`,
/// `no`, `on`, `off`, `1` or `0`.
pub fn with_env(command: Command) -> Command {
    command.mut_args(|arg| {
        let Some(long) = settable(&arg).map(env_name) else { return arg };
        let arg = arg.env(long).hide_env(true);
        match arg.get_action() {
            ArgAction::SetTrue => arg.value_parser(BoolishValueParser::new()),
            _ => arg,
        }
    })
}

/// Whether `args` run one of `command`'s subcommands. The variables and the
/// file are for the top-level flags: a caller should give a subcommand's
/// run `command` without [`with_env`], so that a variable meant for a
/// server (or a bad one) does not stop an offline tool.
pub fn names_subcommand(command: &Command, args: &[OsString]) -> bool {
    let matches = command.clone().ignore_errors(true).try_get_matches_from(args);
    matches.is_ok_and(|m| m.subcommand_name().is_some())
}

/// The long name of a flag that a variable or the file may set.
fn settable(arg: &Arg) -> Option<&str> {
    match arg.get_action() {
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version => None,
        _ if arg.is_positional() => None,
        _ => arg.get_long(),
    }
}

/// The command line with the config file's settings in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    /// The arguments to parse: the program name, the file's settings as
    /// arguments, then the real arguments.
    pub args: Vec<OsString>,
    /// The config file, if one was named.
    pub file: Option<PathBuf>,
    /// The flags the file set, by long name.
    pub from_file: Vec<String>,
    /// The flags the file also set but the command line or the environment
    /// overrode, by long name.
    pub overridden: Vec<String>,
    /// The flags set by environment variables, by long name.
    pub from_env: Vec<String>,
}

impl Merged {
    /// For an error in parsing [`Merged::args`]: which of the flags it may
    /// name the user did not type, because they came from environment
    /// variables or the config file. `None` when all came from the command
    /// line.
    pub fn note(&self) -> Option<String> {
        let mut lines = Vec::new();
        if !self.from_env.is_empty() {
            let vars: Vec<String> =
                self.from_env.iter().map(|f| format!("{} (--{f})", env_name(f))).collect();
            lines.push(format!("note: set by environment variables: {}", vars.join(", ")));
        }
        if let (Some(file), false) = (&self.file, self.from_file.is_empty()) {
            let flags: Vec<String> = self.from_file.iter().map(|f| format!("--{f}")).collect();
            lines.push(format!("note: set by the config file {}: {}", file.display(), flags.join(" ")));
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

/// Puts the settings of the config file named by `--config` (or its
/// variable) into `args`, under the command line and the environment (see
/// the [module docs](self)). `command` should be [`with_env`]'s. Without a
/// config file, or when `args` name a subcommand or ask for help, the
/// arguments come back as they are.
///
/// # Errors
/// [`ConfigFileError`]: the file cannot be read, is not TOML, or sets a key
/// that is no flag or a value that is no single string, number or boolean.
/// Whether each value suits its flag is left to the parse of the result.
pub fn merge(command: &Command, args: Vec<OsString>) -> Result<Merged, ConfigFileError> {
    // Lenient: the command line alone may lack what the file adds (a flag
    // that requires another). Help and version come back as errors.
    let Ok(matches) = command.clone().ignore_errors(true).try_get_matches_from(&args) else {
        return Ok(Merged { args, ..Merged::default() });
    };
    let flags: Vec<&Arg> = command.get_arguments().filter(|a| settable(a).is_some()).collect();
    let from_env = flags
        .iter()
        .filter(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::EnvVariable))
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let file = match matches.try_get_raw(CONFIG_FLAG) {
        Ok(Some(mut raw)) if matches.subcommand_name().is_none() => raw.next().map(PathBuf::from),
        _ => None,
    };
    let Some(path) = file else { return Ok(Merged { args, from_env, ..Merged::default() }) };
    let text = std::fs::read_to_string(&path)
        .map_err(|source| ConfigFileError::Read { path: path.clone(), source })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigFileError::Malformed {
        path: path.clone(),
        message: e.to_string(),
    })?;

    let mut from_file_args = Vec::new();
    let mut merged = Merged { file: Some(path.clone()), from_env, ..Merged::default() };
    for (key, value) in &table {
        let bad = |reason: &str| ConfigFileError::BadValue {
            path: path.clone(),
            key: key.clone(),
            reason: reason.to_owned(),
        };
        if key == CONFIG_FLAG {
            return Err(bad("a config file cannot name another one"));
        }
        let Some(arg) = flags.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            return Err(unknown_key(&path, key, &flags));
        };
        if matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            merged.overridden.push(key.clone());
            continue;
        }
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(true)) => {
                from_file_args.push(OsString::from(format!("--{key}")))
            }
            (ArgAction::SetTrue, toml::Value::Boolean(false)) => {}
            (ArgAction::SetTrue, _) => return Err(bad("expected true or false")),
            (_, value) => {
                let value = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => return Err(bad("expected a single string, number or boolean")),
                };
                from_file_args.push(OsString::from(format!("--{key}={value}")));
            }
        }
        merged.from_file.push(key.clone());
    }
    let mut args = args.into_iter();
    merged.args = args.next().into_iter().chain(from_file_args).chain(args).collect();
    Ok(merged)
}

/// The error for a key that is no flag, with a suggestion when it is one
/// spelt with `_` (`data_dir` for `data-dir`).
fn unknown_key(path: &std::path::Path, key: &str, flags: &[&Arg]) -> ConfigFileError {
    let kebab = key.replace('_', "-");
    let hint = match flags.iter().find(|a| a.get_long() == Some(kebab.as_str())) {
        Some(_) if kebab != key => format!(" (did you mean {kebab:?}?)"),
        _ => String::new(),
    };
    ConfigFileError::UnknownKey { path: path.to_path_buf(), key: key.to_owned(), hint }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use clap::ArgMatches;

    use super::*;

    /// A small stand-in for kv-server's flags: a value with a default, a
    /// boolean, and two flags that need each other.
    fn command() -> Command {
        with_env(
            Command::new("kv-server")
                .arg(Arg::new("config").long("config"))
                .arg(Arg::new("data_dir").long("data-dir").default_value("./data"))
                .arg(Arg::new("heartbeat_ms").long("heartbeat-ms").value_parser(clap::value_parser!(u64)))
                .arg(Arg::new("insecure").long("insecure").action(ArgAction::SetTrue))
                .arg(Arg::new("token_file").long("token-file").requires("secret_file"))
                .arg(Arg::new("secret_file").long("cluster-secret-file").requires("token_file")),
        )
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    /// Merges and parses `args` with `config` as the file.
    fn parse(config: &tempfile::NamedTempFile, args: &[&str]) -> Result<(Merged, ArgMatches), String> {
        let mut all = vec!["kv-server".to_owned(), format!("--config={}", config.path().display())];
        all.extend(args.iter().map(|a| a.to_string()));
        let merged =
            merge(&command(), all.into_iter().map(OsString::from).collect()).map_err(|e| e.to_string())?;
        let matches = command().try_get_matches_from(&merged.args).map_err(|e| e.to_string())?;
        Ok((merged, matches))
    }

    #[test]
    fn the_file_sets_what_the_command_line_does_not() {
        let config = file("data-dir = \"/srv/kv\"\nheartbeat-ms = 150\ninsecure = true\n");
        let (merged, m) = parse(&config, &["--heartbeat-ms", "50"]).unwrap();
        assert_eq!(m.get_one::<String>("data_dir").unwrap(), "/srv/kv");
        assert_eq!(m.get_one::<u64>("heartbeat_ms"), Some(&50), "the flag wins over the file");
        assert!(m.get_flag("insecure"));
        assert_eq!(merged.from_file, ["data-dir", "insecure"]);
        assert_eq!(merged.overridden, ["heartbeat-ms"]);

        let config = file("insecure = false\n");
        let (_, m) = parse(&config, &[]).unwrap();
        assert!(!m.get_flag("insecure"));
        assert_eq!(m.get_one::<String>("data_dir").unwrap(), "./data", "the default stays");
    }

    #[test]
    fn every_flag_has_a_variable_named_after_it() {
        let command = command();
        let names: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        let expected = [
            "KV_CONFIG",
            "KV_DATA_DIR",
            "KV_HEARTBEAT_MS",
            "KV_INSECURE",
            "KV_TOKEN_FILE",
            "KV_CLUSTER_SECRET_FILE",
        ];
        assert_eq!(names, expected);
        assert!(command
            .get_arguments()
            .filter(|a| a.get_long() == Some("help"))
            .all(|a| a.get_env().is_none()));
    }

    #[test]
    fn flags_that_need_each_other_are_checked_after_the_merge() {
        // Half of a pair in the file is refused as on the command line...
        let config = file("token-file = \"/etc/kv/tokens\"\n");
        let err = parse(&config, &[]).unwrap_err();
        assert!(err.contains("--cluster-secret-file"), "{err}");
        // ...and the file may complete a pair the command line starts.
        let config = file("cluster-secret-file = \"/etc/kv/secret\"\n");
        let (_, m) = parse(&config, &["--token-file", "/etc/kv/tokens"]).unwrap();
        assert_eq!(m.get_one::<String>("secret_file").unwrap(), "/etc/kv/secret");
        let merged = parse(&config, &["--token-file", "t"]).unwrap().0;
        assert_eq!(
            merged.note().unwrap(),
            format!("note: set by the config file {}: --cluster-secret-file", config.path().display())
        );
    }

    #[test]
    fn unknown_keys_bad_values_and_bad_toml_are_refused_naming_the_file() {
        let shown = |text: &str| {
            let config = file(text);
            let err = parse(&config, &[]).unwrap_err();
            assert!(err.contains(&config.path().display().to_string()), "{err}");
            err
        };
        let err = shown("data_dir = \"/srv\"\n");
        assert!(
            err.contains("sets \"data_dir\", which is not a setting (did you mean \"data-dir\"?)"),
            "{err}"
        );
        let err = shown("colour = \"blue\"\n");
        assert!(err.contains("sets \"colour\", which is not a setting;"), "{err}");
        assert!(shown("insecure = \"yes\"\n").contains("expected true or false"));
        assert!(shown("data-dir = [\"a\", \"b\"]\n").contains("expected a single string"));
        assert!(shown("config = \"other.toml\"\n").contains("cannot name another"));
        let err = shown("data-dir = \"/srv\n");
        assert!(err.contains("is not valid TOML") && err.contains("line 1"), "{err}");
        let err =
            merge(&command(), ["kv-server", "--config", "/no/such/file.toml"].map(OsString::from).to_vec())
                .unwrap_err();
        assert!(err.to_string().starts_with("reading the config file /no/such/file.toml: "), "{err}");
    }

    #[test]
    fn a_subcommand_is_told_apart_from_a_run_with_flags() {
        let command = command().subcommand(Command::new("inspect").arg(Arg::new("dir").long("dir")));
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(names_subcommand(&command, &args(&["kv-server", "inspect", "--dir", "d"])));
        assert!(!names_subcommand(&command, &args(&["kv-server", "--data-dir", "inspect"])));
        assert!(!names_subcommand(&command, &args(&["kv-server"])));
    }

    #[test]
    fn without_a_file_or_with_help_the_arguments_stay_as_they_are() {
        let args: Vec<OsString> = ["kv-server", "--insecure"].map(OsString::from).to_vec();
        assert_eq!(merge(&command(), args.clone()).unwrap().args, args);
        let help: Vec<OsString> =
            ["kv-server", "--config", "/no/such/file", "--help"].map(OsString::from).to_vec();
        assert_eq!(merge(&command(), help.clone()).unwrap().args, help, "help does not read the file");
    }
}
