//! Shared by the harness's integration tests.

use std::path::PathBuf;

/// The `kv-server` binary next to this test's binary, built if missing.
///
/// `cargo test --workspace` builds it with everything else. Testing this
/// crate alone (`cargo test -p jepsen`) after changing the server needs a
/// `cargo build -p kv-app` first: a binary that exists is not rebuilt here,
/// because a build from inside the tests would resolve features for
/// `kv-app` alone and rebuild half the dependency tree.
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
