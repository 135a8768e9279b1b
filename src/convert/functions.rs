//! Function libraries across versions: `FUNCTION RESTORE` payloads a target cannot read become
//! one `FUNCTION LOAD REPLACE` per library; targets without functions (before 7.0) get a counted,
//! logged failure per library instead of a command they would reject; libraries that use API a
//! Redis target lacks (Valkey's `server.*` alias, shebang options other than `name=`) are named
//! by [`library_problem`] for the precheck. Log lines name the library ([`log_subject`]).

use bytes::Bytes;

use crate::cmd;
use crate::cmd::Cmd;
use crate::net::server_info::ServerInfo;
use crate::rdb::{Flavor, parse_function_payload};

use crate::observe::telemetry::FUNCTION_ERRORS;

/// The library name from the `#!<engine> name=<lib>` shebang of a function library's code.
pub fn library_name(code: &[u8]) -> String {
    let first = code.split(|&b| b == b'\n').next().unwrap_or(b"");
    let first = String::from_utf8_lossy(first);
    first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("name="))
        .map(str::to_string)
        .unwrap_or_else(|| "<unnamed>".to_string())
}

/// Why library `code` will not work on `target`, with what to do; `None` when it should.
pub fn library_problem(code: &[u8], target: &ServerInfo) -> Option<String> {
    if !target.at_least(7, 0) {
        return Some(format!(
            "the target ({}.{}) has no functions (Redis 7.0+): the library is skipped; upgrade the target, or turn the library into EVAL scripts",
            target.version.0, target.version.1
        ));
    }
    if target.flavor == Flavor::Valkey {
        return None;
    }
    let text = String::from_utf8_lossy(code);
    let shebang = text.lines().next().unwrap_or("");
    let extra: Vec<&str> = shebang
        .split_whitespace()
        .skip(1)
        .filter(|w| !w.starts_with("name="))
        .collect();
    if !extra.is_empty() {
        return Some(format!(
            "shebang option(s) {} unknown to Redis: FUNCTION LOAD fails; keep only name=",
            extra.join(" ")
        ));
    }
    if uses_server_api(&text) {
        return Some(
            "uses Valkey's server.* Lua API, which Redis lacks: FUNCTION LOAD (server.register_function) or FCALL (server.call) fails; write redis.* instead (Valkey accepts both)"
                .into(),
        );
    }
    None
}

/// True when Lua code refers to the global `server` table (`server.call`, `server.log`…),
/// ignoring fields of other tables (`x.server.y`) and longer names (`myserver.`).
fn uses_server_api(code: &str) -> bool {
    let b = code.as_bytes();
    code.match_indices("server").any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| b[j]);
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'.';
        let after = b.get(i + 6).copied();
        !before.is_some_and(ident) && matches!(after, Some(b'.') | Some(b'[') | Some(b':'))
    })
}

