//! Accuracy of identity resolution against synthetic people whose truth is known.
//!
//! A seeded generator makes a few thousand people — most with a `userId`, one to three email
//! addresses, one to four devices (an `anonymousId`, and on phones `context.device.id` and an
//! advertising id) — and their events: sessions that browse anonymously and log in later,
//! email-only sign-ups of people without an account, server-side events, accounts (`group`),
//! `alias` calls. Then the noise real sources send: families sharing one device under distinct
//! `userId`s (some also one email address), typo'd email addresses, the same address in other
//! cases and with spaces, phone numbers formatted several ways, placeholder values (`null`, `0`,
//! `undefined`, zeroed device and advertising ids, `test@example.com`…), events arriving out of
//! order (phones flush late) and redeliveries of the same message. The events go through the engine as log records, and
//! the profiles it builds are compared with the truth, pairwise over events:
//!
//! * **precision**: of the pairs of events the engine put in one profile, the fraction that are
//!   truly of one person;
//! * **recall**: of the pairs of one person's events that deterministic identifiers in the data
//!   can join, the fraction the engine put in one profile. Two events of a person are *linkable*
//!   when a chain of that person's own identifiers joins them: each event of the chain shares an
//!   identifier value with the next. A person's fragment that no identifier joins to the rest —
//!   a device where they never logged in, an email typed wrong and used nowhere else — is not
//!   linkable, and no pair with it is counted.
//!
//! Identifiers are taken as the Segment spec defines them and compared after the normalisation
//! every CDP applies (emails lower-cased and trimmed, phones reduced to digits and `+`);
//! placeholders are no identifier. An identifier used by more than one person (the family
//! device) is *ambiguous*: it is never a link of the truth, and an event whose only identifiers
//! are ambiguous (a family member browsing the shared tablet logged out) has no knowable person,
//! so it is left out of both measures and counted apart.

mod common;

use common::World;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;
use tandem_config::{IdentifierConfig, IdentityConfig};
use tandem_core::envelope::{dedup_key, EventEnvelope, EventType};
use tandem_core::time_util::format_iso8601_ms;
use tandem_unify::kv::{KvRead, Table};
use tandem_unify::model::{self, ProfileId, TimelineRow};
use tandem_unify::IdentityRules;

/// The goals on deterministic identifiers.
const PRECISION_MIN: f64 = 0.999;
const RECALL_MIN: f64 = 0.99;

/// Wrong merges and missed links shown when the goal is missed, and events shown of each.
const EXAMPLES_MAX: usize = 3;
const EXAMPLE_EVENTS_MAX: usize = 12;

const SEED: u64 = 0x7a6e_6465_6d00_0004;
const START_MS: i64 = 1_717_200_000_000;
const DAY_MS: i64 = 86_400_000;
/// Days the synthetic traffic spans.
const DAYS: i64 = 30;
const ZERO_UUID: &str = "00000000-0000-0000-0000-000000000000";
/// What buggy clients send for "no user": every one is a default blocked value.
const PLACEHOLDER_IDS: [&str; 9] = [
    "null",
    "undefined",
    "0",
    "-1",
    "anonymous",
    "None",
    "N/A",
    "unknown",
    "nil",
];
/// What forms and SDKs send for "no email".
const PLACEHOLDER_EMAILS: [&str; 6] = [
    "undefined",
    "null",
    "n/a",
    "test@example.com",
    "user@example.com",
    " ",
];
const FIRST_NAMES: [&str; 10] = [
    "ada", "grace", "alan", "edsger", "barbara", "donald", "frances", "ken", "margaret", "linus",
];
const LAST_NAMES: [&str; 10] = [
    "lovelace", "hopper", "turing", "dijkstra", "liskov", "knuth", "allen", "thompson", "hamilton",
    "torvalds",
];
const DOMAINS: [&str; 6] = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "proton.me",
    "example.org",
    "fastmail.com",
];
/// Misspelt domains people type.
const DOMAIN_TYPOS: [(&str, &str); 6] = [
    ("gmail.com", "gmial.com"),
    ("gmail.com", "gmal.com"),
    ("yahoo.com", "yaho.com"),
    ("outlook.com", "outlok.com"),
    ("proton.me", "proton.m"),
    ("fastmail.com", "fastmial.com"),
];

