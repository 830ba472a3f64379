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

/// Runs `jepsen check` on `text` and returns the exit code, the report and
/// stderr.
fn check_text(text: &str) -> (i32, Option<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    check(&write(dir.path(), "history.jsonl", text), &[])
}

#[test]
fn really_malformed_histories_exit_2_naming_the_line() {
    let cases = [
        // A completion without an invocation.
        (
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1}
{"process":1,"type":"ok","f":"write","key":"x","value":1}
"#,
            "line 2: process 1 completed an operation it never invoked",
        ),
        // Two open invocations on one process (1 and 1.0 are one process).
        (
            r#"{"process":1,"type":"invoke","f":"write","key":"x","value":1}

{"process":1.0,"type":"invoke","f":"read","key":"x"}
"#,
            "line 3: process 1.0 invoked again while its operation invoked at line 1 is still open",
        ),
        // An unknown type.
        (
            r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1}
{"process":0,"type":"done","f":"write","key":"x","value":1}
"#,
            "line 2: unknown `type` \"done\"",
        ),
    ];
    for (text, expected) in cases {
        let (code, json, stderr) = check_text(text);
        assert_eq!(code, 2, "{text}");
        assert!(json.is_none(), "no verdict for a malformed history");
        assert!(stderr.contains(expected), "expected {expected:?} in stderr: {stderr}");
    }
}

/// Exit code and verdict of a history that must be judged, not refused.
fn verdict_of(text: &str) -> (i32, String) {
    let (code, json, stderr) = check_text(text);
    let json = json.unwrap_or_else(|| panic!("a verdict on stdout; stderr: {stderr}"));
    (code, json["valid"].as_str().unwrap_or_default().to_owned())
}

const VALID_EXIT: (i32, &str) = (0, "valid");
const INVALID_EXIT: (i32, &str) = (1, "invalid");

fn judged(text: &str) -> (i32, &'static str) {
    match verdict_of(text) {
        (0, v) if v == "valid" => VALID_EXIT,
        (1, v) if v == "invalid" => INVALID_EXIT,
        other => panic!("unexpected verdict {other:?}"),
    }
}

#[test]
fn string_process_ids_are_clients() {
    let history = |seen: &str| {
        format!(
            r#"{{"process":"alice","type":"invoke","f":"write","key":"x","value":1}}
{{"process":"alice","type":"ok","f":"write","key":"x","value":1}}
{{"process":"bob","type":"invoke","f":"read","key":"x"}}
{{"process":"bob","type":"ok","f":"read","key":"x","value":{seen}}}
{{"process":":nemesis","type":"info","f":"start-partition","value":"majority"}}
"#
        )
    };
    assert_eq!(judged(&history("1")), VALID_EXIT);
    assert_eq!(judged(&history("null")), INVALID_EXIT);
}

#[test]
fn process_going_on_after_info_is_judged_with_the_info_operation_pending() {
    // Process 0's write of 1 timed out; it goes on and reads. The write is
    // pending for ever, so it may take effect after that read.
    let history = |first: &str, second: &str| {
        format!(
            r#"{{"process":0,"type":"invoke","f":"write","key":"x","value":1}}
{{"process":0,"type":"info","f":"write","key":"x","value":1,"error":"timeout"}}
{{"process":0,"type":"invoke","f":"read","key":"x"}}
{{"process":0,"type":"ok","f":"read","key":"x","value":{first}}}
{{"process":0,"type":"invoke","f":"read","key":"x"}}
{{"process":0,"type":"ok","f":"read","key":"x","value":{second}}}
"#
        )
    };
    // Not yet, then taken effect: the pending write is concurrent with
    // the process's later operations.
    assert_eq!(judged(&history("null", "1")), VALID_EXIT);
    // But once seen it cannot be unseen.
    assert_eq!(judged(&history("1", "null")), INVALID_EXIT);
}