/// What the writer's log names for a command: the library for `FUNCTION LOAD`, the libraries of
/// a `FUNCTION RESTORE` payload, the subcommand's argument for other `FUNCTION`s, else the key
/// (first argument); escaped (see [`crate::escape`]).
pub fn log_subject(cmd: &Cmd) -> String {
    let arg = |i: usize| cmd.args.get(i).map(|a| a.as_ref()).unwrap_or(b"");
    if [
        "EVAL",
        "EVALSHA",
        "EVAL_RO",
        "EVALSHA_RO",
        "FCALL",
        "FCALL_RO",
    ]
    .iter()
    .any(|n| cmd.is(n))
    {
        // `EVAL script numkeys key …`: the first key, not the script (rewrites of older
        // targets are scripts; their rejections must name the key).
        return match std::str::from_utf8(arg(2))
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) if n > 0 => crate::escape::text(arg(3)),
            _ => "(no key)".into(),
        };
    }
    if !cmd.is("FUNCTION") {
        let k = arg(1);
        return crate::escape::text(k);
    }
    let sub = arg(1).to_ascii_uppercase();
    match sub.as_slice() {
        b"LOAD" => {
            // FUNCTION LOAD [REPLACE] code
            let code = cmd.args.last().map(|a| a.as_ref()).unwrap_or(b"");
            format!("library {}", crate::escape::text(library_name(code)))
        }
        b"RESTORE" => match parse_function_payload(arg(2)) {
            Ok(p) => format!(
                "libraries {}",
                p.libraries
                    .iter()
                    .map(|l| crate::escape::text(library_name(l)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(_) => "function payload".into(),
        },
        b"DELETE" => format!("library {}", crate::escape::text(arg(2))),
        _ => format!("FUNCTION {}", crate::escape::text(&sub)),
    }
}

/// Counts and logs one library that cannot be written to the target.
pub fn report_failure(library: &str, reason: &str) {
    metrics::counter!(FUNCTION_ERRORS).increment(1);
    tracing::error!(
        library,
        reason,
        "function library not written to the target"
    );
}

/// `FUNCTION …` from the live stream, for `target`: on targets without functions, nothing is
/// sent and each library is reported; a `RESTORE` payload the target cannot read becomes
/// `FUNCTION LOAD REPLACE` per library (after `FUNCTION FLUSH` for the `FLUSH` policy).
pub fn rewrite_function(cmd: Cmd, target: &ServerInfo, out: &mut Vec<Cmd>) {
    let sub = cmd
        .args
        .get(1)
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    let has_functions = target.at_least(7, 0);
    match sub.as_slice() {
        b"RESTORE" => {
            let Some(payload) = cmd.args.get(2) else {
                out.push(cmd);
                return;
            };
            let decoded = match parse_function_payload(payload) {
                Ok(p) => p,
                Err(e) => {
                    if has_functions {
                        // The target decides; its error is logged by the writer.
                        out.push(cmd);
                    } else {
                        report_failure(
                            "<undecodable FUNCTION RESTORE payload>",
                            &format!("{e}; the target has no functions"),
                        );
                    }
                    return;
                }
            };
            if !has_functions {
                for lib in &decoded.libraries {
                    report_failure(
                        &library_name(lib),
                        "FUNCTION RESTORE: the target has no functions (Redis 7.0+)",
                    );
                }
                return;
            }
            let v = u32::from(decoded.version);
            let flavor = if v >= 80 {
                Flavor::Valkey
            } else {
                Flavor::Redis
            };
            if target.accepts_dump(flavor, v) {
                out.push(cmd);
                return;
            }
            let flush = cmd
                .args
                .get(3)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"FLUSH"));
            if flush {
                out.push(cmd!["FUNCTION", "FLUSH"]);
            }
            for lib in decoded.libraries {
                out.push(load(lib));
            }
        }
        _ if has_functions => out.push(cmd),
        b"LOAD" => {
            let code = cmd.args.last().map(|a| a.as_ref()).unwrap_or(b"");
            report_failure(
                &library_name(code),
                "FUNCTION LOAD: the target has no functions (Redis 7.0+)",
            );
        }
        b"DELETE" => report_failure(
            &String::from_utf8_lossy(cmd.args.get(2).map(|a| a.as_ref()).unwrap_or(b"")),
            "FUNCTION DELETE: the target has no functions (Redis 7.0+)",
        ),
        _ => {
            // FLUSH (nothing to flush on the target) and anything else: nothing to do there.
            tracing::warn!(
                command = %log_subject(&cmd),
                "function command skipped: the target has no functions (Redis 7.0+)"
            );
        }
    }
}

