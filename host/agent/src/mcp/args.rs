//! Tool arguments read for a model: a mistake is answered with a sentence naming the argument
//! and what it must be (`timeout_seconds must be a number of seconds, got "ten"`), as a tool
//! error the model reads, instead of serde's message as a protocol error.
//!
//! [`Parameters`] stands in for rmcp's extractor of the same name (the `#[tool]` macro finds
//! the argument type by that name and publishes its schema); the arguments are checked
//! against that same schema first, so the words match what the model was shown.

use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The arguments of one call: `Ok` when they fit the tool's schema and type, else the sentence
/// to answer with.
pub struct Parameters<P>(pub Result<P, String>);

impl<P: JsonSchema> JsonSchema for Parameters<P> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        P::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        P::json_schema(generator)
    }
}

impl<S, P> FromContextPart<ToolCallContext<'_, S>> for Parameters<P>
where
    P: DeserializeOwned + JsonSchema + 'static,
{
    fn from_context_part(context: &mut ToolCallContext<S>) -> Result<Self, rmcp::ErrorData> {
        let arguments = context.arguments.take().unwrap_or_default();
        Ok(Self(parse::<P>(arguments)))
    }
}

/// `arguments` as `P`, or a sentence saying what is wrong with them.
pub fn parse<P: DeserializeOwned + JsonSchema + 'static>(
    arguments: JsonObject,
) -> Result<P, String> {
    if let Ok(schema) = rmcp::handler::server::common::schema_for_input::<P>()
        && let Some(problem) = check(&schema, &arguments)
    {
        return Err(problem);
    }
    // What the schema cannot say (a value out of an enum's aliases, ...): serde's words,
    // made a sentence.
    serde_json::from_value(Value::Object(arguments))
        .map_err(|e| format!("The arguments are not valid: {e}."))
}

/// The first problem of `arguments` against `schema`: an unknown name, a missing required
/// argument, or a value of the wrong type.
fn check(schema: &JsonObject, arguments: &JsonObject) -> Option<String> {
    let empty = serde_json::Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let known = || {
        properties
            .keys()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for name in arguments.keys() {
        if canonical(name, properties).is_none() {
            return Some(format!(
                "Unknown argument `{name}`; this tool takes {}.",
                known()
            ));
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            let given = arguments
                .iter()
                .any(|(arg, value)| canonical(arg, properties) == Some(name) && !value.is_null());
            if !given {
                return Some(format!("`{name}` is required."));
            }
        }
    }
    for (name, value) in arguments {
        let Some(property) = canonical(name, properties)
            .and_then(|of| properties.get(of))
            .and_then(Value::as_object)
        else {
            continue;
        };
        if value.is_null() {
            // A null optional argument means its default.
            continue;
        }
        if let Some(expected) = mismatch(name, property, value) {
            return Some(format!(
                "`{name}` must be {expected}, got {}.",
                shown(value)
            ));
        }
    }
    None
}

/// Names accepted beside the schema's (serde aliases that models learned elsewhere), with
/// the argument each stands for.
const ALIASES: [(&str, &str); 2] = [
    ("process_id", "id"),
    ("wait_seconds", "wait_timeout_seconds"),
];

/// The schema's name for argument `name`: itself, or what it is an alias of.
fn canonical<'a>(name: &'a str, properties: &JsonObject) -> Option<&'a str> {
    if properties.contains_key(name) {
        return Some(name);
    }
    ALIASES
        .iter()
        .find(|(alias, of)| *alias == name && properties.contains_key(*of))
        .map(|(_, of)| *of)
}

/// What `value` should have been, in words, if it does not fit `property`.
fn mismatch(name: &str, property: &JsonObject, value: &Value) -> Option<String> {
    if let Some(choices) = property.get("enum").and_then(Value::as_array) {
        let fits = value.as_str().is_some_and(|v| {
            choices
                .iter()
                .any(|c| c.as_str().is_some_and(|c| c.eq_ignore_ascii_case(v)))
        });
        let words: Vec<String> = choices
            .iter()
            .filter_map(Value::as_str)
            .map(|c| format!("`{c}`"))
            .collect();
        // Aliases (`TERM`, `SIGKILL`, ...) are left to serde; only a non-string is refused here.
        return (!fits && !value.is_string()).then(|| format!("one of {}", words.join(", ")));
    }
    let kind = property.get("type").and_then(Value::as_str)?;
    let fits = match kind {
        "number" => value.is_number(),
        "integer" => value.is_u64() || value.is_i64(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => true,
    };
    if fits {
        return None;
    }
    Some(match kind {
        "number" if name.ends_with("seconds") => "a number of seconds".to_owned(),
        "number" => "a number".to_owned(),
        "integer" => "a whole number".to_owned(),
        "boolean" => "true or false".to_owned(),
        "string" => "a string".to_owned(),
        "object" => "an object of string values, e.g. {\"KEY\": \"value\"}".to_owned(),
        other => format!("of type {other}"),
    })
}

/// A value as the model wrote it, cut short if long.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::super::tools::{ExecuteArgs, ProcessOutputArgs, ProcessSignalArgs};
    use super::*;

    fn args(value: Value) -> JsonObject {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_string_for_seconds_is_named_in_a_sentence() {
        let err = parse::<ExecuteArgs>(args(json!({"command": "ls", "timeout_seconds": "ten"})))
            .unwrap_err();
        assert_eq!(
            err,
            "`timeout_seconds` must be a number of seconds, got \"ten\"."
        );
        let err = parse::<ProcessOutputArgs>(args(json!({"id": "x", "wait": "no"}))).unwrap_err();
        assert_eq!(err, "`wait` must be true or false, got \"no\".");
    }

    #[test]
    fn unknown_and_missing_arguments_are_sentences() {
        let err = parse::<ExecuteArgs>(args(json!({"command": "ls", "timeout": 5}))).unwrap_err();
        assert!(
            err.starts_with("Unknown argument `timeout`; this tool takes `")
                && err.contains("`command`"),
            "{err}"
        );
        let err = parse::<ExecuteArgs>(args(json!({"workdir": "/"}))).unwrap_err();
        assert_eq!(err, "`command` is required.");
        let err = parse::<ProcessSignalArgs>(args(json!({"id": "x", "signal": 9}))).unwrap_err();
        assert!(
            err.starts_with("`signal` must be one of `terminate`, `kill`"),
            "{err}"
        );
    }

    #[test]
    fn aliases_and_nulls_pass() {
        let ok = parse::<ProcessOutputArgs>(args(
            json!({"process_id": "abc", "wait_seconds": 1, "grep": null}),
        ))
        .unwrap();
        assert_eq!(ok.id, "abc");
        let ok = parse::<ProcessSignalArgs>(args(json!({"id": "x", "signal": "SIGTERM"})));
        assert!(ok.is_ok());
    }

    use serde_json::json;
}
