//! Where `kv-server` takes its settings from, and how it logs, end to end:
//! real `kv-server` processes, each with a clean environment plus the
//! `KV_*` variables a test gives it.
//!
//! * A config file (`--config`) sets the id, the addresses, the data
//!   directory, a boolean flag and the log format, and the node serves
//!   there with them.
//! * An environment variable overrides the file, and a flag overrides both;
//!   a boolean works from all three places.
//! * The file is refused, naming it, when it holds an unknown key or is not
//!   TOML; half of a pair of flags that need each other in the file gets
//!   the same error as on the command line.
//! * `--log-format json` writes one JSON object per line on stderr, and
//!   text logs written to a file hold no colour codes.
//! * A log level that is no level is refused, naming where it came from.
//! * `kv-server inspect` reads no variable and no file.

mod common;

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use kv_client::client::Client;

const SERVER: &str = env!("CARGO_BIN_EXE_kv-server");

/// The fault-injection warning `--unsafe-local-reads` logs at startup: a
/// boolean flag whose effect the log shows.
const LOCAL_READS_WARNING: &str = "fault injection: linearizable reads served from local state";

/// `kv-server` with none of the test process's `KV_*` variables, and
/// `env` added.
fn server(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(SERVER);
    kv_client::server_env::clear(&mut command).args(args).envs(env.iter().copied());
    command
}

/// Runs a kv-server that is expected to refuse its settings, and returns
/// its stderr. `--id 0` stops one that accepted them before it binds a
/// port, so that the test fails instead of waiting for a server.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out: Output = server(&[&["--id", "0"][..], args].concat(), env).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "kv-server started: {stderr}");
    stderr
}

/// A running kv-server, killed when dropped, with its stderr in a file.
struct Running {
    child: Child,
    /// The HTTP and Raft addresses it says it listens on.
    http: String,
    raft: String,
    log: std::path::PathBuf,
}

impl Running {
    /// Starts `kv-server ARGS` with `env`, stderr to `log`, and waits for
    /// its "listening" line.
    fn start(args: &[&str], env: &[(&str, &str)], log: &Path) -> Running {
        let mut child = server(args, env)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let field = |name: &str| {
            line.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_owned).unwrap_or_default()
        };
        let running = Running { http: field("http="), raft: field("raft="), child, log: log.to_path_buf() };
        assert!(
            !running.http.is_empty(),
            "kv-server did not start: {line:?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        running
    }

    /// Stops it, and returns what it logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_file_sets_the_node_up_and_variables_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let (http, raft) = (common::free_addr(), common::free_addr());
    let file_data = dir.path().join("data-from-file");
    let config = write(
        &dir.path().join("kv.toml"),
        &format!(
            "# A node of test cluster \"cfg\".\n\
             id = 7\n\
             cluster-id = \"cfg\"\n\
             http-addr = \"{http}\"\n\
             raft-addr = \"{raft}\"\n\
             data-dir = \"{}\"\n\
             unsafe-local-reads = true\n\
             log-format = \"json\"\n\
             heartbeat-ms = 100\n",
            file_data.display()
        ),
    );

    // The file alone.
    let node = Running::start(&["--config", &config], &[], &dir.path().join("first.log"));
    assert_eq!((node.http.as_str(), node.raft.as_str()), (http.as_str(), raft.as_str()));
    let status = Client::new(vec![http.clone()]).unwrap().status(None).await.unwrap();
    assert_eq!(status.id, 7, "the id comes from the file");
    let log = node.stop();
    assert!(file_data.join("raft.redb").is_file(), "the data directory comes from the file");
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect();
    assert!(events.iter().any(|e| e["message"] == LOCAL_READS_WARNING && e["level"] == "WARN"), "{log}");
    assert!(events.iter().all(|e| e["timestamp"].is_string() && e["target"].is_string()), "{log}");

