//! Turning what a workflow produced into terminal text: an output as pretty
//! JSON lines (cut to a screenful on a terminal) or as one compact line, and
//! any text a workflow chose (node ids, logs, error messages) made safe to
//! print.
//!
//! Workflows are untrusted: their text must never drive the terminal, so
//! every control character (C0 but tab, DEL, C1) is written as an escape
//! before it reaches stdout, on a terminal or not (a log is `cat`ed later).
//! Everything here is a pure function of its input, tested without a
//! terminal; it never prints.

use serde_json::Value;

/// Lines of one output shown on a terminal; the rest is counted.
pub const TTY_OUTPUT_LINES: usize = 20;
/// Width assumed of a terminal that does not tell its own.
const DEFAULT_WIDTH: usize = 120;
/// Narrowest width lines are cut to, however narrow the terminal.
const MIN_WIDTH: usize = 40;

/// Where text goes: a terminal (cut to fit) or a pipe or file (whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Everything, for a pipe, a file or a log.
    Whole,
    /// A screenful, for a person at a terminal this many columns wide.
    Terminal(usize),
}

impl Fit {
    /// How to fit what goes to stdout: to its width on a terminal, whole
    /// otherwise.
    pub fn stdout() -> Self {
        let term = console::Term::stdout();
        if !term.is_term() {
            return Self::Whole;
        }
        let width = term
            .size_checked()
            .map_or(DEFAULT_WIDTH, |(_, columns)| usize::from(columns));
        Self::Terminal(width.max(MIN_WIDTH))
    }

    /// `line`, cut to the terminal's width.
    pub fn line(self, line: &str) -> String {
        match self {
            Self::Whole => line.to_string(),
            // One column for the `…`.
            Self::Terminal(width) => cut(line, width - 1),
        }
    }
}

/// `text` with every control character written as `\u{..}`.
pub fn safe(text: &str) -> String {
    if !text.chars().any(is_control) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_control(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn is_control(c: char) -> bool {
    c != '\t' && c.is_control()
}

/// JSON text with DEL and C1 characters (which serde leaves as they are)
/// written as `\u00XX`, which keeps it the same JSON. Those characters only
/// occur inside strings, where the escape means the same character.
pub fn safe_json(json: &str) -> String {
    if !json.chars().any(is_control) {
        return json.to_string();
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_control(c) && c != '\n' {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// `line` cut to `max` characters, with `…` when cut.
pub fn cut(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_string(),
    }
}

/// A node and its loop iteration as shown: `id`, or `id[3]`.
pub fn node_label(id: &str, iteration: u32) -> String {
    if iteration > 0 {
        format!("{}[{iteration}]", safe(id))
    } else {
        safe(id)
    }
}

/// An output as pretty JSON, each line prefixed with `indent`; on a
/// terminal at most [`TTY_OUTPUT_LINES`] lines, each cut to its width.
pub fn output_lines(value: &Value, fit: Fit, indent: &str) -> Vec<String> {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    let text = safe_json(&text);
    let lines: Vec<&str> = text.lines().collect();
    let shown = match fit {
        Fit::Whole => lines.len(),
        Fit::Terminal(_) => lines.len().min(TTY_OUTPUT_LINES),
    };
    let mut out: Vec<String> = lines[..shown]
        .iter()
        .map(|line| fit.line(&format!("{indent}{line}")))
        .collect();
    if shown < lines.len() {
        out.push(format!("{indent}… {} more lines", lines.len() - shown));
    }
    out
}

/// One entry of an outputs listing: `  <node>  <compact output>`, cut on a
/// terminal.
pub fn output_entry(node_id: &str, iteration: u32, value: &Value, fit: Fit) -> String {
    let line = format!(
        "  {:<28} {}",
        node_label(node_id, iteration),
        safe_json(&value.to_string())
    );
    fit.line(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(safe("plain\ttext"), "plain\ttext");
        assert_eq!(safe("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(safe("csi\u{9b}2J"), "csi\\u{9b}2J");
        assert_eq!(safe("del\u{7f}"), "del\\u{7f}");
        // In JSON, serde escapes C0 itself; DEL and C1 become JSON escapes.
        let value = json!({ "s": "\u{1b}]0;x\u{7}\u{9b}\u{7f}" });
        let line = safe_json(&value.to_string());
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), value);
        for line in output_lines(&value, Fit::Whole, "  ") {
            assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        }
        assert_eq!(node_label("a\u{1b}b", 2), "a\\u{1b}b[2]");
    }

    #[test]
    fn an_output_is_pretty_and_whole_off_a_terminal() {
        let value = json!({ "greeting": "Hello, Ada!" });
        assert_eq!(
            output_lines(&value, Fit::Whole, "  "),
            ["  {", "    \"greeting\": \"Hello, Ada!\"", "  }"]
        );
        let long: Vec<u32> = (0..100).collect();
        assert_eq!(output_lines(&json!(long), Fit::Whole, "").len(), 102);
    }

    #[test]
    fn an_output_is_cut_to_a_screenful_on_a_terminal() {
        let screen = Fit::Terminal(80);
        let long: Vec<u32> = (0..100).collect();
        let lines = output_lines(&json!(long), screen, "  ");
        assert_eq!(lines.len(), TTY_OUTPUT_LINES + 1);
        assert_eq!(lines.last().unwrap(), "  … 82 more lines");
        let wide = json!({ "text": "x".repeat(1000) });
        for line in output_lines(&wide, screen, "") {
            assert!(line.chars().count() <= 80, "{line}");
        }
        let entry = output_entry("n", 0, &wide, screen);
        assert_eq!(entry.chars().count(), 80);
        assert!(entry.ends_with('…'));
        assert!(
            output_entry("n", 0, &wide, Fit::Whole).ends_with(&format!("{}\"}}", "x".repeat(100)))
        );
    }

    #[test]
    fn an_outputs_listing_has_one_line_per_output() {
        assert_eq!(
            output_entry("greet", 0, &json!({"greeting": "hi"}), Fit::Whole),
            format!("  {:<28} {}", "greet", r#"{"greeting":"hi"}"#)
        );
        assert!(output_entry("draft", 2, &json!(1), Fit::Whole).starts_with("  draft[2] "));
    }
}