/// The proportions of the synthetic population.
#[derive(Clone, Debug)]
struct Mix {
    people: usize,
    /// Chance that a person starts a family (2–4 people, each with a `userId`) sharing a device.
    families: f64,
    /// Chance that a family also shares one email address: each member logs in with it on the
    /// shared device and on about half of their own.
    family_emails: f64,
    /// People without an account identify by email only, if at all.
    with_user_id: f64,
    /// Chance that an identify carries the person's one typo'd address instead of a real one.
    typos: f64,
    /// Chance that an event carries a placeholder value.
    placeholders: f64,
    /// Chance that a message is delivered twice.
    redeliveries: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            people: 3_000,
            families: 0.08,
            family_emails: 0.25,
            with_user_id: 0.85,
            typos: 0.05,
            placeholders: 0.04,
            redeliveries: 0.01,
        }
    }
}

struct Person {
    user_id: Option<String>,
    /// As the person types them (the engine compares them lower-cased).
    emails: Vec<String>,
    /// The one misspelling this person makes, made up on first use.
    typo: Option<String>,
    /// E.164.
    phone: Option<String>,
    devices: Vec<usize>,
    account: Option<String>,
}

/// A value as sent, and whether it identifies anything (a placeholder does not).
#[derive(Clone)]
struct Sent {
    value: String,
    real: bool,
}

struct Device {
    anonymous_id: String,
    /// `context.device.id` (phones only).
    device_id: Option<Sent>,
    advertising_id: Option<Sent>,
    source: &'static str,
    mobile: bool,
    shared: bool,
}

/// One synthetic event with its truth.
struct Draft {
    person: usize,
    time_ms: i64,
    /// When it reaches the log, relative to `time_ms`.
    delay_ms: i64,
    event_type: EventType,
    source: &'static str,
    json: Value,
    /// Its identifiers, normalised, as `type:value`.
    truth: Vec<String>,
}

struct Generator {
    rng: StdRng,
    mix: Mix,
    people: Vec<Person>,
    devices: Vec<Device>,
    drafts: Vec<Draft>,
    /// Every real address, lower-cased: a typo must not hit one.
    real_emails: BTreeSet<String>,
    message_seq: u64,
}

