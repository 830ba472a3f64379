//! `jepsen check` end to end: the real binary on history files in a
//! temporary directory, judged by its exit code and its JSON.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// A write of 1 then of 2, each acknowledged, and a read that starts after
/// both and sees 2. Node names and errors are extra fields the checker must
/// carry along.
const VALID: &str = r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":100}
{"process":0,"type":"ok","f":"write","key":"x","value":1,"time":200,"node":"n1"}
{"process":"nemesis","type":"info","f":"start-partition","value":"majority","time":250}
{"process":0,"type":"invoke","f":"write","key":"x","value":2,"time":300}
{"process":0,"type":"ok","f":"write","key":"x","value":2,"time":400,"node":"n1"}
{"process":1,"type":"invoke","f":"read","key":"x","value":null,"time":500}
{"process":1,"type":"ok","f":"read","key":"x","value":2,"time":600,"node":"n3"}
"#;

fn jepsen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jepsen")).args(args).output().expect("the jepsen binary runs")
}

fn check(path: &Path, extra: &[&str]) -> (i32, Option<Value>, String) {
    let mut args = vec!["check", path.to_str().expect("temp paths are UTF-8")];
    args.extend_from_slice(extra);
    let out = jepsen(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = (!stdout.trim().is_empty()).then(|| serde_json::from_str(&stdout).expect("stdout is JSON"));
    (out.status.code().expect("exited normally"), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write history");
    path
}

#[test]
fn valid_history_exits_0_with_valid_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (code, json, stderr) = check(&write(dir.path(), "valid.jsonl", VALID), &[]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let json = json.expect("a verdict on stdout");
    assert_eq!(json["valid"], "valid");
    assert_eq!(json["linearizability"]["verdict"], "valid");
    assert_eq!(json["linearizability"]["keys"][0]["key"], "x");
    assert_eq!(json["linearizability"]["keys"][0]["ops"], 3);
}

#[test]
fn stale_read_exits_1_with_counterexample() {
    let dir = tempfile::tempdir().unwrap();
    // The read sees 1 although the write of 2 completed before it began.
    let stale = VALID.replace(r#""value":2,"time":600"#, r#""value":1,"time":600"#);
    let (code, json, stderr) = check(&write(dir.path(), "stale.jsonl", &stale), &[]);
    assert_eq!(code, 1, "stderr: {stderr}");
    let json = json.expect("a verdict on stdout");
    assert_eq!(json["valid"], "invalid");
    let cx = &json["linearizability"]["keys"][0]["counterexample"];
    assert_eq!(cx["state"], 2);
    assert_eq!(cx["blocking"]["f"], "read");
    assert_eq!(cx["blocking"]["value"], 1);
    assert_eq!(cx["linearized"].as_array().map(Vec::len), Some(2));
}

#[test]
fn exhausted_budget_exits_2_with_unknown_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (code, json, _) = check(&write(dir.path(), "valid.jsonl", VALID), &["--budget", "0"]);
    assert_eq!(code, 2);
    assert_eq!(json.expect("a verdict on stdout")["valid"], "unknown");
}

#[test]
fn malformed_history_exits_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let broken = format!("{VALID}{{\"process\":0,\"type\":\"ok\",\n");
    let (code, json, stderr) = check(&write(dir.path(), "broken.jsonl", &broken), &[]);
    assert_eq!(code, 2);
    assert!(json.is_none(), "no verdict for a malformed file");
    assert!(stderr.contains("line 8"), "stderr: {stderr}");
}

#[test]
fn rule_breaking_history_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    // Process 0 goes on after an info instead of taking a new process id.
    let reused = r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":1}
{"process":0,"type":"info","f":"write","key":"x","value":1,"time":2}
{"process":0,"type":"invoke","f":"read","key":"x","time":3}
"#;
    let (code, json, stderr) = check(&write(dir.path(), "reused.jsonl", reused), &[]);
    assert_eq!(code, 2);
    assert!(json.is_none());
    assert!(stderr.contains("new process id"), "stderr: {stderr}");
}

#[test]
fn missing_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, json, stderr) = check(&dir.path().join("absent.jsonl"), &[]);
    assert_eq!(code, 2);
    assert!(json.is_none());
    assert!(stderr.contains("absent.jsonl"), "stderr: {stderr}");
}

#[test]
fn set_history_with_a_lost_element_exits_1_with_the_set_result() {
    // Element 2 was acknowledged but the final read lacks it. The read of
    // the whole set must go to the set checker, not the register checker.
    let text = r#"{"process":0,"type":"invoke","f":"add","key":"s","value":1,"time":1}
{"process":0,"type":"ok","f":"add","key":"s","value":1,"time":2}
{"process":0,"type":"invoke","f":"add","key":"s","value":2,"time":3}
{"process":0,"type":"ok","f":"add","key":"s","value":2,"time":4}
{"process":1,"type":"invoke","f":"read","key":"s","time":5}
{"process":1,"type":"ok","f":"read","key":"s","value":[1],"time":6,"node":2}
"#;
    let dir = tempfile::tempdir().unwrap();
    let (code, json, stderr) = check(&write(dir.path(), "set.jsonl", text), &[]);
    assert_eq!(code, 1, "stderr: {stderr}");
    let json = json.expect("a verdict on stdout");
    assert_eq!(json["valid"], "invalid");
    assert_eq!(json["linearizability"]["verdict"], "valid");
    assert_eq!(json["set"]["sets"][0]["lost"]["elements"], serde_json::json!([2]));
    assert!(json.get("session").is_none());
}
