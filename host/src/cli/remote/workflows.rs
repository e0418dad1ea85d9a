//! `smithers-host client workflows [PATH] [--build]`: what the host knows of
//! the workflows under its root dir. Names, paths and messages come from
//! that dir (a workflow may have written them), so control characters are
//! escaped before they reach the terminal.

use clap::Args;
use serde_json::Value;
use smithers_client::{Client, WorkflowInfo};

use super::{Next, Outcome, print_json, print_line, print_table};

#[derive(Debug, Args)]
pub(super) struct WorkflowsArgs {
    /// One workflow (a path under the host's root dir): loaded, and built if
    /// it is a crate. Without it, every workflow is listed.
    path: Option<String>,
    /// Build the guest crates that are not built from their current sources
    /// (a listing does not build otherwise).
    #[arg(long)]
    build: bool,
}

pub(super) async fn workflows(client: &Client, args: WorkflowsArgs, json: bool) -> Outcome {
    if let Some(path) = &args.path {
        let workflow = client.get_workflow(path).await?;
        if json {
            print_json(&workflow);
        } else {
            print_one(&workflow);
        }
        return Ok(Next::Done);
    }
    let list = client.list_workflows(args.build).await?;
    if json {
        print_json(&list);
        return Ok(Next::Done);
    }
    if list.workflows.is_empty() {
        print_line("no workflows under the root dir");
    }
    let rows = list
        .workflows
        .iter()
        .map(|w| {
            let name = match (&w.name, error_code(w)) {
                (Some(name), _) => clean(name),
                (None, Some(code)) => code,
                (None, None) => String::new(),
            };
            vec![
                clean(&w.path),
                clean(&w.kind),
                clean(&w.state),
                name,
                w.hash.as_deref().map(short).unwrap_or_default(),
                w.input_schema
                    .as_ref()
                    .map(input_summary)
                    .unwrap_or_default(),
            ]
        })
        .collect();
    if !list.workflows.is_empty() {
        print_table(&["PATH", "KIND", "STATE", "NAME", "HASH", "INPUT"], rows);
    }
    if list.truncated {
        print_line("(more may exist: the host's scan limits stopped the listing)");
    }
    Ok(Next::Done)
}

fn print_one(w: &WorkflowInfo) {
    print_line(&format!("path      {}", clean(&w.path)));
    print_line(&format!("kind      {}", clean(&w.kind)));
    print_line(&format!("state     {}", clean(&w.state)));
    if let Some(name) = &w.name {
        let version = w.version.as_deref().map(clean).unwrap_or_default();
        print_line(&format!("name      {} {version}", clean(name)));
    }
    if let Some(hash) = &w.hash {
        print_line(&format!("hash      {}", clean(hash)));
    }
    if let Some(error) = &w.error {
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        let code = error_code(w).unwrap_or_default();
        print_line(&format!("error     {code}: {}", clean(message)));
    }
    match &w.input_schema {
        Some(schema) => {
            let text = serde_json::to_string_pretty(schema).unwrap_or_default();
            print_line(&format!("input     {}", clean_lines(&text)));
        }
        None => print_line("input     any (no schema)"),
    }
}

fn error_code(w: &WorkflowInfo) -> Option<String> {
    w.error
        .as_ref()
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .map(clean)
}

/// `name?: string, times: integer` from an object schema's properties.
fn input_summary(schema: &Value) -> String {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return "schema".into();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let fields: Vec<String> = properties
        .iter()
        .map(|(name, property)| {
            let optional = if required.contains(&name.as_str()) {
                ""
            } else {
                "?"
            };
            let kind = match property.get("type") {
                Some(Value::String(kind)) => kind.clone(),
                Some(Value::Array(kinds)) => kinds
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("|"),
                _ => "any".into(),
            };
            format!("{name}{optional}: {kind}")
        })
        .collect();
    let summary = clean(&fields.join(", "));
    if summary.chars().count() > 60 {
        format!("{}…", summary.chars().take(59).collect::<String>())
    } else {
        summary
    }
}

fn short(hash: &str) -> String {
    clean(&hash.chars().take(12).collect::<String>())
}

/// `text` with control characters escaped.
fn clean(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// [`clean`] per line, keeping the line breaks of pretty JSON.
fn clean_lines(text: &str) -> String {
    text.lines()
        .map(clean)
        .collect::<Vec<_>>()
        .join("\n          ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_input_column_names_fields_and_marks_optional_ones() {
        let schema = json!({
            "type": "object",
            "properties": { "name": { "type": "string" }, "n": { "type": ["integer", "null"] } },
            "required": ["name"],
        });
        assert_eq!(input_summary(&schema), "n?: integer|null, name: string");
        assert_eq!(input_summary(&json!({ "type": "integer" })), "schema");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(clean("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
    }
}
