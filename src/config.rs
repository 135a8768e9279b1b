//! Settings: the TOML file (serde), command-line overrides, password environment variables, and
//! validation that names the offending key. Passwords live in [`Secret`], which never prints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A password: shown as `***` by `Debug` and `Display`, so it cannot leak into logs or errors.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Decodes `%XX` escapes as `redis-cli` does for URL passwords: `+` stays `+` (it is not a
/// space outside HTML forms), a `%` not followed by two hex digits stays as is. The error
/// says why without the text itself (it may be a password).
fn percent_decode(s: &str) -> Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once percent-decoded")
}

/// Where a server is, how to log in, and whether to speak TLS (`rediss://`). `Display` shows
/// `host:port` only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The side's TLS client (`rediss://`); shared by every node of the deployment.
    pub tls: Option<crate::net::tls::TlsClient>,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Endpoint {
    /// Parses `redis://[user:password@]host:port` (also `host:port`; `rediss://` for TLS with
    /// the default options: the system's CA certificates, the URL's host as the name). The error
    /// never contains the password.
    pub fn parse(what: &str, s: &str) -> Result<Endpoint, ConfigError> {
        let with_scheme = if s.contains("://") {
            s.to_string()
        } else {
            format!("redis://{s}")
        };
        let bad = |why: &str| ConfigError::Invalid {
            key: what.to_string(),
            why: format!("{why}; expected redis://[user:password@]host:port (rediss:// for TLS)"),
        };
        let u = url::Url::parse(&with_scheme).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if u.scheme() != "redis" && u.scheme() != "rediss" {
            return Err(bad(&format!("scheme {:?} is not supported", u.scheme())));
        }
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = u.port().ok_or_else(|| bad("no port"))?;
        let username =
            Some(percent_decode(u.username()).map_err(|w| bad(&format!("user name {w}")))?)
                .filter(|s| !s.is_empty());
        let password = match u.password() {
            Some(p) => Some(Secret::new(
                percent_decode(p).map_err(|w| bad(&format!("password {w}")))?,
            )),
            None => None,
        };
        let tls = if u.scheme() == "rediss" {
            let side = if what.contains("source") {
                "source"
            } else {
                "target"
            };
            let client = crate::net::tls::TlsClient::new(side, &host, &Default::default())
                .map_err(|e| ConfigError::Invalid {
                    key: what.to_string(),
                    why: e.to_string(),
                })?;
            Some(client)
        } else {
            None
        };
        Ok(Endpoint {
            host,
            port,
            username,
            password,
            tls,
        })
    }

    /// Applies the TLS options of `side` (`source`/`target`): the endpoint must be `rediss://`
    /// when any is set. `insecure` (`--tls-insecure`) applies to a `rediss://` endpoint only. No
    /// options leave the endpoint as it is.
    pub fn with_tls(
        mut self,
        side: &'static str,
        mut opts: crate::net::tls::TlsOptions,
        insecure: bool,
    ) -> Result<Endpoint, ConfigError> {
        opts.insecure |= insecure && self.tls.is_some();
        if !opts.is_set() {
            return Ok(self);
        }
        if self.tls.is_none() {
            return Err(ConfigError::Invalid {
                key: format!("{side}.tls"),
                why: format!(
                    "TLS options are set but {side}.url is not a rediss:// URL; write rediss://{self} to use TLS"
                ),
            });
        }
        let client = crate::net::tls::TlsClient::new(side, &self.host, &opts).map_err(|e| {
            ConfigError::Invalid {
                key: format!("{side}.tls"),
                why: e.to_string(),
            }
        })?;
        self.tls = Some(client);
        Ok(self)
    }

    /// The redis-rs connection info for this endpoint.
    pub fn connection_info(&self) -> redis::ConnectionInfo {
        use redis::IntoConnectionInfo;
        let mut settings = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(u) = &self.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &self.password {
            settings = settings.set_password(p.expose());
        }
        // Infallible for a TCP address in redis-rs 1.x.
        match redis::ConnectionAddr::Tcp(self.host.clone(), self.port).into_connection_info() {
            Ok(ci) => ci.set_redis_settings(settings),
            Err(_) => unreachable!("redis-rs refuses no plain TCP address"),
        }
    }
}

/// What to do when the target already holds keys at startup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetHasData {
    /// Refuse to start.
    Block,
    /// Overwrite keys that the source also has (RESTORE … REPLACE, DEL before rebuilding).
    #[default]
    Overwrite,
}

/// What a repeated full sync of a shard does with the keys it wrote before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnResync {
    /// Remove the shard's keys from the target first (the target then equals the source, as a
    /// native replica does). The default when the target was empty at start.
    Clear,
    /// Only overwrite the keys the new RDB has; keys deleted on the source meanwhile may stay.
    /// The default when the target held other data at start.
    Keep,
}

/// A configuration error, naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {key}: {why}")]
    Invalid { key: String, why: String },
    #[error("config: {key} is required (set it in the config file or with {flag})")]
    Missing { key: String, flag: String },
    #[error("config file {path}: {why}")]
    File { path: PathBuf, why: String },
    /// The text is not the file's shape (TOML syntax, an unknown key, a wrong type).
    #[error("config: {why}")]
    Syntax { why: String },
}

impl ConfigError {
    fn syntax(why: impl std::fmt::Display) -> ConfigError {
        ConfigError::Syntax {
            why: why.to_string(),
        }
    }
}

