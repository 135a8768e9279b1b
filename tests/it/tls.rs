//! TLS (`rediss://`) end to end on real Redis 7.0 servers (Debian's build has TLS; the Valkey 9.1
//! wheel and the 6.x wheels here are built without it) with certificates generated in the test
//! (`common::tls`): standalone → standalone (full sync, incremental, `verify`); cluster →
//! cluster with `tls-cluster yes` and mutual TLS on both sides; the precheck's messages for an
//! unknown CA, a wrong server name, a missing client certificate and a port without TLS; the
//! config file's `[source.tls]` and `--tls-insecure`.
//!
//! shardsync gets only the TLS ports; the harness reads and writes through the plain ports.

use crate::common;
use crate::common::util::now_ms;

use std::time::Duration;

use common::cluster::{RedisCluster, compare_sources};
use common::compare::{CompareOptions, assert_no_differences};
use common::run::{
    HEARTBEAT, SyncRun, assert_heartbeat_gone, pair_to_exit, run_to_exit, stop, wait_caught_up,
};
use common::server::pick_free_port;
use common::tls::{TestPki, TlsServer, tls_url};
use common::*;

/// Standalone → standalone over TLS, the CA given by flag, a source password: full sync of the
/// typed dataset, a live workload, a key repair (read from the source over TLS), key-by-key
/// comparison; then `shardsync verify` over TLS agrees, and a stop removes the heartbeat key on
/// both sides (heartbeat and its removal also went over TLS).
#[test]
fn standalone_full_and_incremental_over_tls() {
    let kind = ServerKind::Redis70;
    let pki = TestPki::new();
    let src = TlsServer::start(kind, &pki, false, &["--requirepass", "tls+pw@x"]);
    let dst = TlsServer::start(kind, &pki, false, &[]);
    let mut sc = src.server.client();
    let mut dc = dst.server.client();
    let dataset = DatasetOptions::small();
    let summary = populate_typed_dataset(&mut sc, kind, &dataset);
    assert!(summary.total_keys() > 20, "dataset too small: {summary:?}");

    let (su, du, ca) = (src.url(), dst.url(), pki.arg("ca.pem"));
    let sync = SyncRun::new(None);
    let tls = ["--source-tls-ca-file", &ca, "--target-tls-ca-file", &ca];
    let mut ss = sync.start(&[&["--source", &su, "--target", &du][..], &tls].concat(), 1);

    // A key the target holds with another type: the source's APPEND is refused there, and the
    // key is repaired by copying it from the source (a TLS connection of its own).
    let _: () = redis::cmd("SET")
        .arg("tls:repair")
        .arg("a")
        .query(&mut sc)
        .expect("SET");
    assert!(
        wait_until(Duration::from_secs(20), || redis::cmd("EXISTS")
            .arg("tls:repair")
            .query::<i64>(&mut dc)
            .is_ok_and(|n| n == 1)),
        "tls:repair never reached the target:\n{}",
        ss.log_tail(30)
    );
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg("tls:repair")
        .cmd("SADD")
        .arg("tls:repair")
        .arg("m")
        .query(&mut dc)
        .expect("diverge the target");
    let _: () = redis::cmd("APPEND")
        .arg("tls:repair")
        .arg("b")
        .query(&mut sc)
        .expect("APPEND");
    let wopts = WorkloadOptions {
        volume: 1000,
        ..Default::default()
    };
    run_workload(&mut sc, kind, &wopts);
    let after = now_ms();
    wait_caught_up(&mut dc, after, &ss, "the target");
    let dbs = wopts.dbs_with(&dataset.dbs);
    let opts = CompareOptions {
        compare_functions: true,
        ..Default::default()
    };
    let diffs = common::compare::compare_servers_with(
        &mut sc,
        &mut dc,
        &dbs,
        &[HEARTBEAT.as_bytes()],
        &opts,
    );
    assert_no_differences(&diffs);
    assert!(
        ss.log().contains("repairing the key"),
        "no key repair logged:\n{}",
        ss.log_tail(40)
    );

    let (status, out) = Shardsync::run_to_exit(
        &[
            "verify",
            "--source",
            &su,
            "--target",
            &du,
            "--source-tls-ca-file",
            &ca,
            "--target-tls-ca-file",
            &ca,
            "--rate",
            "0",
            "--recheck-ms",
            "500",
        ],
        Duration::from_secs(60),
    );
    assert!(status.success(), "verify over TLS: {status:?}\n{out}");

    stop(&mut ss);
    assert_heartbeat_gone(&mut sc, "source");
    assert_heartbeat_gone(&mut dc, "target");
}

