//! Parsing, validation with lines, and TOML round trips, all in memory.

use super::*;

const EXAMPLE: &str = include_str!("../../../tandem.example.toml");

/// The shape of the CLI tests' `config_text` (crates/tandem-cli/tests/common/mod.rs).
const HARNESS: &str = r#"[server]
listen = "127.0.0.1:18080"
data_dir = "/tmp/tandem-test/data"

[organization]
name = "Test Org"

[[workspaces]]
id = "demo"
name = "Demo"

[[workspaces.sources]]
id = "web"
name = "Website"
owner = "web-team@example.test"
write_key = "test-write-key-0123456789"

[[workspaces.sources]]
id = "mobile"
name = "Mobile app"
owner = "mobile-team@example.test"
write_key = "test-write-key-mobile-0123456789"

"#;

/// `LINE: path: message` of each problem `text` has (`?` for no line).
fn problems(text: &str) -> Vec<String> {
    let error = parse(text, "t.toml").expect_err("expected problems");
    assert_eq!(error.to_string().lines().count(), error.problems().len());
    error
        .problems()
        .iter()
        .map(|problem| problem.to_string())
        .collect()
}

/// The single problem of `text`, which must start with `expected`.
fn assert_problem(text: &str, expected: &str) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with(expected),
        "expected `{expected}…`, found `{}`",
        found[0]
    );
}

fn source(write_key: &str) -> String {
    format!("[[workspaces]]\nid = \"de\"\nname = \"Germany\"\n\n[[workspaces.sources]]\nid = \"web\"\nname = \"Web\"\nowner = \"o@example.com\"\nwrite_key = \"{write_key}\"\n")
}

#[test]
fn example_file_loads() {
    let config = parse(EXAMPLE, "tandem.example.toml").unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.organization.name, "Example Retail Group");
    let ids: Vec<&str> = config
        .workspaces
        .iter()
        .map(|workspace| workspace.id.as_str())
        .collect();
    assert_eq!(ids, ["de", "fr"]);
    let de_sources: Vec<&str> = config.workspaces[0]
        .sources
        .iter()
        .map(|source| source.id.as_str())
        .collect();
    assert_eq!(
        de_sources,
        ["web", "ios", "crm-import"],
        "crm-import is derived from its name"
    );
    assert!(!config.workspaces[1].sources[1].enabled);
    assert!(config.workspaces[0]
        .sources
        .iter()
        .all(|source| source.enabled && source.purpose.is_some()));
    assert_eq!(config.log.retention_hours, Some(2160));
    assert_eq!(config.collect.rate_limit_events_per_second, Some(5000));
}

#[test]
fn harness_config_loads() {
    let config = parse(HARNESS, "tandem.toml").unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.server.listen, "127.0.0.1:18080");
    assert_eq!(
        config.workspaces[0].sources[1].write_key,
        "test-write-key-mobile-0123456789"
    );
    assert!(config.workspaces[0]
        .sources
        .iter()
        .all(|source| source.enabled && source.purpose.is_none()));
    assert_eq!(config.log, LogConfig::default());
}

#[test]
fn empty_file_is_the_default_config() {
    let config = parse("", "empty.toml").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.server.listen, "127.0.0.1:8080");
    assert_eq!(
        config.server.data_dir,
        std::path::PathBuf::from("./tandem-data")
    );
    assert_eq!(
        config.log.segment_bytes_max,
        tandem_core::limits::DEFAULT_SEGMENT_BYTES_MAX
    );
    assert_eq!(
        config.collect.dedup_entries_max,
        tandem_core::limits::DEFAULT_DEDUP_ENTRIES_MAX
    );
}

#[test]
fn missing_source_fields_point_at_the_source_header() {
    let text =
        "[[workspaces]]\nid = \"de\"\nname = \"Germany\"\n\n[[workspaces.sources]]\nid = \"web\"\n";
    assert_eq!(
        problems(text),
        [
            "line 5: workspaces[0].sources[0].name: missing — every source needs a name",
            "line 5: workspaces[0].sources[0].owner: missing — every source needs an owner",
            "line 5: workspaces[0].sources[0].write_key: missing — every source needs a write key",
        ]
    );
}

