//! Routing of replication-stream commands to cluster slots: [`route`] classifies one command (and
//! splits multi-key commands per slot where that keeps their meaning); [`route_transaction`] does
//! the same for the body of a `MULTI … EXEC` block.
//!
//! Policy (the caller acts on it; nothing here does I/O):
//! - All keys in one slot → [`Routed::Single`], the command unchanged. This is the hot path: one
//!   table lookup and one CRC per key, no allocation.
//! - `DEL`/`UNLINK`/`TOUCH`/`EXISTS` → one command per slot, keys in their original order.
//! - `MSET` → `MSET` per slot with its pairs. `MSETNX` only reaches the stream when it succeeded on
//!   the source, so across slots it becomes per-slot `MSET`s (per-slot `MSETNX`s could fail where
//!   the source's one did not); in one slot it stays `MSETNX`.
//! - `SMOVE src dst m` across slots → `SREM src m` + `SADD dst m` (SMOVE is only propagated when
//!   the member moved).
//! - Keys of dependent commands in several slots (`RENAME`, `COPY`, `*STORE`, `BITOP`, `PFMERGE`,
//!   `LMOVE`, scripts…) → [`Routed::CrossSlot`]: the caller falls back (reads the values from the
//!   target) or reports; it must not drop them silently.
//! - No key → [`Routed::NoKey`] with a [`Scope`]: every master, any master, unsupported on a
//!   cluster target (databases), caller-handled control, or malformed.
//! - Transactions: kept whole (caller wraps `MULTI`/`EXEC`) when every keyed command is in one slot;
//!   otherwise each command is routed on its own, in order — atomicity across slots does not
//!   exist on a cluster, so the transaction is applied as its separate effects.

use std::collections::HashMap;

use bytes::Bytes;

use super::keys::{Category, KeyPositions, KeySpec, command_keys};
use super::slot::key_slot;
use crate::cmd::Cmd;

/// Where a command without a (routable) key goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Run on every target master (`FLUSHALL`, `FLUSHDB`, `FUNCTION LOAD|DELETE|FLUSH|RESTORE`,
    /// `SCRIPT LOAD|FLUSH`).
    AllNodes,
    /// Any one master (`PUBLISH`, which the cluster propagates; scripts with no keys).
    AnyNode,
    /// Impossible on a cluster target (db 0 only): `SELECT`, `SWAPDB`, `MOVE`, `COPY … DB`. The
    /// caller reports it.
    Unsupported,
    /// Stream control the caller handles itself: `MULTI`, `EXEC`, `DISCARD`, `PING`, `REPLCONF`.
    Control,
    /// Key positions could not be determined (wrong arity, bad `numkeys`): the target would
    /// reject it; the caller reports it.
    Malformed,
}

/// The routing decision for one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed {
    /// Every key is in `slot`; `cmd` is unchanged.
    Single { slot: u16, cmd: Cmd },
    /// No key to route by.
    NoKey { cmd: Cmd, scope: Scope },
    /// Split into parts that each touch one slot, with the same effect as the original; slots in
    /// order of first appearance in the command, each slot once.
    PerSlot(Vec<(u16, Cmd)>),
    /// Keys in several slots and no split keeps the meaning; `slots` are the distinct slots in
    /// order of first appearance.
    CrossSlot { cmd: Cmd, slots: Vec<u16> },
}

/// The routing decision for the body of a `MULTI … EXEC` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxRouted {
    /// Every keyed command is in `slot` (keyless commands, if any, are `AnyNode` ones such as
    /// `PUBLISH`): send `MULTI`, `cmds`, `EXEC` to that slot's master; atomicity kept.
    SingleSlot { slot: u16, cmds: Vec<Cmd> },
    /// Commands routed one by one, in order (atomicity across slots is impossible on a cluster).
    Split(Vec<Routed>),
}

/// Routes one command; see the module documentation for the policy.
pub fn route(cmd: Cmd) -> Routed {
    let spec = command_keys(&cmd);
    route_with(cmd, spec)
}

