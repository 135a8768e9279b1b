//! The `shardsync` command line: parses flags, loads the config, sets up logging, and runs the
//! chosen job inside an actix system. Exit codes: 0 done (stopped by a signal), 1 failed while
//! running, 2 bad configuration, 3 precheck failed, 4 no shard can make progress (every source
//! shard failed for good: see each shard's `last_error`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use shardsync::config::{Config, FileConfig, Overrides, Secret, TargetHasData};
use shardsync::net::tls::TlsOptions;

#[derive(Parser)]
#[command(
    name = "shardsync",
    version,
    about = "One-way, continuous Redis replication: full sync, then every write."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prechecks, then full sync followed by incremental sync until SIGINT/SIGTERM.
    Run(CommonArgs),
    /// Runs the prechecks only and prints a table (or JSON); exits non-zero if one fails.
    Check(CheckArgs),
    /// Writes the keys of an RDB file into the target (the file is validated first: a corrupt
    /// file writes nothing).
    LoadRdb(LoadRdbArgs),
    /// Shows the state of a running shardsync (its /status) as a table.
    Status(StatusArgs),
    /// Compares source and target key by key (before a cut-over); exit 0 equal, 1 different,
    /// 2 error.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Output format (JSON schema `shardsync.check/1`).
    #[arg(long, value_enum, default_value = "text")]
    format: VerifyFormat,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Compare a random sample of N keys per side (RANDOMKEY) instead of all keys.
    #[arg(long, value_name = "N")]
    sample: Option<u64>,
    /// Keys read per second over both passes (0: unlimited).
    #[arg(long, value_name = "KEYS_PER_SEC", default_value_t = 5000)]
    rate: u64,
    /// TTLs within this many milliseconds of each other are equal.
    #[arg(long, default_value_t = 2000)]
    ttl_tolerance_ms: u64,
    /// Wait this long, then compare differing keys once more (writes in flight); 0: report at once.
    #[arg(long, default_value_t = 2000)]
    recheck_ms: u64,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: VerifyFormat,
    /// List at most N differences (the counts stay exact).
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_report: usize,
    /// Skip keys starting with this prefix (repeatable); the heartbeat key is always skipped.
    #[arg(long, value_name = "PREFIX")]
    ignore_prefix: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum VerifyFormat {
    Text,
    Json,
}

/// `shardsync verify`: exit 0 equal, 1 different, 2 error.
fn verify(args: VerifyArgs) -> ExitCode {
    let cfg = match args.common.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardsync: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.log_level);
    let opts = shardsync::verify::VerifyOptions {
        sample: args.sample,
        rate: args.rate,
        ttl_tolerance_ms: args.ttl_tolerance_ms,
        recheck_ms: args.recheck_ms,
        max_report: args.max_report,
        ..Default::default()
    };
    let mut ignore: Vec<Vec<u8>> = args
        .ignore_prefix
        .into_iter()
        .map(String::into_bytes)
        .collect();
    if !cfg.sync.heartbeat_key.is_empty() {
        ignore.push(cfg.sync.heartbeat_key.clone().into_bytes());
    }
    // Exactly-once progress keys live only on the target.
    ignore.push(cfg.sync.progress_prefix.clone().into_bytes());
    let rt = match runtime(2) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    // Each target is checked under its own selection, filters and db map (one-to-many); with
    // several, each report names its target, and the worst result sets the exit code.
    let several = cfg.targets.len() > 1;
    let mut worst = 0u8;
    for spec in &cfg.targets {
        let mut one = cfg.clone();
        one.target = spec.endpoint.clone();
        one.sync = spec.sync_settings(&cfg.sync);
        let filter = shardsync::verify::SyncFilter {
            ignore: shardsync::verify::IgnorePrefixes(ignore.clone()),
            filter: one.sync.filter.clone(),
        };
        let code = match rt.block_on(shardsync::verify::run(&one, &opts, &filter)) {
            Ok(report) => {
                print_verify_report(&report, args.format, several.then_some(&spec.name));
                if report.is_equal() { 0 } else { 1 }
            }
            Err(e) if several => {
                eprintln!("shardsync: verify: target {}: {e}", spec.name);
                2
            }
            Err(e) => {
                eprintln!("shardsync: verify: {e}");
                2
            }
        };
        worst = worst.max(code);
    }
    ExitCode::from(worst)
}