#[test]
fn load_error_names_file_and_line() {
    let text = format!("{HARNESS}[[workspaces.sources]]\nid = \"crm\"\nname = \"CRM\"\nwrite_key = \"crm-key-0123456789abc\"\n");
    let error = parse(&text, "tandem.toml").unwrap_err();
    assert_eq!(error.file(), "tandem.toml");
    assert_eq!(
        error.to_string(),
        "tandem.toml:24: workspaces[0].sources[2].owner: missing — every source needs an owner"
    );
}

#[test]
fn blank_owner_is_reported_on_its_line() {
    let text = source("k-0123456789abcdef").replace("owner = \"o@example.com\"", "owner = \"  \"");
    assert_problem(&text, "line 8: workspaces[0].sources[0].owner: missing");
}

#[test]
fn short_write_key() {
    assert_problem(
        &source("short-key"),
        "line 9: workspaces[0].sources[0].write_key: shorter than 16 characters",
    );
}

#[test]
fn write_key_with_colon() {
    assert_problem(
        &source("k:0123456789abcdef"),
        "line 9: workspaces[0].sources[0].write_key: contains `:`",
    );
}

#[test]
fn duplicate_write_key_across_workspaces_names_the_first_source_not_the_key() {
    let text = format!(
        "{}\n[[workspaces]]\nid = \"fr\"\nname = \"France\"\n\n[[workspaces.sources]]\nname = \"Web\"\nowner = \"o\"\nwrite_key = \"same-key-0123456789\"\n",
        source("same-key-0123456789")
    );
    let found = problems(&text);
    assert_eq!(found, ["line 18: workspaces[1].sources[0].write_key: same write key as workspaces[0].sources[0] — every source needs its own"]);
}

#[test]
fn duplicate_workspace_id() {
    let text =
        "[[workspaces]]\nid = \"de\"\nname = \"A\"\n\n[[workspaces]]\nid = \"de\"\nname = \"B\"\n";
    assert_problem(
        text,
        "line 6: workspaces[1].id: `de` is already the id of workspaces[0]",
    );
}

#[test]
fn duplicate_source_id_within_a_workspace_including_derived_ids() {
    let text = format!("{}\n[[workspaces.sources]]\nname = \"Web\"\nowner = \"o\"\nwrite_key = \"other-key-0123456789\"\n", source("k-0123456789abcdef"));
    assert_problem(
        &text,
        "line 11: workspaces[0].sources[1].id: `web` is already the id of sources[0]",
    );
}

#[test]
fn ids_must_be_slugs() {
    let text = source("k-0123456789abcdef").replace("id = \"de\"", "id = \"DE market\"");
    assert_problem(&text, "line 2: workspaces[0].id: `DE market` is not a slug");
    let text = source("k-0123456789abcdef").replace("id = \"web\"", "id = \"-web\"");
    assert_problem(
        &text,
        "line 6: workspaces[0].sources[0].id: `-web` is not a slug",
    );
}

#[test]
fn workspace_needs_id_and_name() {
    assert_eq!(
        problems("[organization]\nname = \"O\"\n\n[[workspaces]]\n"),
        [
            "line 4: workspaces[0].id: missing — every workspace needs an id, a slug like `web`",
            "line 4: workspaces[0].name: missing — every workspace needs a name"
        ]
    );
}

#[test]
fn source_without_id_or_usable_name() {
    let text = "[[workspaces]]\nid = \"de\"\nname = \"D\"\n[[workspaces.sources]]\nname = \"ÄÖ\"\nowner = \"o\"\nwrite_key = \"k-0123456789abcdef\"\n";
    assert_problem(text, "line 4: workspaces[0].sources[0].id: missing");
}

#[test]
fn listen_must_be_host_and_port() {
    assert_problem(
        "[server]\n\nlisten = \"8080\"\n",
        "line 3: server.listen: `8080` is not an address to listen on",
    );
}

#[test]
fn public_url_needs_a_scheme() {
    assert_problem(
        "[server]\npublic_url = \"cdp.example.com\"\n",
        "line 2: server.public_url: must start with http://",
    );
}

#[test]
fn admin_token_too_short() {
    assert_problem(
        "[admin]\ntoken = \"abc\"\n",
        "line 2: admin.token: shorter than 16 characters",
    );
}