/// [`route`] with a [`KeySpec`] the caller already computed (e.g. to count
/// [`Category::Unknown`] commands without a second lookup).
pub fn route_with(cmd: Cmd, spec: KeySpec) -> Routed {
    let no_key = |cmd, scope| Routed::NoKey { cmd, scope };
    match spec.category {
        Category::AllNodes => no_key(cmd, Scope::AllNodes),
        Category::AnyNode => no_key(cmd, Scope::AnyNode),
        Category::Db => no_key(cmd, Scope::Unsupported),
        Category::Control => no_key(cmd, Scope::Control),
        Category::Malformed => no_key(cmd, Scope::Malformed),
        Category::Move if cmd.args.len() != 4 => no_key(cmd, Scope::Malformed),
        Category::Single
        | Category::Unknown
        | Category::Script
        | Category::Linked
        | Category::Independent
        | Category::Pairs
        | Category::Move => match common_slot(&cmd, spec.keys) {
            Some(Ok(slot)) => Routed::Single { slot, cmd },
            // Only scripts with `numkeys` 0 and bare unknown commands have no key here.
            None => no_key(cmd, Scope::AnyNode),
            Some(Err(())) => match spec.category {
                Category::Independent => split_grouped(cmd, spec.keys, 1, None),
                Category::Pairs => {
                    split_grouped(cmd, spec.keys, 2, Some(Bytes::from_static(b"MSET")))
                }
                Category::Move => split_smove(cmd),
                _ => {
                    let slots = distinct_slots(&cmd, spec.keys);
                    Routed::CrossSlot { cmd, slots }
                }
            },
        },
    }
}

/// Routes the commands between `MULTI` and `EXEC` (exclusive).
pub fn route_transaction(cmds: Vec<Cmd>) -> TxRouted {
    let routed: Vec<Routed> = cmds.into_iter().map(route).collect();
    let mut slot = None;
    for r in &routed {
        match r {
            Routed::Single { slot: s, .. } => match slot {
                None => slot = Some(*s),
                Some(prev) if prev == *s => {}
                Some(_) => return TxRouted::Split(routed),
            },
            Routed::NoKey {
                scope: Scope::AnyNode,
                ..
            } => {}
            _ => return TxRouted::Split(routed),
        }
    }
    let Some(slot) = slot else {
        return TxRouted::Split(routed);
    };
    let cmds = routed
        .into_iter()
        .map(|r| match r {
            Routed::Single { cmd, .. } | Routed::NoKey { cmd, .. } => cmd,
            _ => unreachable!("checked above"),
        })
        .collect();
    TxRouted::SingleSlot { slot, cmds }
}

/// `None` without keys, `Some(Ok(slot))` when every key is in `slot`, `Some(Err(()))` otherwise.
fn common_slot(cmd: &Cmd, keys: KeyPositions) -> Option<Result<u16, ()>> {
    let mut it = keys.iter();
    let slot = key_slot(&cmd.args[it.next()?]);
    for i in it {
        if key_slot(&cmd.args[i]) != slot {
            return Some(Err(()));
        }
    }
    Some(Ok(slot))
}

fn distinct_slots(cmd: &Cmd, keys: KeyPositions) -> Vec<u16> {
    let mut slots = Vec::new();
    for i in keys.iter() {
        let s = key_slot(&cmd.args[i]);
        if !slots.contains(&s) {
            slots.push(s);
        }
    }
    slots
}

/// One command per slot with the keys (and, for `width` 2, their values) of that slot, in order.
/// `rename` replaces the command name of the parts.
fn split_grouped(cmd: Cmd, keys: KeyPositions, width: usize, rename: Option<Bytes>) -> Routed {
    Routed::PerSlot(group_keys(&cmd, keys, width, rename, key_slot))
}

/// One command per group (`group` of each key: a slot, a filter verdict…) with the keys (and, for
/// `width` 2, their values) of that group, in order of first appearance. `rename` replaces the
/// command name of the parts.
fn group_keys<G: Copy + Eq + std::hash::Hash>(
    cmd: &Cmd,
    keys: KeyPositions,
    width: usize,
    rename: Option<Bytes>,
    group: impl Fn(&[u8]) -> G,
) -> Vec<(G, Cmd)> {
    let name = rename.unwrap_or_else(|| cmd.args[0].clone());
    let mut parts: Vec<(G, Cmd)> = Vec::new();
    let mut index: HashMap<G, usize> = HashMap::new();
    for i in keys.iter() {
        let g = group(&cmd.args[i]);
        let at = *index.entry(g).or_insert_with(|| {
            parts.push((
                g,
                Cmd {
                    args: vec![name.clone()],
                },
            ));
            parts.len() - 1
        });
        parts[at].1.args.extend_from_slice(&cmd.args[i..i + width]);
    }
    parts
}

