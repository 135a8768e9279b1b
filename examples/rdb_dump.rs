//! Print the items of an RDB file: `cargo run --example rdb_dump -- FILE [-v]`.

use shardsync::rdb::{Item, ParseOptions, RdbParser};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: rdb_dump FILE [-v]");
        std::process::exit(2);
    };
    let verbose = args.next().is_some();
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let mut p = RdbParser::new(file, ParseOptions::default());
    let mut keys = 0usize;
    loop {
        match p.next_item() {
            Ok(Some(item)) => {
                if matches!(item, Item::KeyStart(_)) {
                    keys += 1;
                }
                if verbose {
                    println!("{item:?}");
                }
            }
            Ok(None) => break,
            Err(e) => {
                println!("{path}: ERROR after {keys} keys: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("{path}: OK {keys} keys, {} bytes", p.bytes_read());
}
