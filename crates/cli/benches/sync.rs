//! Two agents on loopback against bare quinn, measured in the same run on this machine.
//!
//! 1. Bare quinn, as fast as it goes here: one process sends N bytes from memory on one QUIC
//!    stream to another process, which reads them all (no disk), with AES-128-GCM, flow-control
//!    windows far above the bandwidth-delay product, and two path MTUs: an Ethernet LAN's
//!    (quinn's default ceiling, 1452 bytes of UDP payload) and loopback's (up to 65 527). The
//!    wall time from the sender's start to the receiver's end; the faster is the reference.
//! 2. Two agents: device A backs up a generated incompressible set (default 2 GiB), pairs
//!    device B, and `triad sync` pushes every blob to B's agent, which verifies each, writes
//!    it to its store and acknowledges it after fsync. The wall time of `triad sync`, and the
//!    receiving agent's peak RSS (VmHWM, sampled until the sync ends).
//!
//! `cargo bench -p triad-cli --bench sync`; `TRIAD_BENCH_GIB=N` changes the size.
#![allow(missing_docs)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Agent, agent, manual, noise, ok, pair};

const ROLE: &str = "TRIAD_SYNC_BENCH_ROLE";
const CHUNK: usize = 1 << 20;

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("server") => return quinn_server(),
        Ok("client") => return quinn_client(),
        _ => {}
    }
    let gib: u64 = common::env_number("TRIAD_BENCH_GIB", 2);
    let total = gib << 30;
    let base = std::env::var_os("TRIAD_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let tmp = tempfile::Builder::new().prefix("triad-sync-bench-").tempdir_in(base).expect("tmp");

    let ethernet = bare_quinn(tmp.path(), total, 1452);
    println!(
        "quinn      {total} bytes on one stream between two processes, MTU 1452: {ethernet:.0} MB/s"
    );
    let jumbo = bare_quinn(tmp.path(), total, 65_527);
    println!("quinn      the same, loopback MTU up to 65527: {jumbo:.0} MB/s");
    let quinn = ethernet.max(jumbo);

    let (bytes, elapsed, rss) = agents(tmp.path(), total);
    let agents = mb_per_s(bytes, elapsed);
    println!(
        "agents     {bytes} bytes of blobs, A -> B, durable and acknowledged: {:.1} s, {agents:.0} MB/s = {:.0} % of bare quinn; receiver peak RSS {} MiB",
        elapsed.as_secs_f64(),
        100.0 * agents / quinn,
        rss / 1024
    );
}

// ---- Bare quinn -----------------------------------------------------------------------------

fn bare_quinn(dir: &Path, total: u64, mtu: u16) -> f64 {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    fs::write(dir.join("cert.der"), cert.cert.der()).expect("write cert");
    fs::write(dir.join("key.der"), cert.key_pair.serialize_der()).expect("write key");
    let exe = std::env::current_exe().expect("exe");
    let mut server = Command::new(&exe)
        .env(ROLE, "server")
        .env("BENCH_DIR", dir)
        .env("BENCH_MTU", mtu.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("server");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let port = lines.next().expect("port line").expect("read");
    let start = Instant::now();
    let mut client = Command::new(&exe)
        .env(ROLE, "client")
        .env("BENCH_DIR", dir)
        .env("BENCH_MTU", mtu.to_string())
        .env("BENCH_PORT", &port)
        .env("BENCH_BYTES", total.to_string())
        .spawn()
        .expect("client");
    let received: u64 = lines.next().expect("count line").expect("read").parse().expect("count");
    let elapsed = start.elapsed();
    assert!(server.wait().expect("server").success());
    assert!(client.wait().expect("client").success());
    assert_eq!(received, total, "the server read everything");
    mb_per_s(total, elapsed)
}

/// Flow-control windows far above loopback's bandwidth-delay product, and the path MTU the
/// bench gives (`BENCH_MTU`).
fn transport() -> Arc<quinn::TransportConfig> {
    let mtu: u16 = std::env::var("BENCH_MTU").ok().and_then(|m| m.parse().ok()).unwrap_or(1452);
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(64 << 20))
        .receive_window(quinn::VarInt::from_u32(128 << 20))
        .send_window(128 << 20);
    let mut discovery = quinn::MtuDiscoveryConfig::default();
    discovery.upper_bound(mtu);
    t.mtu_discovery_config(Some(discovery));
    Arc::new(t)
}