/// The TOML file's shape. Every field is optional so flags can complete it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub source: Option<FileEndpoint>,
    /// `[target]`, or the first `[[target]]` table.
    pub target: Option<FileEndpoint>,
    /// The other `[[target]]` tables (one-to-many), in file order.
    #[serde(skip)]
    pub more_targets: Vec<FileEndpoint>,
    #[serde(default)]
    pub sync: FileSync,
    pub state_dir: Option<PathBuf>,
    pub log_level: Option<String>,
    pub metrics_addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEndpoint {
    pub url: Option<String>,
    pub password: Option<Secret>,
    /// Source only: replicate from one replica of each master instead of the master.
    pub prefer_replica: Option<bool>,
    /// Target only: a write reply outstanding longer than this is a stall (reconnect).
    pub reply_timeout_ms: Option<u64>,
    /// TLS options (`[source.tls]`, `[target.tls]`); the URL must be `rediss://`.
    pub tls: Option<crate::net::tls::TlsOptions>,
    /// Source only: consecutive failed attempts of a shard's link without progress before the
    /// shard is marked failed (0: retry for ever). See [`DEFAULT_RETRY_BUDGET`].
    pub retry_budget: Option<u32>,
    /// Target only (one-to-many): the `target` label in metrics and `/status`, and part of its
    /// checkpoint file names (default: `host:port`).
    pub name: Option<String>,
    /// Target only: replaces `sync.db_map` for this target.
    pub db_map: Option<std::collections::BTreeMap<String, u32>>,
    /// Target only: replaces `sync.dbs` for this target.
    pub dbs: Option<Vec<u32>>,
    /// Target only: lists that replace those of `[sync.filter]` for this target.
    pub filter: Option<crate::router::filter::FilterOverride>,
    /// Target only (one-to-many): a target that acknowledges no write this long while writes
    /// wait for it fails alone (see [`DEFAULT_FAIL_AFTER`]).
    pub fail_after_ms: Option<u64>,
}

/// Default `target.fail_after_ms` (one-to-many): long enough that a slow or briefly unreachable
/// target (a restart, a failover) is waited for, since a failed target needs a restart.
pub const DEFAULT_FAIL_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Default `source.retry_budget`: with the link's backoff (0.2 s doubling to 5 s) about five
/// minutes of a source that cannot be reached or keeps failing.
pub const DEFAULT_RETRY_BUDGET: u32 = 60;

/// `sync.exactly_once`: `"auto"` (the default) is exactly-once on every standalone target (one,
/// or several in one-to-many) whose user may run what it needs, at-least-once on a cluster
/// target, without a word; `true` turns it on for every target (per slot on a cluster);
/// `false` turns it off (no progress keys on the target). See the README's *Exactly once*.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExactlyOnce {
    #[default]
    Auto,
    On,
    Off,
}

impl<'de> Deserialize<'de> for ExactlyOnce {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(ExactlyOnce::On),
            Raw::Bool(false) => Ok(ExactlyOnce::Off),
            Raw::Word(w) if w == "auto" => Ok(ExactlyOnce::Auto),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "exactly_once must be true, false or \"auto\", not {w:?}"
            ))),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSync {
    pub heartbeat_key: Option<String>,
    pub heartbeat_interval_ms: Option<u64>,
    pub target_has_data: Option<TargetHasData>,
    pub on_resync: Option<OnResync>,
    pub batch_max_commands: Option<usize>,
    pub batch_max_bytes: Option<usize>,
    pub queue_batches: Option<usize>,
    pub restore_max_bytes: Option<usize>,
    pub elements_per_command: Option<usize>,
    pub ack_interval_ms: Option<u64>,
    pub checkpoint_interval_ms: Option<u64>,
    pub max_frame_bytes: Option<usize>,
    pub max_key_bytes: Option<usize>,
    pub max_aux_bytes: Option<usize>,
    pub max_element_bytes: Option<usize>,
    pub max_blob_bytes: Option<usize>,
    pub exactly_once: Option<ExactlyOnce>,
    pub progress_prefix: Option<String>,
    pub instance: Option<String>,
    pub max_stream_rebuild_bytes: Option<usize>,
    pub max_group_entries: Option<usize>,
    /// Source database → target database, e.g. `db_map = { "3" = 0 }`.
    pub db_map: Option<std::collections::BTreeMap<String, u32>>,
    /// Source databases to sync (`dbs = [0, 3]`); all when absent.
    pub dbs: Option<Vec<u32>>,
    /// `[sync.filter]`: key include/exclude lists, command deny-list.
    pub filter: Option<crate::router::filter::FilterSpec>,
}

/// The resolved, validated settings the program runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: Endpoint,
    /// Every target (one-to-many when more than one); `targets[0]` is [`Config::target`].
    pub targets: Vec<TargetSpec>,
    /// Replicate each shard from one of its replicas (the heartbeat still writes to the master).
    pub source_prefer_replica: bool,
    /// `source.retry_budget` (0: unlimited).
    pub source_retry_budget: u32,
    pub target: Endpoint,
    /// `target.reply_timeout_ms`: a target that leaves a write unanswered this long is stalled.
    pub target_reply_timeout: std::time::Duration,
    pub state_dir: PathBuf,
    pub log_level: String,
    pub metrics_addr: Option<SocketAddr>,
    pub sync: SyncSettings,
}

