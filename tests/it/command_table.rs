//! Conformance of the router's key table ([`shardsync::router::command_keys`]) with the servers'
//! own view of their commands, on Redis 6.0, 6.2, 7.0 and Valkey 9.1:
//!
//! - coverage: every command that `COMMAND` flags `write` is in the table, or listed in
//!   [`NOT_PROPAGATED_AS_IS`] with the reason a replication stream never carries it;
//! - key positions: for thousands of generated argument lists of every table command the server
//!   knows (random mixes of placeholders, numbers and the keywords `COMMAND DOCS` lists, in random
//!   case), the keys `COMMAND GETKEYS` finds are exactly the keys the table finds.
//!
//! The oracle is the server; the generator knows nothing about the table.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::util::DetRng;
use crate::common::{RedisServer, ServerKind};
use redis::Value;
use shardsync::cmd::Cmd;
use shardsync::router::{Category, command_keys};

/// Write commands a replication stream never carries in this form (the master propagates their
/// effects as other commands), so the table needs no entry for them.
const NOT_PROPAGATED_AS_IS: &[(&str, &str)] =
    &[("MIGRATE", "propagated as DEL of the migrated keys")];

/// Known bugs of a server's `COMMAND GETKEYS` (the command itself parses as the table does).
const GETKEYS_BUGS: &[(&str, &str, &str)] = &[
    ("redis-6.0", "GEORADIUSBYMEMBER", GEO_BYMEMBER_BUG),
    ("redis-6.2", "GEORADIUSBYMEMBER", GEO_BYMEMBER_BUG),
];
const GEO_BYMEMBER_BUG: &str =
    "GETKEYS looks for STORE from argument 5, as for GEORADIUS; BYMEMBER's options start at 4";

/// Generated argument lists per command and server.
const SAMPLES: usize = 400;

fn servers() -> Vec<RedisServer> {
    [
        ServerKind::Redis60,
        ServerKind::Redis62,
        ServerKind::Redis70,
        ServerKind::Valkey91,
    ]
    .into_iter()
    .map(RedisServer::start)
    .collect()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// `COMMAND`: name (upper case) → flags.
fn command_flags(con: &mut redis::Connection) -> BTreeMap<String, BTreeSet<String>> {
    let v: Value = redis::cmd("COMMAND").query(con).expect("COMMAND");
    let Value::Array(items) = v else {
        panic!("COMMAND reply: {v:?}")
    };
    let mut out = BTreeMap::new();
    for item in items {
        let Value::Array(f) = item else { continue };
        let Some(name) = f.first().and_then(text) else {
            continue;
        };
        let flags = match f.get(2) {
            Some(Value::Array(fl)) | Some(Value::Set(fl)) => fl.iter().filter_map(text).collect(),
            _ => BTreeSet::new(),
        };
        out.insert(name.to_ascii_uppercase(), flags);
    }
    out
}

/// Every `token` in a `COMMAND DOCS` reply (7.0+; older servers give an error, hence none).
fn doc_tokens(con: &mut redis::Connection, out: &mut BTreeSet<String>) {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Array(a) | Value::Set(a) => {
                for pair in a.windows(2) {
                    if text(&pair[0]).as_deref() == Some("token")
                        && let Some(t) = text(&pair[1])
                    {
                        out.insert(t);
                    }
                }
                a.iter().for_each(|x| walk(x, out));
            }
            Value::Map(m) => {
                for (k, x) in m {
                    if text(k).as_deref() == Some("token")
                        && let Some(t) = text(x)
                    {
                        out.insert(t);
                    }
                    walk(x, out);
                }
            }
            _ => {}
        }
    }
    if let Ok(v) = redis::cmd("COMMAND").arg("DOCS").query::<Value>(con) {
        walk(&v, out);
    }
}

