//! Where runs are kept: `<store>/<workload>/<UTC time>/`, one directory per
//! run, with `<store>/<workload>/latest` pointing at the newest. The
//! harness and the Maelstrom runner share the layout, as Jepsen and
//! Maelstrom do.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

/// Creates `<store>/<workload>/<UTC time>/` (with a suffix if it exists)
/// and points `<store>/<workload>/latest` at it.
///
/// # Errors
/// If a directory cannot be created.
pub fn run_dir(store: &Path, workload: &str) -> anyhow::Result<PathBuf> {
    let parent = store.join(workload);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let stamp = utc_stamp(SystemTime::now());
    let mut dir = parent.join(&stamp);
    let mut n = 1;
    while dir.exists() {
        dir = parent.join(format!("{stamp}-{n}"));
        n += 1;
    }
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let latest = parent.join("latest");
    let _ = std::fs::remove_file(&latest);
    #[cfg(unix)]
    if let Some(name) = dir.file_name() {
        // Only a convenience: a failure leaves the run intact.
        let _ = std::os::unix::fs::symlink(name, &latest);
    }
    Ok(dir)
}

/// `20261126T101500.123Z`, as Maelstrom names its runs.
pub fn utc_stamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn utc_stamp_formats_a_known_instant() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_688_100_250);
        assert_eq!(utc_stamp(t), "20261126T101500.250Z");
    }

    #[test]
    fn run_dirs_are_distinct_and_latest_points_at_the_newest() {
        let store = tempfile::tempdir().unwrap();
        let a = run_dir(store.path(), "register").unwrap();
        let b = run_dir(store.path(), "register").unwrap();
        assert_ne!(a, b);
        let latest = std::fs::read_link(store.path().join("register/latest")).unwrap();
        assert_eq!(latest, b.file_name().unwrap());
    }
}
