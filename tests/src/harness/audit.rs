//! Audit records as a test reads them: the JSON lines a control-plane process wrote, and the
//! entries of the Redis stream `audit.redis_stream` names, both as JSON objects of their
//! fields so the two can be compared field by field.

use std::time::Duration;

use gatehouse_testkit::Process;
use serde_json::{Map, Value};

use super::RedisServer;

/// How long an audit record may take to reach the process's output.
const WRITTEN_WITHIN: Duration = Duration::from_secs(10);

/// The audit records in `output` (what a control-plane process wrote): its JSON lines on the
/// audit target that name an event, without the `target` field the logger adds.
pub fn records_in(output: &str) -> Vec<Value> {
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| record["target"] == "gatehouse::audit" && record["event"].is_string())
        .map(|mut record| {
            if let Some(fields) = record.as_object_mut() {
                fields.remove("target");
            }
            record
        })
        .collect()
}

/// The audit records a control-plane `process` wrote so far.
pub fn records_of(process: &Process) -> Vec<Value> {
    records_in(&process.output().expect("the control plane's output"))
}

/// The first record of kind `event` that `matches` in what `process` writes, waiting until
/// it is written.
pub async fn written_record(
    process: &Process,
    event: &str,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WRITTEN_WITHIN;
    loop {
        let records = records_of(process);
        if let Some(record) = find(&records, event, &matches) {
            return record.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {event} record among {records:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts each `(field, value)` of `record`, one by one, and that its time is RFC 3339.
pub fn assert_fields(record: &Value, expected: &[(&str, &str)]) {
    for (field, value) in expected {
        assert_eq!(record[*field], *value, "{field} of {record:#}");
    }
    // RFC 3339 in UTC with milliseconds: 2026-01-02T03:04:05.678Z.
    let time = record["time"].as_str().unwrap_or_default();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes().get(10) == Some(&b'T'),
        "time is RFC 3339: {record:#}"
    );
}

/// Every entry of the stream `key` in `redis`, oldest first, as an object of its fields (in
/// the order they were written).
pub async fn stream_entries(redis: &RedisServer, key: &str) -> Vec<Value> {
    let mut connection = redis.connection().await;
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .expect("XRANGE of the audit stream");
    entries
        .into_iter()
        .map(|(_, fields)| {
            let mut object = Map::new();
            for pair in fields.chunks(2) {
                let [name, value] = pair else {
                    panic!("a stream entry with an odd number of fields: {fields:?}");
                };
                assert!(
                    object
                        .insert(name.clone(), Value::from(value.as_str()))
                        .is_none(),
                    "field {name} twice in {fields:?}"
                );
            }
            Value::Object(object)
        })
        .collect()
}

/// The first of `records` of kind `event` that `matches`.
pub fn find<'a>(
    records: &'a [Value],
    event: &str,
    matches: impl Fn(&Value) -> bool,
) -> Option<&'a Value> {
    records
        .iter()
        .find(|record| record["event"] == event && matches(record))
}