fn uuid(rng: &mut StdRng) -> String {
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

fn email_truth(sent: &str) -> Option<String> {
    let value = sent.trim().to_lowercase();
    let placeholder = PLACEHOLDER_EMAILS
        .iter()
        .any(|p| p.trim().eq_ignore_ascii_case(&value));
    (!value.is_empty() && !placeholder && value.contains('@')).then(|| format!("email:{value}"))
}

fn phone_truth(sent: &str) -> String {
    let digits: String = sent
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    format!("phone:{digits}")
}

impl Generator {
    fn new(mix: Mix) -> Generator {
        Generator {
            rng: StdRng::seed_from_u64(SEED),
            mix,
            people: Vec::new(),
            devices: Vec::new(),
            drafts: Vec::new(),
            real_emails: BTreeSet::new(),
            message_seq: 0,
        }
    }

    fn new_device(&mut self, shared: bool) -> usize {
        let rng = &mut self.rng;
        let (source, mobile) = match rng.gen_range(0..10) {
            0..=5 => ("web", false),
            6..=7 => ("ios", true),
            _ => ("android", true),
        };
        let anonymous_id = uuid(rng);
        let (device_id, advertising_id) = if mobile {
            // Some phones report a zeroed device id; advertising ids are zeroed when the user
            // limits ad tracking, or absent.
            let device_id = if rng.gen_bool(0.05) {
                Sent {
                    value: ZERO_UUID.into(),
                    real: false,
                }
            } else {
                Sent {
                    value: uuid(rng).to_uppercase(),
                    real: true,
                }
            };
            let advertising_id = match rng.gen_range(0..10) {
                0..=4 => Some(Sent {
                    value: uuid(rng),
                    real: true,
                }),
                5..=7 => Some(Sent {
                    value: ZERO_UUID.into(),
                    real: false,
                }),
                _ => None,
            };
            (Some(device_id), advertising_id)
        } else {
            (None, None)
        };
        self.devices.push(Device {
            anonymous_id,
            device_id,
            advertising_id,
            source,
            mobile,
            shared,
        });
        self.devices.len() - 1
    }

    fn new_person(&mut self, has_user_id: bool, shared: Option<usize>) -> usize {
        let index = self.people.len();
        let rng = &mut self.rng;
        let first = *FIRST_NAMES.choose(rng).unwrap();
        let last = *LAST_NAMES.choose(rng).unwrap();
        let count = match rng.gen_range(0..100) {
            0..=54 => 1,
            55..=84 => 2,
            _ => 3,
        };
        let mut emails = Vec::new();
        for n in 0..count {
            let domain = DOMAINS.choose(rng).unwrap();
            let local = match n {
                0 => format!("{first}.{last}{index}"),
                1 => format!("{first}{index}"),
                _ => format!("{}{last}.{index}", &first[..1]),
            };
            // People capitalise their address as they like; it is the same address.
            let typed = if rng.gen_bool(0.2) {
                format!("{}{}@{domain}", local[..1].to_uppercase(), &local[1..])
            } else {
                format!("{local}@{domain}")
            };
            self.real_emails.insert(typed.to_lowercase());
            emails.push(typed);
        }
        let phone = rng
            .gen_bool(0.3)
            .then(|| format!("+1415{:07}", 1_000_000 + index));
        let account = (has_user_id && rng.gen_bool(0.3))
            .then(|| format!("acct-{}", rng.gen_range(0..(self.mix.people / 20).max(1))));
        let user_id = has_user_id.then(|| format!("usr_{index:06}_{:04x}", rng.gen::<u16>()));
        let own = match self.rng.gen_range(0..100) {
            0..=34 => 1,
            35..=69 => 2,
            70..=89 => 3,
            _ => 4,
        };
        let own = if shared.is_some() { own.min(3) } else { own };
        let mut devices: Vec<usize> = (0..own).map(|_| self.new_device(false)).collect();
        devices.extend(shared);
        self.people.push(Person {
            user_id,
            emails,
            typo: None,
            phone,
            devices,
            account,
        });
        index
    }

    /// The person's misspelt address (one per person), never someone's real address.
    fn typo_of(&mut self, person: usize) -> String {
        if let Some(typo) = &self.people[person].typo {
            return typo.clone();
        }
        let real = self.people[person].emails[0].clone();
        let typo = loop {
            let (local, domain) = real.split_once('@').expect("an address");
            let candidate = match self.rng.gen_range(0..3) {
                0 => {
                    // Two neighbouring letters swapped.
                    let mut chars: Vec<char> = local.chars().collect();
                    let at = self.rng.gen_range(0..chars.len() - 1);
                    chars.swap(at, at + 1);
                    format!("{}@{domain}", chars.into_iter().collect::<String>())
                }
                1 => {
                    // A letter left out.
                    let mut chars: Vec<char> = local.chars().collect();
                    chars.remove(self.rng.gen_range(0..chars.len()));
                    format!("{}@{domain}", chars.into_iter().collect::<String>())
                }
                _ => match DOMAIN_TYPOS.iter().find(|(right, _)| *right == domain) {
                    Some((_, wrong)) => format!("{local}@{wrong}"),
                    None => format!("{local}@{domain}.co"),
                },
            };
            if !self.real_emails.contains(&candidate.to_lowercase()) {
                break candidate;
            }
        };
        self.people[person].typo = Some(typo.clone());
        typo
    }

    fn message_id(&mut self) -> String {
        self.message_seq += 1;
        format!("msg-{:08}-{:08x}", self.message_seq, self.rng.gen::<u32>())
    }

    /// How late an event from `source` reaches the log.
    fn delay(&mut self, source: &str) -> i64 {
        let rng = &mut self.rng;
        match source {
            "server" => rng.gen_range(0..500),
            "web" => match rng.gen_range(0..100) {
                0..=91 => rng.gen_range(0..2_000),
                92..=98 => rng.gen_range(0..120_000),
                _ => rng.gen_range(0..6 * 3_600_000),
            },
            // Phones batch their events and flush them late, or after days offline.
            _ => match rng.gen_range(0..100) {
                0..=69 => rng.gen_range(0..5_000),
                70..=94 => rng.gen_range(0..900_000),
                _ => rng.gen_range(0..2 * DAY_MS),
            },
        }
    }

    /// An event from `device`; `user` is the person's `userId` when logged in.
    fn device_event(
        &mut self,
        person: usize,
        device: usize,
        time_ms: i64,
        event_type: EventType,
        logged_in: bool,
        context_email: Option<String>,
    ) -> (Value, Vec<String>) {
        let d = &self.devices[device];
        let mut truth = vec![format!("anonymous_id:{}", d.anonymous_id)];
        let mut device_json =
            json!({"manufacturer": if d.source == "ios" { "Apple" } else { "Google" }});
        if let Some(id) = &d.device_id {
            device_json["id"] = json!(id.value);
            if id.real {
                truth.push(format!("device_id:{}", id.value));
            }
        }
        if let Some(id) = &d.advertising_id {
            device_json["advertisingId"] = json!(id.value);
            device_json["adTrackingEnabled"] = json!(id.real);
            if id.real {
                truth.push(format!("advertising_id:{}", id.value));
            }
        }
        let mobile = d.mobile;
        let mut event = json!({
            "type": event_type.as_str(),
            "anonymousId": d.anonymous_id,
            "timestamp": format_iso8601_ms(time_ms),
            "context": {
                "library": {"name": if mobile { "analytics-swift" } else { "analytics.js" }, "version": "1.5.0"},
                "locale": "en-US",
            },
        });
        if mobile {
            event["context"]["device"] = device_json;
        } else {
            event["context"]["page"] = json!({"path": "/", "url": "https://shop.example.com/"});
        }
        if logged_in {
            let user_id = self.people[person]
                .user_id
                .clone()
                .expect("logged in users have an id");
            truth.push(format!("user_id:{user_id}"));
            event["userId"] = json!(user_id);
        } else if self.rng.gen_bool(self.mix.placeholders) {
            // Code that sends `String(user)` of nobody, or a number 0.
            event["userId"] = if self.rng.gen_bool(0.2) {
                json!(0)
            } else {
                json!(PLACEHOLDER_IDS.choose(&mut self.rng).unwrap())
            };
        }
        if let Some(email) = context_email {
            if let Some(t) = email_truth(&email) {
                truth.push(t);
            }
            event["context"]["traits"] = json!({"email": email});
        }
        (event, truth)
    }

    fn push(
        &mut self,
        person: usize,
        time_ms: i64,
        event_type: EventType,
        source: &'static str,
        mut json: Value,
        truth: Vec<String>,
    ) {
        json["messageId"] = json!(self.message_id());
        let delay_ms = self.delay(source);
        self.drafts.push(Draft {
            person,
            time_ms,
            delay_ms,
            event_type,
            source,
            json,
            truth,
        });
    }

    /// A page, screen or track call from a device.
    fn activity(
        &mut self,
        person: usize,
        device: usize,
        time_ms: i64,
        logged_in: bool,
        context_email: Option<String>,
    ) {
        let mobile = self.devices[device].mobile;
        let event_type = match self.rng.gen_range(0..10) {
            0..=3 if mobile => EventType::Screen,
            0..=3 => EventType::Page,
            _ => EventType::Track,
        };
        let (mut event, truth) = self.device_event(
            person,
            device,
            time_ms,
            event_type,
            logged_in,
            context_email,
        );
        match event_type {
            EventType::Track => {
                let name = *[
                    "Product Viewed",
                    "Product Added",
                    "Checkout Started",
                    "Order Completed",
                ]
                .choose(&mut self.rng)
                .unwrap();
                event["event"] = json!(name);
                event["properties"] =
                    json!({"price": self.rng.gen_range(1..500), "currency": "USD"});
                // A property named email is not an identifier.
                if self.rng.gen_bool(0.02) {
                    let other = self.rng.gen_range(0..self.people.len());
                    event["properties"]["email"] = json!(self.people[other].emails[0]);
                }
            }
            _ => {
                event["name"] = json!(*["Home", "Pricing", "Cart", "Product"]
                    .choose(&mut self.rng)
                    .unwrap());
            }
        }
        let source = self.devices[device].source;
        self.push(person, time_ms, event_type, source, event, truth);
    }

    /// The address an identify carries: a real one (in any case, maybe with spaces), the typo,
    /// or a placeholder.
    fn typed_email(&mut self, person: usize) -> String {
        if self.rng.gen_bool(self.mix.placeholders) {
            return PLACEHOLDER_EMAILS
                .choose(&mut self.rng)
                .unwrap()
                .to_string();
        }
        if self.rng.gen_bool(self.mix.typos) {
            return self.typo_of(person);
        }
        let email = self.people[person]
            .emails
            .choose(&mut self.rng)
            .unwrap()
            .clone();
        match self.rng.gen_range(0..10) {
            0 => email.to_uppercase(),
            1 => format!(" {email} "),
            _ => email,
        }
    }

    /// Logging in on a device: identify (or alias) with the person's traits.
    fn log_in(&mut self, person: usize, device: usize, time_ms: i64, shared_email: Option<&str>) {
        let has_user_id = self.people[person].user_id.is_some();
        if has_user_id && self.rng.gen_bool(0.1) {
            // analytics.alias(userId): previousId is the device's anonymous id.
            let (mut event, truth) =
                self.device_event(person, device, time_ms, EventType::Alias, true, None);
            event["previousId"] = json!(self.devices[device].anonymous_id);
            let source = self.devices[device].source;
            self.push(person, time_ms, EventType::Alias, source, event, truth);
        }
        let (mut event, mut truth) = self.device_event(
            person,
            device,
            time_ms + 1,
            EventType::Identify,
            has_user_id,
            None,
        );
        let email = match shared_email {
            Some(shared) => shared.to_string(),
            None => self.typed_email(person),
        };
        if let Some(t) = email_truth(&email) {
            truth.push(t);
        }
        let first = FIRST_NAMES[person % FIRST_NAMES.len()];
        let mut traits = json!({"email": email, "name": first, "plan": *["free", "pro"].choose(&mut self.rng).unwrap()});
        if let Some(phone) = self.people[person].phone.clone() {
            if self.rng.gen_bool(0.4) {
                // The same number, formatted as each form likes it.
                let national = &phone[2..];
                let formatted = match self.rng.gen_range(0..3) {
                    0 => phone.clone(),
                    1 => format!(
                        "+1 ({}) {}-{}",
                        &national[..3],
                        &national[3..6],
                        &national[6..]
                    ),
                    _ => format!(
                        "+1 {} {} {}",
                        &national[..3],
                        &national[3..6],
                        &national[6..]
                    ),
                };
                truth.push(phone_truth(&formatted));
                traits["phone"] = json!(formatted);
            }
        }
        event["traits"] = traits;
        let source = self.devices[device].source;
        self.push(
            person,
            time_ms + 1,
            EventType::Identify,
            source,
            event,
            truth,
        );
    }

    /// Every event of one person on one device.
    fn use_device(&mut self, person: usize, device: usize, shared_email: Option<String>) {
        let has_user_id = self.people[person].user_id.is_some();
        let shared = self.devices[device].shared;
        let sessions = self.rng.gen_range(1..=4);
        // The session in which the person logs in (or, without an account, signs up with an
        // email), if ever.
        let login_chance = if has_user_id { 0.85 } else { 0.5 };
        let login_session = self
            .rng
            .gen_bool(login_chance)
            .then(|| self.rng.gen_range(0..sessions));
        let mut times: Vec<i64> = (0..sessions)
            .map(|_| START_MS + self.rng.gen_range(0..DAYS * DAY_MS))
            .collect();
        times.sort_unstable();
        let mut remembered = false;
        let mut known_email: Option<String> = None;
        for (session, start) in times.into_iter().enumerate() {
            let mut time = start;
            if shared {
                // Logging out of a family device (`reset()`) forgets the user and the traits.
                known_email = None;
            }
            // A family device forgets who used it last; a personal one remembers the login.
            let mut logged_in = remembered && !shared && has_user_id;
            let before = if logged_in {
                0
            } else {
                self.rng.gen_range(1..=4)
            };
            for _ in 0..before {
                let email = self.context_email(device, &known_email);
                self.activity(person, device, time, false, email);
                time += self.rng.gen_range(5_000..60_000);
            }
            let logs_in = login_session == Some(session) || (shared && remembered);
            if !logged_in && logs_in {
                self.log_in(person, device, time, shared_email.as_deref());
                time += self.rng.gen_range(2_000..20_000);
                remembered = true;
                logged_in = has_user_id;
                if !has_user_id || self.rng.gen_bool(0.3) {
                    known_email = self.people[person].emails.first().cloned();
                }
            }
            let after = if logged_in || remembered {
                self.rng.gen_range(1..=6)
            } else {
                0
            };
            for _ in 0..after {
                let email = self.context_email(device, &known_email);
                self.activity(person, device, time, logged_in, email);
                time += self.rng.gen_range(5_000..60_000);
            }
            if logged_in && self.rng.gen_bool(0.3) {
                if let Some(account) = self.people[person].account.clone() {
                    let (mut event, truth) =
                        self.device_event(person, device, time, EventType::Group, true, None);
                    event["groupId"] = json!(account);
                    event["traits"] = json!({"name": format!("Company {account}")});
                    let source = self.devices[device].source;
                    self.push(person, time, EventType::Group, source, event, truth);
                }
            }
        }
    }

    /// Phones repeat the stored traits in `context.traits` on some events.
    fn context_email(&mut self, device: usize, known: &Option<String>) -> Option<String> {
        let mobile = self.devices[device].mobile;
        known.clone().filter(|_| mobile && self.rng.gen_bool(0.3))
    }

    /// Events the person's account sends from the back end.
    fn server_events(&mut self, person: usize) {
        let Some(user_id) = self.people[person].user_id.clone() else {
            return;
        };
        for _ in 0..self.rng.gen_range(0..=4) {
            let time = START_MS + self.rng.gen_range(0..DAYS * DAY_MS);
            let mut truth = vec![format!("user_id:{user_id}")];
            let mut event = json!({
                "type": "track",
                "userId": user_id,
                "event": *["Order Shipped", "Subscription Renewed", "Invoice Paid"].choose(&mut self.rng).unwrap(),
                "timestamp": format_iso8601_ms(time),
                "properties": {"amount": self.rng.gen_range(5..900)},
                "context": {"library": {"name": "analytics-node", "version": "2.1.0"}},
            });
            if self.rng.gen_bool(self.mix.placeholders * 2.0) {
                // Back ends that fill in an anonymous id they do not have.
                event["anonymousId"] = json!(*["anonymous", "0", "unknown", "null"]
                    .choose(&mut self.rng)
                    .unwrap());
            }
            if self.rng.gen_bool(0.3) {
                let email = self.people[person].emails[0].clone();
                truth.push(email_truth(&email).expect("a real address"));
                event["context"]["traits"] = json!({"email": email});
            }
            self.push(person, time, EventType::Track, "server", event, truth);
        }
    }

    /// Makes the whole population and its events.
    fn generate(mut self) -> (Vec<Person>, Vec<Draft>) {
        while self.people.len() < self.mix.people {
            if self.rng.gen_bool(self.mix.families) {
                let shared = self.new_device(true);
                let size = self.rng.gen_range(2..=4);
                let shared_email = self.rng.gen_bool(self.mix.family_emails).then(|| {
                    let email = format!("family{}@example.net", self.people.len());
                    self.real_emails.insert(email.clone());
                    email
                });
                let members: Vec<usize> = (0..size)
                    .map(|_| self.new_person(true, Some(shared)))
                    .collect();
                for member in members {
                    if let Some(email) = &shared_email {
                        self.people[member].emails.push(email.clone());
                    }
                    self.person_events(member, shared_email.clone());
                }
            } else {
                let has_user_id = self.rng.gen_bool(self.mix.with_user_id);
                let person = self.new_person(has_user_id, None);
                self.person_events(person, None);
            }
        }
        (self.people, self.drafts)
    }

    fn person_events(&mut self, person: usize, shared_email: Option<String>) {
        for device in self.people[person].devices.clone() {
            // The family address is what members log in with on the shared device, and on some of
            // their own.
            let email = shared_email
                .clone()
                .filter(|_| self.devices[device].shared || self.rng.gen_bool(0.5));
            self.use_device(person, device, email);
        }
        self.server_events(person);
    }
}

/// A log record as collect stores it.
fn record(draft: &Draft) -> Vec<u8> {
    let json = serde_json::to_vec(&draft.json).unwrap();
    let message_id = draft.json["messageId"].as_str().unwrap();
    EventEnvelope {
        event_type: draft.event_type,
        dedup_key: dedup_key(draft.source, message_id),
        event_time_ms: draft.time_ms,
        source_id: draft.source,
        json: &json,
    }
    .encode()
}

/// Disjoint sets over event indexes.
struct UnionFind(Vec<usize>);

impl UnionFind {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[a.max(b)] = a.min(b);
        }
    }
}