/// TLS 1.3 with AES-128-GCM only (the CPU's AES instructions), on aws-lc-rs.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites =
        vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    Arc::new(provider)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

fn quinn_server() {
    let dir = PathBuf::from(std::env::var("BENCH_DIR").expect("dir"));
    let cert =
        rustls::pki_types::CertificateDer::from(fs::read(dir.join("cert.der")).expect("cert"));
    let key =
        rustls::pki_types::PrivateKeyDer::Pkcs8(fs::read(dir.join("key.der")).expect("key").into());
    rt().block_on(async {
        let tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server TLS");
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("QUIC TLS");
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport());
        let endpoint =
            quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("addr")).expect("bind");
        println!("{}", endpoint.local_addr().expect("addr").port());
        std::io::stdout().flush().expect("flush");
        let conn = endpoint.accept().await.expect("incoming").await.expect("connection");
        let mut recv = conn.accept_uni().await.expect("stream");
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        while let Some(n) = recv.read(&mut buf).await.expect("read") {
            total += n as u64;
        }
        println!("{total}");
        std::io::stdout().flush().expect("flush");
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
    });
}

fn quinn_client() {
    let dir = PathBuf::from(std::env::var("BENCH_DIR").expect("dir"));
    let port: u16 = std::env::var("BENCH_PORT").expect("port").parse().expect("port");
    let total: u64 = std::env::var("BENCH_BYTES").expect("bytes").parse().expect("bytes");
    let cert =
        rustls::pki_types::CertificateDer::from(fs::read(dir.join("cert.der")).expect("cert"));
    rt().block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("root");
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport());
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("bind");
        endpoint.set_default_client_config(config);
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        let conn = endpoint.connect(addr, "localhost").expect("connect").await.expect("connection");
        let mut send = conn.open_uni().await.expect("stream");
        let block = noise(CHUNK, 7);
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(CHUNK as u64) as usize;
            send.write_all(&block[..n]).await.expect("write");
            sent += n as u64;
        }
        send.finish().expect("finish");
        conn.closed().await;
    });
}

// ---- Two agents -----------------------------------------------------------------------------

fn start(home: &Path) -> Agent {
    manual(home);
    agent(home)
}

fn vm_hwm_kib(pid: u32) -> u64 {
    common::status_kib(pid, "VmHWM:")
}

/// Returns the bytes pushed, the wall time of the sync and the receiver's peak RSS in KiB.
fn agents(dir: &Path, total: u64) -> (u64, Duration, u64) {
    let a = dir.join("a");
    let b = dir.join("b");
    let folder = dir.join("shoot");
    fs::create_dir_all(&folder).expect("mkdir");
    let mut written = 0u64;
    let mut i = 0u64;
    while written < total {
        let len = (24 << 20) + (i % 3) * (1 << 20);
        fs::write(folder.join(format!("IMG_{i:05}.CR3")), noise(len as usize, i)).expect("write");
        written += len;
        i += 1;
    }
    ok(&a, &["init", "--name", "laptop", "--site", "home", "--json"]);
    ok(&a, &["store", "add", dir.join("store-a").to_str().expect("utf-8"), "--media", "ssd"]);
    ok(&a, &["folder", "add", folder.to_str().expect("utf-8")]);
    ok(&a, &["backup"]);
    fs::remove_dir_all(&folder).expect("rm set");
    let a_agent = start(&a);

    pair(&a, &b, "nas", "studio");
    ok(&b, &["store", "add", dir.join("store-b").to_str().expect("utf-8"), "--media", "raid"]);
    let b_agent = start(&b);
    ok(&a, &["devices", "addr", "nas", &b_agent.addr]);

    let start = Instant::now();
    let mut sync = Command::new(env!("CARGO_BIN_EXE_triad"))
        .args(["sync", "nas", "--timeout", "1h", "--json"])
        .env("TRIAD_HOME", &a)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sync");
    let mut peak = 0;
    let status = loop {
        peak = peak.max(vm_hwm_kib(b_agent.child.id()));
        if let Some(status) = sync.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    assert!(status.success(), "sync failed");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut sync.stdout.take().expect("stdout"), &mut out)
        .expect("read");
    let done: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("a line")).expect("json");
    drop(a_agent);
    (done["bytes_sent"].as_u64().expect("bytes"), elapsed, peak.max(vm_hwm_kib(b_agent.child.id())))
}