#[test]
fn history_without_time_is_judged_in_line_order() {
    let stale = VALID.replace(r#""value":2,"time":600"#, r#""value":1,"time":600"#);
    let strip = |text: &str| {
        text.lines()
            .map(|line| {
                let mut event: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
                event.remove("time");
                Value::Object(event).to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(!strip(VALID).contains("time"));
    assert_eq!(judged(&strip(VALID)), VALID_EXIT);
    assert_eq!(judged(&strip(&stale)), INVALID_EXIT);
    // The counterexample leaves out the times it does not have.
    let (_, json, _) = check_text(&strip(&stale));
    let blocking = &json.unwrap()["linearizability"]["keys"][0]["counterexample"]["blocking"];
    assert!(blocking.get("invoke_time").is_none() && blocking["complete_time"].is_null(), "{blocking}");
}

#[test]
fn respelt_numbers_and_structured_values_compare_as_json_values() {
    let history = |written: &str, read: &str| {
        format!(
            r#"{{"process":0,"type":"invoke","f":"write","key":{{"k":[1,2]}},"value":{written}}}
{{"process":0,"type":"ok","f":"write","key":{{"k":[1,2]}},"value":{written}}}
{{"process":1,"type":"invoke","f":"read","key":{{"k":[1.0,2e0]}}}}
{{"process":1,"type":"ok","f":"read","key":{{"k":[1.0,2e0]}},"value":{read}}}
"#
        )
    };
    assert_eq!(judged(&history("1", "1.0")), VALID_EXIT);
    assert_eq!(
        judged(&history(r#"{"a":[1,{"b":2}],"c":3}"#, r#"{"c":3.0,"a":[1e0,{"b":20E-1}]}"#)),
        VALID_EXIT
    );
    assert_eq!(judged(&history("[1,2]", "[2,1]")), INVALID_EXIT);
    assert_eq!(judged(&history("1", r#""1""#)), INVALID_EXIT);
}

#[test]
fn stale_read_with_respelt_numbers_is_invalid_and_printed_as_written() {
    let stale = VALID
        .replace(r#""value":1,"time":200"#, r#""value":1.0,"time":200"#)
        .replace(r#""value":2,"time":300"#, r#""value":2e0,"time":300"#)
        .replace(r#""value":2,"time":600"#, r#""value":1.00,"time":600"#);
    let (code, json, stderr) = check_text(&stale);
    assert_eq!(code, 1, "stderr: {stderr}");
    let dir = tempfile::tempdir().unwrap();
    let out = jepsen(&["check", write(dir.path(), "stale.jsonl", &stale).to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Values appear in the report as the history spelt them.
    assert!(stdout.contains(r#""state": 2e0"#), "{stdout}");
    assert!(stdout.contains(r#""value": 1.00"#), "{stdout}");
    let cx = &json.unwrap()["linearizability"]["keys"][0]["counterexample"];
    assert_eq!(cx["blocking"]["f"], "read");
}

#[test]
fn a_reader_that_stops_early_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "valid.jsonl", VALID);
    let mut child = Command::new(env!("CARGO_BIN_EXE_jepsen"))
        .args(["check", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // like `| head -0`: nobody reads the report
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(out.status.code(), Some(0), "the verdict still decides the exit code; stderr: {stderr}");
}

#[test]
fn missing_file_exits_2_saying_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let (code, json, stderr) = check(&dir.path().join("absent.jsonl"), &[]);
    assert_eq!(code, 2);
    assert!(json.is_none());
    assert!(stderr.contains("absent.jsonl"), "stderr: {stderr}");
    assert_eq!(stderr.matches("os error 2").count(), 1, "the OS error is said once: {stderr}");
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

#[test]
fn every_example_in_the_documented_format_is_valid() {
    // docs/jepsen.md documents the accepted format with one example per
    // case; each must be read and judged valid, as the text says.
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/jepsen.md")).unwrap();
    let start = docs.find("## The history format").expect("the format section");
    let end = docs.find("## The linearizability checker").expect("the section after it");
    let examples: Vec<&str> =
        docs[start..end].split("```json\n").skip(1).filter_map(|block| block.split("```").next()).collect();
    assert!(examples.len() >= 5, "found {} examples", examples.len());
    for example in examples {
        assert_eq!(judged(example), VALID_EXIT, "{example}");
    }
}

#[test]
fn lease_history_is_judged_by_the_lease_check_and_its_violation_exits_1() {
    // A lease of 1,000 ms granted by a request sent at 1 ms, its key put,
    // and a read that found the key: valid. The same read finding the key
    // gone at 500 ms, while the grant still owes the lease, is invalid.
    let text = r#"{"process":"nemesis","type":"info","f":"setup","value":{"election_timeout_ms":[1000,2000]},"time":0}
{"process":0,"type":"invoke","f":"lease-grant","value":{"ttl_ms":1000},"time":1000000}
{"process":0,"type":"ok","f":"lease-grant","value":{"ttl_ms":1000},"lease":4,"time":2000000}
{"process":0,"type":"invoke","f":"lease-put","key":"lease/0/1","value":9,"lease":4,"time":3000000}
{"process":0,"type":"ok","f":"lease-put","key":"lease/0/1","value":9,"lease":4,"time":4000000}
{"process":1,"type":"invoke","f":"lease-read","key":"lease/0/1","time":400000000}
{"process":1,"type":"ok","f":"lease-read","key":"lease/0/1","value":9,"time":500000000}
"#;
    let dir = tempfile::tempdir().unwrap();
    let (code, json, stderr) = check(&write(dir.path(), "lease.jsonl", text), &[]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let json = json.expect("a verdict on stdout");
    assert_eq!((&json["lease"]["verdict"], &json["lease"]["bound_ms"]), (&"valid".into(), &2000.into()));
    assert!(json["linearizability"]["keys"].as_array().unwrap().is_empty(), "no lease key is a register");

    let gone = text.replace(r#""value":9,"time":500000000"#, r#""value":null,"time":500000000"#);
    let (code, json, stderr) = check(&write(dir.path(), "gone.jsonl", &gone), &[]);
    assert_eq!(code, 1, "stderr: {stderr}");
    let json = json.expect("a verdict on stdout");
    assert_eq!(json["lease"]["violation_counts"]["vanished while renewed"], 1);
}
