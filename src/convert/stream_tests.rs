//! Unit tests of the exact stream rebuild: placeholders for pending IDs no longer in the stream,
//! consumers without pending entries, the hold limit.

use super::*;

fn entry(ms: u64, seq: u64) -> StreamEntry {
    StreamEntry {
        id: sid(ms, seq),
        fields: vec![(b("f"), b(&format!("{ms}")))],
    }
}

/// Stream with live entries 3-0 and 5-0; 1-0 and 2-0 trimmed, 4-0 and 6-0 deleted, all four still
/// pending in g1; g2 has an idle consumer only.
fn trimmed_stream() -> Vec<Item> {
    key(
        hdr("s", ValueKind::Stream, None),
        vec![
            Chunk::StreamEntries(vec![entry(3, 0), entry(5, 0)]),
            Chunk::StreamMeta(StreamMeta {
                length: 2,
                last_id: sid(6, 0),
                first_id: Some(sid(3, 0)),
                max_deleted_id: Some(sid(6, 0)),
                entries_added: Some(6),
            }),
            Chunk::StreamGroup(StreamGroup {
                name: b("g1"),
                last_delivered_id: sid(6, 0),
                entries_read: Some(6),
                pending: vec![
                    pe(1, 0, "alice", 1000, 2),
                    pe(2, 0, "alice", 1000, 2),
                    pe(3, 0, "bob", 1500, 1),
                    pe(4, 0, "bob", 1500, 1),
                    pe(6, 0, "alice", 1000, 2),
                ],
                consumers: vec![consumer("alice"), consumer("bob"), consumer("idle")],
            }),
            Chunk::StreamGroup(StreamGroup {
                name: b("g2"),
                last_delivered_id: sid(0, 0),
                entries_read: None,
                pending: vec![],
                consumers: vec![consumer("zed")],
            }),
        ],
    )
}

#[test]
fn pending_ids_of_deleted_entries_become_placeholders_on_70() {
    let x = run(r(7, 0), trimmed_stream());
    assert!(x.errors.is_empty(), "{:?}", x.errors);
    assert_eq!(
        x.cmds,
        [
            "DEL s",
            "XADD s 1-0 __shardsync_deleted__ 1",
            "XADD s 2-0 __shardsync_deleted__ 1",
            "XADD s 3-0 f 3",
            "XADD s 4-0 __shardsync_deleted__ 1",
            "XADD s 5-0 f 5",
            "XADD s 6-0 __shardsync_deleted__ 1",
            "XSETID s 6-0 ENTRIESADDED 6 MAXDELETEDID 6-0",
            "XGROUP CREATE s g1 6-0 ENTRIESREAD 6",
            "XGROUP CREATECONSUMER s g1 idle",
            "XCLAIM s g1 alice 0 1-0 2-0 TIME 1000 RETRYCOUNT 2 FORCE JUSTID",
            "XCLAIM s g1 bob 0 3-0 4-0 TIME 1500 RETRYCOUNT 1 FORCE JUSTID",
            "XCLAIM s g1 alice 0 6-0 TIME 1000 RETRYCOUNT 2 FORCE JUSTID",
            "XGROUP CREATE s g2 0-0",
            "XGROUP CREATECONSUMER s g2 zed",
            "XDEL s 1-0 2-0 4-0 6-0",
            "XSETID s 6-0 ENTRIESADDED 6 MAXDELETEDID 6-0",
        ]
    );
}

#[test]
fn pending_ids_of_deleted_entries_on_60() {
    let x = run(r(6, 0), trimmed_stream());
    assert!(x.errors.is_empty(), "{:?}", x.errors);
    assert_eq!(
        x.cmds,
        [
            "DEL s",
            "XADD s 1-0 __shardsync_deleted__ 1",
            "XADD s 2-0 __shardsync_deleted__ 1",
            "XADD s 3-0 f 3",
            "XADD s 4-0 __shardsync_deleted__ 1",
            "XADD s 5-0 f 5",
            "XADD s 6-0 __shardsync_deleted__ 1",
            "XSETID s 6-0",
            "XGROUP CREATE s g1 6-0",
            "XREADGROUP GROUP g1 idle COUNT 1 STREAMS s 0",
            "XCLAIM s g1 alice 0 1-0 2-0 TIME 1000 RETRYCOUNT 2 FORCE JUSTID",
            "XCLAIM s g1 bob 0 3-0 4-0 TIME 1500 RETRYCOUNT 1 FORCE JUSTID",
            "XCLAIM s g1 alice 0 6-0 TIME 1000 RETRYCOUNT 2 FORCE JUSTID",
            "XGROUP CREATE s g2 0-0",
            "XREADGROUP GROUP g2 zed COUNT 1 STREAMS s 0",
            "XDEL s 1-0 2-0 4-0 6-0",
        ]
    );
}