/// `FUNCTION LOAD REPLACE <code>`.
pub fn load(code: Bytes) -> Cmd {
    cmd!["FUNCTION", "LOAD", "REPLACE", code]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(flavor: Flavor, maj: u32, min: u32) -> ServerInfo {
        ServerInfo {
            flavor,
            version: (maj, min, 0),
            cluster_enabled: false,
        }
    }

    #[test]
    fn server_api_detection() {
        assert!(uses_server_api("server.register_function('f', g)"));
        assert!(uses_server_api("return server.call('GET', k)"));
        assert!(uses_server_api(
            "local x = 1\n  server.log(server.LOG_WARNING, 'x')"
        ));
        assert!(!uses_server_api("local myserver = 1 myserver.x = 2"));
        assert!(!uses_server_api("redis.call('SET', 'k', 'v') -- server"));
        assert!(!uses_server_api("cfg.server.call()"));
    }

    #[test]
    fn problems_by_target() {
        let valkey_only = b"#!lua name=v\nserver.register_function('f', function() return 1 end)";
        let portable = b"#!lua name=p\nredis.register_function('f', function() return 1 end)";
        let options = b"#!lua name=o engine=x\nredis.register_function('f', function() end)";
        let r70 = t(Flavor::Redis, 7, 0);
        assert!(
            library_problem(valkey_only, &r70)
                .unwrap()
                .contains("server.*")
        );
        assert!(library_problem(options, &r70).unwrap().contains("engine=x"));
        assert_eq!(library_problem(portable, &r70), None);
        assert_eq!(library_problem(valkey_only, &t(Flavor::Valkey, 9, 1)), None);
        let r62 = t(Flavor::Redis, 6, 2);
        assert!(
            library_problem(portable, &r62)
                .unwrap()
                .contains("no functions")
        );
    }

    #[test]
    fn subjects_name_libraries() {
        let c = cmd!["FUNCTION", "LOAD", "REPLACE", "#!lua name=mylib\nx"];
        assert_eq!(log_subject(&c), "library mylib");
        let c = cmd!["function", "load", "#!lua name=other\nx"];
        assert_eq!(log_subject(&c), "library other");
        assert_eq!(log_subject(&cmd!["FUNCTION", "DELETE", "l"]), "library l");
        assert_eq!(log_subject(&cmd!["FUNCTION", "FLUSH"]), "FUNCTION FLUSH");
        assert_eq!(log_subject(&cmd!["SET", "k", "v"]), "k");
        assert_eq!(log_subject(&cmd!["PING"]), "");
        assert_eq!(
            log_subject(&cmd!["EVAL", "return 1", "2", "k1", "k2", "a"]),
            "k1"
        );
        assert_eq!(log_subject(&cmd!["evalsha", "abc", "0", "a"]), "(no key)");
    }

    fn payload(libs: &[&str], version: u16) -> Bytes {
        let mut raw = Vec::new();
        for l in libs {
            raw.push(245u8);
            raw.push(l.len() as u8);
            raw.extend_from_slice(l.as_bytes());
        }
        raw.extend_from_slice(&version.to_le_bytes());
        raw.extend_from_slice(&[0; 8]);
        Bytes::from(raw)
    }

    fn show(cmds: &[Cmd]) -> Vec<String> {
        cmds.iter()
            .map(|c| {
                c.args
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).replace('\n', "\\n"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn restore_payloads_by_target() {
        let p = payload(&["#!lua name=a\nx", "#!lua name=b\ny"], 80);
        let mut out = Vec::new();
        rewrite_function(
            cmd!["FUNCTION", "RESTORE", p.clone(), "FLUSH"],
            &t(Flavor::Redis, 7, 0),
            &mut out,
        );
        assert_eq!(
            show(&out),
            [
                "FUNCTION FLUSH",
                "FUNCTION LOAD REPLACE #!lua name=a\\nx",
                "FUNCTION LOAD REPLACE #!lua name=b\\ny"
            ]
        );
        // A target that reads the payload gets it unchanged.
        let mut out = Vec::new();
        rewrite_function(
            cmd!["FUNCTION", "RESTORE", p.clone()],
            &t(Flavor::Valkey, 9, 1),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].args[2], p);
        // No functions before 7.0: nothing sent.
        let mut out = Vec::new();
        for c in [
            cmd!["FUNCTION", "RESTORE", p.clone()],
            cmd!["FUNCTION", "LOAD", "#!lua name=a\nx"],
            cmd!["FUNCTION", "DELETE", "a"],
            cmd!["FUNCTION", "FLUSH"],
            cmd!["FUNCTION", "RESTORE", "garbage"],
        ] {
            rewrite_function(c, &t(Flavor::Redis, 6, 2), &mut out);
        }
        assert!(out.is_empty());
        // Undecodable payload on a 7.0 target: passed on (the target's error is logged).
        let mut out = Vec::new();
        rewrite_function(
            cmd!["FUNCTION", "RESTORE", "garbage"],
            &t(Flavor::Redis, 7, 0),
            &mut out,
        );
        assert_eq!(out.len(), 1);
    }
}
