//! Unit tests of the public API: each kind of output, each kind of failure, the sandbox's
//! boundaries, isolation between events, number and Unicode round-trips, concurrency.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::{test_run, TestResult, TransformContext, TransformError, TransformLimits, Transformer};

fn context() -> TransformContext {
    TransformContext {
        workspace_id: "acme".to_string(),
        source_id: Some("web".to_string()),
        connection_id: Some("web-to-crm".to_string()),
        destination_type: Some("webhook".to_string()),
    }
}

fn compile(code: &str) -> Transformer {
    Transformer::compile(code, TransformLimits::default()).expect("code compiles")
}

fn run(code: &str, event: Value) -> Result<Vec<Value>, TransformError> {
    compile(code).run(&event, &context())
}

fn track() -> Value {
    json!({
        "type": "track",
        "event": "Order Completed",
        "messageId": "m-1",
        "userId": "u-1",
        "properties": {"total": 4200, "currency": "EUR", "items": [{"sku": "a"}, {"sku": "b"}]},
    })
}

#[test]
fn modify_returns_the_changed_event() {
    let code = r#"
        function transform(event, context) {
            event.properties.revenue = event.properties.total / 100;
            delete event.properties.total;
            event.context = { workspace: context.workspaceId, source: context.sourceId,
                              connection: context.connectionId, destination: context.destinationType };
            return event;
        }"#;
    let output = run(code, track()).unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(output[0]["properties"]["revenue"], json!(42));
    assert!(output[0]["properties"].get("total").is_none());
    assert_eq!(
        output[0]["context"],
        json!({"workspace": "acme", "source": "web", "connection": "web-to-crm", "destination": "webhook"})
    );
    assert_eq!(output[0]["messageId"], json!("m-1"));
}

#[test]
fn context_fields_absent_are_null() {
    let code = "function transform(e, c) { return { s: c.sourceId, d: c.destinationType, w: c.workspaceId }; }";
    let context = TransformContext {
        workspace_id: "acme".to_string(),
        ..TransformContext::default()
    };
    let output = compile(code).run(&track(), &context).unwrap();
    assert_eq!(output, vec![json!({"s": null, "d": null, "w": "acme"})]);
}

#[test]
fn null_and_undefined_drop_the_event() {
    for code in [
        "function transform(e) { return null; }",
        "function transform(e) { return undefined; }",
        "function transform(e) { }",
        "function transform(e) { if (e.event === 'Order Completed') return; return e; }",
        "function transform(e) { return []; }",
    ] {
        assert_eq!(run(code, track()).unwrap(), Vec::<Value>::new(), "{code}");
    }
}

#[test]
fn an_array_fans_out() {
    let code = r#"
        function transform(event) {
            return event.properties.items.map((item, i) => ({
                ...event, messageId: `${event.messageId}-${i}`, event: "Item Purchased",
                properties: item,
            }));
        }"#;
    let output = run(code, track()).unwrap();
    assert_eq!(output.len(), 2);
    assert_eq!(output[0]["messageId"], json!("m-1-0"));
    assert_eq!(output[1]["properties"], json!({"sku": "b"}));
}

#[test]
fn fan_out_beyond_the_limit_is_an_error() {
    let limits = TransformLimits {
        output_events_max: 3,
        ..TransformLimits::default()
    };
    let transformer = Transformer::compile(
        "function transform(e) { return [e, e, e, e]; }",
        limits.clone(),
    )
    .unwrap();
    assert_eq!(
        transformer.run(&track(), &context()),
        Err(TransformError::TooManyEvents { count: 4, max: 3 })
    );
    let ok = Transformer::compile("function transform(e) { return [e, e, e]; }", limits).unwrap();
    assert_eq!(ok.run(&track(), &context()).unwrap().len(), 3);
}

#[test]
fn output_beyond_the_byte_limit_is_an_error() {
    let limits = TransformLimits {
        output_bytes_max: 10_000,
        ..TransformLimits::default()
    };
    let transformer = Transformer::compile(
        "function transform(e) { e.blob = 'x'.repeat(20000); return e; }",
        limits,
    )
    .unwrap();
    match transformer.run(&track(), &context()) {
        Err(TransformError::OutputTooLarge { bytes, max: 10_000 }) => assert!(bytes > 20_000),
        other => panic!("expected output_too_large, got {other:?}"),
    }
}

