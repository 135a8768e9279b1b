//! The verification report: totals, the listed differences (capped, counts stay exact), key
//! names quoted as `redis-cli` quotes them, and the text and JSON (`shardsync.verify/1`) forms.

use serde::Serialize;

/// The whole key quoted as `redis-cli` prints it (the shared [`crate::escape`] rules, no cut).
pub fn quote(bytes: &[u8]) -> String {
    crate::escape::Escaped::new(bytes)
        .limit(usize::MAX)
        .quoted()
        .to_string()
}

/// A value in a detail: quoted, at most the first 64 bytes shown.
pub fn quote_short(bytes: &[u8]) -> String {
    crate::escape::Escaped::new(bytes)
        .limit(64)
        .quoted()
        .to_string()
}

/// What kind of difference a key has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// On the source, not on the target.
    Missing,
    /// On the target, not on the source.
    Extra,
    /// On both, not equal.
    Different,
}

/// Why two existing keys differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Different types.
    Type,
    /// Different value (string bytes, elements, scores, stream entries or stream id fields).
    Value,
    /// TTL differs by more than the tolerance (or only one side expires).
    Ttl,
    /// Stream consumer groups differ (group, last-delivered-id, entries-read, consumers,
    /// pending entries with owner and delivery count).
    StreamGroup,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Type => "type",
            Reason::Value => "value",
            Reason::Ttl => "ttl",
            Reason::StreamGroup => "stream_group",
        }
    }
}

/// One listed difference.
#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    pub kind: Kind,
    /// `null` for missing and extra keys.
    pub reason: Option<Reason>,
    /// Source database (for `extra`: the target database's first mapped source database, or the
    /// target database when none maps to it).
    pub db: u32,
    pub target_db: u32,
    /// The key quoted as `redis-cli` does.
    pub key: String,
    /// Human-readable detail (values quoted and cut).
    pub detail: String,
}

/// Exact counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// Keys read from the source (scan or sample), after the ignore list and filters.
    pub source_keys: u64,
    /// Keys read from the target, after the ignore list and filters.
    pub target_keys: u64,
    /// Source keys found equal on the target.
    pub equal: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Per reason, of `different`.
    pub different_type: u64,
    pub different_value: u64,
    pub different_ttl: u64,
    pub different_stream_group: u64,
    /// Keys that differed at first and were equal (or gone from both sides) when re-checked:
    /// writes in flight.
    pub settled_on_recheck: u64,
    /// Keys skipped by the ignore list or the filters (both sides).
    pub ignored: u64,
    /// Source keys deleted between being listed and being read.
    pub vanished: u64,
}

/// The whole result of a verification.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Schema name and version of this JSON.
    pub schema: &'static str,
    /// `equal` or `different`.
    pub result: &'static str,
    pub source: String,
    pub target: String,
    /// `all` or `sample`.
    pub mode: &'static str,
    pub sample: Option<u64>,
    pub totals: Totals,
    pub elapsed_ms: u64,
    /// (source_keys + target_keys) / elapsed seconds.
    pub keys_per_sec: f64,
    /// At most `--max-report` entries, in the order found.
    pub differences: Vec<Difference>,
    /// True when more differences exist than are listed.
    pub truncated: bool,
}

impl Report {
    pub fn is_equal(&self) -> bool {
        self.totals.missing == 0 && self.totals.extra == 0 && self.totals.different == 0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mode = match self.sample {
            Some(n) => format!("sample of {n} keys per side"),
            None => "all keys".into(),
        };
        s.push_str(&format!(
            "shardsync verify: source {} -> target {} ({mode})\n",
            self.source, self.target
        ));
        for d in &self.differences {
            let kind = match d.kind {
                Kind::Missing => "MISSING",
                Kind::Extra => "EXTRA",
                Kind::Different => "DIFFERENT",
            };
            let db = if d.db == d.target_db {
                format!("db {}", d.db)
            } else {
                format!("db {}->{}", d.db, d.target_db)
            };
            let reason = d
                .reason
                .map(|r| format!(" {}:", r.as_str()))
                .unwrap_or_default();
            s.push_str(&format!("{kind:<9} {db} {}{reason} {}\n", d.key, d.detail));
        }
        if self.truncated {
            let total = self.totals.missing + self.totals.extra + self.totals.different;
            s.push_str(&format!(
                "… {} more differences not listed (--max-report)\n",
                total - self.differences.len() as u64
            ));
        }
        let t = &self.totals;
        s.push_str(&format!(
            "checked {} source keys and {} target keys in {:.1} s ({:.0} keys/s)\n",
            t.source_keys,
            t.target_keys,
            self.elapsed_ms as f64 / 1000.0,
            self.keys_per_sec
        ));
        s.push_str(&format!(
            "equal {}, missing {}, extra {}, different {} (type {}, value {}, ttl {}, stream group {}); settled on re-check {}, ignored {}, vanished {}\n",
            t.equal,
            t.missing,
            t.extra,
            t.different,
            t.different_type,
            t.different_value,
            t.different_ttl,
            t.different_stream_group,
            t.settled_on_recheck,
            t.ignored,
            t.vanished
        ));
        s.push_str(&format!(
            "result: {}\n",
            if self.is_equal() {
                "EQUAL"
            } else {
                "DIFFERENT"
            }
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_redis_cli() {
        assert_eq!(quote(b"plain:key"), "\"plain:key\"");
        assert_eq!(quote(b"a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote(b"\n\r\t\x07\x08"), "\"\\n\\r\\t\\a\\b\"");
        assert_eq!(quote(b"\x00\xff\x7f "), "\"\\x00\\xff\\x7f \"");
        assert_eq!(quote("é".as_bytes()), "\"\\xc3\\xa9\"");
        let short = quote_short(&[b'a'; 100]);
        assert!(
            short.starts_with(&format!("\"{}", "a".repeat(64))) && short.contains("36"),
            "{short}"
        );
    }
}
