//! An incremental parser of the `text/event-stream` format (the WHATWG
//! "interpreting an event stream" rules, reduced to what a client of one
//! stream needs): bytes go in as they arrive, complete messages come out.
//!
//! It knows nothing about Smithers; [`crate::events`] gives the messages
//! their meaning.

/// One dispatched message: the fields of a block that ended with a blank line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// `event:` (the type), if any.
    pub event: Option<String>,
    /// `id:`, if the block had one.
    pub id: Option<String>,
    /// `data:` lines joined with `\n`; `None` when the block had none (a
    /// block of only `retry:` or comments dispatches nothing).
    pub data: Option<String>,
    /// `retry:` in milliseconds, if the block had a valid one.
    pub retry_ms: Option<u64>,
}

/// Splits a byte stream into [`Message`]s. Lines may end with `\n`, `\r\n`
/// or `\r`; a UTF-8 character cut between two chunks is reassembled.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// Where the scan for the next line end resumes.
    scanned: usize,
    current: Message,
    /// The previous chunk ended with `\r`: a leading `\n` belongs to it.
    skip_lf: bool,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, or `None` until more bytes arrive.
    /// Comment lines (`: keep-alive`) and blocks without `data` are consumed
    /// silently, except that a `retry:` alone is still reported.
    pub fn next_message(&mut self) -> Option<Message> {
        loop {
            let line = self.next_line()?;
            if line.is_empty() {
                let message = std::mem::take(&mut self.current);
                if message.data.is_some() || message.retry_ms.is_some() {
                    return Some(message);
                }
                continue;
            }
            self.field(&line);
        }
    }

    fn next_line(&mut self) -> Option<String> {
        if self.skip_lf && !self.buf.is_empty() {
            if self.buf[0] == b'\n' {
                self.buf.remove(0);
            }
            self.skip_lf = false;
        }
        let rest = &self.buf[self.scanned..];
        let Some(offset) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') else {
            self.scanned = self.buf.len();
            return None;
        };
        let end = self.scanned + offset;
        let mut consumed = end + 1;
        if self.buf[end] == b'\r' {
            match self.buf.get(end + 1) {
                Some(b'\n') => consumed += 1,
                Some(_) => {}
                None => self.skip_lf = true,
            }
        }
        let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..consumed);
        self.scanned = 0;
        Some(line)
    }

    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => self.current.event = Some(value.to_string()),
            "data" => match &mut self.current.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.current.data = Some(value.to_string()),
            },
            // An id containing NUL is ignored, as the standard says.
            "id" if !value.contains('\0') => self.current.id = Some(value.to_string()),
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.current.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(parser: &mut Parser) -> Vec<Message> {
        std::iter::from_fn(|| parser.next_message()).collect()
    }

    #[test]
    fn parses_our_server_blocks_with_ids_and_skips_keep_alives() {
        let mut p = Parser::new();
        p.push(b"retry: 1000\n\nevent: smithers\nid: 0\ndata: {\"a\":1}\n\n: keep-alive\n\n");
        let got = all(&mut p);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].retry_ms, Some(1000));
        assert_eq!(got[0].data, None);
        assert_eq!(got[1].event.as_deref(), Some("smithers"));
        assert_eq!(got[1].id.as_deref(), Some("0"));
        assert_eq!(got[1].data.as_deref(), Some("{\"a\":1}"));
    }

    #[test]
    fn reassembles_blocks_and_characters_cut_between_chunks() {
        let text = "event: smithers\r\ndata: {\"t\":\"é\"}\r\n\r\n".as_bytes();
        for cut in 0..text.len() {
            let mut p = Parser::new();
            p.push(&text[..cut]);
            let mut got = all(&mut p);
            p.push(&text[cut..]);
            got.extend(all(&mut p));
            assert_eq!(got.len(), 1, "cut at {cut}");
            assert_eq!(
                got[0].data.as_deref(),
                Some("{\"t\":\"é\"}"),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn joins_multi_line_data_and_accepts_bare_cr() {
        let mut p = Parser::new();
        p.push(b"data: a\rdata:b\r\rdata\n\n");
        let got = all(&mut p);
        assert_eq!(got[0].data.as_deref(), Some("a\nb"));
        assert_eq!(got[1].data.as_deref(), Some(""));
    }

    #[test]
    fn an_unfinished_block_is_not_dispatched() {
        let mut p = Parser::new();
        p.push(b"event: smithers\ndata: {}\n");
        assert!(p.next_message().is_none());
        p.push(b"\n");
        assert!(p.next_message().is_some());
    }
}
