//! What a live command loses on its way to a target that cannot hold part of its effect, so that
//! the caller counts and reports it (`shardsync_lossy_conversions_total`, see
//! [`crate::observe::events::LossyConversion`]) instead of dropping it quietly.
//!
//! Hash-field TTLs (Valkey 9+): a target without them gets the fields without their TTL (see
//! [`super::emulate`]). One loss is one field whose TTL was set on the source and not on the
//! target: each field of `HSETEX` with an expiry, of `HEXPIRE`/`HPEXPIRE`/`HEXPIREAT`/
//! `HPEXPIREAT`, and of `HGETEX` with an expiry. `HPERSIST`, `HGETEX … PERSIST` and `HSETEX`
//! without an expiry lose nothing: on such a target no field has a TTL to remove. A `RESTORE` of
//! a hash with field TTLs that the target gets as plain commands loses each field's TTL.

use crate::cmd::Cmd;
use crate::net::server_info::ServerInfo;

/// The `kind` label of field TTLs lost in conversion.
pub const HASH_FIELD_TTL: &str = "hash_field_ttl";

/// Every `kind` of `shardsync_lossy_conversions_total` (registered with zero per shard).
pub const KINDS: &[&str] = &[HASH_FIELD_TTL];

/// Hash-field TTLs that `cmd` sets on the source and `target` will not get (see the module doc).
/// Malformed commands count nothing: they go to the target unchanged, which rejects them.
pub fn hash_field_ttls_dropped(cmd: &Cmd, target: &ServerInfo) -> u64 {
    if target.valkey_at_least(9, 0) {
        return 0;
    }
    let name = cmd.name();
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let (counts, pairs) = if is("HEXPIRE") || is("HPEXPIRE") || is("HEXPIREAT") || is("HPEXPIREAT")
    {
        (true, false)
    } else if is("HSETEX") {
        (has_expiry(&cmd.args), true)
    } else if is("HGETEX") {
        (has_expiry(&cmd.args), false)
    } else {
        return 0;
    };
    if !counts {
        return 0;
    }
    super::emulate::fields(&cmd.args, pairs).map_or(0, |f| {
        let n = if pairs { f.len() / 2 } else { f.len() };
        n as u64
    })
}

/// Hash-field TTLs a `RESTORE key ttl payload …` loses on `target`: the fields with a TTL of a
/// payload holding a hash with field TTLs (RDB types 22–25), when the target cannot hold them
/// (it gets the hash decoded into plain commands). 0 for anything else; a payload that does not
/// decode counts nothing (the target refuses it, visibly).
pub fn restore_field_ttls_dropped(cmd: &Cmd, target: &ServerInfo) -> u64 {
    use crate::rdb::{Chunk, DumpReader, ParseOptions, ValueKind};
    if !cmd.is("RESTORE") || super::keys::has_hash_field_ttl(target) {
        return 0;
    }
    let Some(payload) = cmd.args.get(3) else {
        return 0;
    };
    if !matches!(payload.first(), Some(22..=25)) {
        return 0;
    }
    let opts = ParseOptions::default();
    let Ok(mut value) = DumpReader::new(payload, &opts) else {
        return 0;
    };
    if value.kind != ValueKind::Hash {
        return 0;
    }
    let (mut n, mut chunks) = (0u64, Vec::new());
    while let Ok(true) = value.next_chunks(&mut chunks) {
        for c in chunks.drain(..) {
            if let Chunk::HashFields(fields) = c {
                n += fields.iter().filter(|f| f.expire_ms.is_some()).count() as u64;
            }
        }
    }
    n
}

/// True when an `EX|PX|EXAT|PXAT` option comes before `FIELDS` (`HSETEX`, `HGETEX`).
fn has_expiry(args: &[bytes::Bytes]) -> bool {
    args.iter()
        .skip(2)
        .take_while(|a| !a.eq_ignore_ascii_case(b"FIELDS"))
        .any(|a| {
            [&b"EX"[..], b"PX", b"EXAT", b"PXAT"]
                .iter()
                .any(|o| a.eq_ignore_ascii_case(o))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;
    use crate::rdb::Flavor;

    fn info(flavor: Flavor, version: (u32, u32, u32)) -> ServerInfo {
        ServerInfo {
            flavor,
            version,
            cluster_enabled: false,
        }
    }

    #[test]
    fn counts_fields_whose_ttl_is_dropped() {
        let redis70 = info(Flavor::Redis, (7, 0, 15));
        let valkey = info(Flavor::Valkey, (9, 1, 0));
        let cases: &[(Cmd, u64)] = &[
            (cmd!["HPEXPIREAT", "h", "123", "FIELDS", "2", "a", "b"], 2),
            (cmd!["hexpire", "h", "10", "NX", "FIELDS", "1", "a"], 1),
            (
                cmd![
                    "HSETEX", "h", "PXAT", "9", "FIELDS", "2", "a", "1", "b", "2"
                ],
                2,
            ),
            (
                cmd!["HSETEX", "h", "FNX", "EX", "9", "FIELDS", "1", "a", "1"],
                1,
            ),
            (cmd!["HSETEX", "h", "FIELDS", "1", "a", "1"], 0),
            (cmd!["HSETEX", "h", "KEEPTTL", "FIELDS", "1", "a", "1"], 0),
            (
                cmd!["HGETEX", "h", "PX", "5", "FIELDS", "3", "a", "b", "c"],
                3,
            ),
            (cmd!["HGETEX", "h", "PERSIST", "FIELDS", "1", "a"], 0),
            (cmd!["HPERSIST", "h", "FIELDS", "1", "a"], 0),
            // Malformed: passed unchanged and rejected by the target, not counted here.
            (cmd!["HPEXPIREAT", "h", "123", "FIELDS", "3", "a"], 0),
            (cmd!["HSET", "h", "a", "1"], 0),
        ];
        for (c, n) in cases {
            assert_eq!(hash_field_ttls_dropped(c, &redis70), *n, "{c:?}");
            assert_eq!(hash_field_ttls_dropped(c, &valkey), 0, "{c:?}");
        }
    }
}