#[test]
fn a_throw_reports_message_and_stack_with_user_lines() {
    let code = "function check(e) {\n  throw new TypeError('no userId on ' + e.messageId);\n}\nfunction transform(e) {\n  return check(e);\n}\n";
    match run(code, track()) {
        Err(TransformError::Thrown { message, stack }) => {
            assert_eq!(message, "TypeError: no userId on m-1");
            assert!(stack.contains("check (transform.js:2:"), "{stack}");
            assert!(stack.contains("transform (transform.js:5:"), "{stack}");
        }
        other => panic!("expected thrown, got {other:?}"),
    }
    let error = run(code, track()).unwrap_err();
    assert_eq!(error.kind(), "thrown");
    assert_eq!(
        error.to_string(),
        "the transformation threw TypeError: no userId on m-1"
    );
}

#[test]
fn throwing_a_non_error_value_reports_it() {
    assert_eq!(
        run("function transform(e) { throw 'plain text'; }", track()),
        Err(TransformError::Thrown {
            message: "plain text".to_string(),
            stack: String::new()
        })
    );
    match run("function transform(e) { throw { code: 7 }; }", track()) {
        Err(TransformError::Thrown { message, .. }) => assert_eq!(message, r#"{"code":7}"#),
        other => panic!("expected thrown, got {other:?}"),
    }
}

#[test]
fn custom_error_classes_can_name_themselves() {
    // Assigning `this.name` would hit the frozen Error.prototype.name without the override
    // taming in lockdown.js.
    let code = r#"
        class MappingError extends Error {
            constructor(message) { super(message); this.name = "MappingError"; }
        }
        function transform(e) { throw new MappingError("no mapping for " + e.event); }"#;
    match run(code, track()) {
        Err(TransformError::Thrown { message, .. }) => {
            assert_eq!(message, "MappingError: no mapping for Order Completed")
        }
        other => panic!("expected thrown, got {other:?}"),
    }
    let code = r#"
        function Money(cents) { this.cents = cents; }
        Money.prototype.toString = function () { return (this.cents / 100).toFixed(2); };
        function transform(e) { const m = new Money(e.properties.total); m.toString = m.toString; return { price: String(m) }; }"#;
    assert_eq!(run(code, track()).unwrap(), vec![json!({"price": "42.00"})]);
}

#[test]
fn a_syntax_error_has_line_and_column() {
    let code = "function transform(event) {\n  const x = ;\n  return event;\n}";
    match Transformer::compile(code, TransformLimits::default()) {
        Err(error @ TransformError::Syntax { .. }) => {
            let TransformError::Syntax { line, column, .. } = &error else {
                unreachable!()
            };
            assert_eq!((*line, *column), (2, 13), "{error}");
            assert!(error
                .to_string()
                .starts_with("syntax error at line 2, column 13: "));
            assert!(error.is_compile_error());
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn code_cannot_escape_the_factory() {
    // Closing the factory's braces would declare `counter` at the global level, shared by every
    // event; the code alone is not a complete script, so it is refused.
    let code = "function transform(e) { e.n = ++counter; return e; }\nreturn transform; }); let counter = 0; (function () {";
    assert!(matches!(
        Transformer::compile(code, TransformLimits::default()),
        Err(TransformError::Syntax { .. })
    ));
}

#[test]
fn code_without_transform_is_refused() {
    for code in [
        "function transfrom(e) { return e; }",
        "const transform = 42;",
        "",
    ] {
        assert_eq!(
            Transformer::compile(code, TransformLimits::default()).unwrap_err(),
            TransformError::MissingTransform,
            "{code}"
        );
    }
    // An arrow function bound to `transform` is fine.
    assert_eq!(
        run(
            "const transform = (e) => ({ ...e, seen: true });",
            json!({"a": 1})
        )
        .unwrap(),
        vec![json!({"a": 1, "seen": true})]
    );
}

#[test]
fn a_throwing_top_level_fails_compilation() {
    match Transformer::compile(
        "throw new Error('bad setup');\nfunction transform(e) { return e; }",
        TransformLimits::default(),
    ) {
        Err(TransformError::Thrown { message, .. }) => assert_eq!(message, "Error: bad setup"),
        other => panic!("expected thrown, got {other:?}"),
    }
}

#[test]
fn an_infinite_loop_times_out() {
    let limits = TransformLimits {
        cpu_ms: 20,
        ..TransformLimits::default()
    };
    let transformer = Transformer::compile(
        "function transform(e) { if (e.loop) { while (true) {} } return e; }",
        limits,
    )
    .unwrap();
    let error = transformer
        .run(&json!({"loop": true}), &context())
        .unwrap_err();
    assert_eq!(error, TransformError::Timeout { cpu_ms: 20 });
    assert_eq!(
        error.to_string(),
        "the transformation used more than 20 ms of CPU time"
    );
    // A try/catch cannot swallow the interruption.
    let stubborn = Transformer::compile(
        "function transform(e) { for (;;) { try { while (true) {} } catch (_) {} } }",
        TransformLimits {
            cpu_ms: 20,
            ..TransformLimits::default()
        },
    )
    .unwrap();
    assert_eq!(
        stubborn.run(&json!({}), &context()),
        Err(TransformError::Timeout { cpu_ms: 20 })
    );
    // The transformer still works for the next event.
    assert_eq!(
        transformer
            .run(&json!({"loop": false}), &context())
            .unwrap(),
        vec![json!({"loop": false})]
    );
}

#[test]
fn an_infinite_loop_at_top_level_times_out_at_compilation() {
    let limits = TransformLimits {
        cpu_ms: 20,
        ..TransformLimits::default()
    };
    assert_eq!(
        Transformer::compile(
            "while (true) {}\nfunction transform(e) { return e; }",
            limits
        )
        .unwrap_err(),
        TransformError::Timeout { cpu_ms: 20 }
    );
}

#[test]
fn catastrophic_regex_times_out() {
    let limits = TransformLimits {
        cpu_ms: 20,
        ..TransformLimits::default()
    };
    let transformer = Transformer::compile(
        "function transform(e) { e.m = /^(a+)+$/.test('a'.repeat(40) + 'b'); return e; }",
        limits,
    )
    .unwrap();
    assert_eq!(
        transformer.run(&json!({}), &context()),
        Err(TransformError::Timeout { cpu_ms: 20 })
    );
}

#[test]
fn a_memory_bomb_is_out_of_memory_not_a_crash() {
    let transformer = compile(
        "function transform(e) { const a = []; for (;;) { a.push(new Array(100000).fill(e)); } }",
    );
    let memory_bytes = TransformLimits::default().memory_bytes;
    let error = transformer.run(&track(), &context()).unwrap_err();
    assert_eq!(error, TransformError::OutOfMemory { memory_bytes });
    assert_eq!(error.kind(), "out_of_memory");
    // One huge allocation, and a huge string.
    for code in [
        "function transform(e) { return { a: new Array(1e9).fill(0) }; }",
        "function transform(e) { return { s: 'x'.repeat(1 << 28) }; }",
    ] {
        assert_eq!(
            compile(code).run(&track(), &context()),
            Err(TransformError::OutOfMemory { memory_bytes }),
            "{code}"
        );
    }
    // And the transformer recovers.
    let recovering = compile("function transform(e) { if (e.bomb) { const a = []; for (;;) a.push(new Array(1e5).fill(1)); } return e; }");
    assert!(recovering.run(&json!({"bomb": true}), &context()).is_err());
    assert_eq!(
        recovering.run(&json!({"bomb": false}), &context()).unwrap(),
        vec![json!({"bomb": false})]
    );
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    let transformer = compile("function deep(n) { return deep(n + 1) + 1; }\nfunction transform(e) { return { d: deep(0) }; }");
    assert_eq!(
        transformer.run(&track(), &context()),
        Err(TransformError::StackOverflow {
            stack_bytes: TransformLimits::default().stack_bytes
        })
    );
}

#[test]
fn the_sandbox_has_no_host_apis() {
    let code = r#"
        function transform(e) {
            const names = ["require", "fetch", "std", "os", "process", "setTimeout", "setInterval",
                "clearTimeout", "XMLHttpRequest", "WebSocket", "performance", "queueMicrotask",
                "print", "console", "atob", "btoa", "Deno", "Bun", "module", "exports", "scriptArgs",
                "DOMException"];
            const present = names.filter((name) => typeof globalThis[name] !== "undefined");
            let dynamicImport = "absent";
            try { import("os").then(() => {}, () => {}); dynamicImport = "callable"; } catch (err) { dynamicImport = String(err); }
            return { present, dynamicImport, globals: Object.getOwnPropertyNames(globalThis).sort() };
        }"#;
    let output = run(code, json!({})).unwrap();
    assert_eq!(output[0]["present"], json!([]), "{}", output[0]);
    let globals: Vec<&str> = output[0]["globals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap())
        .collect();
    for name in [
        "Object", "Array", "JSON", "Math", "Date", "RegExp", "Map", "Promise",
    ] {
        assert!(globals.contains(&name), "{name} missing from {globals:?}");
    }
    // A dynamic import has no loader to resolve it: the promise rejects, nothing is loaded.
    let code = r#"
        function transform(e) {
            const p = import("os");
            return { isPromise: p instanceof Promise };
        }"#;
    assert_eq!(
        run(code, json!({})).unwrap(),
        vec![json!({"isPromise": true})]
    );
    // Calling what is absent is an ordinary ReferenceError.
    match run(
        "function transform(e) { return fetch('http://127.0.0.1/'); }",
        json!({}),
    ) {
        Err(TransformError::Thrown { message, .. }) => {
            assert_eq!(message, "ReferenceError: fetch is not defined")
        }
        other => panic!("expected thrown, got {other:?}"),
    }
    match run("function transform(e) { return require('fs'); }", json!({})) {
        Err(TransformError::Thrown { message, .. }) => {
            assert_eq!(message, "ReferenceError: require is not defined")
        }
        other => panic!("expected thrown, got {other:?}"),
    }
}

#[test]
fn module_syntax_is_refused() {
    assert!(matches!(
        Transformer::compile(
            "import * as os from 'os';\nfunction transform(e) { return e; }",
            TransformLimits::default()
        ),
        Err(TransformError::Syntax { line: 1, .. })
    ));
}

#[test]
fn wrong_return_types_are_errors() {
    let cases = [
        ("return 'text';", "a string"),
        ("return 42;", "a number"),
        ("return true;", "a boolean"),
        ("return () => e;", "a function"),
        ("return 10n;", "a bigint"),
        ("return Symbol('s');", "a symbol"),
        (
            "return Promise.resolve(e);",
            "a Promise (transform must be synchronous)",
        ),
        ("return [e, 'x'];", "an array holding a string at index 1"),
        ("return [e, null];", "an array holding null at index 1"),
        ("return [[e]];", "an array holding an array at index 0"),
        (
            "return new Date(0);",
            "an object whose JSON form is a string",
        ),
    ];
    for (body, found) in cases {
        let code = format!("function transform(e) {{ {body} }}");
        assert_eq!(
            run(&code, track()),
            Err(TransformError::WrongReturnType {
                found: found.to_string()
            }),
            "{body}"
        );
    }
    let error = run("function transform(e) { return 'text'; }", track()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "transform returned a string; return the event (an object), an array of objects to fan \
         out, or null/undefined to drop it"
    );
    // An async transform returns a Promise.
    assert!(matches!(
        run("async function transform(e) { return e; }", track()),
        Err(TransformError::WrongReturnType { .. })
    ));
}

#[test]
fn output_that_is_not_json_is_an_error() {
    match run("function transform(e) { e.self = e; return e; }", track()) {
        Err(TransformError::InvalidOutput { message }) => {
            assert!(message.contains("circular"), "{message}")
        }
        other => panic!("expected invalid output, got {other:?}"),
    }
    assert!(matches!(
        run("function transform(e) { e.big = 1n; return e; }", track()),
        Err(TransformError::InvalidOutput { .. })
    ));
}

#[test]
fn the_same_input_gives_the_same_output() {
    let code = r#"
        function transform(event, context) {
            const keys = Object.keys(event.properties).sort();
            event.properties.keys = keys.join(",");
            event.properties.hash = [...JSON.stringify(event)].reduce((h, c) => (h * 31 + c.charCodeAt(0)) | 0, 7);
            return event;
        }"#;
    let transformer = compile(code);
    let first = transformer.run(&track(), &context()).unwrap();
    for _ in 0..20 {
        assert_eq!(transformer.run(&track(), &context()).unwrap(), first);
    }
    // A fresh transformer of the same code agrees.
    assert_eq!(compile(code).run(&track(), &context()).unwrap(), first);
}

#[test]
fn events_do_not_leak_state_into_each_other() {
    // Every way of keeping state across events: a top-level counter, a cache, the global
    // object, built-in prototypes. Each event must see a fresh start.
    let code = r#"
        let counter = 0;
        const cache = {};
        var seen = [];
        function transform(event) {
            counter += 1;
            cache[event.messageId] = true;
            seen.push(event.messageId);
            const attempts = {};
            for (const [name, attempt] of Object.entries({
                global: () => { globalThis.leak = (globalThis.leak || 0) + 1; },
                implicit: () => { eval("leak2 = 1"); },
                arrayProto: () => { Array.prototype.leak = 1; },
                objectProto: () => { Object.prototype.leak = 1; },
                mathRedefine: () => { Math.max = () => 0; },
                jsonRedefine: () => { JSON.stringify = () => "{}"; },
                defineOnGlobal: () => { Object.defineProperty(globalThis, "leak3", { value: 1 }); },
                indirectVar: () => { (0, eval)("var leak4 = 1"); },
            })) {
                try { attempt(); attempts[name] = "allowed"; } catch (err) { attempts[name] = err.name; }
            }
            return {
                counter, cached: Object.keys(cache).length, seen: seen.length,
                leak: typeof globalThis.leak, arrayLeak: [].leak === undefined,
                objectLeak: ({}).leak === undefined, max: Math.max(1, 2), attempts,
            };
        }"#;
    let transformer = compile(code);
    let mut outputs = Vec::new();
    for index in 0..5 {
        let event = json!({"messageId": format!("m-{index}")});
        outputs.push(transformer.run(&event, &context()).unwrap());
    }
    let expected = json!({
        "counter": 1, "cached": 1, "seen": 1, "leak": "undefined", "arrayLeak": true,
        "objectLeak": true, "max": 2,
        "attempts": {
            "global": "TypeError", "implicit": "ReferenceError", "arrayProto": "TypeError",
            "objectProto": "TypeError", "mathRedefine": "TypeError", "jsonRedefine": "TypeError",
            "defineOnGlobal": "TypeError", "indirectVar": "TypeError",
        },
    });
    for output in outputs {
        assert_eq!(output, vec![expected.clone()]);
    }
}

#[test]
fn promise_jobs_do_not_pile_up_or_leak() {
    let code = r#"
        let log = [];
        function transform(event) {
            Promise.resolve().then(() => { log.push(1); });
            return { logged: log.length };
        }"#;
    let transformer = compile(code);
    for _ in 0..3 {
        assert_eq!(
            transformer.run(&json!({}), &context()).unwrap(),
            vec![json!({"logged": 0})]
        );
    }
}

#[test]
fn unicode_round_trips() {
    let event = json!({
        "text": "héllo wörld — 你好 — 🎉👩‍👩‍👧 — \u{0}\u{1f}\u{7f} — \"quoted\" \\ back",
        "rtl": "مرحبا",
        "lone": "\u{fffd}",
        "emoji_key_🎉": true,
    });
    assert_eq!(
        run("function transform(e) { return e; }", event.clone()).unwrap(),
        vec![event]
    );
    // String operations in JavaScript see the same characters.
    let output = run(
        "function transform(e) { return { n: [...e.s].length, up: e.s.toUpperCase() }; }",
        json!({"s": "ß🎉é"}),
    )
    .unwrap();
    assert_eq!(output, vec![json!({"n": 3, "up": "SS🎉É"})]);
}

#[test]
fn large_numbers_go_through_doubles() {
    let identity = compile("function transform(e) { return e; }");
    let run = |event: Value| identity.run(&event, &context()).unwrap().remove(0);
    // Up to 2^53, integers are exact.
    let exact =
        json!({"max_safe": 9007199254740991_i64, "min_safe": -9007199254740991_i64, "zero": 0});
    assert_eq!(run(exact.clone()), exact);
    // Beyond, they become the nearest double (documented in the crate docs).
    let beyond = run(json!({"a": 9007199254740993_i64, "b": u64::MAX, "c": i64::MIN}));
    assert_eq!(beyond["a"].as_f64(), Some(9007199254740992.0));
    assert_eq!(beyond["b"].as_f64(), Some(18446744073709551616.0));
    assert_eq!(beyond["c"].as_f64(), Some(-9223372036854775808.0));
    // Floats are exact (shortest round-trip formatting on both sides); integral floats come back
    // as integers.
    let floats = run(
        json!({"pi": std::f64::consts::PI, "tiny": 5e-324, "big": 1.7976931348623157e308, "three": 3.0}),
    );
    assert_eq!(floats["pi"].as_f64(), Some(std::f64::consts::PI));
    assert_eq!(floats["tiny"].as_f64(), Some(5e-324));
    assert_eq!(floats["big"].as_f64(), Some(1.7976931348623157e308));
    assert_eq!(floats["three"], json!(3));
}

#[test]
fn the_cpu_budget_covers_the_code_not_the_sandbox_set_up() {
    // Creating a sandbox takes milliseconds (the lockdown); a 1 ms budget is still usable.
    let transformer = Transformer::compile(
        "function transform(e) { return e; }",
        TransformLimits {
            cpu_ms: 1,
            ..TransformLimits::default()
        },
    )
    .unwrap();
    assert_eq!(
        transformer.run(&json!({"a": 1}), &context()).unwrap(),
        vec![json!({"a": 1})]
    );
}

#[test]
fn limits_are_validated() {
    let error = Transformer::compile(
        "function transform(e) { return e; }",
        TransformLimits {
            memory_bytes: 1000,
            cpu_ms: 0,
            ..TransformLimits::default()
        },
    )
    .unwrap_err();
    assert_eq!(error.kind(), "invalid_limits");
    let message = error.to_string();
    assert!(
        message.contains("cpu_ms") && message.contains("memory_bytes"),
        "{message}"
    );
}

#[test]
fn code_with_nul_or_too_large_is_refused() {
    assert!(matches!(
        Transformer::compile(
            "function transform(e) { return e; }\0",
            TransformLimits::default()
        ),
        Err(TransformError::InvalidCode { .. })
    ));
    let huge = format!(
        "function transform(e) {{ return e; }}\n//{}",
        "x".repeat(tandem_core::limits::TRANSFORM_CODE_BYTES_MAX)
    );
    assert!(matches!(
        Transformer::compile(&huge, TransformLimits::default()),
        Err(TransformError::InvalidCode { .. })
    ));
}

#[test]
fn errors_serialise_with_kind_and_details() {
    let syntax = TransformError::Syntax {
        message: "unexpected token".to_string(),
        line: 2,
        column: 13,
    };
    assert_eq!(
        serde_json::to_value(&syntax).unwrap(),
        json!({"kind": "syntax_error", "message": "syntax error at line 2, column 13: unexpected token", "line": 2, "column": 13})
    );
    assert_eq!(
        serde_json::to_value(TransformError::Timeout { cpu_ms: 50 }).unwrap(),
        json!({"kind": "timeout", "message": "the transformation used more than 50 ms of CPU time"})
    );
}

#[test]
fn test_run_reports_each_event() {
    let code = r#"
        function transform(e) {
            if (e.drop) return null;
            if (e.fail) throw new Error("bad event " + e.id);
            if (e.fan) return [e, e];
            return { ...e, ok: true };
        }"#;
    let events = [
        json!({"id": 0}),
        json!({"id": 1, "drop": true}),
        json!({"id": 2, "fail": true}),
        json!({"id": 3, "fan": true}),
    ];
    let results = test_run(code, &events, &context());
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].output, Some(vec![json!({"id": 0, "ok": true})]));
    assert_eq!(results[1].output, Some(vec![]));
    assert_eq!(results[2].output, None);
    assert_eq!(results[2].error.as_ref().unwrap().kind(), "thrown");
    assert_eq!(results[3].output.as_ref().unwrap().len(), 2);
    for (index, result) in results.iter().enumerate() {
        assert_eq!(result.index, index);
    }
    let serialised = serde_json::to_value(&results[2]).unwrap();
    assert_eq!(serialised["output"], Value::Null);
    assert_eq!(serialised["error"]["kind"], json!("thrown"));
    assert_eq!(
        serialised["error"]["message"],
        json!("the transformation threw Error: bad event 2")
    );
    assert!(serialised["error"]["stack"]
        .as_str()
        .unwrap()
        .contains("transform.js:4:"));
    assert!(serialised["duration_us"].is_u64());
}

#[test]
fn test_run_with_a_compile_error_reports_it_for_every_event() {
    let results: Vec<TestResult> = test_run(
        "function transform(e) {",
        &[json!({}), json!({})],
        &context(),
    );
    assert_eq!(results.len(), 2);
    for result in results {
        assert_eq!(result.output, None);
        assert_eq!(result.error.unwrap().kind(), "syntax_error");
    }
}

#[test]
fn test_run_each_reports_the_compile_error_even_without_events_and_a_context_per_event() {
    let broken = crate::test_run_each("function transform(e) {", &[], TransformLimits::default());
    assert_eq!(broken.results, Vec::new());
    assert_eq!(broken.compile_error.unwrap().kind(), "syntax_error");
    let (web, app) = (
        TransformContext {
            source_id: Some("web".into()),
            ..context()
        },
        TransformContext {
            source_id: Some("app".into()),
            ..context()
        },
    );
    let event = json!({"n": 1});
    let run = crate::test_run_each(
        "function transform(e, c) { return { from: c.sourceId }; }",
        &[(&event, &web), (&event, &app)],
        TransformLimits::default(),
    );
    assert_eq!(run.compile_error, None);
    let outputs: Vec<_> = run
        .results
        .into_iter()
        .map(|result| result.output)
        .collect();
    assert_eq!(
        outputs,
        [
            Some(vec![json!({"from": "web"})]),
            Some(vec![json!({"from": "app"})])
        ]
    );
}

#[test]
fn a_transformer_serves_many_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Transformer>();
    let transformer = Arc::new(
        Transformer::compile(
            "function transform(e, c) { return { n: e.n * 2, c: c.connectionId }; }",
            TransformLimits {
                runtimes_max: 3,
                ..TransformLimits::default()
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..6)
        .map(|thread| {
            let transformer = Arc::clone(&transformer);
            std::thread::spawn(move || {
                for n in 0..200 {
                    let value = thread * 1000 + n;
                    let output = transformer.run(&json!({"n": value}), &context()).unwrap();
                    assert_eq!(output, vec![json!({"n": value * 2, "c": "web-to-crm"})]);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformer_serves_tokio_tasks() {
    let transformer = Arc::new(compile(
        "function transform(e) { return [e, { copy: e.n }]; }",
    ));
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let transformer = Arc::clone(&transformer);
            tokio::task::spawn_blocking(move || transformer.run(&json!({"n": n}), &context()))
        })
        .collect();
    for (n, task) in tasks.into_iter().enumerate() {
        assert_eq!(
            task.await.unwrap().unwrap(),
            vec![json!({"n": n}), json!({"copy": n})]
        );
    }
}

/// Any JSON value, with numbers restricted to what survives a double exactly.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1_i64 << 53)..=(1_i64 << 53)).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Equal under JavaScript's number model: numbers compared as doubles (so `3.0 == 3` and
/// `-0 == 0`), everything else exactly.
fn same_as_doubles(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(l), Value::Number(r)) => l.as_f64() == r.as_f64(),
        (Value::Array(l), Value::Array(r)) => {
            l.len() == r.len() && l.iter().zip(r).all(|(l, r)| same_as_doubles(l, r))
        }
        (Value::Object(l), Value::Object(r)) => {
            l.len() == r.len()
                && l.iter()
                    .zip(r)
                    .all(|((lk, lv), (rk, rv))| lk == rk && same_as_doubles(lv, rv))
        }
        _ => left == right,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn identity_returns_any_event_unchanged(
        fields in prop::collection::btree_map(any::<String>(), json_value(), 0..10)
    ) {
        thread_local! {
            static IDENTITY: Transformer = compile("function transform(event) { return event; }");
        }
        let event = Value::Object(fields.into_iter().collect());
        let output = IDENTITY.with(|identity| identity.run(&event, &context())).unwrap();
        prop_assert_eq!(output.len(), 1);
        prop_assert!(same_as_doubles(&output[0], &event), "{} became {}", event, output[0]);
    }
}