#[test]
fn segment_size_bounds() {
    assert_problem(
        "[log]\nsegment_bytes_max = 1000\n",
        "line 2: log.segment_bytes_max: 1000 is outside",
    );
    assert_problem(
        "[log]\nsegment_bytes_max = 5_000_000_000\n",
        "line 2: log.segment_bytes_max: 5000000000 is outside",
    );
    assert!(parse("[log]\nsegment_bytes_max = 1048576\n", "t").is_ok());
    assert!(parse("[log]\nsegment_bytes_max = 4294967296\n", "t").is_ok());
}

#[test]
fn queue_size_lower_bound() {
    assert_problem(
        "[log]\nqueue_bytes_max = 1024\n",
        "line 2: log.queue_bytes_max: 1024 is below 1048576",
    );
}

#[test]
fn retention_rules() {
    assert_problem(
        "[log]\nretention_bytes_max = 1048576\n",
        "line 2: log.retention_bytes_max: smaller than log.segment_bytes_max",
    );
    assert_problem(
        "[log]\nretention_hours = 0\n",
        "line 2: log.retention_hours: must be within 1",
    );
}

#[test]
fn collect_rules() {
    assert_problem(
        "[collect]\ndedup_window_hours = 0\n",
        "line 2: collect.dedup_window_hours: 0 is outside 1",
    );
    assert_problem(
        "[collect]\ndedup_entries_max = 0\n",
        "line 2: collect.dedup_entries_max: must be at least 1",
    );
    assert_problem(
        "[collect]\nrate_limit_events_per_second = 0\n",
        "line 2: collect.rate_limit_events_per_second: must be at least 1",
    );
}

#[test]
fn organization_name_must_not_be_blank() {
    assert_problem(
        "[organization]\nname = \"\"\n",
        "line 2: organization.name: empty",
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = "\
[server]
listen = \"nowhere\"

[log]
queue_bytes_max = 1

[[workspaces]]
id = \"Bad Id\"
name = \"X\"

[[workspaces.sources]]
name = \"Web\"
write_key = \"short\"
";
    assert_eq!(
        problems(text),
        [
            "line 2: server.listen: `nowhere` is not an address to listen on — write host:port, e.g. 127.0.0.1:8080",
            "line 5: log.queue_bytes_max: 1 is below 1048576 (1 MiB)",
            "line 8: workspaces[0].id: `Bad Id` is not a slug — use a-z, 0-9, `-` and `_`, starting with a letter or digit, at most 63 characters",
            "line 11: workspaces[0].sources[0].owner: missing — every source needs an owner",
            "line 13: workspaces[0].sources[0].write_key: shorter than 16 characters — use a long random secret",
        ]
    );
}

#[test]
fn unknown_key_is_reported_with_its_line_and_path() {
    let text = HARNESS.replace(
        "owner = \"mobile-team@example.test\"",
        "ownr = \"mobile-team@example.test\"",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("line 21: workspaces[0].sources[1].ownr: unknown field `ownr`"),
        "{}",
        found[0]
    );
    assert_problem(
        "[sever]\nlisten = \"x\"\n",
        "line 1: sever: unknown field `sever`",
    );
    assert_problem(
        "[log]\nsegment_bytes = 5\n",
        "line 2: log.segment_bytes: unknown field `segment_bytes`",
    );
}

#[test]
fn wrong_type_is_reported_with_its_line_and_path() {
    assert_problem(
        "[organization]\nname = \"O\"\n\n[log]\nsegment_bytes_max = \"big\"\n",
        "line 5: log.segment_bytes_max: invalid type",
    );
}

#[test]
fn syntax_error_is_reported_with_its_line() {
    assert_problem(
        "[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \n",
        "line 3: invalid string; expected",
    );
    assert_problem("[server\n", "line 1: invalid table header");
    assert_problem(
        "[log]\nretention_hours = 1\nretention_hours = 2\n",
        "line 3: duplicate key `retention_hours`",
    );
}

#[test]
fn demo_config_is_valid() {
    let config = demo_with_write_key("demo-key-0123456789abcdef");
    assert_eq!(validate(&config), Ok(()));
    let source = &config.workspaces[0].sources[0];
    assert_eq!(
        (
            config.workspaces[0].id.as_str(),
            source.id.as_str(),
            source.name.as_str()
        ),
        ("demo", "demo-web", "Demo website")
    );
    assert_eq!(parse(&to_toml(&config), "demo.toml").unwrap(), config);
}

#[test]
fn to_toml_round_trips() {
    for text in [EXAMPLE, HARNESS, ""] {
        let config = parse(text, "in.toml").unwrap();
        let printed = to_toml(&config);
        assert_eq!(
            parse(&printed, "out.toml").unwrap_or_else(|error| panic!("{error}\n{printed}")),
            config
        );
    }
}

#[test]
fn to_toml_round_trips_every_optional_field() {
    let mut config = parse(EXAMPLE, "in.toml").unwrap();
    config.admin.token = Some("admin-token-0123456789".into());
    config.log.retention_bytes_max = None;
    config.collect.rate_limit_events_per_second = None;
    assert_eq!(parse(&to_toml(&config), "out.toml").unwrap(), config);
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("tandem-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tandem.toml");
    std::fs::write(&path, HARNESS).unwrap();
    assert_eq!(load(&path).unwrap().workspaces.len(), 1);
    std::fs::write(&path, "[admin]\ntoken = \"x\"\n").unwrap();
    let message = load(&path).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}:2: admin.token: shorter than 16 characters — use a long random secret",
            path.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let message = load(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}: cannot read: ", path.display())),
        "{message}"
    );
}

