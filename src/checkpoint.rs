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

/// Reads the checkpoint of `shard`, if any. A corrupt file is an error that names it.
pub fn load(dir: &Path, shard: &str) -> Result<Option<ReplPosition>, String> {
    let path = file_for(dir, shard);
    match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read checkpoint {}: {e}", path.display())),
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!(
                "checkpoint {} is corrupt ({e}); delete it to start with a full sync",
                path.display()
            )
        }),
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
        assert!(load(d.path(), "x").unwrap_err().contains("delete it"));
    }
}
