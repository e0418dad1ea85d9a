//! `hello`: the smallest workflow, one task.
//!
//! Input: `{"name": "Ada"}` (optional; the name defaults to `world`).
//! Task `greet` outputs `{"greeting": "Hello, Ada!"}`.
//!
//! Shows: a typed input with defaults whose JSON Schema the host checks every input against
//! (`{"name": 3}` is refused with `INVALID_INPUT` at `/name`), one task, the `workflow!` export.

use smithers_sdk::schemars::JsonSchema;
use smithers_sdk::serde::Deserialize;
use smithers_sdk::serde_json::json;
use smithers_sdk::{Ctx, Node, task};

#[derive(Deserialize, JsonSchema)]
#[serde(crate = "smithers_sdk::serde", default)]
#[schemars(crate = "smithers_sdk::schemars")]
struct Input {
    /// Who to greet.
    name: String,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            name: "world".to_owned(),
        }
    }
}

fn build(_ctx: &Ctx) -> Node {
    task("greet", |t| {
        let input: Input = t.input()?;
        Ok(json!({ "greeting": format!("Hello, {}!", input.name) }))
    })
}

smithers_sdk::workflow!(name: "hello", build: build, input: Input);

#[cfg(test)]
mod tests {
    use smithers_sdk::TaskCtx;
    use smithers_sdk::serde_json::Value;

    use super::*;

    fn greet(input: Value) -> Value {
        let ctx = Ctx::new(input);
        build(&ctx)
            .run_task(&TaskCtx::new(ctx, "greet", 0, 1))
            .unwrap()
    }

    #[test]
    fn greets_by_name_or_the_world() {
        assert_eq!(
            greet(json!({"name": "Ada"})),
            json!({"greeting": "Hello, Ada!"})
        );
        assert_eq!(greet(json!({})), json!({"greeting": "Hello, world!"}));
        assert_eq!(greet(Value::Null), json!({"greeting": "Hello, world!"}));
    }

    #[test]
    fn the_input_schema_says_name_is_an_optional_string() {
        let schema = smithers_sdk::input_schema::<Input>();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["properties"]["name"]["type"], "string");
        assert_eq!(schema["properties"]["name"]["default"], "world");
        assert!(schema.get("required").is_none(), "{schema}");
    }
}
