use super::*;
use proptest::prelude::*;
use serde_json::json;

fn rules(list: &[(&str, &str)]) -> Classifier {
    let rules: Vec<PathRule> = list
        .iter()
        .map(|(path, category)| PathRule {
            path: path.to_string(),
            category: category.to_string(),
        })
        .collect();
    Classifier::new(&rules)
}

fn policy(list: &[(&str, &str)]) -> Policy {
    let table = list
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Policy::parse(&table).unwrap()
}

fn salt() -> Salt {
    Salt::new("s3cret-salt".into())
}

fn sample() -> Value {
    json!({
        "type": "identify",
        "messageId": "m-1",
        "timestamp": "2026-12-07T10:00:00.000Z",
        "userId": "u-42",
        "traits": {
            "email": "jane@example.com",
            "phone": "+33612345689",
            "firstName": "Jane",
            "lastName": "Doe",
            "plan": "pro",
            "age": 41,
            "card": "4111 1111 1111 1111",
            "ssn": "123-45-6789",
        },
        "properties": {"name": "Pricing", "loyalty_id": 778899, "note": "call me"},
        "context": {"ip": "203.0.113.77", "userAgent": "Mozilla/5.0", "library": {"name": "analytics.js", "version": "2.1.0"}},
    })
}

#[test]
fn classification_of_a_sample_event() {
    let classifier = rules(&[("properties.loyalty_id", "loyalty")]);
    let fields = classifier.fields(&sample());
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(path, category)| (path.as_str(), category.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("context.ip", "ip"),
            ("properties.loyalty_id", "loyalty"),
            ("traits.card", "card"),
            ("traits.email", "email"),
            ("traits.firstName", "name"),
            ("traits.lastName", "name"),
            ("traits.phone", "phone"),
            ("traits.ssn", "national_id"),
        ]
    );
}

#[test]
fn non_pii_is_left_alone() {
    let classifier = Classifier::default();
    for (path, value) in [
        (vec!["properties", "name"], json!("Pricing")),
        (vec!["properties", "plan"], json!("pro")),
        (vec!["traits", "age"], json!(41)),
        (vec!["properties", "sku"], json!("4111111111111112")),
        (vec!["properties", "orderId"], json!("0612345689")),
        (vec!["properties", "when"], json!("2026-12-07T10:00:00Z")),
        (vec!["context", "library", "version"], json!("1.2.3")),
        (vec!["properties", "text"], json!("mail jane@example.com")),
        (vec!["traits", "email"], json!("")),
    ] {
        assert_eq!(
            classifier.classify(&path, &value, Some("track")),
            None,
            "{path:?} {value}"
        );
    }
    let mut event = json!({"type": "track", "event": "Viewed", "properties": {"name": "Pricing", "plan": "pro", "n": 3}});
    let before = event.clone();
    let applied = apply(&mut event, &classifier, &Policy::mask_all(), &salt());
    assert_eq!(event, before);
    assert_eq!(applied.changed(), 0);
}

#[test]
fn names_by_path() {
    let classifier = Classifier::default();
    let name = json!("Jane");
    assert_eq!(
        classifier.classify(&["traits", "name"], &name, Some("identify")),
        Some(NAME)
    );
    assert_eq!(
        classifier.classify(&["context", "traits", "lastName"], &name, Some("track")),
        Some(NAME)
    );
    assert_eq!(
        classifier.classify(&["properties", "first_name"], &name, Some("track")),
        Some(NAME)
    );
    assert_eq!(
        classifier.classify(&["properties", "name"], &name, Some("page")),
        None,
        "a page's name"
    );
    assert_eq!(
        classifier.classify(&["traits", "name"], &name, Some("group")),
        None,
        "an account's name"
    );
    assert_eq!(
        classifier.classify(&["traits", "address", "name"], &name, Some("identify")),
        None
    );
}

#[test]
fn path_rules_win_over_value_detection() {
    let classifier = rules(&[
        ("properties.support_email", NONE),
        ("traits.address", "postal"),
        ("traits.address.country", NONE),
    ]);
    assert_eq!(
        classifier.classify(
            &["properties", "support_email"],
            &json!("help@example.com"),
            None
        ),
        None
    );
    assert_eq!(
        classifier.classify(&["traits", "address", "street"], &json!("1 Main St"), None),
        Some("postal"),
        "a rule on an object covers its values"
    );
    assert_eq!(
        classifier.classify(&["traits", "address", "country"], &json!("FR"), None),
        None,
        "the most specific rule wins"
    );
    assert_eq!(classifier.custom_categories(), ["postal"]);
}

