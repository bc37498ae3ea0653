//! Every configuration key either binary accepts is in the configuration reference
//! (CONFIGURATION.md), so an operator never meets a key only the source knows.
//!
//! The keys are not listed by hand: they are asked of the binaries' own configuration parsers.
//! Every table of the file rejects unknown keys (`deny_unknown_fields`), and serde's refusal
//! names the keys the table does accept ("unknown field `__probe__`, expected one of ..."). The
//! probe writes `__probe__` into the top level, reads the names, and for each name asks again
//! one level down, as a table (`[a.b]`) and as an array of tables (`[[a.b]]`); a name that is
//! neither is a leaf key. A table that takes `__probe__` without complaint, yet refuses a number
//! in its place ("expected struct"), accepts unknown keys: that fails the test too, since the
//! probe could not list its keys.
//!
//! A key counts as documented when the first cell of a reference row names it (full path, or
//! a sibling of the row's first key, as in "`tls.cert_file`, `tls.key_file`" or
//! "`control_plane.ca_file`, `cert_file`"), or when it is written in backticks in the row of
//! the table it belongs to (the keys of `[[virtual_proxies.access_rules]]`). Tables are
//! documented through their keys.

use std::collections::BTreeSet;

/// The name no table has.
const PROBE: &str = "__probe__";

/// One step of a key path: a name, and whether it is an array of tables.
#[derive(Debug, Clone)]
struct Step {
    name: String,
    array: bool,
}

/// Parses configuration text as one binary does, the error as its text.
type Parse = fn(&str) -> Result<(), String>;

fn control_plane(text: &str) -> Result<(), String> {
    gatehouse_control_plane::config::Config::from_toml_str(text)
        .map(drop)
        .map_err(|error| error.to_string())
}

