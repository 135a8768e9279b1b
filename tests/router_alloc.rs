//! The router's hot path does not allocate: routing a command whose keys share one slot (and a
//! keyless one) moves the `Cmd` into the result without a single heap allocation. Checked with a
//! counting global allocator (per thread, so parallel tests do not interfere).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use shardsync::cmd;
use shardsync::cmd::Cmd;
use shardsync::router::{Routed, command_keys, route};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(|n| n.get());
    f();
    ALLOCS.with(|n| n.get()) - before
}

#[test]
fn single_slot_and_keyless_routing_does_not_allocate() {
    let cmds: Vec<Cmd> = vec![
        cmd!["SET", "user:1", "v", "PXAT", "1700000000000"],
        cmd!["hset", "h", "f", "v"],
        cmd!["XADD", "s", "MAXLEN", "=", "10", "1-1", "f", "v"],
        cmd!["XGROUP", "CREATECONSUMER", "s", "g", "c"],
        cmd!["DEL", "{t}a", "{t}b", "{t}c"],
        cmd!["MSET", "{t}a", "1", "{t}b", "2"],
        cmd!["SMOVE", "{t}a", "{t}b", "m"],
        cmd!["RENAME", "{t}a", "{t}b"],
        cmd!["ZUNIONSTORE", "{t}d", "2", "{t}a", "{t}b"],
        cmd!["EVALSHA", "abc", "2", "{t}a", "{t}b", "x"],
        cmd!["SORT", "{t}a", "BY", "nosort", "STORE", "{t}b"],
        cmd!["JSON.SET", "doc", "$", "1"],
        cmd!["PUBLISH", "ch", "m"],
        cmd!["FLUSHALL"],
        cmd!["SELECT", "1"],
    ];
    for c in cmds {
        let shown = format!("{c:?}");
        let mut routed = None;
        let n = allocations(|| {
            let _ = command_keys(&c);
            routed = Some(route(c));
        });
        assert_eq!(n, 0, "{shown} allocated {n} times");
        assert!(!matches!(
            routed,
            Some(Routed::PerSlot(_) | Routed::CrossSlot { .. })
        ));
    }
    // The counter works: a split allocates its parts.
    let c = cmd!["DEL", "{a}1", "{b}1"];
    assert!(allocations(|| drop(route(c))) > 0);
}