#[test]
fn identities_by_type_then_value() {
    let classifier = Classifier::default();
    assert_eq!(classifier.classify_identity("email", "x"), Some(EMAIL));
    assert_eq!(classifier.classify_identity("phone", "x"), Some(PHONE));
    assert_eq!(
        classifier.classify_identity("user_id", "jane@example.com"),
        Some(EMAIL)
    );
    assert_eq!(classifier.classify_identity("user_id", "u-42"), None);
}

#[test]
fn masks_keep_a_documented_hint() {
    assert_eq!(mask(EMAIL, &json!("jane@example.com")), "j***@example.com");
    assert_eq!(mask(PHONE, &json!("+33612345689")), "+33*******89");
    assert_eq!(mask(PHONE, &json!("+33 6 12 34 56")), "+33*****56");
    assert_eq!(
        mask(CARD, &json!("4111 1111 1111 1111")),
        "************1111"
    );
    assert_eq!(mask(IP, &json!("203.0.113.77")), "203.0.113.0");
    assert_eq!(
        mask(IP, &json!("2001:db8:85a3:1:2:3:4:5")),
        "2001:db8:85a3::"
    );
    assert_eq!(mask(NAME, &json!("Jane  Doe")), "J*** D***");
    assert_eq!(mask(NATIONAL_ID, &json!("123-45-6789")), "***-**-6789");
    assert_eq!(mask("loyalty", &json!(778899)), "7***");
    assert_eq!(mask("loyalty", &json!("ab")), "***");
    assert_eq!(
        mask(EMAIL, &json!("not an email")),
        "n***",
        "generic fallback"
    );
    assert_eq!(mask(EMAIL, &Value::Null), Value::Null);
}

#[test]
fn anonymized_ips() {
    let ip = |text: &str| anonymize_ip(text.parse().unwrap()).to_string();
    assert_eq!(ip("192.168.1.20"), "192.168.1.0");
    assert_eq!(ip("2001:db8:abcd:12:34:56:78:9a"), "2001:db8:abcd::");
    assert_eq!(ip("::ffff:10.1.2.3"), "10.1.2.0");
}