    // The offline commands take neither variables nor the file: ones meant
    // for a server, even bad ones, do not stop them.
    let env = [("KV_ID", "not-a-number"), ("KV_CONFIG", "/no/such/file.toml")];
    let out =
        server(&["inspect", "--json", "--data-dir", file_data.to_str().unwrap()], &env).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A variable overrides the file, for a path and for a boolean; a flag
    // overrides a variable and the file.
    let env_data = dir.path().join("data-from-env");
    let flag_http = common::free_addr();
    let env = [
        ("KV_DATA_DIR", env_data.to_str().unwrap()),
        ("KV_UNSAFE_LOCAL_READS", "false"),
        ("KV_HTTP_ADDR", http.as_str()),
        ("KV_LOG_FORMAT", "json"),
    ];
    let args = ["--config", &config, "--http-addr", &flag_http, "--log-format", "text"];
    let node = Running::start(&args, &env, &dir.path().join("second.log"));
    assert_eq!((node.http.as_str(), node.raft.as_str()), (flag_http.as_str(), raft.as_str()));
    let log = node.stop();
    assert!(env_data.join("raft.redb").is_file(), "the data directory comes from KV_DATA_DIR");
    assert!(!log.contains(LOCAL_READS_WARNING), "KV_UNSAFE_LOCAL_READS=false wins over the file:\n{log}");
    assert!(log.contains("settings read from the config file"), "{log}");
    assert!(!log.contains("\x1b["), "a log written to a file has no colour codes:\n{log}");
    assert!(!log.trim_start().starts_with('{'), "--log-format text wins over KV_LOG_FORMAT:\n{log}");
}

#[test]
fn a_boolean_flag_works_from_a_variable_and_a_flag_beats_a_variable() {
    let dir = tempfile::tempdir().unwrap();
    let base = |name: &str| {
        let data = dir.path().join(name);
        let (http, raft) = (common::free_addr(), common::free_addr());
        [("KV_DATA_DIR", data.to_str().unwrap().to_owned()), ("KV_HTTP_ADDR", http), ("KV_RAFT_ADDR", raft)]
    };
    let env = base("a");
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("KV_UNSAFE_LOCAL_READS", "yes"));
    let log = Running::start(&[], &env, &dir.path().join("a.log")).stop();
    assert!(log.contains(LOCAL_READS_WARNING), "{log}");

    // A variable's value is checked like a flag's, and the error names it.
    let stderr = refused(&[], &[("KV_UNSAFE_LOCAL_READS", "maybe")]);
    assert!(stderr.contains("invalid value 'maybe'") && stderr.contains("KV_UNSAFE_LOCAL_READS"), "{stderr}");
    // Which of three places set --max-value-bytes shows in the error about
    // its value.
    let config = write(&dir.path().join("v.toml"), "max-value-bytes = \"from-file\"\n");
    let shown = |args: &[&str], env: &[(&str, &str)]| {
        let stderr = refused(&[&["--config", config.as_str()][..], args].concat(), env);
        let value =
            ["from-file", "from-env", "from-flag"].into_iter().find(|v| stderr.contains(&format!("'{v}'")));
        value.unwrap_or_else(|| panic!("no value named: {stderr}"))
    };
    assert_eq!(shown(&[], &[]), "from-file");
    assert_eq!(shown(&[], &[("KV_MAX_VALUE_BYTES", "from-env")]), "from-env");
    assert_eq!(
        shown(&["--max-value-bytes", "from-flag"], &[("KV_MAX_VALUE_BYTES", "from-env")]),
        "from-flag"
    );
}

#[test]
fn a_bad_file_is_refused_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = write(&dir.path().join("unknown.toml"), "http-addr = \"127.0.0.1:0\"\nlisten = \"x\"\n");
    let stderr = refused(&["--config", &unknown], &[]);
    assert!(
        stderr.contains(&format!("the config file {unknown} sets \"listen\", which is not a setting")),
        "{stderr}"
    );

    let malformed = write(&dir.path().join("malformed.toml"), "http-addr = 127.0.0.1:0\n");
    let stderr = refused(&["--config", &malformed], &[]);
    assert!(stderr.contains(&format!("the config file {malformed} is not valid TOML")), "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");

    let missing = dir.path().join("missing.toml");
    let stderr = refused(&[], &[("KV_CONFIG", missing.to_str().unwrap())]);
    assert!(stderr.contains(&format!("reading the config file {}", missing.display())), "{stderr}");

    // --token-file requires --cluster-secret-file, from the file too.
    let half = write(&dir.path().join("half.toml"), "token-file = \"/etc/kv/tokens\"\n");
    let stderr = refused(&["--config", &half], &[]);
    assert!(
        stderr.contains("required arguments were not provided") && stderr.contains("--cluster-secret-file"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("set by the config file {half}: --token-file")), "{stderr}");
}

#[test]
fn a_log_level_that_is_no_level_is_refused_naming_where_it_came_from() {
    let stderr = refused(&["--log-level", "verbose"], &[]);
    assert!(stderr.contains("--log-level: \"verbose\" is not a level"), "{stderr}");
    let stderr = refused(&[], &[("KV_LOG_LEVEL", "warn,kv_app=loud")]);
    assert!(stderr.contains("KV_LOG_LEVEL: \"warn,kv_app=loud\" is not a log filter"), "{stderr}");
}