/// One target of the run (`[target]`, each `[[target]]`, each `--target`) with the settings that
/// may differ per target. Per-target filters belong here too; [`TargetSpec::sync_settings`] is
/// where they are applied to the shared settings.
#[derive(Clone, Debug)]
pub struct TargetSpec {
    /// The `target` label in metrics and `/status` and the checkpoint file suffix.
    pub name: String,
    pub endpoint: Endpoint,
    /// A write reply outstanding longer than this is a stall.
    pub reply_timeout: std::time::Duration,
    /// One-to-many: no write acknowledged this long while writes wait → the target fails alone.
    pub fail_after: std::time::Duration,
    /// Replaces `sync.db_map` for this target.
    pub db_map: Option<std::collections::BTreeMap<u32, u32>>,
    /// This target's own database selection and filters (its `dbs` / `filter` settings over the
    /// shared ones); `None`: the shared `sync.filter`.
    pub filter: Option<crate::router::filter::Filter>,
}

impl TargetSpec {
    /// The data-path settings for this target: `base` with this target's own choices.
    pub fn sync_settings(&self, base: &SyncSettings) -> SyncSettings {
        let mut s = base.clone();
        if let Some(m) = &self.db_map {
            s.db_map = m.clone();
        }
        if let Some(f) = &self.filter {
            s.filter = f.clone();
        }
        s
    }
}

/// A target's own selection (`dbs`, `filter` table), compiled over the shared one: its `dbs`
/// replaces `shared_dbs`, each list of its filter table replaces that list of `file_spec`
/// (`[sync.filter]`), and the command-line filter flags `cli` are added to every target's.
/// `None` when the target sets neither. `key`: the target's table, for errors.
pub fn target_filter(
    key: &str,
    own: (
        Option<Vec<u32>>,
        Option<crate::router::filter::FilterOverride>,
    ),
    shared_dbs: &Option<Vec<u32>>,
    (file_spec, cli): (
        &crate::router::filter::FilterSpec,
        &crate::router::filter::FilterSpec,
    ),
    heartbeat_key: &str,
) -> Result<Option<crate::router::filter::Filter>, ConfigError> {
    let (dbs, over) = own;
    if dbs.is_none() && over.is_none() {
        return Ok(None);
    }
    let mut spec = match over {
        Some(o) => o.over(file_spec),
        None => file_spec.clone(),
    };
    spec.extend(cli.clone());
    let f = crate::router::filter::Filter::new(dbs.or_else(|| shared_dbs.clone()), &spec).map_err(
        |e| ConfigError::Invalid {
            key: format!("{key}.{}", e.key.trim_start_matches("sync.")),
            why: e.why,
        },
    )?;
    Ok(Some(f.always_keep(heartbeat_key.as_bytes())))
}

/// Tuning of the data path. Defaults are in [`SyncSettings::default`].
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// Heartbeat key written into the source; empty disables the heartbeat.
    pub heartbeat_key: String,
    pub heartbeat_interval_ms: u64,
    pub target_has_data: TargetHasData,
    /// `None`: decided at start from whether the target was empty (see [`OnResync`]).
    pub on_resync: Option<OnResync>,
    /// A write batch is sent when it holds this many commands…
    pub batch_max_commands: usize,
    /// …or this many bytes of arguments.
    pub batch_max_bytes: usize,
    /// Batches queued between the source link and a target writer (the memory bound).
    pub queue_batches: usize,
    /// Keys whose serialized value is at most this size go by RESTORE when the target can read the
    /// source's format; 0 always uses plain commands.
    pub restore_max_bytes: usize,
    /// Elements per plain command (RPUSH, SADD, HSET, ZADD, XADD batches).
    pub elements_per_command: usize,
    pub ack_interval_ms: u64,
    pub checkpoint_interval_ms: u64,
    /// Largest command accepted from the replication stream (a whole RESP frame).
    pub max_frame_bytes: usize,
    /// RDB limits (see [`crate::rdb::ParseOptions`]): key names, AUX values (longer ones are
    /// skipped), single elements, encoded blobs.
    pub max_key_bytes: usize,
    pub max_aux_bytes: usize,
    pub max_element_bytes: usize,
    pub max_blob_bytes: usize,
    /// Entry bytes of one stream held back for an exact rebuild with plain commands (see
    /// [`crate::convert::ConvertOptions::stream_hold_max_bytes`]).
    pub max_stream_rebuild_bytes: usize,
    /// Pending entries plus consumers of one stream consumer group held in memory (see
    /// [`crate::rdb::ParseOptions::max_group_entries`]).
    pub max_group_entries: usize,
    /// Source database → target database. Unlisted databases keep their number on a standalone
    /// target; on a cluster target (db 0 only) db 0 maps to 0 and any other must be listed.
    pub db_map: std::collections::BTreeMap<u32, u32>,
    /// Exactly-once delivery (see [`crate::sink::exact`] and [`ExactlyOnce`]).
    pub exactly_once: ExactlyOnce,
    /// Prefix of the progress keys on the target (never copied on by a cascade).
    pub progress_prefix: String,
    /// This instance's name, part of its progress keys (one per shardsync writing a target).
    pub instance: String,
    /// Database selection, key filters, command deny-list (see [`crate::router::filter`]).
    pub filter: crate::router::filter::Filter,
}

impl SyncSettings {
    /// The target database for source database `db`, or `None` when it cannot be written.
    pub fn target_db(&self, db: u32, cluster_target: bool) -> Option<u32> {
        match self.db_map.get(&db) {
            Some(&d) if cluster_target && d != 0 => None,
            Some(&d) => Some(d),
            None if cluster_target && db != 0 => None,
            None => Some(db),
        }
    }
}

