//! The access matrix: every operation of the router × every role × own and foreign workspace,
//! through the real binary.
//!
//! Nothing here lists routes or permissions by hand. The operations come from the OpenAPI
//! document the server serves (a unit test in `routes::openapi` holds it equal to the paths the
//! router serves, and requires every operation to declare `x-tandem-permission`); the role table
//! comes from `GET /api/v1/roles`. A route added with `Authorized<P>` and documented joins the
//! matrix by itself; a route without a check answers without credentials, and fails here.
//!
//! Expected, per operation with permission P and principal (role R, scope S):
//! * no credentials → 401 `missing_credentials`; a bogus token → 401 `invalid_token`;
//! * allowed when R holds P and: the path has `{workspace}` and S covers it, or the path has
//!   none and S is the organization (or P is `ReadSelf`) → anything but 401/403;
//! * otherwise → 403 `forbidden` with a JSON error naming why (the permission, or the workspace);
//! * methods a documented path does not document → 405.

mod common;

use common::*;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const OWN: &str = "demo";
const FOREIGN: &str = "other";

/// How a principal sends its credential.
#[derive(Clone, Debug)]
enum Send {
    Bearer(String),
    /// The session cookie, with the session's CSRF token as the console sends it on changes.
    Cookie {
        session: String,
        csrf: String,
    },
}

#[derive(Clone, Debug)]
struct Principal {
    label: String,
    role: String,
    /// `None`: the organization.
    workspace: Option<String>,
    send: Send,
}

#[derive(Clone, Debug)]
struct Operation {
    method: Method,
    path: String,
    permission: String,
}

impl Operation {
    fn has_workspace(&self) -> bool {
        self.path.contains("{workspace}") || self.path.contains("{ws}")
    }

    /// The path with `{workspace}` set and other parameters filled with harmless values.
    fn url_path(&self, workspace: &str) -> String {
        let mut out = Vec::new();
        for segment in self.path.split('/') {
            out.push(match segment {
                "{workspace}" | "{ws}" => workspace.to_string(),
                "{collection}" => "users".into(),
                "{resource}" => "traits".into(),
                "{id}" if self.path.starts_with("/v1/spaces/") => "user_id:matrix-nobody".into(),
                other if other.starts_with('{') => "matrix-x".into(),
                other => other.to_string(),
            });
        }
        out.join("/")
    }
}

fn operations(document: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (path, methods) in document["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let permission = operation["x-tandem-permission"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} declares no permission"))
                .to_string();
            out.push(Operation {
                method: method.to_uppercase().parse().unwrap(),
                path: path.clone(),
                permission,
            });
        }
    }
    // Logging out ends the session the later checks would use: last.
    out.sort_by_key(|op| op.path == "/api/v1/auth/logout");
    out
}