#[test]
fn identity_rules_are_checked_with_their_lines() {
    let base = source("a-long-enough-write-key");
    let text = format!("{base}\n[workspaces.identity]\nblocked_values = [\"([unclosed\"]\n\n[[workspaces.identity.identifiers]]\ntype = \"email\"\nlimit = 0\n\n[[workspaces.identity.identifiers]]\ntype = \"email\"\n");
    let found = problems(&text);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found
            .iter()
            .any(|p| p
                .contains("workspaces[0].identity.blocked_values[0]: not a regular expression")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("line 16: workspaces[0].identity.identifiers[0].limit")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("identifiers[1].type: `email` already has a rule")),
        "{found:#?}"
    );
}

#[test]
fn computed_traits_are_checked() {
    let base = source("a-long-enough-write-key");
    let text = format!("{base}\n[[workspaces.computed_traits]]\nname = \"revenue\"\nfunction = \"sum\"\n\n[[workspaces.computed_traits]]\nname = \"revenue\"\nfunction = \"median\"\nwindow_days = 0\n[[workspaces.computed_traits.where]]\nproperty = \"x\"\nop = \"like\"\n");
    let found = problems(&text);
    assert!(
        found
            .iter()
            .any(|p| p.contains("computed_traits[0].property: `sum` needs a `property`")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("computed_traits[1].name: `revenue` is already")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("computed_traits[1].function: unknown function `median`")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("computed_traits[1].window_days")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("where[0].op: unknown op `like`")),
        "{found:#?}"
    );
}

const ACTIVATE: &str = r#"
[[workspaces]]
id = "de"
name = "Germany"

[[workspaces.sources]]
id = "web"
name = "Web"
owner = "o@example.com"
write_key = "de-web-0123456789abcdef"

[[workspaces.destinations]]
id = "hook"
name = "Hook"
type = "webhook"
owner = "team@example.com"
[workspaces.destinations.settings]
url = "http://127.0.0.1:9/hook"

[[workspaces.connections]]
id = "web-to-hook"
sources = ["web"]
destination = "hook"
"#;

#[test]
fn example_file_declares_a_destination_and_a_connection() {
    let config = parse(EXAMPLE, "tandem.example.toml").unwrap();
    let workspace = &config.workspaces[0];
    assert_eq!(workspace.destinations[0].kind, "webhook");
    assert_eq!(workspace.destinations[0].settings["batch"], true);
    let connection = &workspace.connections[0];
    assert_eq!(connection.destination, "crm-hook");
    assert_eq!(connection.mappings.len(), 2);
    assert_eq!(connection.delivery, DeliveryConfig::default());
}

#[test]
fn connection_defaults() {
    let config = parse(ACTIVATE, "t.toml").unwrap();
    let connection = &config.workspaces[0].connections[0];
    assert!(connection.enabled && connection.event_types.is_empty());
    assert_eq!(connection.delivery, DeliveryConfig::default());
    assert!(config.workspaces[0].destinations[0].enabled);
}