/// Parses `3=0,1=0` (the `--db-map` flag) into pairs.
pub fn parse_db_map(
    key: &str,
    text: &str,
) -> Result<std::collections::BTreeMap<u32, u32>, ConfigError> {
    let mut m = std::collections::BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let pair = part
            .split_once('=')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        let Some((from, to)) = pair else {
            return Err(ConfigError::Invalid {
                key: key.to_string(),
                why: format!("{part:?} is not SOURCE_DB=TARGET_DB (e.g. 3=0)"),
            });
        };
        m.insert(from, to);
    }
    Ok(m)
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            heartbeat_key: "shardsync:heartbeat".into(),
            heartbeat_interval_ms: 1000,
            target_has_data: TargetHasData::Overwrite,
            on_resync: None,
            batch_max_commands: 2048,
            batch_max_bytes: 1 << 20,
            queue_batches: 32,
            restore_max_bytes: 64 << 10,
            elements_per_command: 512,
            ack_interval_ms: 1000,
            // Short: a killed process replays (duplicates) what was applied after the last one.
            checkpoint_interval_ms: 100,
            max_frame_bytes: crate::resp::DEFAULT_MAX_FRAME_BYTES,
            max_key_bytes: crate::rdb::DEFAULT_MAX_KEY_BYTES,
            max_aux_bytes: crate::rdb::DEFAULT_MAX_AUX_BYTES,
            max_element_bytes: crate::rdb::DEFAULT_MAX_ELEMENT_BYTES,
            max_blob_bytes: crate::rdb::DEFAULT_MAX_BLOB_BYTES,
            max_stream_rebuild_bytes: crate::convert::DEFAULT_STREAM_HOLD_MAX_BYTES,
            max_group_entries: crate::rdb::DEFAULT_MAX_GROUP_ENTRIES,
            db_map: Default::default(),
            // On where supported (one standalone target, enough rights), else quietly off.
            exactly_once: ExactlyOnce::Auto,
            progress_prefix: "__shardsync:progress:".into(),
            instance: "default".into(),
            filter: Default::default(),
        }
    }
}

/// Command-line values that override the file (all optional).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub source: Option<String>,
    pub target: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub log_level: Option<String>,
    pub metrics_addr: Option<String>,
    pub heartbeat_key: Option<String>,
    pub target_has_data: Option<TargetHasData>,
    pub source_password: Option<Secret>,
    pub target_password: Option<Secret>,
    /// `3=0,1=0`
    pub db_map: Option<String>,
    pub on_resync: Option<OnResync>,
    pub prefer_replica: bool,
    /// `--target` given more than once: the targets after the first (one-to-many).
    pub more_targets: Vec<String>,
    /// `0,3` (replaces `sync.dbs`).
    pub dbs: Option<String>,
    /// Filter flags (added to `[sync.filter]`).
    pub filter: crate::router::filter::FilterSpec,
    /// `--source-tls-*` / `--target-tls-*` (win over `[source.tls]` / `[target.tls]`).
    pub source_tls: crate::net::tls::TlsOptions,
    pub target_tls: crate::net::tls::TlsOptions,
    /// `--tls-insecure`: no certificate verification on every `rediss://` side.
    pub tls_insecure: bool,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        FileConfig::parse(&text).map_err(|e| match e {
            ConfigError::Syntax { why } => ConfigError::File {
                path: path.to_path_buf(),
                why,
            },
            other => other,
        })
    }

    /// Parses the TOML text; `[target]` and `[[target]]` (several targets) are both accepted.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        let mut doc: toml::Table = toml::from_str(text).map_err(ConfigError::syntax)?;
        let mut more = Vec::new();
        if let Some(toml::Value::Array(items)) = doc.get("target").cloned() {
            let mut tables = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                let t: FileEndpoint = item.try_into().map_err(|e| {
                    ConfigError::syntax(format!("[[target]] number {}: {e}", i + 1))
                })?;
                tables.push(t);
            }
            doc.remove("target");
            let mut it = tables.into_iter();
            let first = it.next();
            more = it.collect();
            let mut f: FileConfig = toml::Value::Table(doc)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::syntax(e))?;
            f.target = first;
            f.more_targets = more;
            return Ok(f);
        }
        let mut f: FileConfig = toml::from_str(text).map_err(ConfigError::syntax)?;
        f.more_targets = std::mem::take(&mut more);
        Ok(f)
    }
}

