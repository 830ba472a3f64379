//! Shared by the harness's integration tests.

use std::path::PathBuf;

/// The `kv-server` binary next to this test's binary, built if missing.
pub fn kv_server() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    if let Some(bin) = jepsen::run::server_next_to(&exe) {
        return bin;
    }
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-p", "kv-app", "--bin", "kv-server"])
        .status()
        .unwrap();
    assert!(status.success(), "building kv-server");
    jepsen::run::server_next_to(&exe).expect("kv-server was just built next to the tests")
}
