//! Realistic Segment events, deterministic from a seeded RNG, for the load generator and for
//! tests elsewhere in tandem.
//!
//! The shape follows what analytics.js and the server libraries really send: `context.library`,
//! `context.page`, `context.userAgent`, `context.ip`, `integrations`, and properties or traits
//! with nested objects, arrays, numbers and strings. Every user-derived string embeds the user
//! number as exactly [`USER_DIGITS`] digits, so the load generator can re-point a pre-built event
//! at another user by overwriting those digits in place.

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Map, Value};
use tandem_core::limits::EVENT_BYTES_MAX;

/// Width of the user number inside `userId`, `anonymousId` and trait emails. Ten digits cover
/// any user cardinality a benchmark could want; fixed width is what makes in-place patching work.
pub const USER_DIGITS: usize = 10;
/// Largest user number that fits in [`USER_DIGITS`] digits.
pub const USER_INDEX_MAX: u64 = 9_999_999_999;
/// Largest bare event (before padding) in bytes: smaller requested sizes get the bare event,
/// which is 690–880 bytes depending on kind and draw.
pub const EVENT_BYTES_MIN: usize = 900;
/// Most line items a padded track event carries before the rest is free text.
const PRODUCTS_MAX: usize = 5;
/// Headroom kept under Segment's 32 KB event limit, so that replacing `messageId` and
/// `timestamp` after sizing can never push an event over it.
const EVENT_BYTES_HEADROOM: usize = 512;
/// `timestamp` of synthetic events: a fixed day (2024-06-01T00:00:00Z) plus a random offset,
/// so the same seed always yields the same bytes.
const SYNTH_DAY_START_MS: i64 = 1_717_200_000_000;
/// Bytes that adding `,"description":""` to a non-empty object costs.
const DESCRIPTION_OVERHEAD_BYTES: usize = 17;

/// The Segment calls the generator mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Track,
    Page,
    Identify,
}

impl EventKind {
    /// A kind drawn with the proportions a typical website source shows:
    /// 60 % track, 25 % page, 15 % identify.
    pub fn pick<R: Rng + ?Sized>(rng: &mut R) -> EventKind {
        match rng.gen_range(0..100) {
            0..=59 => EventKind::Track,
            60..=84 => EventKind::Page,
            _ => EventKind::Identify,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Track => "track",
            EventKind::Page => "page",
            EventKind::Identify => "identify",
        }
    }
}

/// The `userId` of user number `user_index`, e.g. `user-0000001234`.
pub fn user_id(user_index: u64) -> String {
    format!(
        "user-{:0width$}",
        user_index.min(USER_INDEX_MAX),
        width = USER_DIGITS
    )
}

/// The `anonymousId` of user number `user_index`, e.g. `anon-0000001234`.
pub fn anonymous_id(user_index: u64) -> String {
    format!(
        "anon-{:0width$}",
        user_index.min(USER_INDEX_MAX),
        width = USER_DIGITS
    )
}

/// One event of `kind` for user `user_index`, padded to about `approx_bytes` of compact JSON
/// (clamped to [`EVENT_BYTES_MIN`] and a margin under the 32 KB Segment limit).
pub fn event<R: Rng + ?Sized>(
    rng: &mut R,
    kind: EventKind,
    user_index: u64,
    approx_bytes: usize,
) -> Value {
    // The page the visitor is on: a page call reports it, every call carries it in context.page.
    let location = page_location(rng);
    let mut event = match kind {
        EventKind::Track => track(rng),
        EventKind::Page => page(rng, location),
        EventKind::Identify => identify(rng, user_index),
    };
    let fields = event.as_object_mut().expect("events are objects");
    fields.insert("type".into(), json!(kind.as_str()));
    fields.insert("messageId".into(), json!(random_uuid(rng)));
    fields.insert("anonymousId".into(), json!(anonymous_id(user_index)));
    // Most sources identify their users; a quarter of page views come from visitors not yet known.
    if kind != EventKind::Page || rng.gen_bool(0.75) {
        fields.insert("userId".into(), json!(user_id(user_index)));
    }
    fields.insert(
        "timestamp".into(),
        json!(tandem_core::time_util::format_iso8601_ms(
            SYNTH_DAY_START_MS + rng.gen_range(0..86_400_000)
        )),
    );
    fields.insert("context".into(), context(rng, location));
    fields.insert("integrations".into(), json!({}));
    pad_to(rng, &mut event, kind, approx_bytes);
    event
}