impl Config {
    /// Merges file and overrides (overrides win) and validates everything.
    pub fn resolve(file: FileConfig, o: Overrides) -> Result<Config, ConfigError> {
        let endpoint = |key: &str,
                        flag: &str,
                        url: Option<String>,
                        file_pw: Option<Secret>,
                        env_pw: Option<Secret>|
         -> Result<Endpoint, ConfigError> {
            let url = url.ok_or_else(|| ConfigError::Missing {
                key: format!("{key}.url"),
                flag: flag.to_string(),
            })?;
            let mut ep = Endpoint::parse(&format!("{key}.url"), &url)?;
            if let Some(p) = env_pw.or(file_pw) {
                ep.password = Some(p);
            }
            Ok(ep)
        };
        let fs = file.source.unwrap_or_default();
        if fs.name.is_some()
            || fs.db_map.is_some()
            || fs.fail_after_ms.is_some()
            || fs.dbs.is_some()
            || fs.filter.is_some()
        {
            return Err(ConfigError::Invalid {
                key: "source".into(),
                why: "name, db_map, dbs, filter and fail_after_ms are target settings ([target] / [[target]])"
                    .into(),
            });
        }
        let more_file_targets = file.more_targets;
        let ft = file.target.unwrap_or_default();
        let (first_name, first_db_map) = (ft.name.clone(), ft.db_map.clone());
        // Each target's own selection, compiled once the shared one is known.
        let mut own_selection = vec![("target".to_string(), ft.dbs.clone(), ft.filter.clone())];
        let fail_after = |v: Option<u64>, reply: std::time::Duration| match v {
            None => Ok(DEFAULT_FAIL_AFTER.max(reply)),
            Some(n) if std::time::Duration::from_millis(n) < reply => Err(ConfigError::Invalid {
                key: "target.fail_after_ms".into(),
                why: "must be at least target.reply_timeout_ms".into(),
            }),
            Some(n) => Ok(std::time::Duration::from_millis(n)),
        };
        let fs_prefer_replica = fs.prefer_replica.unwrap_or(false);
        if fs.reply_timeout_ms.is_some() {
            return Err(ConfigError::Invalid {
                key: "source.reply_timeout_ms".into(),
                why: "only the target has a reply deadline (target.reply_timeout_ms)".into(),
            });
        }
        let reply_timeout = |v: Option<u64>| match v {
            None => Ok(crate::sink::writer::DEFAULT_REPLY_TIMEOUT),
            Some(n) if n < 100 => Err(ConfigError::Invalid {
                key: "target.reply_timeout_ms".into(),
                why: "must be at least 100".into(),
            }),
            Some(n) => Ok(std::time::Duration::from_millis(n)),
        };
        let target_reply_timeout = reply_timeout(ft.reply_timeout_ms)?;
        let first_fail_after = fail_after(ft.fail_after_ms, target_reply_timeout)?;
        let source_retry_budget = fs.retry_budget.unwrap_or(DEFAULT_RETRY_BUDGET);
        let source = endpoint(
            "source",
            "--source",
            o.source.or(fs.url),
            fs.password,
            o.source_password,
        )?
        .with_tls(
            "source",
            o.source_tls.or(fs.tls.unwrap_or_default()),
            o.tls_insecure,
        )?;
        let cli_targets = o.target.is_some();
        let target = endpoint(
            "target",
            "--target",
            o.target.or(ft.url),
            ft.password,
            o.target_password.clone(),
        )?
        .with_tls(
            "target",
            o.target_tls.clone().or(ft.tls.unwrap_or_default()),
            o.tls_insecure,
        )?;
        let file_db_map = |key: &str, m: Option<std::collections::BTreeMap<String, u32>>| {
            m.map(|m| {
                let mut out = std::collections::BTreeMap::new();
                for (k, v) in m {
                    let from = k.parse().map_err(|_| ConfigError::Invalid {
                        key: key.to_string(),
                        why: format!("{k:?} is not a database number"),
                    })?;
                    out.insert(from, v);
                }
                Ok(out)
            })
            .transpose()
        };
        // `--target` on the command line replaces the file's targets (all of them).
        let mut targets = vec![TargetSpec {
            name: if cli_targets { None } else { first_name }.unwrap_or_else(|| target.to_string()),
            endpoint: target.clone(),
            reply_timeout: target_reply_timeout,
            fail_after: first_fail_after,
            db_map: if cli_targets {
                None
            } else {
                file_db_map("target.db_map", first_db_map)?
            },
            filter: None,
        }];
        if cli_targets {
            own_selection.clear();
        }
        if cli_targets {
            for url in &o.more_targets {
                let mut ep = Endpoint::parse("--target", url)?;
                if let Some(p) = o.target_password.clone() {
                    ep.password = Some(p);
                }
                let ep = ep.with_tls("target", o.target_tls.clone(), o.tls_insecure)?;
                targets.push(TargetSpec {
                    name: ep.to_string(),
                    endpoint: ep,
                    reply_timeout: target_reply_timeout,
                    fail_after: first_fail_after,
                    db_map: None,
                    filter: None,
                });
            }
        } else {
            for (i, t) in more_file_targets.into_iter().enumerate() {
                let key = format!("target[{}]", i + 2);
                let ep = endpoint(&key, "--target", t.url, t.password, None)?.with_tls(
                    "target",
                    t.tls.unwrap_or_default(),
                    o.tls_insecure,
                )?;
                if t.prefer_replica.is_some() || t.retry_budget.is_some() {
                    return Err(ConfigError::Invalid {
                        key,
                        why: "prefer_replica and retry_budget are source settings".into(),
                    });
                }
                let reply = reply_timeout(t.reply_timeout_ms)?;
                own_selection.push((key.clone(), t.dbs, t.filter));
                targets.push(TargetSpec {
                    name: t.name.unwrap_or_else(|| ep.to_string()),
                    endpoint: ep,
                    reply_timeout: reply,
                    fail_after: fail_after(t.fail_after_ms, reply)?,
                    db_map: file_db_map(&format!("{key}.db_map"), t.db_map)?,
                    filter: None,
                });
            }
        }
        for (i, t) in targets.iter().enumerate() {
            if targets[..i].iter().any(|u| u.name == t.name) {
                return Err(ConfigError::Invalid {
                    key: "target".into(),
                    why: format!(
                        "two targets are named {:?}: give each [[target]] its own name",
                        t.name
                    ),
                });
            }
        }

        let d = SyncSettings::default();
        let f = file.sync;
        let positive =
            |key: &str, v: Option<usize>, default: usize| -> Result<usize, ConfigError> {
                match v {
                    Some(0) => Err(ConfigError::Invalid {
                        key: format!("sync.{key}"),
                        why: "must be at least 1".into(),
                    }),
                    Some(n) => Ok(n),
                    None => Ok(default),
                }
            };
        let sync = SyncSettings {
            heartbeat_key: o
                .heartbeat_key
                .or(f.heartbeat_key)
                .unwrap_or(d.heartbeat_key),
            heartbeat_interval_ms: match f.heartbeat_interval_ms {
                Some(n) if n < 10 => {
                    return Err(ConfigError::Invalid {
                        key: "sync.heartbeat_interval_ms".into(),
                        why: "must be at least 10".into(),
                    });
                }
                Some(n) => n,
                None => d.heartbeat_interval_ms,
            },
            target_has_data: o
                .target_has_data
                .or(f.target_has_data)
                .unwrap_or(d.target_has_data),
            on_resync: o.on_resync.or(f.on_resync),
            batch_max_commands: positive(
                "batch_max_commands",
                f.batch_max_commands,
                d.batch_max_commands,
            )?,
            batch_max_bytes: positive("batch_max_bytes", f.batch_max_bytes, d.batch_max_bytes)?,
            queue_batches: positive("queue_batches", f.queue_batches, d.queue_batches)?,
            restore_max_bytes: f.restore_max_bytes.unwrap_or(d.restore_max_bytes),
            elements_per_command: positive(
                "elements_per_command",
                f.elements_per_command,
                d.elements_per_command,
            )?,
            ack_interval_ms: positive(
                "ack_interval_ms",
                f.ack_interval_ms.map(|v| v as usize),
                d.ack_interval_ms as usize,
            )? as u64,
            checkpoint_interval_ms: positive(
                "checkpoint_interval_ms",
                f.checkpoint_interval_ms.map(|v| v as usize),
                d.checkpoint_interval_ms as usize,
            )? as u64,
            max_frame_bytes: positive("max_frame_bytes", f.max_frame_bytes, d.max_frame_bytes)?,
            max_key_bytes: positive("max_key_bytes", f.max_key_bytes, d.max_key_bytes)?,
            max_aux_bytes: f.max_aux_bytes.unwrap_or(d.max_aux_bytes),
            max_element_bytes: positive(
                "max_element_bytes",
                f.max_element_bytes,
                d.max_element_bytes,
            )?,
            max_blob_bytes: positive("max_blob_bytes", f.max_blob_bytes, d.max_blob_bytes)?,
            max_stream_rebuild_bytes: f
                .max_stream_rebuild_bytes
                .unwrap_or(d.max_stream_rebuild_bytes),
            max_group_entries: positive(
                "max_group_entries",
                f.max_group_entries,
                d.max_group_entries,
            )?,
            db_map: match (o.db_map, f.db_map) {
                (Some(text), _) => parse_db_map("--db-map", &text)?,
                (None, Some(m)) => {
                    let mut out = std::collections::BTreeMap::new();
                    for (k, v) in m {
                        let from = k.parse().map_err(|_| ConfigError::Invalid {
                            key: "sync.db_map".into(),
                            why: format!("{k:?} is not a database number"),
                        })?;
                        out.insert(from, v);
                    }
                    out
                }
                (None, None) => Default::default(),
            },
            exactly_once: f.exactly_once.unwrap_or(d.exactly_once),
            progress_prefix: match f.progress_prefix {
                Some(p) if p.is_empty() => {
                    return Err(ConfigError::Invalid {
                        key: "sync.progress_prefix".into(),
                        why: "must not be empty".into(),
                    });
                }
                Some(p) => p,
                None => d.progress_prefix,
            },
            instance: match f.instance {
                Some(n) if n.is_empty() || n.contains(['{', '}']) => {
                    return Err(ConfigError::Invalid {
                        key: "sync.instance".into(),
                        why: "must be a non-empty name without { or }".into(),
                    });
                }
                Some(n) => n,
                None => d.instance,
            },
            filter: Default::default(),
        };
        let dbs = match o.dbs {
            Some(text) => Some(
                text.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        p.parse().map_err(|_| ConfigError::Invalid {
                            key: "--dbs".into(),
                            why: format!("{p:?} is not a database number (e.g. --dbs 0,3)"),
                        })
                    })
                    .collect::<Result<Vec<u32>, _>>()?,
            ),
            None => f.dbs,
        };
        let file_spec = f.filter.unwrap_or_default();
        for (t, (key, own_dbs, over)) in targets.iter_mut().zip(own_selection) {
            t.filter = target_filter(
                &key,
                (own_dbs, over),
                &dbs,
                (&file_spec, &o.filter),
                &sync.heartbeat_key,
            )?;
        }
        let mut spec = file_spec;
        spec.extend(o.filter);
        let mut sync = sync;
        sync.filter = crate::router::filter::Filter::new(dbs, &spec)
            .map_err(|e| ConfigError::Invalid {
                key: e.key,
                why: e.why,
            })?
            .always_keep(sync.heartbeat_key.as_bytes());
        let metrics_addr = match o.metrics_addr.or(file.metrics_addr) {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9108))),
            Some(s) if s.is_empty() || s == "off" => None,
            Some(s) => Some(s.parse().map_err(|_| ConfigError::Invalid {
                key: "metrics_addr".into(),
                why: format!(
                    "{s:?} is not an address like 127.0.0.1:9108 (use \"off\" to disable)"
                ),
            })?),
        };
        let log_level = o
            .log_level
            .or(file.log_level)
            .unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log_level".into(),
                why: format!("{log_level:?} is not a level (error, warn, info, debug, trace)"),
            });
        }
        Ok(Config {
            source,
            source_prefer_replica: o.prefer_replica || fs_prefer_replica,
            source_retry_budget,
            targets,
            target,
            target_reply_timeout,
            state_dir: o
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from("shardsync-state")),
            log_level,
            metrics_addr,
            sync,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_once_is_auto_by_default_and_takes_true_false_or_auto() {
        let sync = |t: &str| {
            toml::from_str::<FileConfig>(&format!("[sync]\n{t}"))
                .map(|f| f.sync.exactly_once)
                .map_err(|e| e.to_string())
        };
        assert_eq!(SyncSettings::default().exactly_once, ExactlyOnce::Auto);
        assert_eq!(sync(""), Ok(None));
        assert_eq!(sync("exactly_once = true"), Ok(Some(ExactlyOnce::On)));
        assert_eq!(sync("exactly_once = false"), Ok(Some(ExactlyOnce::Off)));
        assert_eq!(sync("exactly_once = \"auto\""), Ok(Some(ExactlyOnce::Auto)));
        let err = sync("exactly_once = \"yes\"").unwrap_err();
        assert!(err.contains("\"auto\""), "{err}");
    }

    #[test]
    fn parses_urls_without_leaking_passwords() {
        let e = Endpoint::parse("source.url", "redis://:s3cr%40t@127.0.0.1:7000").unwrap();
        assert_eq!(e.password.as_ref().unwrap().expose(), "s3cr@t");
        assert_eq!(e.to_string(), "127.0.0.1:7000");
        assert!(!format!("{e:?}").contains("s3cr"));
        let e = Endpoint::parse("t", "alice:pw@localhost:1").unwrap();
        assert_eq!(e.username.as_deref(), Some("alice"));
        let err = Endpoint::parse("source.url", "redis://:hunter2@host")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source.url") && err.contains("no port") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(Endpoint::parse("x", "http://h:1").is_err());
        // Percent-decoding as redis-cli: `+` stays, `%2B` is `+`, `%23` `#`, non-ASCII as UTF-8.
        let e = Endpoint::parse("s", "redis://us%40er:a+b%25c%40d%3Ae%2Ff%23g%C3%A9@h:1").unwrap();
        assert_eq!(e.password.as_ref().unwrap().expose(), "a+b%c@d:e/f#gé");
        assert_eq!(e.username.as_deref(), Some("us@er"));
        let e = Endpoint::parse("s", "redis://:p@ss:wörd+%zz@h:1").unwrap();
        assert_eq!(e.password.as_ref().unwrap().expose(), "p@ss:wörd+%zz");
        let err = Endpoint::parse("s", "redis://:bad%FFpw@h:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("UTF-8") && !err.contains("bad"), "{err}");
    }

    #[test]
    fn file_and_overrides_merge_and_validate() {
        let file: FileConfig = toml::from_str(
            "[source]\nurl = \"redis://127.0.0.1:1\"\npassword = \"p\"\n[target]\nurl = \"127.0.0.1:2\"\n[sync]\nqueue_batches = 4\n",
        )
        .unwrap();
        let c = Config::resolve(
            file,
            Overrides {
                target: Some("127.0.0.1:3".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.target.port, 3);
        assert_eq!(c.source.password.unwrap().expose(), "p");
        assert_eq!(c.sync.queue_batches, 4);
        let bad: FileConfig = toml::from_str("[sync]\nqueue_batches = 0\n").unwrap();
        let e = Config::resolve(
            bad,
            Overrides {
                source: Some("h:1".into()),
                target: Some("h:2".into()),
                ..Default::default()
            },
        );
        assert!(e.unwrap_err().to_string().contains("sync.queue_batches"));
        let m: FileConfig = toml::from_str("[sync]\ndb_map = { \"3\" = 0 }\n").unwrap();
        let ov = Overrides {
            source: Some("h:1".into()),
            target: Some("h:2".into()),
            ..Default::default()
        };
        let c = Config::resolve(m, ov).unwrap();
        assert_eq!(c.sync.target_db(3, true), Some(0));
        assert_eq!(c.sync.target_db(1, true), None);
        assert_eq!(c.sync.target_db(1, false), Some(1));
        assert!(
            parse_db_map("--db-map", "1=x")
                .unwrap_err()
                .to_string()
                .contains("SOURCE_DB=TARGET_DB")
        );
        assert!(
            toml::from_str::<FileConfig>("[sync]\nbogus = 1\n")
                .unwrap_err()
                .to_string()
                .contains("bogus")
        );
        let e = Config::resolve(FileConfig::default(), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.url") && e.contains("--source"), "{e}");
    }

    #[test]
    fn a_target_may_carry_its_own_selection_and_filters() {
        let text = "[source]\nurl = \"127.0.0.1:1\"\n\
             [[target]]\nname = \"a\"\nurl = \"127.0.0.1:2\"\ndbs = [0]\n\
             [target.filter]\ninclude_prefixes = [\"a:\"]\n\
             [[target]]\nname = \"b\"\nurl = \"127.0.0.1:3\"\n\
             [[target]]\nname = \"c\"\nurl = \"127.0.0.1:4\"\n\
             [target.filter]\ndeny_commands = [\"FLUSHALL\"]\n\
             [sync]\ndbs = [0, 1]\n[sync.filter]\nexclude_prefixes = [\"tmp:\"]\n";
        let cli = Overrides {
            filter: crate::router::filter::FilterSpec {
                exclude_prefixes: vec!["cli:".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let c = Config::resolve(FileConfig::parse(text).unwrap(), cli).unwrap();
        let f: Vec<_> = c
            .targets
            .iter()
            .map(|t| t.sync_settings(&c.sync).filter)
            .collect();
        // a: its own dbs and include list; the shared exclusion and the flag's still apply.
        assert!(f[0].keep_key(0, b"a:1") && !f[0].keep_key(1, b"a:1"));
        assert!(!f[0].keep_key(0, b"b:1") && !f[0].keep_key(0, b"cli:1"));
        assert!(
            f[0].keep_key(0, b"shardsync:heartbeat"),
            "the heartbeat is always kept"
        );
        // b: nothing of its own, the shared settings.
        assert!(c.targets[1].filter.is_none());
        assert!(f[1] == c.sync.filter && f[1].keep_key(1, b"b:1") && !f[1].keep_key(0, b"tmp:1"));
        // c: its own deny-list, the shared dbs and key lists.
        assert!(f[2].denied(&crate::cmd!["FLUSHALL"]) && !f[1].denied(&crate::cmd!["FLUSHALL"]));
        assert!(!f[2].keep_key(0, b"tmp:1") && !f[2].keep_key(3, b"x"));
        assert!(f[0] != f[1] && f[1] != f[2]);
        // Errors name the target's table.
        let bad = "[source]\nurl = \"127.0.0.1:1\"\n[[target]]\nurl = \"127.0.0.1:2\"\n\
             [[target]]\nurl = \"127.0.0.1:3\"\ndbs = []\n";
        let e = Config::resolve(FileConfig::parse(bad).unwrap(), Overrides::default());
        assert!(e.unwrap_err().to_string().contains("target[2].dbs"));
        let bad = "[source]\nurl = \"127.0.0.1:1\"\n[target]\nurl = \"127.0.0.1:2\"\n\
             [target.filter]\ninclude_regex = [\"(\"]\n";
        let e = Config::resolve(FileConfig::parse(bad).unwrap(), Overrides::default());
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("target.filter.include_regex")
        );
        let bad = "[source]\nurl = \"127.0.0.1:1\"\ndbs = [0]\n[target]\nurl = \"127.0.0.1:2\"\n";
        let e = Config::resolve(FileConfig::parse(bad).unwrap(), Overrides::default());
        assert!(e.unwrap_err().to_string().contains("target settings"));
    }

    #[test]
    fn several_targets_from_the_file_or_the_command_line() {
        let f = FileConfig::parse(
            "[source]\nurl = \"127.0.0.1:1\"\n[[target]]\nname = \"a\"\nurl = \"127.0.0.1:2\"\n\
             db_map = { \"2\" = 5 }\n[[target]]\nurl = \"127.0.0.1:3\"\nreply_timeout_ms = 500\n\
             [sync]\ndb_map = { \"1\" = 0 }\n",
        )
        .unwrap();
        let c = Config::resolve(f, Overrides::default()).unwrap();
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.target.port, 2);
        assert_eq!(c.targets[0].name, "a");
        assert_eq!(c.targets[1].name, "127.0.0.1:3");
        assert_eq!(c.targets[1].reply_timeout.as_millis(), 500);
        assert_eq!(c.targets[1].fail_after, DEFAULT_FAIL_AFTER);
        let s0 = c.targets[0].sync_settings(&c.sync);
        assert_eq!(s0.target_db(2, false), Some(5));
        assert_eq!(
            s0.target_db(1, false),
            Some(1),
            "a target's db_map replaces the shared one"
        );
        assert_eq!(
            c.targets[1].sync_settings(&c.sync).target_db(1, false),
            Some(0)
        );
        // The single-table form still works.
        let one = FileConfig::parse("[target]\nurl = \"127.0.0.1:2\"\n").unwrap();
        let c = Config::resolve(
            one,
            Overrides {
                source: Some("127.0.0.1:1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.targets.len(), 1);
        // Repeated --target replaces the file's targets.
        let f = FileConfig::parse(
            "[[target]]\nurl = \"127.0.0.1:2\"\n[[target]]\nurl = \"127.0.0.1:3\"\n",
        )
        .unwrap();
        let c = Config::resolve(
            f,
            Overrides {
                source: Some("127.0.0.1:1".into()),
                target: Some("127.0.0.1:7".into()),
                more_targets: vec!["127.0.0.1:8".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let ports: Vec<u16> = c.targets.iter().map(|t| t.endpoint.port).collect();
        assert_eq!(ports, vec![7, 8]);
        // Two targets with one name, an unknown key in a table, target keys on the source.
        let dup = FileConfig::parse(
            "[[target]]\nname = \"x\"\nurl = \"h:2\"\n[[target]]\nname = \"x\"\nurl = \"h:3\"\n",
        )
        .unwrap();
        let e = Config::resolve(
            dup,
            Overrides {
                source: Some("h:1".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("named \"x\""), "{e}");
        let bad = FileConfig::parse("[[target]]\nurl = \"h:2\"\n[[target]]\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("number 2") && bad.contains("bogus"), "{bad}");
        let src =
            FileConfig::parse("[source]\nurl = \"h:1\"\nname = \"s\"\n[target]\nurl = \"h:2\"\n")
                .unwrap();
        assert!(Config::resolve(src, Overrides::default()).is_err());
    }
}
