//! The environment of a kv-server that another program starts.
//!
//! kv-server reads every flag from an environment variable too: `KV_` and
//! the flag's name in capitals, `-` as `_` (`KV_DATA_DIR` for `--data-dir`),
//! under the command line and over its config file. A program that starts
//! kv-server processes with flags of its own (a local cluster, a test
//! harness, the Jepsen harness) must not let a variable left in its user's
//! shell change them: `KV_CONFIG` would feed the nodes a file of settings the
//! program never chose, and `KV_UNSAFE_NO_FSYNC=true` would quietly turn a
//! safety test into a fault-injection run. [`clear`] keeps them out.

use std::ffi::OsString;
use std::process::Command;

/// The prefix of kv-server's environment variables.
pub const PREFIX: &str = "KV_";

/// Removes from `command`'s environment every variable of this process
/// whose name starts with [`PREFIX`], so that the kv-server it starts runs
/// with the flags it is given and its built-in defaults alone. Variables the
/// caller sets on `command` afterwards still apply.
pub fn clear(command: &mut Command) -> &mut Command {
    remove_named(command, std::env::vars_os().map(|(name, _)| name))
}

/// Removes the names among `names` that start with [`PREFIX`].
fn remove_named(command: &mut Command, names: impl Iterator<Item = OsString>) -> &mut Command {
    for name in names {
        if name.as_encoded_bytes().starts_with(PREFIX.as_bytes()) {
            command.env_remove(name);
        }
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kv_variables_are_removed_and_later_settings_stay() {
        let mut command = Command::new("true");
        let inherited = ["KV_DATA_DIR", "PATH", "KV_UNSAFE_NO_FSYNC", "RUST_LOG", "XKV_Y"];
        remove_named(&mut command, inherited.iter().map(OsString::from));
        command.env("KV_LOG_FORMAT", "json");
        let mut envs: Vec<(String, Option<String>)> = command
            .get_envs()
            .map(|(n, v)| (n.to_string_lossy().into_owned(), v.map(|v| v.to_string_lossy().into_owned())))
            .collect();
        envs.sort();
        let expected = [("KV_DATA_DIR", None), ("KV_LOG_FORMAT", Some("json")), ("KV_UNSAFE_NO_FSYNC", None)];
        let expected: Vec<(String, Option<String>)> =
            expected.iter().map(|(n, v)| (n.to_string(), v.map(str::to_owned))).collect();
        assert_eq!(envs, expected);
    }
}
