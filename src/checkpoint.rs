//! Checkpoints: per source shard, the `(replid, offset)` of the last write the target
//! acknowledged, stored atomically (temp file, fsync, rename) in the state directory so that a
//! restarted process resumes with `PSYNC` instead of a full sync.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::source::handshake::ReplPosition;

fn file_for(dir: &Path, shard: &str) -> PathBuf {
    let safe: String = shard
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("checkpoint-{safe}.json"))
}

/// Why a checkpoint could not be read; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "cannot read checkpoint {}: {source} (check the state directory's permissions)",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "checkpoint {} is corrupt ({source}); delete it to start with a full sync",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Reads the checkpoint of `shard`, if any. A corrupt file is an error that names it.
pub fn load(dir: &Path, shard: &str) -> Result<Option<ReplPosition>, CheckpointError> {
    let path = file_for(dir, shard);
    match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckpointError::Read { path, source }),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| CheckpointError::Corrupt { path, source }),
    }
}

/// Writes the checkpoint of `shard` atomically.
pub fn store(dir: &Path, shard: &str, pos: &ReplPosition) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = file_for(dir, shard);
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(pos).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path(), "127.0.0.1:7000").unwrap(), None);
        let p = ReplPosition {
            replid: "a".repeat(40),
            offset: 42,
            db: 3,
        };
        store(d.path(), "127.0.0.1:7000", &p).unwrap();
        assert_eq!(load(d.path(), "127.0.0.1:7000").unwrap(), Some(p));
        std::fs::write(file_for(d.path(), "x"), b"{").unwrap();
        assert!(
            load(d.path(), "x")
                .unwrap_err()
                .to_string()
                .contains("delete it")
        );
    }
}
