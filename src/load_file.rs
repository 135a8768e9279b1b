//! The `load-rdb` job: writes the keys of an RDB file into a target. The file is read twice:
//! first parsed whole (CRC64 included) so that a corrupt file writes nothing, then streamed
//! through the same loader and writer as a full sync.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;
use bytes::Bytes;

use crate::app::RunError;
use crate::config::{Endpoint, SyncSettings};
use crate::convert::ConvertOptions;
use crate::net::client;
use crate::observe::progress::ShardState;
use crate::rdb::{Flavor, ParseOptions, RdbParser};
use crate::sink::writer::WriterSettings;
use crate::sink::{Dispatcher, Targets};
use crate::source::rdb_load::{self, LoadSettings, LoadStats};

/// Checks the whole file; returns its format on success.
fn validate(path: &Path) -> Result<(Flavor, u32, u64), String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut p = RdbParser::new(
        BufReader::with_capacity(1 << 20, f),
        ParseOptions::default(),
    );
    let mut keys = 0u64;
    while let Some(item) = p
        .next_item()
        .map_err(|e| format!("{}: {e}; nothing was written to the target", path.display()))?
    {
        if let crate::rdb::Item::KeyStart(_) = item {
            keys += 1;
        }
    }
    let (flavor, version) = p
        .header()
        .ok_or_else(|| format!("{}: no RDB header", path.display()))?;
    Ok((flavor, version, keys))
}

/// Loads `path` into `target`. Returns the load statistics and the count of rejected writes.
pub async fn run(
    path: &Path,
    target: &Endpoint,
    sync: &SyncSettings,
) -> Result<(LoadStats, u64), RunError> {
    let p = path.to_path_buf();
    let (flavor, version, keys) = tokio::task::spawn_blocking(move || validate(&p))
        .await
        .map_err(|e| RunError::Fatal(e.to_string()))?
        .map_err(RunError::Fatal)?;
    tracing::info!(file = %path.display(), ?flavor, version, keys, "RDB file is valid; loading");

    let mut conn = client::connect("target", target)
        .await
        .map_err(RunError::Precheck)?;
    let (target_info, _) = client::server_info("target", target, &mut conn)
        .await
        .map_err(RunError::Precheck)?;
    let use_restore = sync.restore_max_bytes > 0 && target_info.accepts_dump(flavor, version);
    let settings = LoadSettings {
        parse: ParseOptions {
            chunk_elements: sync.elements_per_command,
            chunk_bytes: 1 << 20,
            capture_dump_max: if use_restore {
                sync.restore_max_bytes
            } else {
                0
            },
            capture_strings: false,
            max_key_bytes: sync.max_key_bytes,
            max_aux_bytes: sync.max_aux_bytes,
            max_element_bytes: sync.max_element_bytes,
            max_blob_bytes: sync.max_blob_bytes,
        },
        convert: ConvertOptions {
            target: target_info,
            source_flavor: flavor,
            source_rdb_version: version,
            use_restore,
            elements_per_command: sync.elements_per_command,
            replace: true,
        },
        batch_max_commands: sync.batch_max_commands,
        batch_max_bytes: sync.batch_max_bytes,
    };

    let shard = Arc::new(ShardState::new(format!("file:{}", path.display())));
    let topology = crate::net::topology::discover("target", target)
        .await
        .map_err(RunError::Precheck)?;
    let arbiter = Arbiter::new();
    let targets = Targets::start(
        &topology,
        target,
        WriterSettings {
            endpoint: target.clone(),
            heartbeat_key: Bytes::new(),
        },
        sync.queue_batches,
        arbiter.handle(),
    );
    let mut out = Dispatcher::new(targets.clone(), Arc::new(sync.clone()));
    let (p, sh) = (path.to_path_buf(), shard.clone());
    let loaded = tokio::task::spawn_blocking(move || {
        let f = File::open(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let epoch = sh.begin_epoch(0);
        rdb_load::load(
            BufReader::with_capacity(1 << 20, f),
            &settings,
            &sh,
            epoch,
            &mut out,
        )
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| RunError::Fatal(e.to_string()))?
    .map_err(RunError::Fatal)?;
    for d in targets.close() {
        let _ = d.await;
    }
    arbiter.stop();
    Ok((loaded, shard.rejected_writes.load(Ordering::Relaxed)))
}
