//! Shared by kv-tools' integration tests.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The `kv-server` binary in the `target/<profile>/` directory this test was
/// built into, brought up to date first. Cargo gives a test the path of its
/// own package's binaries only (`CARGO_BIN_EXE_…`), and kv-server belongs to
/// kv-app, so this builds it with the test's profile: a no-op when it is
/// fresh, and never a stale server left from an older build.
pub fn kv_server() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // The test runs from target/<profile>/deps/.
            let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap().to_path_buf();
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") => "dev".to_owned(),
                Some(other) => other.to_owned(),
                None => panic!("no target/<profile>/ directory above {}", exe.display()),
            };
            let status = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "--profile", &profile, "-p", "kv-app", "--bin", "kv-server"])
                .status()
                .unwrap();
            assert!(status.success(), "building kv-server");
            let bin = profile_dir.join(format!("kv-server{}", std::env::consts::EXE_SUFFIX));
            assert!(bin.is_file(), "kv-server was just built, but is not at {}", bin.display());
            bin
        })
        .clone()
}
