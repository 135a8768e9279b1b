//! Precheck of the source's function libraries against the target: lists each library that
//! will fail there (no functions before 7.0; on a Redis target, Valkey's `server.*` Lua API or
//! shebang options Redis does not know) with what to do. A warning, not a failure: the keys
//! still replicate, and each such library is counted and logged by name during the run.

use std::collections::BTreeMap;

use redis::Value;

use crate::convert::functions::library_problem;
use crate::net::client;
use crate::net::topology::Topology;
use crate::precheck::Check;

const NAME: &str = "function libraries";

/// Reads `FUNCTION LIST WITHCODE` on every source master (7.0+) and judges each library for the
/// target's version and flavor.
pub async fn check(source: &Topology, target: &Topology) -> Check {
    let ti = target.info();
    let mut libraries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut unread = Vec::new();
    for m in source.masters() {
        if !m.info.at_least(7, 0) {
            continue;
        }
        let listed = match client::connect("source", &m.endpoint).await {
            Ok(mut conn) => redis::cmd("FUNCTION")
                .arg("LIST")
                .arg("WITHCODE")
                .query_async::<Value>(&mut conn)
                .await
                .map_err(|e| client::describe(&e)),
            Err(e) => Err(e.to_string()),
        };
        match listed {
            Ok(v) => libraries.extend(parse_list(&v)),
            Err(e) => unread.push(format!("{}: {e}", m.endpoint)),
        }
    }
    let problems: Vec<String> = libraries
        .iter()
        .filter_map(|(name, code)| library_problem(code, &ti).map(|why| format!("{name}: {why}")))
        .collect();
    let mut detail = if problems.is_empty() {
        format!(
            "{} librar{} on the source, all loadable on the target",
            libraries.len(),
            if libraries.len() == 1 { "y" } else { "ies" }
        )
    } else {
        format!(
            "{} of {} librar{} will fail on the target: {}",
            problems.len(),
            libraries.len(),
            if libraries.len() == 1 { "y" } else { "ies" },
            problems.join(" | ")
        )
    };
    if !unread.is_empty() {
        detail.push_str(&format!(
            "; could not list functions on {}",
            unread.join(", ")
        ));
    }
    Check {
        name: NAME,
        ok: true,
        warning: !problems.is_empty() || !unread.is_empty(),
        detail,
    }
}

fn text(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        _ => Vec::new(),
    }
}

/// `FUNCTION LIST WITHCODE` → name → code (RESP2 flat pairs or RESP3 maps).
fn parse_list(v: &Value) -> Vec<(String, Vec<u8>)> {
    let Value::Array(libs) = v else {
        return Vec::new();
    };
    libs.iter()
        .filter_map(|lib| {
            let pairs: Vec<(Vec<u8>, &Value)> = match lib {
                Value::Array(a) => a
                    .chunks(2)
                    .filter_map(|c| Some((text(c.first()?), c.get(1)?)))
                    .collect(),
                Value::Map(m) => m.iter().map(|(k, v)| (text(k), v)).collect(),
                _ => return None,
            };
            let get = |k: &[u8]| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| text(v));
            let name = String::from_utf8_lossy(&get(b"library_name")?).into_owned();
            Some((name, get(b"library_code")?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_resp2_listing() {
        let v = Value::Array(vec![Value::Array(vec![
            bulk("library_name"),
            bulk("lib"),
            bulk("engine"),
            bulk("LUA"),
            bulk("functions"),
            Value::Array(vec![]),
            bulk("library_code"),
            bulk("#!lua name=lib\nx"),
        ])]);
        assert_eq!(
            parse_list(&v),
            [("lib".to_string(), b"#!lua name=lib\nx".to_vec())]
        );
        assert!(parse_list(&Value::Nil).is_empty());
    }
}