#[test]
fn destination_needs_owner_and_type() {
    let text = ACTIVATE
        .replace("owner = \"team@example.com\"\n", "")
        .replace("type = \"webhook\"\n", "");
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("line 12: workspaces[0].destinations[0].type: missing"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("line 12: workspaces[0].destinations[0].owner: missing"),
        "{found:#?}"
    );
}

#[test]
fn connection_references_must_exist() {
    let text = ACTIVATE
        .replace("sources = [\"web\"]", "sources = [\"web\", \"app\"]")
        .replace("destination = \"hook\"", "destination = \"nope\"");
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("line 22: workspaces[0].connections[0].sources[1]: no source `app`"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with(
            "line 23: workspaces[0].connections[0].destination: no destination `nope`"
        ),
        "{found:#?}"
    );
}

#[test]
fn connection_rules_with_lines() {
    let text = format!(
        "{ACTIVATE}event_types = [\"track\", \"click\"]\ntransformation = \" \"\n[[workspaces.connections.mappings]]\nop = \"rename\"\n[[workspaces.connections.mappings]]\nop = \"copy\"\nfrom = \"a..b\"\n[workspaces.connections.delivery]\nconcurrency = 0\n"
    );
    let found = problems(&text);
    let expected = [
        "line 24: workspaces[0].connections[0].event_types[1]: unknown event type `click`",
        "line 25: workspaces[0].connections[0].transformation: empty",
        "line 27: workspaces[0].connections[0].mappings[0].op: unknown op `rename`",
        "line 28: workspaces[0].connections[0].mappings[1].to: `copy` needs `to`",
        "line 30: workspaces[0].connections[0].mappings[1].from: a dotted path",
        "line 32: workspaces[0].connections[0].delivery.concurrency: 0 is outside 1 ..= 64",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (found, expected) in found.iter().zip(expected) {
        assert!(
            found.starts_with(expected),
            "expected `{expected}…`, found `{found}`"
        );
    }
}

#[test]
fn duplicate_destination_and_connection_ids() {
    let text = format!(
        "{ACTIVATE}\n[[workspaces.destinations]]\nid = \"hook\"\nname = \"Again\"\ntype = \"webhook\"\nowner = \"o@example.com\"\n\n[[workspaces.connections]]\nid = \"web-to-hook\"\nsources = [\"*\"]\ndestination = \"hook\"\n"
    );
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].contains("destinations[1].id: `hook` is already the id of destinations[0]"));
    assert!(
        found[1].contains("connections[1].id: `web-to-hook` is already the id of connections[0]")
    );
}

#[test]
fn destination_settings_are_checked_by_the_validator_passed_in() {
    fn validator(kind: &str, settings: &serde_json::Value) -> Vec<(String, String)> {
        assert_eq!(kind, "webhook");
        if settings["url"]
            .as_str()
            .is_some_and(|url| url.starts_with("http://127.0.0.1:9/"))
        {
            vec![("url".to_string(), "port 9 is discard".to_string())]
        } else {
            Vec::new()
        }
    }
    assert!(
        parse(ACTIVATE, "t.toml").is_ok(),
        "no validator, no settings check"
    );
    let error = parse_with(ACTIVATE, "t.toml", Some(validator)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "t.toml:18: workspaces[0].destinations[0].settings.url: port 9 is discard"
    );
}

const POLICIES: &str = "[organization]\nname = \"O\"\n\n[organization.policies.retention_days]\nvalue = 395\noverridable = true\n\n[organization.policies.change_approval]\nvalue = true\n\n[[workspaces]]\nid = \"de\"\nname = \"Germany\"\n\n[[workspaces]]\nid = \"fr\"\nname = \"France\"\n";

#[test]
fn workspaces_inherit_policies_and_override_only_overridable_ones() {
    let text = POLICIES.replace(
        "name = \"Germany\"\n",
        "name = \"Germany\"\n\n[workspaces.policies]\nretention_days = 90\n",
    );
    let config = parse(&text, "t.toml").unwrap();
    let germany = crate::effective_policies(&config, "de");
    let retention = germany.iter().find(|p| p.name == "retention_days").unwrap();
    assert_eq!(retention.value, toml::Value::Integer(90));
    assert_eq!(retention.source, "workspace");
    assert_eq!(
        retention.organization_value,
        Some(toml::Value::Integer(395))
    );
    let approval = germany
        .iter()
        .find(|p| p.name == "change_approval")
        .unwrap();
    assert_eq!(
        (approval.source, approval.overridable),
        ("organization", false)
    );
    let france = crate::effective_policies(&config, "fr");
    assert!(france.iter().all(|p| p.source == "organization"));
    assert_eq!(france[1].value, toml::Value::Integer(395));
}

