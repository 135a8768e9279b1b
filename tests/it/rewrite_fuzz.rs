//! The live-command rewriter on arbitrary argv for every target version: it never panics, and
//! every command it produces is well formed (a non-empty argv that encodes to RESP and decodes
//! back to itself).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use shardsync::cmd::Cmd;
use shardsync::convert::rewrite_for_target;
use shardsync::net::server_info::ServerInfo;
use shardsync::resp::decode;

use crate::rdb_fuzz::fuzz_cases;

const TARGETS: &[&str] = &[
    "redis_version:6.0.9\r\n",
    "redis_version:6.2.5\r\n",
    "redis_version:7.0.15\r\n",
    "redis_version:7.2.4\r\n",
    "redis_version:7.4.0\r\n",
    "redis_version:7.2.4\r\nvalkey_version:9.1.2\r\nserver_name:valkey\r\n",
];

fn word() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::sample::select(vec![
            "SET", "set", "LPOP", "RPOP", "LMOVE", "BLMOVE", "COPY", "XADD", "XTRIM", "XGROUP",
            "XSETID", "EXPIRE", "PEXPIREAT", "SPUBLISH", "RESTORE", "PXAT", "EXAT", "GET", "KEEPTTL",
            "MINID", "MAXLEN", "=", "~", "LIMIT", "NOMKSTREAM", "CREATECONSUMER", "CREATE", "SETID",
            "ENTRIESREAD", "ENTRIESADDED", "MAXDELETEDID", "LEFT", "RIGHT", "REPLACE", "ABSTTL",
            "IDLETIME", "FREQ", "DB", "NX", "XX", "GT", "LT", "*", "$", "0", "1", "-1", "5-3",
            "99999999999999999999", "1.5",
        ]).prop_map(|s: &str| s.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(3000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rewriter_never_panics_and_output_is_well_formed(
        args in proptest::collection::vec(word(), 1..12),
        target in 0usize..TARGETS.len(),
        now in prop_oneof![Just(0i64), Just(1_700_000_000_000i64), any::<i64>()],
    ) {
        let info = ServerInfo::parse(TARGETS[target]).expect("info");
        let cmd = Cmd { args: args.into_iter().map(Bytes::from).collect() };
        let mut out = Vec::new();
        rewrite_for_target(cmd, &info, now, &mut out);
        for c in out {
            prop_assert!(!c.args.is_empty());
            let mut wire = BytesMut::new();
            c.encode(&mut wire);
            prop_assert_eq!(wire.len(), c.encoded_len());
            let (frame, _) = decode(&mut wire).expect("well-formed").expect("complete");
            prop_assert_eq!(frame.into_args().expect("argv"), c.args);
        }
    }
}
