//! Exactly-once on a cluster target: a slot's transactions commit in stream order while the
//! slot moves between masters (a resharding). Each slot group's transaction writes the slot's
//! progress key ([`crate::sink::exact_slots`]), so a group that commits after a later group of
//! its slot steps that key back, and a crash then replays the later group (and, on a shared
//! key, applies the two out of order). Two rules keep the order:
//!
//! - **Touches** ([`OpenSlots`]): a group sent while earlier groups of its slot are unanswered on
//!   the connection reads their keys too (`EXISTS k…` inside its `MULTI`). A group of a
//!   migrating slot is refused (`ASK`/`TRYAGAIN`/`MOVED`) because one of its keys is missing on
//!   the node, and nothing recreates that key there during the migration (the node sends such
//!   writes away), so every later group that reads the key is refused as well: none commits
//!   ahead of it. The touched keys are capped ([`TOUCH_MAX_KEYS`], [`TOUCH_MAX_BYTES`]); past the
//!   cap the next group of the slot waits until the slot's groups on the connection are
//!   answered. Cost when no slot moves: one `EXISTS` in the transactions that have an earlier
//!   group of their slot in flight, answered from memory.
//! - **Detours** ([`Detours`]): the first refused group of a slot (the *head*) goes to the node
//!   the cluster named, carrying a [`DetourToken`]; every later group of that slot that was
//!   refused, and every new one this writer takes for it, waits here in order. When the head is
//!   acknowledged (or given up: counted as lost), its token comes back and the next group is
//!   sent (by this writer: the cluster redirects it again if the slot is still away), as the
//!   new head. Without it a group refused with `TRYAGAIN` (re-sent after a pause) was
//!   overtaken by a later one answered `ASK` (sent at once).
//!
//! Bounds: the groups waiting here count in the writer's in-flight memory
//! ([`super::MAX_INFLIGHT_BYTES`]), so a slot that stays away stops the writer taking new
//! batches; one token message per head (at most one head per slot).
//! Not covered: a failover of the writer's node during a migration hands the waiting groups
//! to the new owners at once.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::InFlight;
use crate::cmd::DbCmd;

/// At most this many distinct keys are touched by one transaction…
pub(super) const TOUCH_MAX_KEYS: usize = 64;
/// …holding at most this many bytes.
pub(super) const TOUCH_MAX_BYTES: usize = 16 << 10;

/// Carried by the head group of a slot on a detour: dropped when the group is acknowledged
/// (or lost), it tells the writer that started the detour to send the slot's next group.
pub struct DetourToken {
    slot: u16,
    back: mpsc::UnboundedSender<u16>,
}

impl std::fmt::Debug for DetourToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DetourToken(slot {})", self.slot)
    }
}

impl Drop for DetourToken {
    fn drop(&mut self) {
        // The writer that waits for it may be gone (then there is nothing left to release).
        let _ = self.back.send(self.slot);
    }
}

/// The slots of this writer with a head group on a detour, and the groups waiting behind it.
pub(super) struct Detours {
    back: mpsc::UnboundedSender<u16>,
    waiting: HashMap<u16, VecDeque<InFlight>>,
    /// Slots whose head came back while earlier groups of theirs were still unanswered on the
    /// connection: released when those are answered.
    deferred: HashSet<u16>,
    /// Memory of the waiting groups (counted with the writer's in-flight memory).
    pub(super) mem: usize,
}

impl Detours {
    /// The detours and the receiver of the returned tokens.
    pub(super) fn new() -> (Detours, mpsc::UnboundedReceiver<u16>) {
        let (back, rx) = mpsc::unbounded_channel();
        (
            Detours {
                back,
                waiting: HashMap::new(),
                deferred: HashSet::new(),
                mem: 0,
            },
            rx,
        )
    }

