//! Events per second through a transformation, beside the JSON work alone.
//!
//! `cargo run --release -p tandem-transform --example throughput [events]`
//!
//! Prints, for the same Segment-shaped track events (~0.9 KB each):
//! - serde_json serialise + parse of each event: the JSON round trip every run also does;
//! - an identity transformation, then a realistic one (rename, compute, filter, enrich), on one
//!   thread, then on every core sharing one `Transformer`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_transform::{TransformContext, TransformLimits, Transformer};

const IDENTITY: &str = "function transform(event) { return event; }";

const REALISTIC: &str = r#"
const INTERNAL_DOMAINS = ["example.com", "test.example.com"];
function transform(event, context) {
  if (event.event === "Debug Ping") return null;
  const email = event.context && event.context.traits && event.context.traits.email;
  if (email && INTERNAL_DOMAINS.includes(email.split("@")[1])) return null;
  const props = event.properties || {};
  props.revenue = Math.round(props.total * 100) / 100;
  delete props.total;
  props.item_count = (props.products || []).length;
  props.skus = (props.products || []).map((p) => p.sku).join(",");
  event.event = event.event.toLowerCase().replace(/\s+/g, "_");
  event.context.destination = context.destinationType;
  event.properties = props;
  return event;
}
"#;

fn sample_events(count: usize) -> Vec<Value> {
    (0..count)
        .map(|index| {
            json!({
                "type": "track",
                "event": if index % 50 == 0 { "Debug Ping" } else { "Order Completed" },
                "messageId": format!("msg-{index:08}"),
                "userId": format!("user-{}", index % 1000),
                "anonymousId": "6f2b1c7e-8a9d-4e3f-b1c2-d3e4f5a6b7c8",
                "timestamp": "2024-05-01T12:34:56.789Z",
                "receivedAt": "2024-05-01T12:34:57.001Z",
                "properties": {
                    "order_id": format!("order-{index}"),
                    "total": 129.99 + index as f64,
                    "currency": "EUR",
                    "coupon": "SPRING24",
                    "products": [
                        {"sku": "SKU-1", "name": "Trail shoes", "price": 89.99, "quantity": 1},
                        {"sku": "SKU-2", "name": "Socks (3 pack)", "price": 20.00, "quantity": 2},
                    ],
                },
                "context": {
                    "ip": "203.0.113.7",
                    "locale": "de-DE",
                    "library": {"name": "analytics.js", "version": "2.11.0"},
                    "page": {"path": "/checkout", "url": "https://shop.example.org/checkout"},
                    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
                    "traits": {"email": format!("user{}@{}", index % 1000, if index % 10 == 0 { "example.com" } else { "mail.example.net" })},
                },
            })
        })
        .collect()
}

/// Wall time and the process's CPU time (so a busy shared machine shows as wall > CPU).
#[derive(Clone, Copy)]
struct Spent {
    wall: Duration,
    cpu: Duration,
}

fn process_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn measure(work: impl FnOnce()) -> Spent {
    let (wall, cpu) = (Instant::now(), process_cpu());
    work();
    Spent {
        wall: wall.elapsed(),
        cpu: process_cpu() - cpu,
    }
}

fn rate(events: usize, spent: Spent) -> String {
    let per_second = events as f64 / spent.wall.as_secs_f64();
    format!(
        "{:>9.0} events/s  ({:>6.2} µs wall, {:>6.2} µs CPU per event)",
        per_second,
        spent.wall.as_secs_f64() * 1e6 / events as f64,
        spent.cpu.as_secs_f64() * 1e6 / events as f64,
    )
}

fn serde_round_trip(events: &[Value]) -> Spent {
    measure(|| {
        for event in events {
            let text = serde_json::to_string(event).unwrap();
            let parsed: Value = serde_json::from_str(&text).unwrap();
            black_box(serde_json::to_string(&parsed).unwrap());
        }
    })
}

fn one_thread(transformer: &Transformer, events: &[Value], context: &TransformContext) -> Spent {
    measure(|| {
        for event in events {
            black_box(transformer.run(event, context).unwrap());
        }
    })
}

fn all_threads(
    transformer: &Arc<Transformer>,
    events: &Arc<Vec<Value>>,
    context: &TransformContext,
    threads: usize,
) -> Spent {
    measure(|| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let transformer = Arc::clone(transformer);
                let events = Arc::clone(events);
                let context = context.clone();
                std::thread::spawn(move || {
                    for event in events.iter().skip(thread).step_by(threads) {
                        black_box(transformer.run(event, &context).unwrap());
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    })
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(100_000);
    let events = Arc::new(sample_events(count));
    let bytes: usize = events
        .iter()
        .map(|event| serde_json::to_string(event).unwrap().len())
        .sum();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let context = TransformContext {
        workspace_id: "acme".to_string(),
        source_id: Some("web".to_string()),
        connection_id: Some("web-to-crm".to_string()),
        destination_type: Some("webhook".to_string()),
    };
    println!(
        "{count} events, {} bytes each on average, {threads} cores",
        bytes / count
    );

    // Warm up allocator and caches.
    serde_round_trip(&events[..count.min(1000)]);
    println!(
        "serde_json serialise + parse + serialise   {}",
        rate(count, serde_round_trip(&events))
    );
    for (name, code) in [("identity", IDENTITY), ("realistic", REALISTIC)] {
        let transformer = Arc::new(Transformer::compile(code, TransformLimits::default()).unwrap());
        one_thread(&transformer, &events[..count.min(1000)], &context);
        println!(
            "{name:<9} transformation, 1 thread      {}",
            rate(count, one_thread(&transformer, &events, &context))
        );
        println!(
            "{name:<9} transformation, {threads} threads     {}",
            rate(count, all_threads(&transformer, &events, &context, threads))
        );
    }
}