/// Starts a 3-master cluster with TLS on every node (`tls-cluster yes`: the bus is TLS and TLS
/// clients are told the TLS ports), requiring client certificates. Returns the cluster and the
/// TLS port of each node (the seed's first).
fn tls_cluster(pki: &TestPki) -> (RedisCluster, Vec<u16>) {
    let mut ports = Vec::new();
    let cluster = RedisCluster::start_with_node_args(
        ServerKind::Redis70,
        3,
        0,
        &["--tls-cluster", "yes", "--tls-replication", "yes"],
        |_| {
            // The bus listens on the TLS port + 10000 with tls-cluster.
            let port = pick_free_port(true);
            ports.push(port);
            pki.server_args(port, true)
        },
    );
    // The seed: the TLS port of the node whose plain port is the first master's.
    let first = cluster.masters()[0].port();
    let idx = cluster
        .nodes()
        .iter()
        .position(|n| n.port() == first)
        .expect("first master among the nodes");
    ports.swap(0, idx);
    (cluster, ports)
}

/// Cluster → cluster, both with `tls-cluster yes` and mutual TLS: every link (one PSYNC per
/// source master, found through CLUSTER NODES on the TLS port), every writer and helper uses the
/// CA and the client certificate. The certificate names only `localhost` while the nodes announce
/// `127.0.0.1`: they are verified against the seed's name (`rediss://localhost:…` for the source,
/// `--target-tls-server-name localhost` for the target reached by IP).
#[test]
fn tls_cluster_to_tls_cluster_with_client_certificates() {
    let pki = TestPki::with_server_names(&["localhost"]);
    let (src, src_tls) = tls_cluster(&pki);
    let (dst, dst_tls) = tls_cluster(&pki);
    let (src_tls, dst_tls) = (src_tls, dst_tls[0]);
    let tags = crate::e2e_cluster::populate_cluster(&src);
    let su = format!("rediss://localhost:{}", src_tls[0]);
    let du = tls_url(None, dst_tls);
    let (ca, cert, key) = (
        pki.arg("ca.pem"),
        pki.arg("client.pem"),
        pki.arg("client.key"),
    );
    let sync = SyncRun::new(None);
    let mut ss = sync.start(
        &[
            "--source",
            &su,
            "--target",
            &du,
            "--source-tls-ca-file",
            &ca,
            "--source-tls-cert-file",
            &cert,
            "--source-tls-key-file",
            &key,
            "--target-tls-ca-file",
            &ca,
            "--target-tls-cert-file",
            &cert,
            "--target-tls-key-file",
            &key,
            "--target-tls-server-name",
            "localhost",
        ],
        3,
    );
    crate::e2e_cluster::workload_cluster(&src, &tags);
    let after = now_ms();
    let (mut sr, mut dr) = (src.reader(), dst.reader());
    crate::e2e_cluster::wait_heartbeats(&mut sr, &mut dr, after, &ss);
    let opts = CompareOptions {
        compare_functions: false,
        ..Default::default()
    };
    assert_no_differences(&compare_sources(
        &mut sr,
        &mut dr,
        &[b"shardsync:heartbeat*"],
        &opts,
    ));
    let log = ss.log();
    assert_eq!(
        log.matches("full sync started").count(),
        3,
        "one full sync per source master:\n{log}"
    );
    // Each link went to a master's TLS port as the cluster announced it over TLS.
    let started: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("full sync started"))
        .collect();
    for port in &src_tls {
        let addr = format!("127.0.0.1:{port}");
        assert!(
            started.iter().any(|l| l.contains(&addr)),
            "no link to the TLS port {addr}:\n{log}"
        );
    }
    stop(&mut ss);
}

/// `shardsync check` against `source` (a TLS server) into a plain target; returns exit code and
/// output.
fn check(source: &str, target: &str, extra: &[&str]) -> (i32, String) {
    pair_to_exit("check", source, target, extra)
}

