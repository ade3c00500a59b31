//! Transformations in the server: `tandem-transform`'s JavaScript engine plugged into delivery
//! (the [`compile`] function every workspace's `Activation` uses for its connections' code) and
//! the runner behind `POST /api/v1/workspaces/{workspace}/transformations/test`.

use serde_json::Value;
use std::sync::Arc;
use tandem_activate::{Transform, TransformTarget};
use tandem_transform::{TransformContext, TransformError, TransformLimits, Transformer};

/// A connection's compiled transformation.
struct JsTransform {
    transformer: Transformer,
    target: TransformTarget,
}

impl Transform for JsTransform {
    fn run(&self, event: &Value, source_id: &str) -> Result<Vec<Value>, String> {
        let context = TransformContext {
            workspace_id: self.target.workspace_id.clone(),
            source_id: Some(source_id.to_string()),
            connection_id: Some(self.target.connection_id.clone()),
            destination_type: Some(self.target.destination_type.clone()),
        };
        let run = || {
            self.transformer
                .run(event, &context)
                .map_err(|error| describe(&error))
        };
        // Typically microseconds, but up to the CPU limit: on the multi-threaded runtime, tell
        // tokio this worker thread is busy so its other tasks move elsewhere meanwhile.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }
}

/// The [`tandem_activate::TransformCompiler`] the server passes to every activation.
pub fn compile(code: &str, target: &TransformTarget) -> Result<Arc<dyn Transform>, String> {
    let transformer =
        Transformer::compile(code, TransformLimits::default()).map_err(|error| describe(&error))?;
    Ok(Arc::new(JsTransform {
        transformer,
        target: target.clone(),
    }))
}

/// The message a dead letter carries: the error, and the JavaScript stack when there is one.
pub fn describe(error: &TransformError) -> String {
    match error {
        TransformError::Thrown { stack, .. } if !stack.trim().is_empty() => {
            format!("{error}\n{}", stack.trim_end())
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target() -> TransformTarget {
        TransformTarget {
            workspace_id: "de".into(),
            connection_id: "web-to-crm".into(),
            destination_type: "webhook".into(),
        }
    }

    #[test]
    fn the_code_sees_its_context_and_may_fan_out() {
        let code = "function transform(e, c) { e.properties.via = [c.workspaceId, c.sourceId, c.connectionId, c.destinationType].join('/'); return [e, {event: 'copy'}]; }";
        let transform = compile(code, &target()).unwrap();
        let out = transform
            .run(&json!({"event": "Viewed", "properties": {}}), "web")
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["properties"]["via"], "de/web/web-to-crm/webhook");
        assert_eq!(out[1], json!({"event": "copy"}));
    }

    #[test]
    fn a_throw_reports_message_and_stack() {
        let code = "function transform(e) {\n  if (e.event === 'Bad') throw new Error('no bad events');\n  return e;\n}";
        let transform = compile(code, &target()).unwrap();
        let error = transform.run(&json!({"event": "Bad"}), "web").unwrap_err();
        assert!(error.contains("no bad events"), "{error}");
        assert!(
            error.contains("transform"),
            "stack names the function: {error}"
        );
        let Err(broken) = compile("function transform(e) {", &target()) else {
            panic!("a syntax error compiles");
        };
        assert!(broken.contains("syntax error"), "{broken}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_inside_the_multi_threaded_runtime() {
        let transform = compile("function transform(e) { return null; }", &target()).unwrap();
        assert_eq!(
            transform.run(&json!({"event": "x"}), "web").unwrap(),
            Vec::<Value>::new()
        );
    }
}
