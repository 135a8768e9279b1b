//! Comparing a copy that a database selection, key filters or a db map narrowed: every source
//! key the test's own rules keep must equal its copy in the mapped target database, and the
//! target must hold no other key (the heartbeat and progress keys aside). The rules are the
//! test's, written out independently of shardsync's filter code.

use std::collections::{BTreeMap, BTreeSet};

use super::compare::{CompareOptions, Difference, assert_no_differences, compare_key, scan_keys};
use super::run::HEARTBEAT;
use super::util::select;

/// What a target should hold of the source.
pub struct Expected<'a> {
    /// Source (and target) databases looked at.
    pub dbs: std::ops::Range<u32>,
    /// Whether source key `(db, key)` is copied.
    pub kept: &'a dyn Fn(u32, &[u8]) -> bool,
    /// The target database of a source database.
    pub target_db: &'a dyn Fn(u32) -> u32,
    /// Target keys left out of the comparison (besides the heartbeat and progress keys).
    pub ignore: &'a [&'a [u8]],
    pub opts: CompareOptions,
}

impl Expected<'_> {
    fn ignored(&self, k: &[u8]) -> bool {
        k == HEARTBEAT.as_bytes()
            || k.starts_with(super::compare::PROGRESS_PREFIX)
            || self.ignore.contains(&k)
    }
}

/// The differences between `dst` and what it should hold of `src`, and how many kept keys
/// were compared.
pub fn selected_differences(
    src: &mut redis::Connection,
    dst: &mut redis::Connection,
    e: &Expected,
) -> (Vec<Difference>, usize) {
    let mut diffs = Vec::new();
    let mut expected: BTreeMap<u32, BTreeSet<Vec<u8>>> = Default::default();
    let mut checked = 0;
    for db in e.dbs.clone() {
        select(src, db);
        let keys = scan_keys(src);
        let tdb = (e.target_db)(db);
        select(dst, tdb);
        for k in keys.iter().filter(|k| !e.ignored(k) && (e.kept)(db, k)) {
            checked += 1;
            diffs.extend(compare_key(db, k, src, dst, &e.opts));
            expected.entry(tdb).or_default().insert(k.clone());
        }
    }
    for tdb in e.dbs.clone() {
        select(dst, tdb);
        let want = expected.remove(&tdb).unwrap_or_default();
        for k in scan_keys(dst) {
            if !e.ignored(&k) && !want.contains(&k) {
                diffs.push(Difference {
                    db: Some(tdb),
                    key: k,
                    what: "on the target but filtered out (or absent) on the source".into(),
                });
            }
        }
    }
    select(src, 0);
    select(dst, 0);
    (diffs, checked)
}

/// Asserts `dst` holds exactly what it should of `src` ([`selected_differences`]); returns
/// how many kept keys were compared.
pub fn assert_selected_copy(
    src: &mut redis::Connection,
    dst: &mut redis::Connection,
    e: &Expected,
) -> usize {
    let (diffs, checked) = selected_differences(src, dst, e);
    assert_no_differences(&diffs);
    checked
}
