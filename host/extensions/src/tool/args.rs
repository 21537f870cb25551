//! Checks a call's arguments against the names its tool's schema declares, before the tool
//! runs: an unknown argument is refused by name, and so is a missing required one.

use serde_json::{Map, Value};

/// Argument names a schema declares (`properties`) and requires (`required`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ArgNames {
    pub known: Vec<String>,
    pub required: Vec<String>,
}

impl ArgNames {
    /// Reads them from a JSON Schema object; the schema must be an object schema.
    pub fn from_schema(schema: &Value) -> Result<Self, String> {
        let Some(obj) = schema.as_object() else {
            return Err("its input schema is not a JSON object".into());
        };
        if obj.get("type").and_then(Value::as_str) != Some("object") {
            return Err("its input schema's \"type\" is not \"object\"".into());
        }
        let known = obj
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let required = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self { known, required })
    }

    /// `Ok` with the arguments as an object, or the sentence that says what is wrong.
    pub fn check(&self, tool: &str, args: Value) -> Result<Map<String, Value>, String> {
        let args = match args {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                return Err(format!(
                    "Arguments of tool \"{tool}\" must be a JSON object, not {}.",
                    kind(&other)
                ));
            }
        };
        let takes = || {
            if self.known.is_empty() {
                "it takes no arguments".to_owned()
            } else {
                format!("it takes: {}", self.known.join(", "))
            }
        };
        if let Some(unknown) = args.keys().find(|k| !self.known.contains(k)) {
            return Err(format!(
                "Unknown argument \"{unknown}\" for tool \"{tool}\"; {}.",
                takes()
            ));
        }
        if let Some(missing) = self.required.iter().find(|r| !args.contains_key(*r)) {
            return Err(format!(
                "Missing argument \"{missing}\" for tool \"{tool}\"; {}.",
                takes()
            ));
        }
        Ok(args)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names() -> ArgNames {
        ArgNames::from_schema(&json!({
            "type": "object",
            "properties": {"command": {"type": "string"}, "workdir": {"type": "string"}},
            "required": ["command"]
        }))
        .unwrap()
    }

    #[test]
    fn unknown_argument_is_refused_by_name() {
        let e = names()
            .check("serve", json!({"command": "x", "cwd": "/"}))
            .unwrap_err();
        assert_eq!(
            e,
            "Unknown argument \"cwd\" for tool \"serve\"; it takes: command, workdir."
        );
    }

    #[test]
    fn missing_required_and_non_objects_are_refused() {
        let e = names().check("serve", json!({})).unwrap_err();
        assert!(e.starts_with("Missing argument \"command\""), "{e}");
        let e = names().check("serve", json!([1])).unwrap_err();
        assert!(e.contains("not an array"), "{e}");
        assert_eq!(
            names()
                .check("serve", json!({"command": "x"}))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn schema_must_be_an_object_schema() {
        assert!(ArgNames::from_schema(&json!({"type": "string"})).is_err());
        assert!(ArgNames::from_schema(&json!(3)).is_err());
    }
}