#[test]
fn policy_overrides_are_checked_with_lines() {
    let with = |policies: &str| {
        POLICIES.replace(
            "name = \"Germany\"\n",
            &format!("name = \"Germany\"\n\n[workspaces.policies]\n{policies}"),
        )
    };
    assert_problem(
        &with("change_approval = false\n"),
        "line 16: workspaces[0].policies.change_approval: organization policy `change_approval` is not overridable",
    );
    assert_problem(
        &with("retention_days = \"long\"\n"),
        "line 16: workspaces[0].policies.retention_days: a string; organization policy `retention_days` is a integer",
    );
    assert_problem(
        &with("colour = \"red\"\n"),
        "line 16: workspaces[0].policies.colour: no organization policy `colour`",
    );
}

#[test]
fn change_approval_is_read_through_the_effective_policy_and_checked() {
    let table = POLICIES.replace(
        "[organization.policies.change_approval]\nvalue = true\n",
        "[organization.policies.change_approval]\nvalue = { required = true, exempt_roles = [\"org_admin\"] }\noverridable = true\n",
    );
    let overridden = table.replace(
        "name = \"Germany\"\n",
        "name = \"Germany\"\n\n[workspaces.policies]\nchange_approval = { required = false }\n",
    );
    let config = parse(&overridden, "t.toml").unwrap();
    let france = crate::change_approval(&config, "fr");
    assert!(france.applies_to("marketer") && france.applies_to("workspace_admin"));
    assert!(!france.applies_to("org_admin"));
    assert!(!crate::change_approval(&config, "de").applies_to("marketer"));
    // `true` is short for required with both admin roles exempt; no policy: nothing required.
    let short = parse(POLICIES, "t.toml").unwrap();
    let approval = crate::change_approval(&short, "de");
    assert!(approval.applies_to("marketer") && !approval.applies_to("workspace_admin"));
    assert!(!crate::change_approval(&Config::default(), "de").required);
    assert_problem_naming(
        &table.replace(
            "exempt_roles = [\"org_admin\"]",
            "exempt_roles = [\"boss\"]",
        ),
        "organization.policies.change_approval.value: unknown role `boss`",
    );
    assert_problem_naming(
        &table.replace("required = true", "required = \"yes\""),
        "organization.policies.change_approval.value: expected true, false or",
    );
}

#[test]
fn a_source_may_give_its_write_key_as_a_sha256() {
    let hash = tandem_core::ids::write_key_hash("a-long-enough-write-key");
    let text = format!(
        "[[workspaces]]\nid = \"de\"\nname = \"Germany\"\n\n[[workspaces.sources]]\nid = \"web\"\nname = \"Web\"\nowner = \"o@example.test\"\nwrite_key_sha256 = \"{hash}\"\n"
    );
    let config = parse(&text, "t.toml").unwrap();
    assert_eq!(
        config.workspaces[0].sources[0].write_key_sha256.as_deref(),
        Some(hash.as_str())
    );
    assert_eq!(parse(&to_toml(&config), "t.toml").unwrap(), config);
    assert_problem_naming(
        &text.replace(&hash, "abc"),
        "workspaces[0].sources[0].write_key_sha256: not a SHA-256",
    );
    assert_problem_naming(
        &text.replace(
            "write_key_sha256",
            "write_key = \"a-long-enough-write-key\"\nwrite_key_sha256",
        ),
        "give either `write_key` or `write_key_sha256`, not both",
    );
}

fn assert_problem_naming(text: &str, expected: &str) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains(expected),
        "expected `{expected}` in `{}`",
        found[0]
    );
}

fn pii_workspace(extra: &str) -> String {
    format!(
        "{}\n[[workspaces.destinations]]\nid = \"hook\"\nname = \"Hook\"\ntype = \"webhook\"\nowner = \"o@example.com\"\n\n{extra}",
        source("0123456789abcdef0123")
    )
}