/// [`check`] with `args` (`client`'s added) must exit `code` with a `source TLS` row of status
/// `row` (`ok`, `WARN`, `FAIL`) that contains every one of `needles`; `what` names the case.
fn expect_tls_row(
    (source, target): (&str, &str),
    (args, client): (&[&str], &[&str]),
    (code, row): (i32, &str),
    needles: &[&str],
    what: &str,
) {
    let all = [args, client].concat();
    let (got, out) = check(source, target, &all);
    assert_eq!(got, code, "{what}:\n{out}");
    assert!(
        out.lines().any(|l| l.starts_with(row)
            && l.contains("source TLS")
            && needles.iter().all(|n| l.contains(n))),
        "{what}:\n{out}"
    );
}

/// The precheck's TLS row: passes with the right settings and names the fix for an unknown CA, a
/// wrong server name, a missing client certificate, and a port without TLS. The config file's
/// `[source.tls]` works like the flags; `--tls-insecure` passes with a warning.
#[test]
fn precheck_tls_messages_say_what_to_do() {
    let kind = ServerKind::Redis70;
    let pki = TestPki::new();
    let mtls = TlsServer::start(kind, &pki, true, &[]);
    let dst = RedisServer::start(kind);
    let (su, du) = (mtls.url(), dst.url());
    let (ca, other_ca, cert, key) = (
        pki.arg("ca.pem"),
        pki.arg("other-ca.pem"),
        pki.arg("client.pem"),
        pki.arg("client.key"),
    );
    let client = [
        "--source-tls-cert-file",
        cert.as_str(),
        "--source-tls-key-file",
        key.as_str(),
    ];
    let pair = (su.as_str(), du.as_str());
    let with_ca = ["--source-tls-ca-file", ca.as_str()];

    expect_tls_row(
        pair,
        (&with_ca, &client),
        (0, "ok"),
        &[
            "certificate valid for \"127.0.0.1\"",
            "client certificate sent",
        ],
        "right CA and client certificate: a passing row that says what was verified",
    );
    expect_tls_row(
        pair,
        (&["--source-tls-ca-file", other_ca.as_str()], &client),
        (3, "FAIL"),
        &[
            "not signed by a CA shardsync trusts",
            "--source-tls-ca-file",
        ],
        "a CA that did not sign the server's certificate",
    );
    let wrong_name = [&with_ca[..], &["--source-tls-server-name", "wrong.example"]].concat();
    expect_tls_row(
        pair,
        (&wrong_name, &client),
        (3, "FAIL"),
        &[
            "not valid for the name \"wrong.example\"",
            "--source-tls-server-name",
        ],
        "a name the certificate does not list",
    );
    expect_tls_row(
        pair,
        (&with_ca, &[]),
        (3, "FAIL"),
        &["--source-tls-cert-file"],
        "no client certificate for a server that requires one",
    );
    let plain_as_tls = tls_url(None, dst.port());
    expect_tls_row(
        (&plain_as_tls, &du),
        (&with_ca, &[]),
        (3, "FAIL"),
        &["tls-port", "use redis://"],
        "rediss:// to a port without TLS",
    );

    // The config file's [source.tls], and --tls-insecure with an untrusted CA: a warning.
    let config = format!(
        "[source]\nurl = \"{su}\"\n[source.tls]\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n[target]\nurl = \"{du}\"\n"
    );
    let conf = SyncRun::new(Some(&config));
    let conf_path = conf
        .config
        .as_deref()
        .and_then(|p| p.to_str())
        .expect("utf-8 path");
    let (code, out) = run_to_exit(&["check", "--config", conf_path, "--metrics-addr", "off"]);
    assert_eq!(code, 0, "config file [source.tls]:\n{out}");
    expect_tls_row(
        pair,
        (
            &["--source-tls-ca-file", other_ca.as_str(), "--tls-insecure"],
            &client,
        ),
        (0, "WARN"),
        &["NOT verified"],
        "--tls-insecure",
    );

    // TLS options on a redis:// URL: a configuration error (exit 2) that says to use rediss://.
    let (code, out) = check(&du, &du, &with_ca);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("rediss://"), "{out}");
    // A CA file that does not exist, and a certificate without its key: named, exit 2.
    let (code, out) = check(&su, &du, &["--source-tls-ca-file", "/nonexistent/ca.pem"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("source.tls.ca_file /nonexistent/ca.pem"),
        "{out}"
    );
    let (code, out) = check(&su, &du, &["--target-tls-cert-file", cert.as_str()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("rediss://"), "target is redis://: {out}");
    let (code, out) = check(&su, &su, &["--target-tls-cert-file", cert.as_str()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--target-tls-key-file"), "{out}");
}

/// `load-rdb` into a TLS target: the server's own dump (`SAVE`) of the typed dataset is loaded
/// over TLS and compared key by key with the server that wrote it.
#[test]
fn load_rdb_into_tls_target() {
    let kind = ServerKind::Redis70;
    let pki = TestPki::new();
    let src = RedisServer::start(kind);
    let dst = TlsServer::start(kind, &pki, false, &[]);
    let mut sc = src.client();
    let dataset = DatasetOptions::small();
    populate_typed_dataset(&mut sc, kind, &dataset);
    let _: () = redis::cmd("SAVE").query(&mut sc).expect("SAVE");
    let file = src.dir().join("dump.rdb");
    let (du, ca) = (dst.url(), pki.arg("ca.pem"));
    let (status, out) = Shardsync::run_to_exit(
        &[
            "load-rdb",
            "--file",
            file.to_str().expect("utf-8 path"),
            "--target",
            &du,
            "--target-tls-ca-file",
            &ca,
        ],
        Duration::from_secs(60),
    );
    assert!(status.success(), "load-rdb over TLS: {status:?}\n{out}");
    let opts = CompareOptions {
        compare_functions: true,
        ..Default::default()
    };
    let diffs = common::compare::compare_servers_with(
        &mut sc,
        &mut dst.server.client(),
        &dataset.dbs,
        &[],
        &opts,
    );
    assert_no_differences(&diffs);
}

/// A TLS source with a native replica that replicates over TLS (`tls-replication yes`, so it
/// announces its TLS port): `--prefer-replica` reaches that replica over TLS, syncs fully and
/// incrementally, and the target equals the source key by key.
#[test]
fn prefer_replica_on_a_tls_source() {
    let kind = ServerKind::Redis70;
    let pki = TestPki::new();
    let src = TlsServer::start(kind, &pki, false, &[]);
    let replica = TlsServer::start(kind, &pki, false, &["--tls-replication", "yes"]);
    let dst = TlsServer::start(kind, &pki, false, &[]);
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(src.tls_port)
        .query(&mut replica.server.client())
        .expect("REPLICAOF over TLS");
    replica
        .server
        .wait_replica_synced(&src.server, Duration::from_secs(30));
    let mut sc = src.server.client();
    let mut dc = dst.server.client();
    let dataset = DatasetOptions::small();
    populate_typed_dataset(&mut sc, kind, &dataset);

    let (su, du, ca) = (src.url(), dst.url(), pki.arg("ca.pem"));
    let sync = SyncRun::new(None);
    let tls = ["--source-tls-ca-file", &ca, "--target-tls-ca-file", &ca];
    let args = [
        &["--source", &su, "--target", &du, "--prefer-replica"][..],
        &tls,
    ]
    .concat();
    let mut ss = sync.start(&args, 1);
    let chosen = format!("replica=127.0.0.1:{}", replica.tls_port);
    assert!(
        ss.log()
            .lines()
            .any(|l| l.contains("replicating from a replica") && l.contains(&chosen)),
        "the replica's TLS port was not used:\n{}",
        ss.log_tail(30)
    );
    let wopts = WorkloadOptions {
        volume: 500,
        ..Default::default()
    };
    run_workload(&mut sc, kind, &wopts);
    let after = now_ms();
    wait_caught_up(&mut dc, after, &ss, "the target");
    let dbs = wopts.dbs_with(&dataset.dbs);
    let diffs = common::compare::compare_servers_with(
        &mut sc,
        &mut dc,
        &dbs,
        &[HEARTBEAT.as_bytes()],
        &CompareOptions::default(),
    );
    assert_no_differences(&diffs);
    stop(&mut ss);
}