async fn create_token(server: &TestServer, role: &str, workspace: Option<&str>) -> String {
    let (path, body) = match workspace {
        Some(workspace) => (
            format!("/api/v1/workspaces/{workspace}/tokens"),
            json!({"name": format!("matrix {role} {workspace}"), "role": role}),
        ),
        None => (
            "/api/v1/tokens".to_string(),
            json!({"name": format!("matrix {role}"), "role": role}),
        ),
    };
    let response = client()
        .post(server.url(&path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "creating a {role} token: {body}");
    body["token"].as_str().unwrap().to_string()
}

/// A user of `role` logged in: (session, CSRF token).
async fn create_user_session(
    server: &TestServer,
    role: &str,
    workspace: Option<&str>,
) -> (String, String) {
    let email = format!("{role}-{}@example.test", workspace.unwrap_or("org"));
    let answer = user_login(server, &email, role, workspace, "a long enough password").await;
    let text = |key: &str| answer[key].as_str().unwrap().to_string();
    (text("session"), text("csrf_token"))
}

async fn principals(server: &TestServer, roles: &[String]) -> Vec<Principal> {
    let mut out = vec![Principal {
        label: "admin token".into(),
        role: "org_admin".into(),
        workspace: None,
        send: Send::Bearer(ADMIN_TOKEN.into()),
    }];
    for role in roles {
        for workspace in [None, Some(OWN)] {
            let allowed_scope = match role.as_str() {
                "org_admin" => workspace.is_none(),
                "workspace_admin" => workspace.is_some(),
                _ => true,
            };
            if !allowed_scope {
                continue;
            }
            let token = create_token(server, role, workspace).await;
            out.push(Principal {
                label: format!("{role} token @{}", workspace.unwrap_or("organization")),
                role: role.clone(),
                workspace: workspace.map(str::to_string),
                send: Send::Bearer(token),
            });
        }
    }
    // Sessions too: as a bearer and as the console's cookie.
    let (session, _) = create_user_session(server, "marketer", Some(OWN)).await;
    out.push(Principal {
        label: "marketer session @demo (bearer)".into(),
        role: "marketer".into(),
        workspace: Some(OWN.into()),
        send: Send::Bearer(session),
    });
    let (session, csrf) = create_user_session(server, "privacy_officer", None).await;
    out.push(Principal {
        label: "privacy_officer session @organization (cookie)".into(),
        role: "privacy_officer".into(),
        workspace: None,
        send: Send::Cookie { session, csrf },
    });
    out
}

fn request(
    client: &reqwest::Client,
    server: &TestServer,
    method: Method,
    path: &str,
    send: Option<&Send>,
) -> reqwest::RequestBuilder {
    let builder = client.request(method, server.url(path));
    match send {
        Some(Send::Bearer(token)) => builder.bearer_auth(token),
        Some(Send::Cookie { session, csrf }) => builder
            .header("cookie", format!("theme=dark; tandem_session={session}"))
            .header("x-tandem-csrf", csrf),
        None => builder,
    }
}

/// One cell of the matrix: what was asked, what was expected, what came back.
struct Cell {
    what: String,
    expect_allowed: bool,
    expected_reason: Option<String>,
    status: u16,
    body: Value,
}

impl Cell {
    fn problem(&self) -> Option<String> {
        let code = self.body["error"]["code"].as_str().unwrap_or("");
        let message = self.body["error"]["message"].as_str().unwrap_or("");
        if self.expect_allowed {
            if self.status == 401 || self.status == 403 {
                return Some(format!(
                    "{}: expected allowed, got {} {}",
                    self.what, self.status, self.body
                ));
            }
            return None;
        }
        if self.status != 403 || code != "forbidden" {
            return Some(format!(
                "{}: expected 403 forbidden, got {} {}",
                self.what, self.status, self.body
            ));
        }
        let reason = self.expected_reason.as_deref().unwrap_or("");
        if !message.contains(reason) {
            return Some(format!(
                "{}: the 403 should name `{reason}`: {message}",
                self.what
            ));
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_every_role_own_and_foreign_workspace() {
    let server = TestServer::start(OTHER_WORKSPACE);
    let client = client();
    let document: Value = client
        .get(server.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let table: Value = client
        .get(server.url("/api/v1/roles"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut holds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for role in table["roles"].as_array().unwrap() {
        let permissions = role["permissions"].as_array().unwrap();
        holds.insert(
            role["name"].as_str().unwrap().to_string(),
            permissions
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect(),
        );
    }
    let roles: Vec<String> = holds.keys().cloned().collect();
    assert_eq!(roles.len(), 6, "{table}");
    let operations = operations(&document);
    let guarded: Vec<&Operation> = operations
        .iter()
        .filter(|op| !["public", "write_key", "public_key"].contains(&op.permission.as_str()))
        .collect();
    assert!(
        guarded.len() >= 40,
        "only {} guarded operations",
        guarded.len()
    );
    let principals = principals(&server, &roles).await;

    let mut problems = Vec::new();

    // No credentials, a bogus token: 401 everywhere; public operations answer without one.
    for op in &operations {
        for workspace in [OWN, FOREIGN] {
            let path = op.url_path(workspace);
            let anonymous = request(&client, &server, op.method.clone(), &path, None)
                .send()
                .await
                .unwrap();
            let status = anonymous.status().as_u16();
            let body: Value = anonymous.json().await.unwrap_or(Value::Null);
            match op.permission.as_str() {
                "public" => {
                    if status == 401 || status == 403 {
                        problems.push(format!("public {} {path}: {status}", op.method));
                    }
                }
                // Write keys and the personalization API's public keys are their own credentials.
                "write_key" | "public_key" => {}
                _ => {
                    if status != 401 || body["error"]["code"] != "missing_credentials" {
                        problems.push(format!("no credentials {} {path}: expected 401 missing_credentials, got {status} {body}", op.method));
                    }
                    let bogus = request(
                        &client,
                        &server,
                        op.method.clone(),
                        &path,
                        Some(&Send::Bearer("tdm_tok_bogus".into())),
                    )
                    .send()
                    .await
                    .unwrap();
                    let status = bogus.status().as_u16();
                    let body: Value = bogus.json().await.unwrap_or(Value::Null);
                    if status != 401 || body["error"]["code"] != "invalid_token" {
                        problems.push(format!("bogus token {} {path}: expected 401 invalid_token, got {status} {body}", op.method));
                    }
                }
            }
            if !op.has_workspace() {
                break;
            }
        }
    }

    // Undocumented methods of documented paths are not routed.
    let documented: BTreeMap<&str, BTreeSet<String>> =
        operations.iter().fold(BTreeMap::new(), |mut map, op| {
            map.entry(op.path.as_str())
                .or_default()
                .insert(op.method.to_string());
            map
        });
    for (path, methods) in &documented {
        let op = operations.iter().find(|op| op.path == *path).unwrap();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if methods.contains(method) {
                continue;
            }
            let answer = request(
                &client,
                &server,
                method.parse().unwrap(),
                &op.url_path(OWN),
                Some(&Send::Bearer(ADMIN_TOKEN.into())),
            )
            .send()
            .await
            .unwrap();
            if answer.status() != 405 {
                problems.push(format!(
                    "{method} {path} is not documented but answers {}",
                    answer.status()
                ));
            }
        }
    }

    // The matrix.
    let mut cases = Vec::new();
    for op in &guarded {
        for principal in &principals {
            for workspace in [OWN, FOREIGN] {
                let holds_permission = holds[&principal.role].contains(&op.permission);
                let (in_scope, reason) = match (op.has_workspace(), principal.workspace.as_deref())
                {
                    (true, Some(own)) if own != workspace => {
                        (false, format!("cannot act in workspace {workspace}"))
                    }
                    (false, Some(_)) if op.permission != "ReadSelf" => {
                        (false, "whole organization".to_string())
                    }
                    _ => (true, String::new()),
                };
                let expected_reason = if !holds_permission {
                    op.permission.clone()
                } else {
                    reason
                };
                cases.push((
                    (*op).clone(),
                    principal.clone(),
                    workspace,
                    holds_permission && in_scope,
                    expected_reason,
                ));
                if !op.has_workspace() {
                    break;
                }
            }
        }
    }
    let total = cases.len();
    let cells: Vec<Cell> = futures::stream::iter(cases)
        .map(
            |(op, principal, workspace, expect_allowed, expected_reason)| {
                let client = client.clone();
                let server = &server;
                async move {
                    let path = op.url_path(workspace);
                    let answer = request(
                        &client,
                        server,
                        op.method.clone(),
                        &path,
                        Some(&principal.send),
                    )
                    .send()
                    .await
                    .unwrap();
                    let status = answer.status().as_u16();
                    // Live streams never end: only their status matters.
                    let body = if status == 200 && path.ends_with("/live") {
                        Value::Null
                    } else {
                        answer.json().await.unwrap_or(Value::Null)
                    };
                    Cell {
                        what: format!(
                            "{} {path} as {} [{}]",
                            op.method, principal.label, op.permission
                        ),
                        expect_allowed,
                        expected_reason: Some(expected_reason),
                        status,
                        body,
                    }
                }
            },
        )
        .buffered(4)
        .collect()
        .await;
    let allowed = cells.iter().filter(|c| c.expect_allowed).count();
    problems.extend(cells.iter().filter_map(Cell::problem));
    assert!(
        problems.is_empty(),
        "{} of {total} cells wrong (+ 401/405 checks):\n{}",
        problems.len(),
        problems.join("\n")
    );
    // Both sides of the matrix were exercised.
    assert!(
        allowed > 100 && total - allowed > 100,
        "allowed {allowed} of {total}"
    );
    eprintln!(
        "access matrix: {total} cells ({allowed} allowed), {} principals, {} operations",
        principals.len(),
        guarded.len()
    );

    // Every denial is in the audit log, and the log verifies.
    let verify = run_cli(&["audit", "verify", "--data", server.data.to_str().unwrap()]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let denied: Value = client
        .get(server.url("/api/v1/audit?action=access.denied&limit=1000"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let denials = denied["entries"].as_array().unwrap().len();
    assert!(
        denials >= (total - allowed).min(1000),
        "{denials} denials audited of {}",
        total - allowed
    );
}