/// Serialises `events` as a `/v1/batch` body with the given `sentAt`.
pub fn batch_body(events: &[Value], sent_at: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "batch": events, "sentAt": sent_at })).expect("values serialise")
}

fn track<R: Rng + ?Sized>(rng: &mut R) -> Value {
    const NAMES: [&str; 6] = [
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
        "Signed Up",
        "Video Played",
    ];
    let item = product(rng);
    let variant = *["control", "a", "b"].choose(rng).expect("non-empty");
    // Revenue of the first line item only: the padding may add more items later.
    let revenue = item["price"].as_f64().unwrap_or(0.0) * item["quantity"].as_f64().unwrap_or(1.0);
    json!({
        "event": NAMES.choose(rng).expect("non-empty"),
        "properties": {
            "order_id": format!("ord-{:08}", rng.gen_range(0..100_000_000u64)),
            "revenue": (revenue * 100.0).round() / 100.0,
            "currency": "USD",
            "coupon": if rng.gen_bool(0.2) { json!("SUMMER10") } else { Value::Null },
            "products": [item],
            "experiment": { "id": rng.gen_range(1..50u32), "variant": variant },
        },
    })
}

fn product<R: Rng + ?Sized>(rng: &mut R) -> Value {
    const CATEGORIES: [&str; 5] = ["Games", "Books", "Outdoors", "Kitchen", "Apparel"];
    json!({
        "product_id": format!("{:06}", rng.gen_range(0..1_000_000u32)),
        "sku": format!("SKU-{:05}", rng.gen_range(0..100_000u32)),
        "name": format!("Item {}", rng.gen_range(0..10_000u32)),
        "category": CATEGORIES.choose(rng).expect("non-empty"),
        "price": rng.gen_range(100..20_000u32) as f64 / 100.0,
        "quantity": rng.gen_range(1..4u32),
    })
}

fn page<R: Rng + ?Sized>(rng: &mut R, (name, path): (&str, &str)) -> Value {
    json!({
        "name": name,
        "properties": {
            "path": path,
            "url": format!("https://shop.example.com{path}"),
            "title": format!("{name} | Example Shop"),
            "referrer": "https://www.google.com/",
            "search": "",
            "scroll": { "depth_percent": rng.gen_range(0..=100u32), "sections_seen": rng.gen_range(1..12u32) },
        },
    })
}

fn identify<R: Rng + ?Sized>(rng: &mut R, user_index: u64) -> Value {
    const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];
    const CITIES: [(&str, &str); 4] = [
        ("Berlin", "DE"),
        ("Lyon", "FR"),
        ("Austin", "US"),
        ("Osaka", "JP"),
    ];
    let (city, country) = *CITIES.choose(rng).expect("non-empty");
    json!({
        "traits": {
            "email": format!("u{:0width$}@example.com", user_index.min(USER_INDEX_MAX), width = USER_DIGITS),
            "name": format!("User {}", rng.gen_range(0..1_000_000u32)),
            "plan": PLANS.choose(rng).expect("non-empty"),
            "logins": rng.gen_range(1..500u32),
            "company": { "id": rng.gen_range(1..10_000u32), "name": format!("Company {}", rng.gen_range(0..10_000u32)), "employees": rng.gen_range(1..5_000u32) },
            "address": { "city": city, "country": country },
        },
    })
}

fn context<R: Rng + ?Sized>(rng: &mut R, (title, path): (&str, &str)) -> Value {
    const AGENTS: [&str; 3] = [
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    ];
    json!({
        "library": { "name": "analytics.js", "version": "next-1.70.0" },
        "page": { "path": path, "referrer": "", "search": "", "title": title, "url": format!("https://shop.example.com{path}") },
        "userAgent": AGENTS.choose(rng).expect("non-empty"),
        "ip": format!("203.0.113.{}", rng.gen_range(1..255u32)),
        "locale": "en-US",
        "timezone": "Europe/Berlin",
    })
}

fn page_location<R: Rng + ?Sized>(rng: &mut R) -> (&'static str, &'static str) {
    const PAGES: [(&str, &str); 5] = [
        ("Home", "/"),
        ("Pricing", "/pricing"),
        ("Cart", "/cart"),
        ("Product", "/products/blue-lamp"),
        ("Blog", "/blog/launch"),
    ];
    *PAGES.choose(rng).expect("non-empty")
}