#[test]
fn empty_stream_with_only_deleted_pending_entries() {
    let x = run(
        r(7, 0),
        key(
            hdr("e", ValueKind::Stream, None),
            vec![
                Chunk::StreamMeta(StreamMeta {
                    length: 0,
                    last_id: sid(9, 0),
                    first_id: Some(sid(0, 0)),
                    max_deleted_id: Some(sid(9, 0)),
                    entries_added: Some(3),
                }),
                Chunk::StreamGroup(StreamGroup {
                    name: b("g"),
                    last_delivered_id: sid(9, 0),
                    entries_read: Some(3),
                    // 12-0 is above the stream's top: reported, not recreated.
                    pending: vec![pe(9, 0, "c", 5, 1), pe(12, 0, "c", 5, 1)],
                    consumers: vec![consumer("c")],
                }),
            ],
        ),
    );
    assert_eq!(
        x.cmds,
        [
            "DEL e",
            "XADD e 9-0 __shardsync_deleted__ 1",
            "XSETID e 9-0 ENTRIESADDED 3 MAXDELETEDID 9-0",
            "XGROUP CREATE e g 9-0 ENTRIESREAD 3",
            "XCLAIM e g c 0 9-0 12-0 TIME 5 RETRYCOUNT 1 FORCE JUSTID",
            "XDEL e 9-0",
            "XSETID e 9-0 ENTRIESADDED 3 MAXDELETEDID 9-0",
        ]
    );
    assert!(
        matches!(&x.errors[..], [ConvertError::Unsupported { reason, .. }] if reason.contains("above the stream's last ID")),
        "{:?}",
        x.errors
    );
}

#[test]
fn stream_above_the_hold_limit_is_staged_then_merged_with_placeholders() {
    // Entries big enough to overflow the hold limit at once.
    let big = Bytes::from(vec![b'x'; stream::HOLD_MAX_BYTES]);
    let items = key(
        hdr("s", ValueKind::Stream, None),
        vec![
            Chunk::StreamEntries(vec![
                StreamEntry {
                    id: sid(3, 0),
                    fields: vec![(b("f"), big)],
                },
                entry(5, 0),
            ]),
            Chunk::StreamMeta(StreamMeta {
                length: 2,
                last_id: sid(7, 0),
                first_id: Some(sid(3, 0)),
                max_deleted_id: Some(sid(7, 0)),
                entries_added: Some(5),
            }),
            Chunk::StreamGroup(StreamGroup {
                name: b("g"),
                last_delivered_id: sid(7, 0),
                entries_read: Some(5),
                pending: vec![
                    pe(1, 0, "c", 5, 1),
                    pe(5, 0, "c", 5, 1),
                    pe(7, 0, "c", 5, 1),
                ],
                consumers: vec![consumer("c")],
            }),
        ],
    );
    let x = run(r(7, 0), items);
    assert!(x.errors.is_empty(), "{:?}", x.errors);
    let cmds: Vec<String> = x
        .cmds
        .iter()
        .map(|c| {
            if c.len() > 120 {
                c[..20].to_string()
            } else {
                c.clone()
            }
        })
        .collect();
    let t = "{s}__shardsync_stream_rebuild__s";
    assert_eq!(cmds[0], "DEL s");
    assert_eq!(cmds[1], format!("DEL {t}"));
    assert!(x.cmds[2].starts_with(&format!("XADD {t} 3-0 f xxx")));
    assert_eq!(cmds[3], format!("XADD {t} 5-0 f 5"));
    // The merge step: the staged entries into `s`, with placeholders for the pending IDs 1-0
    // (deleted) and 5-0 (present, so no placeholder).
    assert!(cmds[4].starts_with("EVAL "), "{}", cmds[4]);
    assert!(
        x.cmds[4].ends_with(&format!(" 2 s {t} 512 1-0 5-0")),
        "{}",
        x.cmds[4]
    );
    assert_eq!(cmds[5], format!("DEL {t}"));
    assert_eq!(cmds[6], "XADD s 7-0 __shardsync_deleted__ 1");
    assert_eq!(cmds[7], "XSETID s 7-0 ENTRIESADDED 5 MAXDELETEDID 7-0");
    assert_eq!(cmds[8], "XGROUP CREATE s g 7-0 ENTRIESREAD 5");
    // Every pending ID now exists: claimed normally.
    assert_eq!(
        cmds[9],
        "XCLAIM s g c 0 1-0 5-0 7-0 TIME 5 RETRYCOUNT 1 FORCE JUSTID"
    );
    assert_eq!(cmds[10], "XDEL s 7-0");
    // Placeholders among the staged IDs removed by a checking script.
    assert!(x.cmds[11].ends_with(" 1 s 1-0 5-0"), "{}", x.cmds[11]);
    assert_eq!(cmds[12], "XSETID s 7-0 ENTRIESADDED 5 MAXDELETEDID 7-0");
    assert_eq!(cmds.len(), 13);
}
