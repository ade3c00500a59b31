//! The personalization API through the real binary, with its policy set through the management
//! API (no `[workspaces.personalization]` in the file): a personal-data trait, an unknown
//! audience and an event condition in a rule refused with their fields; a public key scoped to
//! its workspace (two workspaces know the same userId differently; a key is never a management
//! credential, nor a management token a public key; one workspace cannot revoke another's key);
//! the allow-list (email never shown; an audience not allow-listed used by rules but not shown);
//! rules deciding per slot, following events in real time; the CORS preflight a browser sends;
//! an unknown visitor; the key by header, HTTP Basic and `?key=`; keys and policy surviving a
//! restart (answered from the store, then the cache). And a policy declared in the file: the same
//! answers, other origins and missing or revoked keys refused, the policy read-only through the API.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const OTHER_WRITE_KEY: &str = "other-write-key-0123456789";
const WAIT: Duration = Duration::from_secs(30);

const AUDIENCES: &str = r#"
[[workspaces.audiences]]
id = "high-value"
name = "High value"
condition = { trait = "ltv", op = "gte", value = 1000 }

[[workspaces.audiences]]
id = "subscribers"
name = "Newsletter subscribers"
condition = { trait = "newsletter", op = "eq", value = true }
"#;

async fn put_policy(server: &TestServer, workspace: &str, policy: &Value) -> (u16, Value) {
    let response = client()
        .put(server.url(&format!("/api/v1/workspaces/{workspace}/personalization")))
        .bearer_auth(ADMIN_TOKEN)
        .json(policy)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn identify(server: &TestServer, write_key: &str, body: Value) {
    let response = client()
        .post(server.url("/v1/identify"))
        .header("authorization", basic(write_key))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// `GET /v1/personalize?{query}` with the key in `X-Tandem-Key`.
async fn ask(server: &TestServer, key: &str, query: &str) -> (u16, Value) {
    let response = client()
        .get(server.url(&format!("/v1/personalize?{query}")))
        .header("x-tandem-key", key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Asks until `done` holds for the answer (unify applies events behind collect).
async fn ask_until(
    server: &TestServer,
    key: &str,
    query: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, answer) = ask(server, key, query).await;
        assert_eq!(status, 200, "{answer}");
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "never reached: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_key(server: &TestServer, workspace: &str, origins: Value) -> (String, String) {
    let (status, key) = admin_post(
        server,
        &format!("/api/v1/workspaces/{workspace}/personalization/keys"),
        &json!({"name": format!("{workspace} site"), "allowed_origins": origins}),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("tdm_pub_"), "{key}");
    (key["id"].as_str().unwrap().to_string(), secret)
}

fn problem_fields(body: &Value) -> Vec<String> {
    body["error"]["details"]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("problems in {body}"))
        .iter()
        .map(|p| p["field"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_key_reads_its_workspace_allow_list_and_rule_decisions() {
    let mut server = TestServer::start(&format!("{AUDIENCES}{OTHER_WORKSPACE}"));

    // Refused policies name every problem's field; nothing is saved.
    let (status, body) = put_policy(
        &server,
        "demo",
        &json!({
            "traits": ["plan", "email"],
            "audiences": ["nope"],
            "rules": [{"id": "r", "slot": "banner", "offer": "x",
                       "when": {"event": "Order Completed", "at_least": 1}}]
        }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    let fields = problem_fields(&body);
    for expected in ["traits[1]", "audiences[0]", "rules[0].when"] {
        assert!(fields.iter().any(|f| f == expected), "{expected}: {body}");
    }
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("personal data"));
    let (status, body) = put_policy(&server, "demo", &json!({"traits": "plan"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, policy) = admin_get(&server, "/api/v1/workspaces/demo/personalization").await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["traits"], json!([]), "nothing saved: {policy}");

    // The policies: demo shows plan and ltv and high-value; rules use subscribers too.
    let demo_policy = json!({
        "traits": ["plan", "ltv"],
        "audiences": ["high-value"],
        "rules": [
            {"id": "vip", "slot": "homepage_banner", "offer": "vip-banner",
             "when": {"all": [{"audience": "high-value"}, {"not": {"audience": "subscribers"}}]}},
            {"id": "pro-upsell", "slot": "homepage_banner", "offer": {"banner": "upsell", "discount": 10},
             "when": {"trait": "plan", "op": "eq", "value": "pro"}},
            {"id": "welcome", "slot": "homepage_banner", "offer": "welcome",
             "when": {"not": {"audience": "high-value"}}},
            {"id": "gold-badge", "slot": "badge", "offer": "gold",
             "when": {"trait": "ltv", "op": "gte", "value": 2000}}
        ]
    });
    let (status, body) = put_policy(&server, "demo", &demo_policy).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = put_policy(&server, "other", &json!({"traits": ["plan"]})).await;
    assert_eq!(status, 200, "{body}");
    let (status, policy) = admin_get(&server, "/api/v1/workspaces/demo/personalization").await;
    assert_eq!(status, 200);
    assert_eq!(policy["managed_by"], "api");
    assert_eq!(policy["rules"].as_array().unwrap().len(), 4);

    let (demo_key_id, demo_key) = create_key(&server, "demo", json!([])).await;
    let (other_key_id, other_key) =
        create_key(&server, "other", json!(["https://other.example"])).await;

    // The same userId in both workspaces, known differently.
    identify(
        &server,
        WRITE_KEY,
        json!({"userId": "vip-1", "anonymousId": "browser-1",
               "traits": {"plan": "pro", "ltv": 2500, "email": "vip@example.test", "newsletter": false}}),
    )
    .await;
    identify(
        &server,
        OTHER_WRITE_KEY,
        json!({"userId": "vip-1", "traits": {"plan": "other-plan", "ltv": 5}}),
    )
    .await;

    let answer = ask_until(&server, &demo_key, "anonymousId=browser-1", |a| {
        a["profile"]["known"] == true && a["decisions"]["homepage_banner"] == "vip-banner"
    })
    .await;
    assert_eq!(answer["workspace"], "demo");
    assert_eq!(
        answer["profile"]["traits"],
        json!({"plan": "pro", "ltv": 2500}),
        "allow-listed only, email never: {answer}"
    );
    assert_eq!(answer["profile"]["audiences"], json!(["high-value"]));
    assert_eq!(
        answer["decisions"],
        json!({"homepage_banner": "vip-banner", "badge": "gold"})
    );
    assert_eq!(answer["rules"], json!(["vip", "gold-badge"]));
    assert!(!answer.to_string().contains("vip@example.test"), "{answer}");

    // The other workspace's key sees the other workspace's profile only, from its origin.
    let other = client()
        .get(server.url("/v1/personalize?userId=vip-1"))
        .header("x-tandem-key", &other_key)
        .header("origin", "https://other.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(
        other.headers()["access-control-allow-origin"],
        "https://other.example"
    );
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["workspace"], "other");
    assert_eq!(other["profile"]["traits"], json!({"plan": "other-plan"}));
    assert_eq!(other["decisions"], json!({}));
    let (status, body) = ask(&server, &other_key, "userId=vip-1").await;
    assert_eq!(
        status, 403,
        "no Origin, a key for other.example only: {body}"
    );
    assert_eq!(body["error"]["code"], "forbidden");

    // A public key is no management credential, and a management token is no public key.
    for path in [
        "/api/v1/workspaces/demo/audiences",
        "/api/v1/workspaces/demo/personalization",
        "/v1/spaces/demo/collections/users/profiles/user_id:vip-1/traits",
    ] {
        let response = client()
            .get(server.url(path))
            .bearer_auth(&demo_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    let (status, body) = ask(&server, ADMIN_TOKEN, "userId=vip-1").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_token");
    // One workspace cannot revoke (or list) another's key.
    let (status, _) = admin_post(
        &server,
        &format!("/api/v1/workspaces/demo/personalization/keys/{other_key_id}/revoke"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, keys) = admin_get(&server, "/api/v1/workspaces/demo/personalization/keys").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [demo_key_id.as_str()]);
    assert!(
        keys.to_string().find("tdm_pub_").is_none(),
        "never shown again"
    );

    // Other ways to present the key: HTTP Basic (user name) and `?key=`; the POST form.
    let basic_answer: Value = client()
        .get(server.url("/v1/personalize?userId=vip-1"))
        .header("authorization", basic(&demo_key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(basic_answer["decisions"], answer["decisions"]);
    let by_param: Value = client()
        .get(server.url(&format!("/v1/personalize?userId=vip-1&key={demo_key}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_param["profile"], answer["profile"]);
    let posted = client()
        .post(server.url("/v1/personalize"))
        .header("x-tandem-key", &demo_key)
        .json(&json!({"anonymousId": "browser-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let posted: Value = posted.json().await.unwrap();
    assert_eq!(posted["profile"], answer["profile"]);

    // The browser's preflight for the key header.
    let preflight = client()
        .request(reqwest::Method::OPTIONS, server.url("/v1/personalize"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-tandem-key")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase()
        .contains("x-tandem-key"));
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("GET"));

    // An unknown visitor: nothing known, the rules' default; naming nobody is a 400.
    let (status, stranger) = ask(&server, &demo_key, "anonymousId=never-seen").await;
    assert_eq!(status, 200, "{stranger}");
    assert_eq!(
        stranger["profile"],
        json!({"known": false, "traits": {}, "audiences": []})
    );
    assert_eq!(stranger["decisions"], json!({"homepage_banner": "welcome"}));
    let (status, body) = ask(&server, &demo_key, "anonymousId=").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");

    // Real time: subscribing moves vip-1 into an audience that is not shown, and the rules
    // fall through to the next one for the slot.
    identify(
        &server,
        WRITE_KEY,
        json!({"userId": "vip-1", "traits": {"newsletter": true}}),
    )
    .await;
    let answer = ask_until(&server, &demo_key, "userId=vip-1", |a| {
        a["decisions"]["homepage_banner"] != "vip-banner"
    })
    .await;
    assert_eq!(
        answer["decisions"],
        json!({"homepage_banner": {"banner": "upsell", "discount": 10}, "badge": "gold"})
    );
    assert_eq!(
        answer["profile"]["audiences"],
        json!(["high-value"]),
        "subscribers is not allow-listed: {answer}"
    );

    // A policy change applies at once: ltv no longer shown, and no rule may read it then.
    let mut narrower = demo_policy.clone();
    narrower["traits"] = json!(["plan"]);
    let (status, body) = put_policy(&server, "demo", &narrower).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(problem_fields(&body), ["rules[3].when"], "{body}");
    narrower["rules"].as_array_mut().unwrap().pop();
    let (status, body) = put_policy(&server, "demo", &narrower).await;
    assert_eq!(status, 200, "{body}");
    let (_, answer) = ask(&server, &demo_key, "userId=vip-1").await;
    assert_eq!(answer["profile"]["traits"], json!({"plan": "pro"}));
    assert_eq!(answer["decisions"].get("badge"), None, "{answer}");
    let (_, policy) = admin_get(&server, "/api/v1/workspaces/demo/personalization").await;
    assert_eq!(policy["traits"], json!(["plan"]));

    // Keys and the API's policy survive a restart; the first answer is read from the store.
    server.restart();
    let (status, answer) = ask(&server, &demo_key, "userId=vip-1").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["profile"]["known"], true);
    assert_eq!(answer["profile"]["traits"], json!({"plan": "pro"}));
    assert_eq!(
        answer["decisions"]["homepage_banner"],
        json!({"banner": "upsell", "discount": 10})
    );
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tandem_personalize_cache_total{result=\"miss\"}"),
        "{metrics}"
    );

    // Revoked: refused at once.
    let (status, _) = admin_post(
        &server,
        &format!("/api/v1/workspaces/demo/personalization/keys/{demo_key_id}/revoke"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = ask(&server, &demo_key, "userId=vip-1").await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_declared_in_the_file_answers_and_is_read_only() {
    let extra = r#"
[[workspaces.audiences]]
id = "high-value"
name = "High value"
condition = { trait = "ltv", op = "gte", value = 1000 }

[[workspaces.audiences]]
id = "churned"
name = "Churned"
condition = { trait = "status", op = "eq", value = "churned" }

[workspaces.personalization]
traits = ["plan", "ltv"]
audiences = ["high-value"]
[[workspaces.personalization.rules]]
id = "vip-banner"
slot = "homepage_banner"
offer = "vip-banner"
when = { all = [{ audience = "high-value" }, { not = { audience = "churned" } }] }
[[workspaces.personalization.rules]]
id = "welcome"
slot = "homepage_banner"
offer = "welcome-banner"
when = { not = { audience = "high-value" } }
"#;
    let server = TestServer::start(extra);
    let (status, key) = admin_post(
        &server,
        "/api/v1/workspaces/demo/personalization/keys",
        &json!({"name": "shop", "allowed_origins": ["https://shop.example"]}),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let public = key["key"].as_str().unwrap().to_string();
    identify(
        &server,
        WRITE_KEY,
        json!({"userId": "vip-1", "anonymousId": "browser-1",
               "traits": {"plan": "gold", "ltv": 2500, "email": "vip@example.test"}}),
    )
    .await;
    let ask = |visitor: &str| {
        client()
            .get(server.url(&format!("/v1/personalize?anonymousId={visitor}")))
            .header("x-tandem-key", &public)
            .header("origin", "https://shop.example")
            .send()
    };
    let answer: Value = wait_until_async(|| async {
        let answer: Value = ask("browser-1").await.unwrap().json().await.unwrap();
        (answer["decisions"]["homepage_banner"] == "vip-banner").then_some(answer)
    })
    .await;
    assert_eq!(
        answer["profile"]["traits"],
        json!({"plan": "gold", "ltv": 2500}),
        "email never: {answer}"
    );
    assert_eq!(answer["profile"]["audiences"], json!(["high-value"]));
    // Churned: the rule falls through, and "churned" is not allow-listed to be shown.
    identify(
        &server,
        WRITE_KEY,
        json!({"userId": "vip-1", "traits": {"status": "churned"}}),
    )
    .await;
    let answer = wait_until_async(|| async {
        let answer: Value = ask("browser-1").await.unwrap().json().await.unwrap();
        (answer["decisions"] == json!({})).then_some(answer)
    })
    .await;
    assert_eq!(answer["profile"]["audiences"], json!(["high-value"]));
    // An unknown visitor gets the default decision; CORS answers the browser.
    let response = ask("stranger").await.unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["profile"]["known"], false);
    assert_eq!(answer["decisions"]["homepage_banner"], "welcome-banner");
    // POST form.
    let posted: Value = client()
        .post(server.url("/v1/personalize"))
        .header("x-tandem-key", &public)
        .header("origin", "https://shop.example")
        .json(&json!({"userId": "vip-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(posted["profile"]["known"], true, "{posted}");
    // Another origin, no key, a revoked key.
    let other = client()
        .get(server.url("/v1/personalize?anonymousId=browser-1"))
        .header("x-tandem-key", &public)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
    let none = client()
        .get(server.url("/v1/personalize?anonymousId=browser-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let id = key["id"].as_str().unwrap();
    let (status, _) = admin_post(
        &server,
        &format!("/api/v1/workspaces/demo/personalization/keys/{id}/revoke"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ask("browser-1").await.unwrap().status(), 401);
    // The file's policy is read-only; an allow-listed email is refused anyway.
    let response = client()
        .put(server.url("/api/v1/workspaces/demo/personalization"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"traits": ["plan"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
}

async fn wait_until_async<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