    /// True when `slot` has a head group out: its later groups must wait.
    pub(super) fn busy(&self, slot: u16) -> bool {
        self.waiting.contains_key(&slot)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Starts a detour of `slot`: the token for its head group.
    pub(super) fn start(&mut self, slot: u16) -> DetourToken {
        self.waiting.entry(slot).or_default();
        self.token(slot)
    }

    fn token(&self, slot: u16) -> DetourToken {
        DetourToken {
            slot,
            back: self.back.clone(),
        }
    }

    /// Queues `f` behind the head of `slot` (which must be busy), in stream order: a group
    /// pipelined before the detour started and refused only now goes before the new groups the
    /// writer took meanwhile.
    pub(super) fn wait(&mut self, slot: u16, f: InFlight) {
        self.mem += f.mem;
        let q = self.waiting.entry(slot).or_default();
        let at = position(&f).map_or(q.len(), |p| {
            q.iter()
                .rposition(|g| position(g).is_none_or(|o| o <= p))
                .map_or(0, |i| i + 1)
        });
        q.insert(at, f);
    }

    /// The head of `slot` came back, but its release waits (see [`Detours::deferred`]).
    pub(super) fn defer(&mut self, slot: u16) {
        self.deferred.insert(slot);
    }

    /// True when some slot's release waits.
    pub(super) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// True (once) when `slot`'s release was deferred.
    pub(super) fn undefer(&mut self, slot: u16) -> bool {
        self.deferred.remove(&slot)
    }

    /// The slots whose release waits.
    pub(super) fn deferred(&self) -> Vec<u16> {
        self.deferred.iter().copied().collect()
    }

    /// The head of `slot` came back: its next group, made the new head (with a token), or
    /// `None` when none waits (the detour is over).
    pub(super) fn release(&mut self, slot: u16) -> Option<InFlight> {
        let queue = self.waiting.get_mut(&slot)?;
        let Some(mut next) = queue.pop_front() else {
            self.waiting.remove(&slot);
            return None;
        };
        self.mem = self.mem.saturating_sub(next.mem);
        next.batch.detour = Some(self.token(slot));
        Some(next)
    }

    /// Every waiting group, slot by slot in order (the writer is going away).
    pub(super) fn drain(&mut self) -> Vec<InFlight> {
        self.mem = 0;
        self.deferred.clear();
        self.waiting.drain().flat_map(|(_, q)| q).collect()
    }
}

/// Where a group ends in the source stream.
fn position(f: &InFlight) -> Option<crate::sink::exact::Pos> {
    f.txn
        .as_ref()
        .and_then(|t| t.position())
        .or_else(|| f.batch.ticket.offset.map(|o| (o, 0)))
}

/// Per slot, the transactions sent on the current connection and not yet answered, and the
/// keys they touch (see the module doc).
#[derive(Default)]
pub(super) struct OpenSlots {
    /// Indexed by slot (allocated at the first transaction).
    slots: Vec<OpenSlot>,
}

/// The unanswered transactions of one slot on the connection.
#[derive(Default)]
struct OpenSlot {
    /// The slot's keys of each, oldest first (they are answered in this order).
    groups: VecDeque<Vec<Bytes>>,
    /// How many keys and bytes `groups` hold, repeats included (the cap is checked on the
    /// distinct ones only when these pass it).
    keys: usize,
    bytes: usize,
}

impl OpenSlot {
    /// The distinct keys of the unanswered transactions; `None` past the cap.
    fn union(&self) -> Option<Vec<&Bytes>> {
        let mut keys: Vec<&Bytes> = Vec::new();
        let mut bytes = 0;
        for k in self.groups.iter().flatten() {
            if !keys.contains(&k) {
                bytes += k.len();
                keys.push(k);
                if keys.len() > TOUCH_MAX_KEYS || bytes > TOUCH_MAX_BYTES {
                    return None;
                }
            }
        }
        Some(keys)
    }
}

impl OpenSlots {
    /// A new connection: nothing is unanswered.
    pub(super) fn clear(&mut self) {
        self.slots.iter_mut().for_each(|o| *o = OpenSlot::default());
    }