#[test]
fn hash_is_sha256_of_salt_then_value() {
    assert_eq!(
        hash(&Salt::new("salt".into()), "value"),
        hash(&Salt::new(String::new()), "saltvalue")
    );
    let first = hash(&salt(), "jane@example.com");
    assert_eq!(first.len(), 64);
    assert!(first
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(first, hash(&salt(), "jane@example.com"), "stable");
    assert_ne!(first, hash(&Salt::new("other".into()), "jane@example.com"));
    assert_eq!(format!("{:?}", salt()), "Salt(…)", "never printed");
}

#[test]
fn hash_known_vector() {
    // sha256("abc") with an empty salt (FIPS 180-2 example).
    assert_eq!(
        hash(&Salt::new(String::new()), "abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hash(&Salt::new("a".into()), "bc"),
        hash(&Salt::new(String::new()), "abc")
    );
}

#[test]
fn each_action_on_an_event() {
    let classifier = rules(&[("properties.loyalty_id", "loyalty")]);
    let policy = policy(&[
        ("email", "hash"),
        ("phone", "mask"),
        ("card", "drop"),
        ("name", "allow"),
        ("default", "mask"),
    ]);
    let mut event = sample();
    let applied = apply(&mut event, &classifier, &policy, &salt());
    assert_eq!(event["traits"]["email"], hash(&salt(), "jane@example.com"));
    assert_eq!(event["traits"]["phone"], "+33*******89");
    assert!(event["traits"].get("card").is_none(), "dropped");
    assert_eq!(event["traits"]["firstName"], "Jane");
    assert_eq!(event["traits"]["ssn"], "***-**-6789", "default: mask");
    assert_eq!(event["properties"]["loyalty_id"], "7***");
    assert_eq!(event["context"]["ip"], "203.0.113.0");
    assert_eq!(event["messageId"], "m-1");
    assert_eq!(event["traits"]["plan"], "pro");
    assert_eq!(event["context"]["userAgent"], "Mozilla/5.0");
    assert_eq!(
        applied,
        Applied {
            hashed: 1,
            masked: 4,
            dropped: 1
        }
    );
}

#[test]
fn arrays_and_depth() {
    let classifier = Classifier::default();
    let policy = policy(&[("default", "drop")]);
    let mut event = json!({"properties": {"emails": ["a@example.com", "keep", "b@example.com"]}});
    apply(&mut event, &classifier, &policy, &salt());
    assert_eq!(event, json!({"properties": {"emails": ["keep"]}}));

    let mut deep = json!("x@example.com");
    for _ in 0..WALK_DEPTH_MAX + 2 {
        deep = json!({ "d": deep });
    }
    let mut event = json!({ "properties": deep });
    let applied = apply(&mut event, &classifier, &Policy::mask_all(), &salt());
    assert!(applied.dropped >= 1, "too deep to classify: removed");
    assert!(!event.to_string().contains("x@example.com"));
}

#[test]
fn apply_at_a_base_path() {
    let classifier = Classifier::default();
    let mut value = json!("Jane Doe");
    apply_at(
        &mut value,
        &["traits", "name"],
        &classifier,
        &Policy::mask_all(),
        &salt(),
    );
    assert_eq!(value, "J*** D***");
    let mut value = json!("a@example.com");
    apply_at(
        &mut value,
        &["traits", "work"],
        &classifier,
        &policy(&[("email", "drop")]),
        &salt(),
    );
    assert_eq!(value, Value::Null);
}

#[test]
fn policy_problems_name_the_key() {
    let table = [("email", "hush"), ("Bad Name", "mask"), ("none", "drop")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let problems = Policy::parse(&table).unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["Bad Name", "email", "none"]);
    assert!(problems[1].1.contains("unknown action `hush`"));
    assert!(Policy::allow_all().allows_all());
    assert!(!policy(&[("email", "hash")]).allows_all());
    assert!(policy(&[("email", "allow")]).allows_all());
}

#[test]
fn category_and_path_checks() {
    assert!(check_category("loyalty_id").is_ok());
    assert!(check_category("Loyalty").is_err());
    assert!(check_category("").is_err());
    assert!(check_rule_path("properties.loyalty_id").is_ok());
    assert!(check_rule_path("properties..x").is_err());
    assert!(check_rule_path("").is_err());
}

/// A personal value of a category and where it sits; every generated value holds a character
/// no lowercase hex hash has (`@`, `+`, `.`, a space, `-` or an upper-case letter), so finding
/// it in the output can only mean it leaked.
fn personal() -> impl Strategy<Value = (&'static str, &'static str, String)> {
    prop_oneof![
        "[a-z]{3,10}\\.[a-z]{2,8}@[a-z]{3,10}\\.(com|org|fr)".prop_map(|v| ("traits", "email", v)),
        "\\+[1-9][0-9]{9,13}".prop_map(|v| ("traits", "phone", v)),
        (1u8..=223, 0u8..=255, 0u8..=255, 1u8..=255).prop_map(|(a, b, c, d)| (
            "context",
            "ip",
            format!("{a}.{b}.{c}.{d}")
        )),
        "[A-Z][a-z]{3,9} [A-Z][a-z]{3,9}".prop_map(|v| ("traits", "name", v)),
        "[1-5][0-9]{2}-[1-9][0-9]-[1-9][0-9]{3}".prop_map(|v| ("traits", "ssn", v)),
        proptest::collection::vec(0u8..10, 15).prop_map(|mut digits| {
            // Make the 16th digit the Luhn check digit.
            digits[0] = 4;
            let check = (0..10u8)
                .find(|d| {
                    let mut all = digits.clone();
                    all.push(*d);
                    detect::luhn(&all)
                })
                .unwrap();
            digits.push(check);
            let text: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
            (
                "traits",
                "card",
                format!(
                    "{} {} {} {}",
                    &text[..4],
                    &text[4..8],
                    &text[8..12],
                    &text[12..]
                ),
            )
        }),
    ]
}

proptest! {
    #[test]
    fn hash_mask_and_drop_never_leave_the_value(
        fields in proptest::collection::vec(personal(), 1..6),
        action in prop_oneof![Just("hash"), Just("mask"), Just("drop")],
        in_array in any::<bool>(),
    ) {
        let mut event = json!({"type": "identify", "messageId": "m", "traits": {}, "context": {}});
        for (index, (parent, key, value)) in fields.iter().enumerate() {
            // Unique keys: names by a name field of their own, the rest detected by value.
            let key = if *key == "name" {
                detect::NAME_TRAIT_KEYS[index].to_string()
            } else {
                format!("{key}_{index}")
            };
            let slot = if in_array { json!([value]) } else { json!(value) };
            event[*parent].as_object_mut().unwrap().insert(key, slot);
        }
        let classifier = Classifier::default();
        let policy = policy(&[("default", action)]);
        let output = {
            let mut copy = event.clone();
            apply(&mut copy, &classifier, &policy, &salt());
            copy.to_string()
        };
        for (_, _, value) in &fields {
            prop_assert!(!output.contains(value.as_str()), "{value} left in {output}");
        }
        prop_assert!(output.contains("\"messageId\":\"m\""));
    }
}
