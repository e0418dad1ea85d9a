//! A workflow's input schema: the JSON Schema its `describe` returns,
//! compiled once per component hash, and the check of a run's input
//! against it.
//!
//! The schema is written by the workflow's author and the input by whoever
//! starts the run, so both are untrusted and the check must stay cheap
//! whatever either holds: the schema is at most [`MAX_INPUT_SCHEMA_BYTES`],
//! references are resolved only inside it (no file or network retrieval;
//! the crate is built without its resolvers), `pattern` and
//! `patternProperties` run on the linear-time `regex` engine with bounded
//! compiled sizes (no backtracking), and formats are annotations only (the
//! 2020-12 default). A refusal names the offending value by JSON pointer and
//! says why without quoting the value, both cut to a few hundred characters.

use jsonschema::{PatternOptions, Validator};
use serde_json::Value;

use super::escaped_prefix;

/// Largest input schema a workflow may describe.
pub const MAX_INPUT_SCHEMA_BYTES: usize = 256 * 1024;
/// Compiled size bound of one `pattern` regex.
const MAX_REGEX_BYTES: usize = 1 << 20;
/// Lazy-DFA cache bound of one `pattern` regex.
const MAX_REGEX_DFA_BYTES: usize = 1 << 20;
/// Longest pointer or reason given back in a refusal.
const MAX_VIOLATION_CHARS: usize = 300;

/// The compiled input schema of one workflow version.
pub struct InputSchema {
    json: Value,
    validator: Validator,
}

impl std::fmt::Debug for InputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSchema").finish_non_exhaustive()
    }
}

/// Why an input does not match its workflow's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "input does not match the workflow's input schema at {}: {reason}",
    shown_pointer(pointer)
)]
pub struct InputViolation {
    /// JSON pointer (RFC 6901) of the offending value in the input; `""`
    /// is the input itself.
    pub pointer: String,
    /// What is wrong, without quoting the value.
    pub reason: String,
}

fn shown_pointer(pointer: &str) -> &str {
    if pointer.is_empty() { "/" } else { pointer }
}

impl InputSchema {
    /// Parses and compiles the schema text a workflow described; the error
    /// says why it is unusable (too large, not JSON, not a valid schema, a
    /// reference to anything outside itself).
    pub fn compile(text: &str) -> Result<Self, String> {
        if text.len() > MAX_INPUT_SCHEMA_BYTES {
            return Err(format!(
                "the input schema is {} bytes, more than the limit of {MAX_INPUT_SCHEMA_BYTES}",
                text.len()
            ));
        }
        let json: Value =
            serde_json::from_str(text).map_err(|e| format!("the input schema is not JSON: {e}"))?;
        let validator = jsonschema::options()
            .offline()
            .with_pattern_options(
                PatternOptions::regex()
                    .size_limit(MAX_REGEX_BYTES)
                    .dfa_size_limit(MAX_REGEX_DFA_BYTES),
            )
            .build(&json)
            .map_err(|e| {
                format!(
                    "the input schema is not a valid JSON Schema: {}",
                    cut(&e.masked().to_string())
                )
            })?;
        Ok(Self { json, validator })
    }

    /// The schema, as the workflow described it.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// Checks a run's input; the first violation found is the answer.
    pub fn check(&self, input: &Value) -> Result<(), InputViolation> {
        match self.validator.validate(input) {
            Ok(()) => Ok(()),
            Err(error) => Err(InputViolation {
                pointer: cut(&error.instance_path().to_string()),
                reason: cut(&error.masked_with("the value").to_string()),
            }),
        }
    }
}

/// At most [`MAX_VIOLATION_CHARS`] characters of `text`, control
/// characters escaped (both can come from the input's keys or the schema).
fn cut(text: &str) -> String {
    escaped_prefix(text, MAX_VIOLATION_CHARS)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema(value: Value) -> InputSchema {
        InputSchema::compile(&value.to_string()).unwrap()
    }

    #[test]
    fn a_violation_names_the_value_by_pointer_without_quoting_it() {
        let schema = schema(json!({
            "type": "object",
            "properties": { "name": { "type": "string" }, "tags": { "type": "array", "items": { "type": "integer" } } },
            "required": ["name"],
        }));
        assert_eq!(schema.check(&json!({"name": "Ada"})), Ok(()));
        let violation = schema
            .check(&json!({"name": "Ada", "tags": [1, "secret-token"]}))
            .unwrap_err();
        assert_eq!(violation.pointer, "/tags/1");
        assert!(violation.reason.contains("integer"), "{violation:?}");
        assert!(!violation.reason.contains("secret-token"), "{violation:?}");
        let missing = schema.check(&json!({})).unwrap_err();
        assert_eq!(missing.pointer, "");
        assert!(missing.reason.contains("name"), "{missing:?}");
        assert!(missing.to_string().contains("at /:"), "{missing}");
    }

    #[test]
    fn unusable_schemas_are_refused_with_a_reason() {
        assert!(InputSchema::compile("{").unwrap_err().contains("not JSON"));
        let big = format!("\"{}\"", "x".repeat(MAX_INPUT_SCHEMA_BYTES));
        assert!(InputSchema::compile(&big).unwrap_err().contains("limit"));
        let invalid = json!({ "type": "no-such-type" }).to_string();
        assert!(
            InputSchema::compile(&invalid)
                .unwrap_err()
                .contains("not a valid JSON Schema")
        );
        // Nothing outside the schema is fetched, from the network or the disk.
        for reference in ["https://example.com/schema.json", "file:///etc/passwd"] {
            let remote = json!({ "$ref": reference }).to_string();
            assert!(InputSchema::compile(&remote).is_err(), "{reference}");
        }
    }

    #[test]
    fn patterns_run_in_linear_time() {
        // Catastrophic for a backtracking engine; the `regex` crate has no
        // backreferences or lookaround, so such a pattern cannot blow up.
        let schema = schema(json!({ "properties": { "s": { "pattern": "^(a+)+$" } } }));
        let input = json!({ "s": format!("{}b", "a".repeat(100_000)) });
        assert_eq!(schema.check(&input).unwrap_err().pointer, "/s");
        let backreference = json!({ "pattern": "^(a)\\1$" }).to_string();
        assert!(InputSchema::compile(&backreference).is_err());
    }

    #[test]
    fn a_long_chain_of_references_compiles_and_checks_on_a_small_stack() {
        // A schema at the size limit made of one chain of `$ref`s: the
        // check must not overflow a worker thread's stack.
        let mut defs = serde_json::Map::new();
        let links = 7000;
        for i in 0..links {
            defs.insert(
                format!("d{i}"),
                json!({ "$ref": format!("#/$defs/d{}", i + 1) }),
            );
        }
        defs.insert(format!("d{links}"), json!({ "type": "integer" }));
        let text = json!({ "$defs": defs, "$ref": "#/$defs/d0" }).to_string();
        assert!(text.len() < MAX_INPUT_SCHEMA_BYTES);
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let schema = InputSchema::compile(&text).unwrap();
                (schema.check(&json!(1)), schema.check(&json!("x")).is_err())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(outcome, (Ok(()), true));
    }

    #[test]
    fn refusals_are_cut_and_escaped() {
        let key = format!("\u{1b}[31m{}", "k".repeat(5000));
        let schema = schema(json!({ "additionalProperties": false }));
        let violation = schema.check(&json!({ key: 1 })).unwrap_err();
        assert!(violation.reason.chars().count() <= MAX_VIOLATION_CHARS + 1);
        assert!(!violation.reason.contains('\u{1b}'), "{violation:?}");
    }
}