fn data_plane(text: &str) -> Result<(), String> {
    gatehouse_data_plane::config::Config::from_toml_str(text)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// The TOML that opens the table at `path` and sets `key = value` in it.
fn toml_at(path: &[Step], key: &str, value: &str) -> String {
    let mut text = String::new();
    for depth in 1..=path.len() {
        let name: Vec<&str> = path[..depth]
            .iter()
            .map(|step| step.name.as_str())
            .collect();
        let name = name.join(".");
        if path[depth - 1].array {
            text.push_str(&format!("[[{name}]]\n"));
        } else {
            text.push_str(&format!("[{name}]\n"));
        }
    }
    text.push_str(&format!("{key} = {value}\n"));
    text
}

/// The names serde lists after "expected" in an unknown-field error, if `error` is one
/// about [`PROBE`].
fn accepted_names(error: &str) -> Option<Vec<String>> {
    let rest = error.split(&format!("unknown field `{PROBE}`")).nth(1)?;
    if rest.contains("there are no fields") {
        return Some(Vec::new());
    }
    let listed = rest.split("expected").nth(1)?;
    let listed = listed.lines().next().unwrap_or_default();
    Some(
        listed
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// What the probe found: every key path (dotted, arrays as plain names), which of them are
/// tables (documented through their keys), and the tables that accept unknown keys.
#[derive(Debug, Default)]
struct Found {
    keys: BTreeSet<String>,
    tables: BTreeSet<String>,
    open_tables: Vec<String>,
}

fn dotted(path: &[Step]) -> String {
    let names: Vec<&str> = path.iter().map(|step| step.name.as_str()).collect();
    names.join(".")
}

/// The keys of the table at `path`, recursively.
fn probe(parse: Parse, path: &[Step], names: Vec<String>, found: &mut Found) {
    for name in names {
        let mut child = path.to_vec();
        child.push(Step {
            name: name.clone(),
            array: false,
        });
        found.keys.insert(dotted(&child));
        let as_table = parse(&toml_at(&child, PROBE, "1")).err();
        if let Some(inner) = as_table.as_deref().and_then(accepted_names) {
            found.tables.insert(dotted(&child));
            probe(parse, &child, inner, found);
            continue;
        }
        child.last_mut().expect("just pushed").array = true;
        let as_array = parse(&toml_at(&child, PROBE, "1")).err();
        if let Some(inner) = as_array.as_deref().and_then(accepted_names) {
            // An array of tables has a row of its own, like a key.
            probe(parse, &child, inner, found);
            continue;
        }
        // A table whose unknown keys pass unnoticed still refuses a number in its place.
        let number = parse(&toml_at(path, &name, "1")).err().unwrap_or_default();
        if number.contains("expected struct") {
            found.open_tables.push(dotted(&child));
        }
    }
}

/// Every key `parse` accepts.
fn accepted_keys(parse: Parse) -> Found {
    let top = parse(&format!("{PROBE} = 1\n")).expect_err("the top level refuses an unknown key");
    let names = accepted_names(&top)
        .unwrap_or_else(|| panic!("the top level does not list its keys: {top}"));
    let mut found = Found::default();
    probe(parse, &[], names, &mut found);
    found
}

/// The reference rows between the headings `from` and `to`: (keys named in the first cell,
/// the whole row).
fn reference_rows(from: &str, to: &str) -> Vec<(Vec<String>, String)> {
    let reference = include_str!("../../../CONFIGURATION.md");
    let start = reference.find(from).expect("the section's heading");
    let end = reference[start..]
        .find(to)
        .map_or(reference.len(), |at| start + at);
    reference[start..end]
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|row| {
            let first_cell = row.split('|').nth(1).unwrap_or_default();
            let named: Vec<&str> = first_cell.split('`').skip(1).step_by(2).collect();
            let mut keys = Vec::new();
            let first = named
                .first()
                .map(|key| key.trim_start_matches("[[").trim_end_matches("]]"))
                .unwrap_or_default();
            let parent = first.rsplit_once('.').map(|(parent, _)| parent);
            for key in &named {
                let key = key.trim_start_matches("[[").trim_end_matches("]]");
                match parent {
                    Some(parent) if !key.contains('.') && key != first => {
                        keys.push(format!("{parent}.{key}"));
                    }
                    _ => keys.push(key.to_owned()),
                }
            }
            (keys, row.to_owned())
        })
        .collect()
}

/// Whether `key` is in `rows`: named in a first cell, or, for a key of a table that has a row
/// of its own (`[[virtual_proxies.access_rules]]`, `tls.certificates`), written relative to
/// that table (`path_prefix`, `attribute.name`) in backticks in that row. A mere mention in
/// another key's row does not count.
fn documented(rows: &[(Vec<String>, String)], key: &str) -> bool {
    if rows
        .iter()
        .any(|(keys, _)| keys.iter().any(|named| named == key))
    {
        return true;
    }
    key.match_indices('.').any(|(at, _)| {
        let (table, relative) = (&key[..at], &key[at + 1..]);
        rows.iter().any(|(keys, row)| {
            keys.iter().any(|named| named == table) && row.contains(&format!("`{relative}`"))
        })
    })
}

fn check(parse: Parse, rows: &[(Vec<String>, String)], must_find: &[&str]) {
    let found = accepted_keys(parse);
    for key in must_find {
        assert!(
            found.keys.contains(*key),
            "the probe missed {key}; it found {:?}",
            found.keys
        );
    }
    assert!(
        found.open_tables.is_empty(),
        "these tables accept unknown keys, so their keys cannot be listed: {:?}",
        found.open_tables
    );
    let missing: Vec<&String> = found
        .keys
        .iter()
        .filter(|key| !found.tables.contains(*key) && !documented(rows, key))
        .collect();
    assert!(
        missing.is_empty(),
        "accepted but not in CONFIGURATION.md: {missing:?}"
    );
}

#[test]
fn every_control_plane_key_is_in_the_configuration_reference() {
    let rows = reference_rows("## Configuration reference", "### Data-plane node");
    check(
        control_plane,
        &rows,
        &[
            "listen",
            "store.redis_url",
            "tickets.ticket_ttl",
            "virtual_proxies.upstream.nodes",
            "virtual_proxies.jwt.jwks_url",
            "virtual_proxies.access_rules",
            "tls.roles.node",
        ],
    );
}

#[test]
fn every_data_plane_key_is_in_the_configuration_reference() {
    let rows = reference_rows("### Data-plane node", "## Metrics");
    check(
        data_plane,
        &rows,
        &[
            "listen",
            "cache.ttl",
            "limits.max_connections",
            "control_plane.endpoints",
            "tls.certificates",
        ],
    );
}