#[test]
fn pii_rules_and_policies_load() {
    let text = pii_workspace(
        "[workspaces.pii]\nanonymize_ip = true\nsalt_env = \"TANDEM_PII_SALT_DE\"\n\n[[workspaces.pii.rules]]\npath = \"properties.loyalty_id\"\ncategory = \"loyalty\"\n\n[[workspaces.connections]]\nid = \"to-hook\"\nsources = [\"*\"]\ndestination = \"hook\"\npii = { email = \"hash\", phone = \"mask\", card = \"drop\", loyalty = \"mask\", default = \"allow\" }\n",
    );
    let config = parse(&text, "t.toml").unwrap_or_else(|error| panic!("{error}"));
    let workspace = &config.workspaces[0];
    assert!(workspace.pii.anonymize_ip);
    assert_eq!(workspace.pii.rules[0].category, "loyalty");
    assert_eq!(workspace.connections[0].pii["card"], "drop");
    assert_eq!(parse(&to_toml(&config), "again.toml").unwrap(), config);
}

#[test]
fn pii_problems_name_their_path() {
    let connection = |pii: &str| {
        pii_workspace(&format!(
            "[[workspaces.connections]]\nid = \"to-hook\"\nsources = [\"*\"]\ndestination = \"hook\"\npii = {pii}\n"
        ))
    };
    assert_problem(
        &connection("{ email = \"scramble\" }"),
        "line 21: workspaces[0].connections[0].pii.email: unknown action `scramble`",
    );
    assert_problem(
        &connection("{ loyalty = \"hash\" }"),
        "line 21: workspaces[0].connections[0].pii.loyalty: no PII category `loyalty` in this workspace",
    );
    let found = problems(&pii_workspace(
        "[[workspaces.pii.rules]]\npath = \"properties..x\"\ncategory = \"Bad\"\n",
    ));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].contains("workspaces[0].pii.rules[0].path: `properties..x` has an empty segment"),
        "{found:#?}"
    );
    assert!(
        found[1].contains("workspaces[0].pii.rules[0].category: `Bad` is not a category name"),
        "{found:#?}"
    );
    assert_problem(
        &pii_workspace("[workspaces.pii]\nsalt_env = \"my salt\"\n"),
        "line 18: workspaces[0].pii.salt_env: `my salt` is not an environment variable name",
    );
}

#[test]
fn workspace_retention_loads_and_round_trips() {
    let text = format!(
        "{}\n[workspaces.retention]\nlog_days = 30\ndead_letters_days = 14\nprofiles_inactive_days = 395\narchive_days = 730\n",
        source("0123456789abcdef0123")
    );
    let config = parse(&text, "t.toml").unwrap_or_else(|error| panic!("{error}"));
    let retention = &config.workspaces[0].retention;
    assert_eq!(
        (
            retention.log_days,
            retention.dead_letters_days,
            retention.profiles_inactive_days,
            retention.archive_days
        ),
        (Some(30), Some(14), Some(395), Some(730))
    );
    let printed = to_toml(&config);
    assert!(printed.contains("[workspaces.retention]"), "{printed}");
    assert_eq!(parse(&printed, "again.toml").unwrap(), config);
    // Unset: the table is left out of the export.
    let plain = parse(&source("0123456789abcdef0123"), "t.toml").unwrap();
    assert!(!to_toml(&plain).contains("retention"));
}

#[test]
fn workspace_retention_problems_name_their_path() {
    let with = |body: &str| {
        format!(
            "{}\n[workspaces.retention]\n{body}\n",
            source("0123456789abcdef0123")
        )
    };
    assert_problem_naming(
        &with("log_days = 0"),
        "workspaces[0].retention.log_days: must be within 1 ..= 36500 days",
    );
    assert_problem_naming(
        &with("profiles_inactive_days = 36501"),
        "workspaces[0].retention.profiles_inactive_days: must be within 1",
    );
    assert_problem_naming(
        &with("dead_letters_days = 0"),
        "workspaces[0].retention.dead_letters_days",
    );
    assert_problem_naming(
        &with("archive_days = 0"),
        "workspaces[0].retention.archive_days",
    );
    assert_problem_naming(&with("log_hours = 3"), "unknown field `log_hours`");
}
