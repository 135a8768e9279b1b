//! Precheck of Valkey-only data features against a target that lacks them: hash-field TTLs
//! (Valkey 9+) cannot be held by a Redis or older Valkey target. The source's `INFO keyspace`
//! says how many keys have fields with a TTL (`keys_with_volatile_items`); when some do, the check
//! warns that those TTLs will be dropped (the fields are written; every lost TTL is counted in
//! `shardsync_lossy_conversions_total{kind="hash_field_ttl"}`). Other Valkey-only commands
//! (`SET … IFEQ`, `DELIFEQ`, `HGETDEL`) are emulated exactly and need no warning.

use crate::net::topology::Topology;
use crate::precheck::Check;

const NAME: &str = "Valkey-only features";

/// `None` when the check does not apply (source not Valkey 9+, or a target that has field TTLs).
pub fn check(source: &Topology, target: &Topology) -> Option<Check> {
    let (si, ti) = (source.info(), target.info());
    if !si.valkey_at_least(9, 0) || ti.valkey_at_least(9, 0) {
        return None;
    }
    let keys: u64 = source
        .masters()
        .iter()
        .map(|m| volatile_item_keys(&m.raw_info))
        .sum();
    let detail = if keys > 0 {
        format!(
            "{keys} key(s) on the source have hash fields with a TTL; the target cannot hold field TTLs: the fields are written without them (counted in shardsync_lossy_conversions_total{{kind=\"hash_field_ttl\"}}); use a Valkey 9+ target to keep them"
        )
    } else {
        "no hash field TTLs on the source now; any set during the run are dropped on this target and counted in shardsync_lossy_conversions_total{kind=\"hash_field_ttl\"}".to_string()
    };
    Some(Check {
        name: NAME,
        ok: true,
        warning: keys > 0,
        detail,
    })
}

/// Sum of `keys_with_volatile_items` over the databases of an `INFO keyspace` text.
fn volatile_item_keys(info: &str) -> u64 {
    info.lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| {
            l.split(',')
                .find_map(|kv| kv.strip_prefix("keys_with_volatile_items="))?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_with_volatile_items() {
        let info = "# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0,keys_with_volatile_items=2\r\ndb5:keys=1,expires=0,avg_ttl=0,keys_with_volatile_items=1\r\n";
        assert_eq!(volatile_item_keys(info), 3);
        assert_eq!(volatile_item_keys("db0:keys=3,expires=0,avg_ttl=0\r\n"), 0);
    }
}
