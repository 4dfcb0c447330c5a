//! API suite, durability against the real binary: kill -9 while batches stream in, restart on the same data,
//! and every acknowledged batch is there, whole; retried batches are not stored twice.

mod common;

use common::TestServer;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn acknowledged_batches_survive_kill_9() {
    let mut s = TestServer::start();
    let run = s.new_run();
    let url = s.url(&format!("/api/v1/runs/{run}/batch"));
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    const PER_BATCH: u64 = 500;

    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let agent = common::agent();
            for b in 0u64.. {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let steps: Vec<u64> = (b * PER_BATCH..(b + 1) * PER_BATCH).collect();
                let values: Vec<f64> = steps.iter().map(|s| *s as f64 * 0.5).collect();
                let body = json!({"batch_id": format!("b{b}"), "scalars": [{"name": "m", "steps": steps, "values": values}]});
                match agent.post(&url).send_json(&body) {
                    Ok(resp) if resp.status() == 200 => acked.lock().unwrap().push(b),
                    _ => return, // the server died under us: this batch was not acknowledged
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    s.kill_9();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 3,
        "only {} batches acknowledged before the kill",
        acked.len()
    );

    s.restart();
    let (status, read) = s.get(&format!("/api/v1/runs/{run}/metrics/m"));
    assert_eq!(status, 200, "{read}");
    let steps: Vec<u64> = read["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let values = read["values"].as_array().unwrap();
    assert_eq!(steps.len(), values.len());
    // Batches are atomic: whole batches only, each step once.
    assert_eq!(
        steps.len() as u64 % PER_BATCH,
        0,
        "a batch was stored in part"
    );
    let mut sorted = steps.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), steps.len(), "points stored twice");
    for b in &acked {
        for step in [b * PER_BATCH, (b + 1) * PER_BATCH - 1] {
            assert!(
                sorted.binary_search(&step).is_ok(),
                "acknowledged batch {b} lost (step {step})"
            );
        }
    }

    // A client retrying its last acknowledged batch after the restart is told it is a duplicate.
    let last = acked.last().unwrap();
    let steps: Vec<u64> = (last * PER_BATCH..(last + 1) * PER_BATCH).collect();
    let values: Vec<f64> = steps.iter().map(|s| *s as f64 * 0.5).collect();
    let (status, ack) = s.post(
        &format!("/api/v1/runs/{run}/batch"),
        &json!({"batch_id": format!("b{last}"), "scalars": [{"name": "m", "steps": steps, "values": values}]}),
    );
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["duplicate"], true);
    let (_, again) = s.get(&format!("/api/v1/runs/{run}/metrics/m"));
    assert_eq!(
        again["steps"].as_array().unwrap().len(),
        read["steps"].as_array().unwrap().len()
    );

    // Everything else survives too.
    let (status, run_back) = s.get(&format!("/api/v1/runs/{run}"));
    assert_eq!(status, 200);
    assert_eq!(run_back["id"], run.as_str());
}