/// Grows the event to `approx_bytes` of compact JSON: track events first gain line items (as
/// carts do), then properties (or traits) get a free-text `description` for the rest.
/// Events already bigger are left as they are.
fn pad_to<R: Rng + ?Sized>(rng: &mut R, event: &mut Value, kind: EventKind, approx_bytes: usize) {
    let target = approx_bytes.clamp(EVENT_BYTES_MIN, EVENT_BYTES_MAX - EVENT_BYTES_HEADROOM);
    let mut current = serde_json::to_vec(event).expect("values serialise").len();
    // `pointer_mut`, not indexing: indexing a missing key would insert a null `products`.
    if let Some(products) = event
        .pointer_mut("/properties/products")
        .and_then(Value::as_array_mut)
    {
        while products.len() < PRODUCTS_MAX && rng.gen_bool(0.5) {
            let item = product(rng);
            let item_bytes = serde_json::to_vec(&item).expect("values serialise").len() + 1;
            if current + item_bytes + DESCRIPTION_OVERHEAD_BYTES > target {
                break;
            }
            products.push(item);
            current += item_bytes;
        }
    }
    let Some(text_bytes) = target.checked_sub(current + DESCRIPTION_OVERHEAD_BYTES) else {
        return;
    };
    let holder = if kind == EventKind::Identify {
        "traits"
    } else {
        "properties"
    };
    let fields: &mut Map<String, Value> = event[holder]
        .as_object_mut()
        .expect("properties and traits are objects");
    fields.insert("description".into(), json!(words(rng, text_bytes)));
}

/// `length` bytes of lowercase words and spaces: plain ASCII, so JSON never escapes it.
fn words<R: Rng + ?Sized>(rng: &mut R, length: usize) -> String {
    const WORDS: [&str; 12] = [
        "lamp", "blue", "delivery", "order", "fast", "great", "quality", "return", "gift", "size",
        "colour", "review",
    ];
    let mut text = String::with_capacity(length + 16);
    while text.len() < length {
        text.push_str(WORDS.choose(rng).expect("non-empty"));
        text.push(' ');
    }
    text.truncate(length);
    text
}

fn random_uuid<R: Rng + ?Sized>(rng: &mut R) -> String {
    let value: u128 = rng.gen();
    let hex = format!("{value:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn same_seed_same_events() {
        let first = event(&mut StdRng::seed_from_u64(7), EventKind::Track, 3, 1000);
        let second = event(&mut StdRng::seed_from_u64(7), EventKind::Track, 3, 1000);
        assert_eq!(first, second);
    }

    #[test]
    fn events_are_padded_to_the_requested_size() {
        let mut rng = StdRng::seed_from_u64(1);
        for approx_bytes in [EVENT_BYTES_MIN, 1000, 4000, 20_000] {
            for _ in 0..50 {
                let kind = EventKind::pick(&mut rng);
                let bytes = serde_json::to_vec(&event(&mut rng, kind, 42, approx_bytes))
                    .unwrap()
                    .len();
                assert!(
                    bytes.abs_diff(approx_bytes) <= approx_bytes / 20,
                    "{kind:?}: {bytes} bytes for {approx_bytes}"
                );
            }
        }
    }

    #[test]
    fn small_requests_get_the_bare_event() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let kind = EventKind::pick(&mut rng);
            let bytes = serde_json::to_vec(&event(&mut rng, kind, 1, 0))
                .unwrap()
                .len();
            assert!(bytes <= EVENT_BYTES_MIN, "{kind:?} {bytes}");
        }
    }

    #[test]
    fn oversized_requests_stay_under_the_segment_limit() {
        let mut rng = StdRng::seed_from_u64(1);
        let bytes = serde_json::to_vec(&event(&mut rng, EventKind::Identify, 1, 1 << 20))
            .unwrap()
            .len();
        assert!(bytes <= EVENT_BYTES_MAX);
    }

    #[test]
    fn events_carry_the_segment_fields() {
        let mut rng = StdRng::seed_from_u64(2);
        let identify = event(&mut rng, EventKind::Identify, 12, 1000);
        assert_eq!(identify["type"], "identify");
        assert_eq!(identify["userId"], "user-0000000012");
        assert_eq!(identify["anonymousId"], "anon-0000000012");
        assert_eq!(identify["context"]["library"]["name"], "analytics.js");
        assert!(identify["traits"]["company"].is_object());
        let page = event(&mut rng, EventKind::Page, 12, 1000);
        assert!(page["properties"].get("products").is_none());
        let track = event(&mut rng, EventKind::Track, 12, 1000);
        assert!(track["event"].is_string() && track["properties"]["products"].is_array());
        assert_eq!(track["messageId"].as_str().unwrap().len(), 36);
    }
}
