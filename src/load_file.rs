//! The `load-rdb` job: writes the keys of an RDB file into a target. The file is read twice:
//! first checked whole by a validation walk ([`RdbParser::check_all`]: every structure,
//! encoding, limit and the CRC64; plain string keys are walked by their lengths, not decoded)
//! so that a corrupt file writes nothing, then streamed
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
use crate::sink::{Dispatcher, Fanout, Targets};
use crate::source::rdb_load::{self, LoadSettings, LoadStats};

/// Why the file cannot be loaded; nothing was written to the target.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {source} (check the path and its permissions)", path.display())]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}; nothing was written to the target", path.display())]
    Rdb {
        path: std::path::PathBuf,
        source: Box<crate::rdb::RdbError>,
    },
    #[error("{}: no RDB header (is it an RDB file?)", path.display())]
    NoHeader { path: std::path::PathBuf },
}

/// Checks the whole file; returns its format on success.
fn validate(path: &Path) -> Result<(Flavor, u32, u64, Vec<u32>), FileError> {
    let path_buf = || path.to_path_buf();
    let f = File::open(path).map_err(|source| FileError::Open {
        path: path_buf(),
        source,
    })?;
    // A validation walk: string keys are walked by their lengths (the pass only needs the
    // errors and the counts).
    let sum = RdbParser::new(
        BufReader::with_capacity(1 << 20, f),
        ParseOptions::default(),
    )
    .check_all()
    .map_err(|source| FileError::Rdb {
        path: path_buf(),
        source: Box::new(source),
    })?;
    let (flavor, version) = sum
        .header
        .ok_or_else(|| FileError::NoHeader { path: path_buf() })?;
    let (keys, dbs) = (sum.keys, sum.dbs);
    Ok((flavor, version, keys, dbs))
}

/// Loads `path` into `target`. Returns the load statistics and the count of rejected writes.
pub async fn run(
    path: &Path,
    target: &Endpoint,
    sync: &SyncSettings,
) -> Result<(LoadStats, u64), RunError> {
    let p = path.to_path_buf();
    let (flavor, version, keys, dbs) = tokio::task::spawn_blocking(move || validate(&p))
        .await
        .map_err(|e| RunError::Fatal(e.to_string()))?
        .map_err(|e| RunError::Fatal(e.to_string()))?;
    tracing::info!(file = %path.display(), ?flavor, version, keys, "RDB file is valid; loading");

    let mut conn = client::connect("target", target)
        .await
        .map_err(|e| RunError::Precheck(e.to_string()))?;
    let (target_info, _) = client::server_info("target", target, &mut conn)
        .await
        .map_err(|e| RunError::Precheck(e.to_string()))?;
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
            max_group_entries: sync.max_group_entries,
        },
        convert: ConvertOptions {
            target: target_info,
            source_flavor: flavor,
            source_rdb_version: version,
            use_restore,
            elements_per_command: sync.elements_per_command,
            replace: true,
            stream_hold_max_bytes: sync.max_stream_rebuild_bytes,
        },
        group_convert: Vec::new(),
        batch_max_commands: sync.batch_max_commands,
        batch_max_bytes: sync.batch_max_bytes,
    };

    let shard = Arc::new(ShardState::new(format!("file:{}", path.display())));
    let topology = crate::net::topology::discover("target", target)
        .await
        .map_err(|e| RunError::Precheck(e.to_string()))?;
    // Every database of the file must exist on the target (after the map): nothing is written
    // otherwise, rather than keys landing nowhere.
    let cluster = topology.is_cluster();
    let unmapped: Vec<u32> = dbs
        .iter()
        .copied()
        .filter(|&d| sync.target_db(d, cluster).is_none())
        .collect();
    if !unmapped.is_empty() {
        return Err(RunError::Precheck(format!(
            "{}: keys in database(s) {unmapped:?}, but a cluster target has only db 0; map them with --db-map; nothing was written",
            path.display()
        )));
    }
    if !cluster {
        let mapped: Vec<u32> = dbs
            .iter()
            .filter_map(|&d| sync.target_db(d, false))
            .collect();
        let (missing, have) = crate::precheck::missing_target_dbs(target, &mapped)
            .await
            .map_err(|e| RunError::Precheck(e.to_string()))?;
        if !missing.is_empty() {
            return Err(RunError::Precheck(format!(
                "{}: keys in target database(s) {missing:?}, but the target has {} databases: set `databases {}` (or more) on the target and restart it; nothing was written",
                path.display(),
                have.map_or("fewer".to_string(), |n| n.to_string()),
                missing.iter().max().map_or(0, |m| m + 1)
            )));
        }
    }
    let arbiter = Arbiter::new();
    let tree = Arc::new(crate::supervise::Tree::new());
    let targets = Targets::start(
        &topology,
        target,
        WriterSettings::new(target.clone(), Bytes::new()),
        sync.queue_batches,
        arbiter.handle(),
        tree.clone(),
    );
    let mut out = Fanout::one(Dispatcher::new(targets.clone(), Arc::new(sync.clone())));
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
    targets.close();
    tree.join(crate::supervise::Group::Writers).await;
    arbiter.stop();
    Ok((loaded, shard.rejected_writes.load(Ordering::Relaxed)))
}
