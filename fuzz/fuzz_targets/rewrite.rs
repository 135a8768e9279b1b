//! The live-command rewriter on arbitrary argv for every target version: never panics, and what
//! it produces is always a well-formed command (non-empty argv that encodes and decodes back).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use shardsync::cmd::Cmd;
use shardsync::convert::rewrite_for_target;
use shardsync::net::server_info::ServerInfo;

const TARGETS: &[&str] = &[
    "redis_version:6.0.9\r\n",
    "redis_version:6.2.5\r\n",
    "redis_version:7.0.15\r\n",
    "redis_version:7.2.4\r\n",
    "redis_version:7.4.0\r\n",
    "redis_version:7.2.4\r\nvalkey_version:9.1.2\r\nserver_name:valkey\r\n",
];

const NAMES: &[&[u8]] = &[
    b"SET", b"LPOP", b"RPOP", b"LMOVE", b"BLMOVE", b"COPY", b"XADD", b"XTRIM", b"XGROUP",
    b"XSETID", b"EXPIRE", b"PEXPIREAT", b"SPUBLISH", b"RESTORE", b"GETEX", b"XAUTOCLAIM",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // argv: the first byte picks a known command name (or none), the rest is split on 0x00.
    let mut args: Vec<Bytes> = rest.split(|&b| b == 0).map(Bytes::copy_from_slice).collect();
    if let Some(name) = NAMES.get(usize::from(sel >> 3)) {
        args.insert(0, Bytes::from_static(name));
    }
    if args.is_empty() || args.len() > 64 {
        return;
    }
    let info = ServerInfo::parse(TARGETS[usize::from(sel & 7) % TARGETS.len()]).expect("info");
    let mut out = Vec::new();
    rewrite_for_target(Cmd { args }, &info, 1_700_000_000_000, &mut out);
    for c in out {
        assert!(!c.args.is_empty(), "empty command");
        let mut wire = BytesMut::new();
        c.encode(&mut wire);
        let (frame, used) = shardsync::resp::decode(&mut wire)
            .expect("well-formed")
            .expect("complete");
        assert_eq!(used, c.encoded_len());
        assert_eq!(frame.into_args().expect("argv"), c.args);
    }
});
