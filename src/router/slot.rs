//! Redis Cluster key → slot hashing: `CRC16-XMODEM(hash tag or whole key) % 16384`, exactly as
//! Redis's `keyHashSlot` (`src/cluster.c`), and a helper that finds hash tags landing in a chosen
//! set of slots (one heartbeat key per source master: `shardsync:heartbeat:{tag}`).

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The part of `key` that is hashed: the content of the first `{…}` when the first `{` is followed
/// by a `}` with at least one byte between them, otherwise the whole key.
///
/// `a{b}c{d}` → `b`; `{{a}}` → `{a`; `{}x` → whole key; `x}{` → whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The cluster slot of `key` (0..16384).
#[inline]
pub fn key_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key)) % SLOTS as u16
}

/// Characters used for generated tags: no `{`/`}`, safe in any key name.
const TAG_ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Longest tag [`hashtag_in`] tries. Tags of up to 3 characters reach all but a few dozen slots;
/// 4 reach every slot (checked by a unit test).
const MAX_TAG_LEN: usize = 4;

/// The first short tag `s` (shortest first, then in `0-9a-z` order) whose key `{s}` hashes to a slot
/// for which `slots` returns true — e.g. `hashtag_in(|s| table.node_index_for(s) == Some(i))`
/// gives master `i` its own heartbeat key `shardsync:heartbeat:{s}`. Deterministic: the same slot
/// set always gets the same tag. `None` only when `slots` is false for every slot (a master
/// without slots).
pub fn hashtag_in(slots: impl Fn(u16) -> bool) -> Option<String> {
    let base = TAG_ALPHABET.len();
    let mut buf = [0u8; MAX_TAG_LEN];
    let mut count = 1;
    for len in 1..=MAX_TAG_LEN {
        count *= base;
        for n in 0..count {
            let mut rest = n;
            for b in buf[..len].iter_mut().rev() {
                *b = TAG_ALPHABET[rest % base];
                rest /= base;
            }
            if slots(key_slot(&buf[..len])) {
                return Some(String::from_utf8_lossy(&buf[..len]).into_owned());
            }
        }
    }
    None
}

/// [`hashtag_in`] for the inclusive slot range `first..=last`.
pub fn tag_for_slot_range(first: u16, last: u16) -> Option<String> {
    hashtag_in(|s| (first..=last).contains(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_reference_values() {
        // The CRC16-XMODEM check value, and examples from the Redis Cluster documentation.
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b"foo{hash_tag}"), 2515);
        assert_eq!(key_slot(b"foo"), 12182);
    }

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"a{b}c{d}"), b"b");
        assert_eq!(hash_tag(b"{{a}}"), b"{a");
        assert_eq!(hash_tag(b"{}"), b"{}");
        assert_eq!(hash_tag(b"{}{a}"), b"{}{a}");
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(hash_tag(b"}{"), b"}{");
        assert_eq!(hash_tag(b"x{y"), b"x{y");
        assert_eq!(hash_tag(b""), b"");
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hashtag_in_finds_requested_slots() {
        let t = hashtag_in(|s| s == 0).unwrap();
        assert_eq!(
            key_slot(format!("shardsync:heartbeat:{{{t}}}").as_bytes()),
            0
        );
        for (a, b) in [(0u16, 5460u16), (5461, 10922), (10923, 16383), (7000, 7000)] {
            let t = tag_for_slot_range(a, b).unwrap();
            let s = key_slot(format!("shardsync:heartbeat:{{{t}}}").as_bytes());
            assert!((a..=b).contains(&s), "{t} → {s} not in {a}-{b}");
        }
        // Deterministic and short for a third of the slot space.
        assert_eq!(tag_for_slot_range(0, 5460), tag_for_slot_range(0, 5460));
        assert!(tag_for_slot_range(0, 5460).unwrap().len() == 1);
        assert_eq!(hashtag_in(|_| false), None);
    }

    #[test]
    fn tags_reach_every_slot() {
        // Tags of up to 3 characters miss a few slots; 4 reach all of them.
        let mut seen = vec![false; SLOTS];
        let mut count3 = 0;
        let mut need4 = 0;
        let mut count = 0;
        let a = TAG_ALPHABET;
        for len in 1..=MAX_TAG_LEN {
            let total = a.len().pow(len as u32);
            for n in 0..total {
                let mut tag = [0u8; MAX_TAG_LEN];
                let mut rest = n;
                for b in tag[..len].iter_mut().rev() {
                    *b = a[rest % a.len()];
                    rest /= a.len();
                }
                let slot = key_slot(&tag[..len]) as usize;
                if !seen[slot] {
                    seen[slot] = true;
                    count += 1;
                }
            }
            if len == 3 {
                count3 = count;
                need4 = seen.iter().position(|&x| !x).unwrap() as u16;
            }
        }
        assert!(count3 > 16000 && count3 < SLOTS, "{count3}");
        assert_eq!(count, SLOTS);
        // The search itself on single slots, including ones that need 4 characters.
        for slot in [1u16, 99, 4242, 12345, 16383, need4] {
            let t = hashtag_in(|s| s == slot).unwrap();
            assert_eq!(key_slot(format!("{{{t}}}").as_bytes()), slot);
        }
        assert_eq!(hashtag_in(|s| s == need4).unwrap().len(), 4);
    }
}