/// Splits a multi-key command by a verdict per key where that keeps its meaning, as the slot
/// routing does: `DEL`/`UNLINK`/`TOUCH`/`EXISTS` by keys, `MSET`/`MSETNX` by pairs (as `MSET`),
/// `SMOVE` into `SREM` + `SADD`. Returns the parts whose keys got `true`, or `Err(cmd)` for a
/// command of another category (the caller decides) or a malformed one.
pub fn split_by_verdict(
    cmd: Cmd,
    spec: KeySpec,
    keep: impl Fn(&[u8]) -> bool,
) -> Result<Vec<Cmd>, Cmd> {
    let parts = match spec.category {
        Category::Independent => group_keys(&cmd, spec.keys, 1, None, &keep),
        Category::Pairs => group_keys(&cmd, spec.keys, 2, Some(Bytes::from_static(b"MSET")), &keep),
        Category::Move if cmd.args.len() == 4 => {
            let (src, dst) = (keep(&cmd.args[1]), keep(&cmd.args[2]));
            return Ok(match split_smove(cmd) {
                Routed::PerSlot(v) => v
                    .into_iter()
                    .zip([src, dst])
                    .filter(|(_, k)| *k)
                    .map(|((_, c), _)| c)
                    .collect(),
                _ => Vec::new(),
            });
        }
        _ => return Err(cmd),
    };
    Ok(parts
        .into_iter()
        .filter(|(k, _)| *k)
        .map(|(_, c)| c)
        .collect())
}

