//! Compiling a plan's schemas once, and checking events against them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use tandem_config::{PlanMode, TrackingPlanConfig, UnplannedEvents};
use tandem_core::limits::TRACKING_PLAN_VIOLATIONS_PER_EVENT_MAX;
use tandem_core::EventType;

/// The rule of a track event whose name the plan does not list (with `unplanned_events = "violation"`).
pub const RULE_UNPLANNED_EVENT: &str = "unplanned_event";

/// One way an event breaks its plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// JSON pointer from the event's root: `/properties/total`, `/traits/email`, `/event`.
    pub field: String,
    /// The JSON Schema keyword that failed (`required`, `type`, `enum`, …) or `unplanned_event`.
    pub rule: String,
    pub message: String,
}

/// A schema the compiler refused: which one (`events.Order Completed`, `identify_traits`) and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SchemaProblem {
    pub schema: String,
    /// The event name, for an event's schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    pub message: String,
}

/// A plan with every schema compiled. Built once per plan version and shared by the collect path.
pub struct CompiledPlan {
    pub config: TrackingPlanConfig,
    /// Bumped by every change; the compiled validators belong to this version.
    pub version: u64,
    events: HashMap<String, jsonschema::Validator>,
    identify_traits: Option<jsonschema::Validator>,
    group_traits: Option<jsonschema::Validator>,
}

impl std::fmt::Debug for CompiledPlan {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CompiledPlan")
            .field("id", &self.config.id)
            .field("version", &self.version)
            .finish()
    }
}

fn compile_one(schema: &Value) -> Result<jsonschema::Validator, String> {
    // Remote and file `$ref`s are not resolved (the crate is built without resolvers): a plan
    // is self-contained, and compiling it never reaches the network.
    jsonschema::validator_for(schema).map_err(|error| error.to_string())
}

impl CompiledPlan {
    /// Compiles every schema of `config`, reporting every one that fails.
    pub fn compile(
        config: TrackingPlanConfig,
        version: u64,
    ) -> Result<CompiledPlan, Vec<SchemaProblem>> {
        let mut problems = Vec::new();
        let mut events = HashMap::with_capacity(config.events.len());
        for (name, schema) in &config.events {
            match compile_one(schema) {
                Ok(validator) => {
                    events.insert(name.clone(), validator);
                }
                Err(message) => problems.push(SchemaProblem {
                    schema: format!("events.{name}"),
                    event: Some(name.clone()),
                    message,
                }),
            }
        }
        let mut traits = |field: &str, schema: &Option<Value>| match schema {
            None => None,
            Some(schema) => match compile_one(schema) {
                Ok(validator) => Some(validator),
                Err(message) => {
                    problems.push(SchemaProblem {
                        schema: field.to_string(),
                        event: None,
                        message,
                    });
                    None
                }
            },
        };
        let identify_traits = traits("identify_traits", &config.identify_traits);
        let group_traits = traits("group_traits", &config.group_traits);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CompiledPlan {
            config,
            version,
            events,
            identify_traits,
            group_traits,
        })
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn mode(&self) -> PlanMode {
        self.config.mode
    }

    /// Whether events of `event_type` can violate this plan at all: when not, the collect path
    /// does not even parse them.
    pub fn governs(&self, event_type: EventType) -> bool {
        match event_type {
            EventType::Track => {
                !self.events.is_empty()
                    || self.config.unplanned_events == UnplannedEvents::Violation
            }
            EventType::Identify => self.identify_traits.is_some(),
            EventType::Group => self.group_traits.is_some(),
            _ => false,
        }
    }

    /// The violations of `event` (a stored Segment event of type `event_type`), at most
    /// `TRACKING_PLAN_VIOLATIONS_PER_EVENT_MAX`. Page, screen and alias calls are not planned.
    pub fn check(&self, event_type: EventType, event: &Value) -> Vec<Violation> {
        let (validator, part) = match event_type {
            EventType::Track => {
                let name = event
                    .get("event")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match self.events.get(name) {
                    Some(validator) => (validator, "properties"),
                    None if self.config.unplanned_events == UnplannedEvents::Violation => {
                        return vec![Violation {
                            field: "/event".into(),
                            rule: RULE_UNPLANNED_EVENT.into(),
                            message: format!(
                                "event `{name}` is not in tracking plan `{}`",
                                self.config.id
                            ),
                        }]
                    }
                    None => return Vec::new(),
                }
            }
            EventType::Identify => match &self.identify_traits {
                Some(validator) => (validator, "traits"),
                None => return Vec::new(),
            },
            EventType::Group => match &self.group_traits {
                Some(validator) => (validator, "traits"),
                None => return Vec::new(),
            },
            _ => return Vec::new(),
        };
        // An absent `properties`/`traits` is checked as an empty object: required fields are missing.
        let empty = Value::Object(Default::default());
        let instance = event.get(part).unwrap_or(&empty);
        if validator.is_valid(instance) {
            return Vec::new();
        }
        validator
            .iter_errors(instance)
            .take(TRACKING_PLAN_VIOLATIONS_PER_EVENT_MAX)
            .map(|error| {
                let mut field = format!("/{part}{}", error.instance_path().as_str());
                if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind()
                {
                    // Point at the missing property itself, not at its parent object.
                    let name = property
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| property.to_string());
                    field.push('/');
                    field.push_str(&name.replace('~', "~0").replace('/', "~1"));
                }
                Violation {
                    field,
                    rule: error.kind().keyword().to_string(),
                    message: error.to_string(),
                }
            })
            .collect()
    }
}
