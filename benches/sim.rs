//! Simulator throughput (`cargo bench --bench sim`): the simulator must never be the bottleneck
//! of a benchmark — thousands of requests per second on one core with no injected latency.
//!
//! The simulator runs alone on a single-threaded runtime (one core); the client — the real
//! `GoogleClient` with tokens from the simulator's key file through gcp_auth — runs on another
//! runtime with 64 requests in flight, reading IAM policies of a generated estate. It prints the
//! requests served per second and the ratio to a 2,000 requests/s target (ratio ≥ 1 is good).

use std::sync::Arc;
use std::time::{Duration, Instant};

use runwarden::google::{GcpAuth, GoogleClient, GoogleConfig};
use runwarden::live::ServiceId;
use runwarden::sim::{SimHandle, World};

const TARGET_PER_SECOND: f64 = 2000.0;
const REQUESTS: usize = 20_000;

fn main() {
    let world = World::from_yaml(
        "generate:\n  seed: 3\n  projects: 1\n  regions: [europe-west1]\n  servicesPerRegion: 500\n  users: 100\n  roles: 2\n  usersPerRole: 10\n",
        std::path::Path::new("bench-world.yaml"),
    )
    .expect("world");
    let handle = SimHandle::new(&world).expect("simulator");
    let ids: Vec<ServiceId> = handle.service_ids();

    // The simulator, on one core.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server_handle = handle.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            runwarden::sim::serve(listener, server_handle, std::future::pending()).await.unwrap();
        });
    });
    let addr = addr_rx.recv().unwrap();
    let base = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.json");
    std::fs::write(&key, handle.key_file_json(&base)).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (served, elapsed) = rt.block_on(async move {
        let http = runwarden::endpoints::http_client(runwarden::endpoints::HttpTimeouts::default()).unwrap();
        let endpoints = runwarden::endpoints::Endpoints::single(runwarden::endpoints::parse_base_url(&base).unwrap());
        let config = GoogleConfig { concurrency: 64, cloud_run_read_rate: runwarden::retry::Pace::Off, ..GoogleConfig::default() };
        let google = GoogleClient::new(http, Arc::new(GcpAuth::from_key_file(&key).unwrap()), endpoints, config);
        google.get_iam_policy(&ids[0]).await.expect("warm-up call");
        let ids = Arc::new(ids);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let (google, ids, next) = (google.clone(), ids.clone(), next.clone());
            tasks.spawn(async move {
                let mut n = 0;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= REQUESTS {
                        return n;
                    }
                    google.get_iam_policy(&ids[i % ids.len()]).await.expect("getIamPolicy");
                    n += 1;
                }
            });
        }
        let mut served = 0;
        while let Some(n) = tasks.join_next().await {
            served += n.unwrap();
        }
        (served, start.elapsed())
    });
    let per_second = served as f64 / elapsed.max(Duration::from_millis(1)).as_secs_f64();
    println!("simulator throughput (server on one core, no injected latency)");
    println!("  requests: {served}, wall: {:.2} s", elapsed.as_secs_f64());
    println!("  requests/s: {per_second:.0}, target: {TARGET_PER_SECOND:.0}, ratio: {:.2} (≥ 1 is good)", per_second / TARGET_PER_SECOND);
}