/// `SMOVE src dst member` with `src` and `dst` in different slots.
fn split_smove(cmd: Cmd) -> Routed {
    let [_, src, dst, member]: [Bytes; 4] = match cmd.args.try_into() {
        Ok(a) => a,
        Err(args) => {
            return Routed::NoKey {
                cmd: Cmd { args },
                scope: Scope::Malformed,
            };
        }
    };
    let (s, d) = (key_slot(&src), key_slot(&dst));
    Routed::PerSlot(vec![
        (
            s,
            Cmd {
                args: vec![Bytes::from_static(b"SREM"), src, member.clone()],
            },
        ),
        (
            d,
            Cmd {
                args: vec![Bytes::from_static(b"SADD"), dst, member],
            },
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;

    // Keys with known, distinct slots.
    const A: &str = "{a}1"; // slot of "a"
    const A2: &str = "{a}2";
    const B: &str = "{b}1";
    const C: &str = "{c}1";

    fn sa() -> u16 {
        key_slot(b"a")
    }
    fn sb() -> u16 {
        key_slot(b"b")
    }
    fn sc() -> u16 {
        key_slot(b"c")
    }

    #[test]
    fn slots_of_test_keys_differ() {
        assert_eq!(sa(), 15495);
        assert_eq!(sb(), 3300);
        assert_eq!(sc(), 7365);
    }

    #[test]
    fn single_key_is_unchanged() {
        let c = cmd!["SET", "foo", "bar", "PXAT", "123"];
        assert_eq!(
            route(c.clone()),
            Routed::Single {
                slot: 12182,
                cmd: c
            }
        );
        let c = cmd!["JSON.SET", A, "$", "1"];
        assert_eq!(route(c.clone()), Routed::Single { slot: sa(), cmd: c });
        let c = cmd!["SPUBLISH", "ch", "m"];
        assert_eq!(
            route(c.clone()),
            Routed::Single {
                slot: key_slot(b"ch"),
                cmd: c
            }
        );
        let c = cmd!["XGROUP", "CREATE", B, "g", "$"];
        assert_eq!(route(c.clone()), Routed::Single { slot: sb(), cmd: c });
    }

    #[test]
    fn multi_key_in_one_slot_is_unchanged() {
        for c in [
            cmd!["DEL", A, A2],
            cmd!["MSET", A, "1", A2, "2"],
            cmd!["MSETNX", A, "1", A2, "2"],
            cmd!["SMOVE", A, A2, "m"],
            cmd!["RENAME", A, A2],
            cmd!["ZUNIONSTORE", A, "2", A2, A],
            cmd!["EVAL", "s", "2", A, A2],
            cmd!["BITOP", "OR", A, A2, A],
        ] {
            assert_eq!(route(c.clone()), Routed::Single { slot: sa(), cmd: c });
        }
    }

    #[test]
    fn del_family_splits_per_slot_in_order() {
        for name in ["DEL", "UNLINK", "TOUCH", "EXISTS"] {
            assert_eq!(
                route(cmd![name, A, B, A2, C]),
                Routed::PerSlot(vec![
                    (sa(), cmd![name, A, A2]),
                    (sb(), cmd![name, B]),
                    (sc(), cmd![name, C]),
                ]),
                "{name}"
            );
        }
    }

    #[test]
    fn mset_splits_by_pairs() {
        assert_eq!(
            route(cmd!["MSET", A, "1", B, "2", A2, "3"]),
            Routed::PerSlot(vec![
                (sa(), cmd!["MSET", A, "1", A2, "3"]),
                (sb(), cmd!["MSET", B, "2"]),
            ])
        );
        assert_eq!(
            route(cmd!["msetnx", B, "2", A, "1"]),
            Routed::PerSlot(vec![
                (sb(), cmd!["MSET", B, "2"]),
                (sa(), cmd!["MSET", A, "1"])
            ])
        );
    }

    #[test]
    fn smove_becomes_srem_and_sadd() {
        assert_eq!(
            route(cmd!["SMOVE", A, B, "m"]),
            Routed::PerSlot(vec![
                (sa(), cmd!["SREM", A, "m"]),
                (sb(), cmd!["SADD", B, "m"])
            ])
        );
        assert_eq!(
            route(cmd!["SMOVE", A, B]),
            Routed::NoKey {
                cmd: cmd!["SMOVE", A, B],
                scope: Scope::Malformed
            }
        );
    }

    #[test]
    fn dependent_commands_are_cross_slot() {
        let cases = [
            (cmd!["RENAME", A, B], vec![sa(), sb()]),
            (cmd!["RENAMENX", B, A], vec![sb(), sa()]),
            (cmd!["COPY", A, B, "REPLACE"], vec![sa(), sb()]),
            (cmd!["LMOVE", A, B, "LEFT", "RIGHT"], vec![sa(), sb()]),
            (cmd!["RPOPLPUSH", A, B], vec![sa(), sb()]),
            (cmd!["BLMOVE", A, B, "LEFT", "RIGHT", "0"], vec![sa(), sb()]),
            (cmd!["BRPOPLPUSH", A, B, "0"], vec![sa(), sb()]),
            (cmd!["SINTERSTORE", A, B, A2, C], vec![sa(), sb(), sc()]),
            (cmd!["SUNIONSTORE", A, B], vec![sa(), sb()]),
            (cmd!["SDIFFSTORE", A, A2, B], vec![sa(), sb()]),
            (cmd!["ZUNIONSTORE", A, "2", B, C], vec![sa(), sb(), sc()]),
            (
                cmd!["ZINTERSTORE", A, "1", B, "WEIGHTS", "2"],
                vec![sa(), sb()],
            ),
            (cmd!["ZDIFFSTORE", C, "2", A, A2], vec![sc(), sa()]),
            (cmd!["ZRANGESTORE", A, B, "0", "-1"], vec![sa(), sb()]),
            (
                cmd![
                    "GEOSEARCHSTORE",
                    A,
                    B,
                    "FROMMEMBER",
                    "m",
                    "BYRADIUS",
                    "1",
                    "km"
                ],
                vec![sa(), sb()],
            ),
            (
                cmd!["GEORADIUS", A, "1", "2", "3", "km", "STORE", B],
                vec![sa(), sb()],
            ),
            (
                cmd!["GEORADIUSBYMEMBER", A, "m", "3", "km", "STOREDIST", B],
                vec![sa(), sb()],
            ),
            (cmd!["BITOP", "AND", A, B, C], vec![sa(), sb(), sc()]),
            (cmd!["PFMERGE", A, B], vec![sa(), sb()]),
            (
                cmd!["SORT", A, "BY", "nosort", "STORE", B],
                vec![sa(), sb()],
            ),
            (cmd!["EVAL", "s", "2", A, B, "argv"], vec![sa(), sb()]),
            (cmd!["EVALSHA", "sha", "3", A, B, A2], vec![sa(), sb()]),
            (cmd!["FCALL", "f", "2", B, C], vec![sb(), sc()]),
        ];
        for (c, slots) in cases {
            assert_eq!(
                route(c.clone()),
                Routed::CrossSlot {
                    cmd: c.clone(),
                    slots
                },
                "{c:?}"
            );
        }
    }

    #[test]
    fn keyless_scopes() {
        let cases = [
            (cmd!["FLUSHALL"], Scope::AllNodes),
            (cmd!["FLUSHDB", "ASYNC"], Scope::AllNodes),
            (cmd!["FUNCTION", "LOAD", "REPLACE", "code"], Scope::AllNodes),
            (cmd!["FUNCTION", "DELETE", "lib"], Scope::AllNodes),
            (cmd!["FUNCTION", "FLUSH"], Scope::AllNodes),
            (cmd!["SCRIPT", "LOAD", "return 1"], Scope::AllNodes),
            (cmd!["SCRIPT", "FLUSH"], Scope::AllNodes),
            (cmd!["PUBLISH", "ch", "m"], Scope::AnyNode),
            (cmd!["EVAL", "return 1", "0"], Scope::AnyNode),
            (cmd!["FCALL", "f", "0", "x"], Scope::AnyNode),
            (cmd!["SWAPDB", "0", "1"], Scope::Unsupported),
            (cmd!["SELECT", "1"], Scope::Unsupported),
            (cmd!["MOVE", A, "1"], Scope::Unsupported),
            (cmd!["COPY", A, A2, "DB", "2"], Scope::Unsupported),
            (cmd!["MULTI"], Scope::Control),
            (cmd!["EXEC"], Scope::Control),
            (cmd!["PING"], Scope::Control),
            (cmd!["REPLCONF", "GETACK", "*"], Scope::Control),
            (cmd!["EVAL", "s", "5", A], Scope::Malformed),
            (cmd!["DEL"], Scope::Malformed),
            (cmd!["MSET", A], Scope::Malformed),
        ];
        for (c, scope) in cases {
            assert_eq!(
                route(c.clone()),
                Routed::NoKey {
                    cmd: c.clone(),
                    scope
                },
                "{c:?}"
            );
        }
    }

    #[test]
    fn unknown_category_is_visible_to_the_caller() {
        let c = cmd!["BF.ADD", B, "x"];
        let spec = command_keys(&c);
        assert_eq!(spec.category, Category::Unknown);
        assert_eq!(
            route_with(c.clone(), spec),
            Routed::Single { slot: sb(), cmd: c }
        );
    }

    #[test]
    fn transaction_in_one_slot_stays_whole() {
        let cmds = vec![
            cmd!["SET", A, "1"],
            cmd!["PUBLISH", "ch", "m"],
            cmd!["DEL", A2, A],
            cmd!["RENAME", A, A2],
        ];
        assert_eq!(
            route_transaction(cmds.clone()),
            TxRouted::SingleSlot { slot: sa(), cmds }
        );
    }

    #[test]
    fn transaction_across_slots_is_split_in_order() {
        let cmds = vec![
            cmd!["SET", A, "1"],
            cmd!["INCR", B],
            cmd!["DEL", A, C],
            cmd!["RENAME", A, B],
        ];
        assert_eq!(
            route_transaction(cmds),
            TxRouted::Split(vec![
                Routed::Single {
                    slot: sa(),
                    cmd: cmd!["SET", A, "1"]
                },
                Routed::Single {
                    slot: sb(),
                    cmd: cmd!["INCR", B]
                },
                Routed::PerSlot(vec![(sa(), cmd!["DEL", A]), (sc(), cmd!["DEL", C])]),
                Routed::CrossSlot {
                    cmd: cmd!["RENAME", A, B],
                    slots: vec![sa(), sb()]
                },
            ])
        );
        // One slot, but a command that needs every node or a database: split too.
        let r = route_transaction(vec![cmd!["SET", A, "1"], cmd!["FLUSHALL"]]);
        assert!(matches!(r, TxRouted::Split(ref v) if v.len() == 2));
        let r = route_transaction(vec![cmd!["SET", A, "1"], cmd!["SWAPDB", "0", "1"]]);
        assert!(matches!(r, TxRouted::Split(ref v) if v.len() == 2));
        // A one-command transaction whose command splits is not one slot.
        let r = route_transaction(vec![cmd!["DEL", A, B]]);
        assert!(matches!(r, TxRouted::Split(ref v) if v.len() == 1));
        // No keyed command at all.
        assert_eq!(
            route_transaction(vec![cmd!["PUBLISH", "c", "m"]]),
            TxRouted::Split(vec![Routed::NoKey {
                cmd: cmd!["PUBLISH", "c", "m"],
                scope: Scope::AnyNode
            }])
        );
        assert_eq!(route_transaction(vec![]), TxRouted::Split(vec![]));
    }
}