/// Random case, so the table's case-insensitivity is exercised too.
fn random_case(rng: &mut DetRng, s: &str) -> String {
    s.chars()
        .map(|c| {
            if rng.below(2) == 0 {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

/// One argument list for `name`: unique placeholders (`a1`, `a2`…, so every key is recognisable),
/// small numbers and keywords, 0–9 arguments.
fn sample(rng: &mut DetRng, name: &str, tokens: &[String]) -> Vec<String> {
    let mut argv = vec![random_case(rng, name)];
    let n = rng.below(10) as usize;
    for i in 1..=n {
        let a = match rng.below(10) {
            0..=3 => format!("a{i}"),
            4..=5 => rng.below(4).to_string(),
            _ => {
                let t = rng.below(tokens.len() as u64) as usize;
                random_case(rng, &tokens[t])
            }
        };
        argv.push(a);
    }
    argv
}

/// Whether the server executes `argv` without an error (inside `MULTI`, so nothing blocks, on an
/// emptied server). `COMMAND GETKEYS` checks only arity and key positions, so a disagreement on an
/// argument list the server itself refuses to run is no disagreement: such a command is never
/// propagated.
fn executes(con: &mut redis::Connection, argv: &[String]) -> bool {
    let _: () = redis::cmd("FLUSHALL").query(con).expect("FLUSHALL");
    let _: () = redis::cmd("MULTI").query(con).expect("MULTI");
    let queued = redis::cmd(&argv[0]).arg(&argv[1..]).query::<Value>(con);
    let exec = redis::cmd("EXEC").query::<Value>(con);
    match (queued, exec) {
        (Ok(_), Ok(Value::Array(replies))) => {
            !replies.iter().any(|r| matches!(r, Value::ServerError(_)))
        }
        _ => false,
    }
}

/// The server's keys for `argv`, or `None` when it refuses the argument list.
fn server_keys(con: &mut redis::Connection, argv: &[String]) -> Option<Vec<String>> {
    let v: Value = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg(argv)
        .query(con)
        .ok()?;
    let Value::Array(keys) = v else { return None };
    Some(keys.iter().filter_map(text).collect())
}

#[test]
fn key_table_matches_command_getkeys_on_every_server() {
    let servers = servers();
    // Keywords from every server that documents its commands, used on all of them.
    let mut tokens = BTreeSet::new();
    for s in &servers {
        doc_tokens(&mut s.client(), &mut tokens);
    }
    assert!(
        tokens.len() > 100,
        "COMMAND DOCS gave only {} tokens",
        tokens.len()
    );
    let tokens: Vec<String> = tokens.into_iter().collect();
    let mut rng = DetRng::new(0x5eed_c0de);
    let mut failures = Vec::new();
    let mut compared = 0usize;
    for server in &servers {
        let kind = server.kind().name();
        let mut con = server.client();
        let flags = command_flags(&mut con);
        assert!(flags.len() > 150, "{kind}: COMMAND listed {}", flags.len());
        for (name, f) in &flags {
            let spec = command_keys(&Cmd::new([name.as_bytes().to_vec()]));
            let known = spec.category != Category::Unknown;
            let exempt = NOT_PROPAGATED_AS_IS.iter().any(|(n, _)| n == name);
            if f.contains("write") && !known && !exempt {
                failures.push(format!(
                    "{kind} {name}: a write command missing from the key table"
                ));
            }
            let getkeys_bug = GETKEYS_BUGS.iter().any(|(k, n, _)| *k == kind && n == name);
            if !known || getkeys_bug {
                continue;
            }
            for _ in 0..SAMPLES {
                let argv = sample(&mut rng, name, &tokens);
                let Some(mut theirs) = server_keys(&mut con, &argv) else {
                    continue;
                };
                let cmd = Cmd::new(argv.iter().map(|a| a.as_bytes().to_vec()));
                let spec = command_keys(&cmd);
                let mut ours: Vec<String> = if spec.category == Category::Malformed {
                    vec!["<malformed>".into()]
                } else {
                    spec.keys.iter().map(|i| argv[i].clone()).collect()
                };
                theirs.sort();
                ours.sort();
                compared += 1;
                if theirs != ours && executes(&mut con, &argv) {
                    failures.push(format!(
                        "{kind} {name}: {argv:?}: server keys {theirs:?}, table {ours:?} ({:?})",
                        spec.category
                    ));
                }
            }
        }
    }
    eprintln!(
        "compared {compared} argument lists; {} mismatches",
        failures.len()
    );
    // One line per command and server is enough to act on.
    let mut seen = BTreeSet::new();
    let report: Vec<&String> = failures
        .iter()
        .filter(|f| {
            let key = f.split(':').next().unwrap_or(f).to_string();
            seen.insert(key)
        })
        .take(80)
        .collect();
    assert!(
        failures.is_empty(),
        "{} mismatches between the key table and COMMAND/GETKEYS:\n{}",
        failures.len(),
        report
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(compared > 10_000, "only {compared} argument lists compared");
}
