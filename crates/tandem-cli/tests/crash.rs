//! Crash test: many concurrent clients keep sending batches while the server is killed with
//! SIGKILL at random moments, at least 20 times, and restarted. Clients retry failed requests with
//! the same messageIds, as SDKs do. Afterwards every event that was answered 200 must be in the log
//! exactly once, nothing else may be there, and `tandem log verify` must pass.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLIENTS: usize = 24;
const EVENTS_PER_BATCH: usize = 25;
const KILLS: usize = 22;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_across_kill_9() {
    let seed: u64 = std::env::var("TANDEM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("crash test seed {seed} (set TANDEM_CRASH_SEED to replay the kill schedule)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Small segments so kills also land around segment rolls.
    let mut server = TestServer::start("[log]\nsegment_bytes_max = 1048576\n");
    let base = server.url("");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for client_index in 0..CLIENTS {
        clients.push(tokio::spawn(client_loop(
            client_index,
            base.clone(),
            stop.clone(),
            acked.clone(),
            attempts.clone(),
        )));
    }
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..700))).await;
        server.kill9();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..100))).await;
        tokio::task::block_in_place(|| server.restart_after_kill());
        println!(
            "kill {} done, {} events acknowledged so far",
            kill + 1,
            acked.lock().unwrap().len()
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    server.stop();

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1000,
        "the test must drive real load (only {} acknowledged)",
        acked.len()
    );
    let exported = server.events();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for event in &exported {
        *counts
            .entry(event["messageId"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let acked_set: HashSet<&String> = acked.iter().collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .take(10)
        .collect();
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        repeated.is_empty(),
        "events stored more than once: {repeated:?}"
    );
    // Events stored but never acknowledged (the kill came between fsync and answer) are allowed:
    // their client retried them and got 200 from dedup, so they are in `acked` too.
    let unexpected = counts.keys().filter(|id| !acked_set.contains(id)).count();
    let verify = server.verify();
    assert!(
        verify.status.success(),
        "log verify failed: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    println!(
        "{} kills, {} requests, {} events acknowledged, {} stored, {} stored but unacknowledged (in flight at the end)",
        KILLS,
        attempts.load(Ordering::Relaxed),
        acked.len(),
        exported.len(),
        unexpected
    );
}

async fn client_loop(
    client_index: usize,
    base: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    attempts: Arc<AtomicU64>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let mut sequence = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let ids: Vec<String> = (0..EVENTS_PER_BATCH)
            .map(|_| {
                sequence += 1;
                format!("c{client_index}-{sequence}")
            })
            .collect();
        let batch: Vec<_> = ids
            .iter()
            .map(|id| json!({"type": "track", "userId": format!("user-{client_index}"), "event": "Crash Test", "messageId": id, "properties": {"pad": "x".repeat(300)}}))
            .collect();
        let body = json!({"batch": batch}).to_string();
        // Retry until acknowledged, as an SDK does: the outcome of every batch ends known.
        loop {
            attempts.fetch_add(1, Ordering::Relaxed);
            let result = client
                .post(format!("{base}/v1/batch"))
                .header("authorization", basic(WRITE_KEY))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(response) if response.status().as_u16() == 200 => {
                    acked.lock().unwrap().extend(ids.iter().cloned());
                    break;
                }
                Ok(response) if response.status().is_client_error() => {
                    panic!("client error {}", response.status())
                }
                _ => tokio::time::sleep(Duration::from_millis(30)).await,
            }
        }
    }
}