    /// The keys a transaction of `slot` sent now must read (none when no earlier one is
    /// unanswered).
    #[cfg(test)]
    fn touch(&self, slot: u16) -> Vec<Bytes> {
        self.get(slot)
            .and_then(OpenSlot::union)
            .map(|k| k.into_iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Appends the read a transaction of `slot` sent now must make (`EXISTS` of the keys of the
    /// slot's unanswered transactions) to `out`; false when there is none.
    pub(super) fn encode_touch(&self, slot: u16, out: &mut bytes::BytesMut) -> bool {
        let Some(o) = self.get(slot) else {
            return false;
        };
        let keys: Vec<&Bytes> = match o.groups.len() {
            // One transaction: its keys are distinct already.
            1 => o.groups.iter().flatten().collect(),
            _ => o.union().unwrap_or_default(),
        };
        if keys.is_empty() {
            return false;
        }
        let parts = std::iter::once(&b"EXISTS"[..]).chain(keys.iter().map(|k| &k[..]));
        crate::cmd::encode_parts(keys.len() + 1, parts, out);
        true
    }

    /// True when a transaction of `slot` is unanswered on the connection.
    pub(super) fn has(&self, slot: u16) -> bool {
        self.get(slot).is_some()
    }

    /// True when the slot's unanswered transactions touch too many keys to read: the next one
    /// waits until they are answered.
    pub(super) fn must_wait(&self, slot: u16) -> bool {
        self.get(slot).is_some_and(|o| {
            (o.keys > TOUCH_MAX_KEYS || o.bytes > TOUCH_MAX_BYTES) && o.union().is_none()
        })
    }

    /// A transaction of `slot` with these commands was sent.
    pub(super) fn opened(&mut self, slot: u16, cmds: &[DbCmd]) {
        let mut keys: Vec<Bytes> = Vec::new();
        'cmds: for dc in cmds {
            let spec = crate::router::command_keys(&dc.cmd);
            for i in spec.keys.iter() {
                // Only keys of the slot (an `EXISTS` across slots would be refused).
                let Some(k) = dc
                    .cmd
                    .args
                    .get(i)
                    .filter(|k| crate::router::key_slot(k) == slot)
                else {
                    continue;
                };
                if !keys.contains(k) {
                    keys.push(k.clone());
                    if keys.len() > TOUCH_MAX_KEYS {
                        break 'cmds; // the next one waits anyway
                    }
                }
            }
        }
        if self.slots.is_empty() {
            self.slots
                .resize_with(crate::router::SLOTS, OpenSlot::default);
        }
        let Some(o) = self.slots.get_mut(slot as usize) else {
            return;
        };
        o.keys += keys.len();
        o.bytes += keys.iter().map(Bytes::len).sum::<usize>();
        o.groups.push_back(keys);
    }

    /// The oldest unanswered transaction of `slot` was answered (committed or refused).
    pub(super) fn answered(&mut self, slot: u16) {
        if let Some(o) = self.slots.get_mut(slot as usize)
            && let Some(g) = o.groups.pop_front()
        {
            o.keys = o.keys.saturating_sub(g.len());
            o.bytes = o.bytes.saturating_sub(g.iter().map(Bytes::len).sum());
        }
    }

    /// The slot's unanswered transactions, when it has any.
    fn get(&self, slot: u16) -> Option<&OpenSlot> {
        self.slots
            .get(slot as usize)
            .filter(|o| !o.groups.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmds(keys: &[&str]) -> Vec<DbCmd> {
        keys.iter()
            .map(|k| DbCmd {
                db: 0,
                cmd: crate::cmd!["RPUSH", k.to_string(), "x"],
            })
            .collect()
    }

    #[test]
    fn touches_are_the_keys_of_the_unanswered_transactions_of_the_slot() {
        let mut o = OpenSlots::default();
        assert!(o.touch(7).is_empty());
        let a = crate::router::key_slot(b"{a}");
        o.opened(a, &cmds(&["{a}1", "{a}2", "{a}1", "{b}other-slot"]));
        o.opened(a, &cmds(&["{a}3"]));
        assert_eq!(o.touch(a), vec!["{a}1", "{a}2", "{a}3"]);
        assert!(!o.must_wait(a));
        assert!(o.touch(a.wrapping_add(1)).is_empty());
        let mut out = bytes::BytesMut::new();
        assert!(o.encode_touch(a, &mut out));
        assert_eq!(
            &out[..],
            b"*4\r\n$6\r\nEXISTS\r\n$4\r\n{a}1\r\n$4\r\n{a}2\r\n$4\r\n{a}3\r\n"
        );
        o.answered(a);
        assert_eq!(
            o.touch(a),
            vec!["{a}3"],
            "the answered one's keys are not read any more"
        );
        o.answered(a);
        assert!(o.touch(a).is_empty());
        assert!(!o.encode_touch(a, &mut out));
    }

    #[test]
    fn past_the_cap_the_next_transaction_waits() {
        let mut o = OpenSlots::default();
        let a = crate::router::key_slot(b"{a}");
        let many: Vec<String> = (0..=TOUCH_MAX_KEYS).map(|i| format!("{{a}}{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        o.opened(a, &cmds(&many));
        assert!(o.must_wait(a));
        o.answered(a);
        assert!(!o.must_wait(a) && o.touch(a).is_empty());
    }

    fn group(shard: &std::sync::Arc<crate::observe::progress::ShardState>, key: &str) -> InFlight {
        group_at(shard, key, 1)
    }

    fn group_at(
        shard: &std::sync::Arc<crate::observe::progress::ShardState>,
        key: &str,
        offset: u64,
    ) -> InFlight {
        InFlight::new(crate::sink::Batch {
            shard: shard.clone(),
            ticket: shard.issue(0, Some(offset), false, 1),
            cmds: cmds(&[key]),
            asking: false,
            wire: None,
            detour: None,
        })
    }

    #[test]
    fn waiting_groups_go_one_at_a_time_in_order_each_as_the_new_head() {
        let shard = std::sync::Arc::new(crate::observe::progress::ShardState::new("s".into()));
        let (mut d, mut rx) = Detours::new();
        let head = d.start(9);
        d.wait(9, group(&shard, "{a}1"));
        d.wait(9, group(&shard, "{a}2"));
        assert!(d.mem > 0);
        drop(head);
        assert_eq!(rx.try_recv().ok(), Some(9));
        let first = d.release(9).expect("the first waiting group");
        assert_eq!(first.batch.cmds[0].cmd.args[1], "{a}1");
        assert!(d.busy(9), "the next one still waits");
        assert!(
            rx.try_recv().is_err(),
            "nothing more is released before it is acknowledged"
        );
        drop(first);
        assert_eq!(rx.try_recv().ok(), Some(9));
        let second = d.release(9).expect("the second waiting group");
        assert_eq!(second.batch.cmds[0].cmd.args[1], "{a}2");
        drop(second);
        assert_eq!(rx.try_recv().ok(), Some(9));
        assert!(d.release(9).is_none());
        assert!(d.is_empty() && d.mem == 0);
    }

    #[test]
    fn a_group_refused_late_goes_before_the_newer_groups_taken_meanwhile() {
        let shard = std::sync::Arc::new(crate::observe::progress::ShardState::new("s".into()));
        let (mut d, _rx) = Detours::new();
        let _head = d.start(2);
        // Taken while the head was away (newer)…
        d.wait(2, group_at(&shard, "{a}new1", 300));
        d.wait(2, group_at(&shard, "{a}new2", 400));
        // …then refusals of groups pipelined before the head's refusal came back (older).
        d.wait(2, group_at(&shard, "{a}old1", 200));
        d.wait(2, group_at(&shard, "{a}old2", 250));
        d.wait(2, group_at(&shard, "{a}same", 400));
        let order: Vec<bytes::Bytes> = std::iter::from_fn(|| {
            let f = d.release(2)?;
            let k = f.batch.cmds[0].cmd.args[1].clone();
            std::mem::forget(f.batch.detour); // no token round trip in this test
            Some(k)
        })
        .take(5)
        .collect();
        assert_eq!(
            order,
            vec!["{a}old1", "{a}old2", "{a}new1", "{a}new2", "{a}same"]
        );
    }

    #[test]
    fn a_detour_with_nothing_waiting_ends_when_its_head_comes_back() {
        let (mut d, mut rx) = Detours::new();
        assert!(!d.busy(5));
        let head = d.start(5);
        assert!(d.busy(5));
        drop(head);
        assert_eq!(rx.try_recv().ok(), Some(5));
        assert!(d.release(5).is_none(), "nothing waited: the detour ends");
        assert!(d.is_empty());
    }
}