/// The fields of an event that may identify someone, compactly.
fn identifying_fields(event: &Value) -> String {
    let paths: [(&str, &str); 7] = [
        ("userId", "/userId"),
        ("anonymousId", "/anonymousId"),
        ("previousId", "/previousId"),
        ("device.id", "/context/device/id"),
        ("advertisingId", "/context/device/advertisingId"),
        ("traits.email", "/traits/email"),
        ("context.traits.email", "/context/traits/email"),
    ];
    paths
        .iter()
        .filter_map(|(name, path)| event.pointer(path).map(|v| format!("{name}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

#[derive(Debug)]
struct Figures {
    people: usize,
    events: usize,
    redeliveries: usize,
    profiles: usize,
    /// Events whose only identifiers are shared by several people.
    unknowable: usize,
    /// Events with a knowable person the engine attributed to no profile.
    unattributed: usize,
    precision: f64,
    recall: f64,
    /// Profiles holding events of more than one person.
    mixed_profiles: usize,
    /// (pairs put together, of which true) and (linkable pairs, of which together).
    together_pairs: (u64, u64),
    linkable_pairs: (u64, u64),
    /// The person's linkable groups of events, and the profiles these came out in.
    truth_groups: usize,
    resolved_groups: usize,
    refused: u64,
    seconds: f64,
    /// Events of a few mixed profiles and split groups.
    examples: Vec<String>,
}

fn measure(mix: Mix, rules: IdentityRules) -> Figures {
    let started = Instant::now();
    let (people, drafts) = Generator::new(mix.clone()).generate();
    // Arrival order: when each event reaches the log, not when it happened.
    let mut order: Vec<usize> = (0..drafts.len()).collect();
    order.sort_by_key(|&i| (drafts[i].time_ms + drafts[i].delay_ms, i));
    let mut rng = StdRng::seed_from_u64(SEED ^ 1);
    let mut log: Vec<usize> = Vec::with_capacity(order.len());
    let mut redelivered = Vec::new();
    for i in order {
        log.push(i);
        if rng.gen_bool(mix.redeliveries) {
            redelivered.push((log.len() + rng.gen_range(1..5_000), i));
        }
    }
    // A redelivery comes later than the original, with the same bytes.
    redelivered.sort();
    for (n, (at, i)) in redelivered.iter().enumerate() {
        log.insert((*at + n).min(log.len()), *i);
    }

    let mut world = World::with_rules(rules);
    let mut offset_of: Vec<Option<u64>> = vec![None; drafts.len()];
    let mut duplicates = 0;
    for &i in &log {
        let offset = world.log.borrow().len() as u64;
        let applied = world.push_record(record(&drafts[i]));
        if applied.duplicate {
            duplicates += 1;
        } else {
            assert!(offset_of[i].is_none(), "an event applied twice");
            offset_of[i] = Some(offset);
        }
    }
    assert_eq!(
        duplicates,
        redelivered.len(),
        "every redelivery, and only they, is a duplicate"
    );
    world.check_invariants();

    // Where the engine put each event: its timeline says.
    let mut event_at: HashMap<u64, usize> = HashMap::new();
    for (i, offset) in offset_of.iter().enumerate() {
        event_at.insert(offset.expect("every event applied once"), i);
    }
    let mut profile_of: Vec<Option<ProfileId>> = vec![None; drafts.len()];
    for (key, value) in world
        .kv
        .scan(Table::Timeline, &[], None, false, usize::MAX)
        .unwrap()
    {
        let profile = u64::from_be_bytes(key[..8].try_into().unwrap());
        let row: TimelineRow = model::decode(Table::Timeline, &value).unwrap();
        profile_of[event_at[&row.offset]] = Some(profile);
    }
    let profiles = world.profiles().len();

    // The truth: who owns each identifier, and which events of a person it joins.
    let mut owners: HashMap<&str, BTreeSet<usize>> = HashMap::new();
    for draft in &drafts {
        for id in &draft.truth {
            owners.entry(id).or_default().insert(draft.person);
        }
    }
    let own: Vec<Vec<&str>> = drafts
        .iter()
        .map(|d| {
            d.truth
                .iter()
                .map(String::as_str)
                .filter(|id| owners[id].len() == 1)
                .collect()
        })
        .collect();
    let mut groups = UnionFind((0..drafts.len()).collect());
    let mut first_with: HashMap<&str, usize> = HashMap::new();
    for (i, ids) in own.iter().enumerate() {
        for id in ids {
            match first_with.get(id) {
                Some(&j) => groups.union(i, j),
                None => {
                    first_with.insert(id, i);
                }
            }
        }
    }
    let knowable: Vec<bool> = own.iter().map(|ids| !ids.is_empty()).collect();

    // Precision: pairs within each profile, and how many are of one person.
    let mut by_profile: HashMap<ProfileId, HashMap<usize, u64>> = HashMap::new();
    let mut unattributed = 0;
    for i in (0..drafts.len()).filter(|&i| knowable[i]) {
        match profile_of[i] {
            Some(profile) => {
                *by_profile
                    .entry(profile)
                    .or_default()
                    .entry(drafts[i].person)
                    .or_default() += 1
            }
            None => unattributed += 1,
        }
    }
    let (mut together, mut together_true, mut mixed_profiles) = (0, 0, 0);
    for persons in by_profile.values() {
        together += pairs(persons.values().sum());
        together_true += persons.values().map(|n| pairs(*n)).sum::<u64>();
        mixed_profiles += (persons.len() > 1) as usize;
    }
    // A few wrong merges and missed links, event by event, to read when the goal is missed.
    let mut examples = Vec::new();
    let describe = |i: usize| -> String {
        let d = &drafts[i];
        format!(
            "    offset {} person {} {} {} truth {:?} → {}",
            offset_of[i].unwrap(),
            d.person,
            d.event_type.as_str(),
            identifying_fields(&d.json),
            d.truth,
            profile_of[i].map_or("no profile".into(), model::format_profile_id)
        )
    };
    for (profile, persons) in by_profile
        .iter()
        .filter(|(_, p)| p.len() > 1)
        .take(EXAMPLES_MAX)
    {
        examples.push(format!(
            "profile {} mixes people {persons:?}:",
            model::format_profile_id(*profile)
        ));
        let mut rows: Vec<usize> = (0..drafts.len())
            .filter(|&i| profile_of[i] == Some(*profile) && knowable[i])
            .collect();
        rows.sort_by_key(|&i| offset_of[i]);
        examples.extend(rows.into_iter().take(EXAMPLE_EVENTS_MAX).map(describe));
    }
    // Recall: pairs within each linkable group, and how many share a profile.
    let mut by_group: HashMap<usize, HashMap<Option<ProfileId>, u64>> = HashMap::new();
    for i in (0..drafts.len()).filter(|&i| knowable[i]) {
        let group = groups.find(i);
        *by_group
            .entry(group)
            .or_default()
            .entry(profile_of[i])
            .or_default() += 1;
    }
    for (group, profiles) in by_group
        .iter()
        .filter(|(_, p)| p.len() > 1)
        .take(EXAMPLES_MAX)
    {
        examples.push(format!(
            "linkable events of one person came out in {} profiles:",
            profiles.len()
        ));
        let mut rows: Vec<usize> = (0..drafts.len())
            .filter(|&i| knowable[i] && groups.find(i) == *group)
            .collect();
        rows.sort_by_key(|&i| offset_of[i]);
        examples.extend(rows.into_iter().take(EXAMPLE_EVENTS_MAX).map(describe));
    }
    let (mut linkable, mut linked, mut resolved_groups) = (0, 0, 0);
    for profiles in by_group.values() {
        linkable += pairs(profiles.values().sum());
        // Unattributed events are together with nothing.
        linked += profiles
            .iter()
            .map(|(p, n)| if p.is_some() { pairs(*n) } else { 0 })
            .sum::<u64>();
        resolved_groups += profiles.len();
    }
    Figures {
        people: people.len(),
        events: offset_of.len(),
        redeliveries: redelivered.len(),
        profiles,
        unknowable: knowable.iter().filter(|k| !**k).count(),
        unattributed,
        precision: if together == 0 {
            1.0
        } else {
            together_true as f64 / together as f64
        },
        recall: if linkable == 0 {
            1.0
        } else {
            linked as f64 / linkable as f64
        },
        mixed_profiles,
        together_pairs: (together, together_true),
        linkable_pairs: (linkable, linked),
        truth_groups: by_group.len(),
        resolved_groups,
        refused: world.applied.iter().map(|a| a.refused as u64).sum(),
        examples,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn print(title: &str, f: &Figures) {
    println!("{title}");
    println!(
        "  people {}  events {} (+{} redelivered)  profiles {}  merges refused {}",
        f.people, f.events, f.redeliveries, f.profiles, f.refused
    );
    println!(
        "  events with no knowable person (only shared identifiers) {}  knowable but unattributed {}",
        f.unknowable, f.unattributed
    );
    println!(
        "  precision {:.5}  ({} of {} pairs put together are one person; {} profiles mix people)",
        f.precision, f.together_pairs.1, f.together_pairs.0, f.mixed_profiles
    );
    println!(
        "  recall    {:.5}  ({} of {} linkable pairs put together; {} linkable groups came out as {} pieces)",
        f.recall, f.linkable_pairs.1, f.linkable_pairs.0, f.truth_groups, f.resolved_groups
    );
    println!("  {:.1} s", f.seconds);
}

#[test]
fn precision_and_recall_on_synthetic_people() {
    let figures = measure(Mix::default(), IdentityRules::default());
    print(
        "identity resolution accuracy (families share devices, typos, placeholders, late events)",
        &figures,
    );
    assert!(figures.events > 50_000, "{figures:?}");
    assert!(figures.unknowable > 0, "the mix has shared devices");
    assert_eq!(figures.unattributed, 0, "{figures:?}");
    assert!(
        figures.precision >= PRECISION_MIN,
        "precision {} < {PRECISION_MIN}; for example:\n{}",
        figures.precision,
        figures.examples.join("\n")
    );
    assert!(
        figures.recall >= RECALL_MIN,
        "recall {} < {RECALL_MIN}; for example:\n{}",
        figures.recall,
        figures.examples.join("\n")
    );
}

/// The measure itself must see damage: with placeholders allowed to join people, precision
/// collapses; with one anonymous id per profile, a person's devices stay apart and recall drops
/// while precision holds.
#[test]
fn the_measure_sees_wrong_merges_and_missed_links() {
    let mix = Mix {
        people: 1_000,
        ..Mix::default()
    };
    let config = IdentityConfig {
        default_blocked_values: false,
        ..Default::default()
    };
    let figures = measure(mix.clone(), IdentityRules::from_config(&config).unwrap());
    print("control: no blocked values", &figures);
    assert!(figures.precision < 0.5, "{}", figures.precision);
    assert!(figures.mixed_profiles > 0);

    let config = IdentityConfig {
        identifiers: vec![IdentifierConfig {
            kind: "anonymous_id".into(),
            priority: None,
            limit: Some(1),
            window_days: None,
        }],
        ..Default::default()
    };
    let figures = measure(mix, IdentityRules::from_config(&config).unwrap());
    print("control: one anonymous id per profile", &figures);
    assert!(figures.recall < RECALL_MIN, "{}", figures.recall);
    assert!(figures.precision >= PRECISION_MIN, "{}", figures.precision);
}