/// Prints one verify report; `target` names it when the run has several targets (a heading in
/// text, a `target_name` field in JSON, one document per line).
fn print_verify_report(
    report: &shardsync::verify::Report,
    format: VerifyFormat,
    target: Option<&String>,
) {
    match (format, target) {
        (VerifyFormat::Text, None) => print!("{}", report.to_text()),
        (VerifyFormat::Text, Some(name)) => print!("== target {name}\n{}", report.to_text()),
        (VerifyFormat::Json, None) => println!("{}", report.to_json()),
        (VerifyFormat::Json, Some(name)) => {
            let mut doc: serde_json::Value =
                serde_json::from_str(&report.to_json()).unwrap_or_default();
            if let Some(o) = doc.as_object_mut() {
                o.insert("target_name".into(), name.clone().into());
            }
            println!("{doc}");
        }
    }
}

/// A single-threaded runtime for a command that is one request/response job; on failure the
/// error is printed and the command exits with `code`.
fn runtime(code: u8) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("shardsync: {e}");
            ExitCode::from(code)
        })
}

#[derive(Args)]
struct StatusArgs {
    /// The running shardsync's --metrics-addr.
    #[arg(long, default_value = "127.0.0.1:9108")]
    addr: String,
    /// Print the raw /status JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `shardsync status`: exit 0 when the run is healthy enough to answer, 1 when it reports
/// `failed`, 2 when it cannot be reached.
fn status(args: StatusArgs) -> ExitCode {
    let rt = match runtime(1) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let addr = args
        .addr
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let got = rt.block_on(shardsync::observe::http::get(
        &addr,
        "/status",
        std::time::Duration::from_secs(5),
    ));
    let body = match got {
        Ok((200, body)) => body,
        Ok((code, _)) => {
            eprintln!("shardsync: {addr}/status answered HTTP {code}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("shardsync: {e}");
            return ExitCode::from(2);
        }
    };
    let st: shardsync::observe::status::Status = match serde_json::from_str(&body) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shardsync: {addr}/status is not shardsync's status JSON: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        print!("{body}");
    } else {
        print!("{}", shardsync::observe::status::render_table(&st));
    }
    if st.state == shardsync::observe::status::OverallState::Failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(Args)]
struct LoadRdbArgs {
    /// The RDB file.
    #[arg(long)]
    file: PathBuf,
    /// Target: redis://[user:password@]host:port
    #[arg(long)]
    target: String,
    #[arg(long, env = "SHARDSYNC_TARGET_PASSWORD", hide_env_values = true)]
    target_password: Option<String>,
    #[arg(long, default_value = "info")]
    log_level: String,
    #[command(flatten)]
    target_tls: TargetTlsArgs,
    /// Do not verify the target's certificate.
    #[arg(long)]
    tls_insecure: bool,
}

fn load_rdb(args: LoadRdbArgs) -> ExitCode {
    let tls = args.target_tls.options();
    let parsed = shardsync::config::Endpoint::parse("--target", &args.target)
        .and_then(|t| t.with_tls("target", tls, args.tls_insecure));
    let mut target = match parsed {
        Ok(t) => t,
        Err(e) => {
            eprintln!("shardsync: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(p) = args.target_password {
        target.password = Some(Secret::new(p));
    }
    init_logging(&args.log_level);
    let sync = shardsync::config::SyncSettings::default();
    let result = actix_rt::System::new()
        .block_on(async move { shardsync::load_file::run(&args.file, &target, &sync).await });
    match result {
        Ok((stats, 0)) => {
            println!(
                "loaded {} keys ({} commands, {} bytes of RDB)",
                stats.keys, stats.commands, stats.bytes
            );
            if stats.convert_errors > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok((stats, rejected)) => {
            eprintln!(
                "shardsync: loaded {} keys but the target rejected {rejected} writes (see the log)",
                stats.keys
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("shardsync: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[derive(Args)]
struct CommonArgs {
    /// TOML config file (flags override its values).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Source: redis://[user:password@]host:port
    #[arg(long)]
    source: Option<String>,
    /// Target: redis://[user:password@]host:port. `run` takes it more than once: one source,
    /// several targets (one-to-many; the command-line targets replace the file's).
    #[arg(long)]
    target: Vec<String>,
    /// Directory for checkpoints.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// error, warn, info, debug, trace (or a tracing filter).
    #[arg(long)]
    log_level: Option<String>,
    /// Listen address for /metrics and /status (default 127.0.0.1:9108; "off" disables).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Name of the heartbeat key written into the source ("" disables the heartbeat).
    #[arg(long)]
    heartbeat_key: Option<String>,
    /// What to do when the target already has keys.
    #[arg(long, value_enum)]
    target_has_data: Option<TargetHasData>,
    /// On a repeated full sync: clear the shard's keys from the target first, or keep them
    /// (default: clear when the target was empty at start).
    #[arg(long, value_enum)]
    on_resync: Option<shardsync::config::OnResync>,
    /// Replicate each source shard from one of its replicas instead of its master.
    #[arg(long)]
    prefer_replica: bool,
    /// Database mapping SOURCE=TARGET, comma-separated (e.g. 3=0); needed for databases other
    /// than 0 going to a cluster target.
    #[arg(long)]
    db_map: Option<String>,
    /// Source databases to sync, comma-separated (e.g. 0,3); default all. Replaces sync.dbs.
    #[arg(long, value_name = "DBS")]
    dbs: Option<String>,
    /// Sync only keys starting with this prefix (repeatable; with --include-regex: either).
    #[arg(long, value_name = "PREFIX")]
    include_prefix: Vec<String>,
    /// Skip keys starting with this prefix (repeatable).
    #[arg(long, value_name = "PREFIX")]
    exclude_prefix: Vec<String>,
    /// Sync only keys matching this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    include_regex: Vec<String>,
    /// Skip keys matching this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    exclude_regex: Vec<String>,
    /// Never replicate this command (e.g. FLUSHALL, or "FUNCTION FLUSH"; repeatable).
    #[arg(long, value_name = "COMMAND")]
    deny_command: Vec<String>,
    /// Source password (overrides the URL and the file).
    #[arg(long, env = "SHARDSYNC_SOURCE_PASSWORD", hide_env_values = true)]
    source_password: Option<String>,
    /// Target password (overrides the URL and the file).
    #[arg(long, env = "SHARDSYNC_TARGET_PASSWORD", hide_env_values = true)]
    target_password: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// TLS options of `rediss://` sources and targets (override `[source.tls]` / `[target.tls]`).
#[derive(Args)]
struct TlsArgs {
    /// PEM file of the CA certificate(s) that signed the source's certificate (default: the
    /// system's CAs).
    #[arg(long, value_name = "PEM")]
    source_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for a source that checks clients (tls-auth-clients).
    #[arg(long, value_name = "PEM")]
    source_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --source-tls-cert-file.
    #[arg(long, value_name = "PEM")]
    source_tls_key_file: Option<PathBuf>,
    /// Name the source's certificates must be valid for (default: the URL's host).
    #[arg(long, value_name = "NAME")]
    source_tls_server_name: Option<String>,
    #[command(flatten)]
    target: TargetTlsArgs,
    /// Do not verify the certificates of rediss:// servers (encrypted but not authenticated).
    #[arg(long)]
    tls_insecure: bool,
}

/// TLS options of a `rediss://` target (`run`, `check`, `verify` and `load-rdb`).
#[derive(Args)]
struct TargetTlsArgs {
    /// PEM file of the CA certificate(s) that signed the target's certificate (default: the
    /// system's CAs).
    #[arg(long, value_name = "PEM")]
    target_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for a target that checks clients.
    #[arg(long, value_name = "PEM")]
    target_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --target-tls-cert-file.
    #[arg(long, value_name = "PEM")]
    target_tls_key_file: Option<PathBuf>,
    /// Name the target's certificates must be valid for (default: the URL's host).
    #[arg(long, value_name = "NAME")]
    target_tls_server_name: Option<String>,
}

impl TargetTlsArgs {
    fn options(&self) -> TlsOptions {
        TlsOptions {
            ca_file: self.target_tls_ca_file.clone(),
            cert_file: self.target_tls_cert_file.clone(),
            key_file: self.target_tls_key_file.clone(),
            server_name: self.target_tls_server_name.clone(),
            insecure: false,
        }
    }
}

impl CommonArgs {
    fn resolve(self) -> Result<Config, shardsync::config::ConfigError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Config::resolve(
            file,
            Overrides {
                source: self.source,
                target: self.target.first().cloned(),
                more_targets: self
                    .target
                    .get(1..)
                    .map(<[String]>::to_vec)
                    .unwrap_or_default(),
                state_dir: self.state_dir,
                log_level: self.log_level,
                metrics_addr: self.metrics_addr,
                heartbeat_key: self.heartbeat_key,
                target_has_data: self.target_has_data,
                source_password: self.source_password.map(Secret::new),
                target_password: self.target_password.map(Secret::new),
                db_map: self.db_map,
                on_resync: self.on_resync,
                prefer_replica: self.prefer_replica,
                dbs: self.dbs,
                filter: shardsync::router::filter::FilterSpec {
                    include_prefixes: self.include_prefix,
                    exclude_prefixes: self.exclude_prefix,
                    include_regex: self.include_regex,
                    exclude_regex: self.exclude_regex,
                    deny_commands: self.deny_command,
                },
                source_tls: TlsOptions {
                    ca_file: self.tls.source_tls_ca_file,
                    cert_file: self.tls.source_tls_cert_file,
                    key_file: self.tls.source_tls_key_file,
                    server_name: self.tls.source_tls_server_name,
                    insecure: false,
                },
                target_tls: self.tls.target.options(),
                tls_insecure: self.tls.tls_insecure,
            },
        )
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (args, check_only) = match cli.command {
        Command::Run(a) => (a, None),
        Command::Check(a) => (a.common, Some(a.format)),
        Command::LoadRdb(a) => return load_rdb(a),
        Command::Status(a) => return status(a),
        Command::Verify(a) => return verify(a),
    };
    let cfg = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardsync: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg.log_level);
    let system = actix_rt::System::new();
    let result = if let Some(format) = check_only {
        system.block_on(async move {
            // Every target (one-to-many), each with the source.
            let multi = cfg.targets.len() > 1;
            let mut passed = true;
            let mut json = Vec::new();
            for spec in &cfg.targets {
                let checks = match shardsync::outputs::precheck_target(&cfg, spec).await {
                    Ok(p) => {
                        passed &= p.passed();
                        p.checks
                    }
                    Err(checks) => {
                        passed = false;
                        checks
                    }
                };
                match format {
                    VerifyFormat::Text => {
                        if multi {
                            println!("target {}:", spec.name);
                        }
                        print!("{}", shardsync::precheck::render(&checks))
                    }
                    VerifyFormat::Json if multi => json.push(format!(
                        "{{\"target\":{},\"checks\":{}}}",
                        serde_json::Value::String(spec.name.clone()),
                        shardsync::precheck::render_json(&checks)
                    )),
                    VerifyFormat::Json => {
                        println!("{}", shardsync::precheck::render_json(&checks))
                    }
                }
            }
            if multi && matches!(format, VerifyFormat::Json) {
                println!("[{}]", json.join(","));
            }
            if passed { Ok(()) } else { Err(3) }
        })
    } else {
        system.block_on(async move {
            shardsync::app::run(cfg).await.map_err(|e| {
                tracing::error!("{e}");
                eprintln!("shardsync: {e}");
                e.exit_code()
            })
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => ExitCode::from(code),
    }
}
