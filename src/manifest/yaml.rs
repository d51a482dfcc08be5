//! YAML (and JSON, which YAML 1.2 reads) to a `serde_json::Value` tree, keeping the line and
//! column of every node by JSON pointer so that errors found later can name where they are.
//!
//! Strict on purpose: one document, no tags, no duplicate keys, string keys only, and alias
//! expansion under a node budget (a "billion laughs" file fails instead of eating memory).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// Where a node starts: 1-based line and column, as editors show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn of(span: &Span) -> Self {
        Self {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// A parse failure with the position it was found at.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub position: Position,
    pub message: String,
}

/// Largest number of nodes a document may expand to (aliases included).
pub const MAX_NODES: usize = 20_000;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// The tree and the position of every node, by JSON pointer (`""` is the root).
#[derive(Debug, Default)]
pub struct Located {
    pub value: Value,
    /// Where each value starts.
    pub positions: HashMap<String, Position>,
    /// Where each mapping key starts (for errors about the key itself).
    pub keys: HashMap<String, Position>,
}

impl Located {
    /// The position of `pointer`, or of its nearest ancestor that has one (nodes copied from an
    /// alias are located at the alias).
    pub fn position_of(&self, pointer: &str) -> Position {
        let mut current = pointer;
        loop {
            if let Some(position) = self.positions.get(current).or(self.keys.get(current)) {
                return *position;
            }
            match current.rfind('/') {
                Some(index) => current = &current[..index],
                None => return Position { line: 1, column: 1 },
            }
        }
    }
}

/// Escapes one JSON-pointer segment (RFC 6901).
pub fn escape_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

enum Frame {
    Sequence {
        items: Vec<Value>,
        pointer: String,
        anchor: usize,
    },
    Mapping {
        entries: Map<String, Value>,
        pointer: String,
        anchor: usize,
        pending_key: Option<(String, Position)>,
    },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Value, usize)>,
    positions: HashMap<String, Position>,
    keys: HashMap<String, Position>,
    nodes: usize,
    root: Option<Value>,
    documents: usize,
}

fn fail<T>(span: &Span, message: impl Into<String>) -> Result<T, YamlError> {
    Err(YamlError {
        position: Position::of(span),
        message: message.into(),
    })
}

fn count_nodes(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Object(entries) => 1 + entries.values().map(count_nodes).sum::<usize>(),
        _ => 1,
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema (`yes` and `no` stay strings).
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let is_integer = !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit());
    if is_integer {
        if let Ok(int) = text.parse::<i64>() {
            return Value::Number(int.into());
        }
        if let Ok(int) = text.parse::<u64>() {
            return Value::Number(int.into());
        }
    }
    let looks_float = unsigned
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && unsigned.bytes().any(|b| b.is_ascii_digit());
    if (looks_float || is_integer)
        && let Ok(float) = text.parse::<f64>()
        && let Some(number) = Number::from_f64(float)
    {
        return Value::Number(number);
    }
    Value::String(text.to_string())
}

impl Builder {
    fn current_pointer(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Sequence { items, pointer, .. }) => format!("{pointer}/{}", items.len()),
            Some(Frame::Mapping {
                pointer,
                pending_key: Some((key, _)),
                ..
            }) => format!("{pointer}/{}", escape_segment(key)),
            // A key is being read: its position is not a value's.
            Some(Frame::Mapping { pointer, .. }) => pointer.clone(),
        }
    }

    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Mapping {
                pending_key: None,
                ..
            })
        )
    }

    fn add_nodes(&mut self, count: usize, span: &Span) -> Result<(), YamlError> {
        self.nodes += count;
        if self.nodes > MAX_NODES {
            return fail(
                span,
                format!("the document expands to more than {MAX_NODES} nodes (aliases included)"),
            );
        }
        Ok(())
    }

    /// Places a finished value into its parent (or makes it the root).
    fn place(&mut self, value: Value, anchor: usize, span: &Span) -> Result<(), YamlError> {
        if anchor != 0 {
            self.anchors
                .insert(anchor, (value.clone(), count_nodes(&value)));
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
                Ok(())
            }
            Some(Frame::Sequence { items, .. }) => {
                items.push(value);
                Ok(())
            }
            Some(Frame::Mapping {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                Some((key, _)) => {
                    entries.insert(key, value);
                    Ok(())
                }
                None => fail(span, "mapping keys must be plain strings"),
            },
        }
    }

    fn scalar(&mut self, value: Value, anchor: usize, span: &Span) -> Result<(), YamlError> {
        if self.expecting_key() {
            let key = match value {
                Value::String(key) => key,
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                _ => return fail(span, "mapping keys must be strings"),
            };
            let Some(Frame::Mapping {
                entries,
                pending_key,
                pointer,
                ..
            }) = self.stack.last_mut()
            else {
                unreachable!("expecting_key checked the frame");
            };
            if entries.contains_key(&key) {
                return fail(span, format!("duplicate key {key:?}"));
            }
            let position = Position::of(span);
            self.keys
                .insert(format!("{pointer}/{}", escape_segment(&key)), position);
            *pending_key = Some((key, position));
            return Ok(());
        }
        self.add_nodes(1, span)?;
        self.place(value, anchor, span)
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => Ok(()),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return fail(&span, "a manifest file holds one document");
                }
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                if tag.is_some() {
                    return fail(&span, "YAML tags are not supported");
                }
                let value = match style {
                    ScalarStyle::Plain => resolve_plain(&text),
                    _ => Value::String(text.into_owned()),
                };
                if !self.expecting_key() {
                    let pointer = self.current_pointer();
                    self.positions.entry(pointer).or_insert(Position::of(&span));
                }
                self.scalar(value, anchor, &span)
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag)
                if tag.is_some() =>
            {
                let _ = anchor;
                fail(&span, "YAML tags are not supported")
            }
            Event::SequenceStart(anchor, _) => {
                self.open(&span)?;
                let pointer = self.current_pointer();
                self.stack.push(Frame::Sequence {
                    items: Vec::new(),
                    pointer,
                    anchor,
                });
                Ok(())
            }
            Event::MappingStart(anchor, _) => {
                self.open(&span)?;
                let pointer = self.current_pointer();
                self.stack.push(Frame::Mapping {
                    entries: Map::new(),
                    pointer,
                    anchor,
                    pending_key: None,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, anchor) = match self.stack.pop() {
                    Some(Frame::Sequence { items, anchor, .. }) => (Value::Array(items), anchor),
                    Some(Frame::Mapping {
                        entries, anchor, ..
                    }) => (Value::Object(entries), anchor),
                    None => return fail(&span, "unbalanced collection end"),
                };
                self.place(value, anchor, &span)
            }
            Event::Alias(anchor) => {
                if self.expecting_key() {
                    return fail(&span, "aliases cannot be mapping keys");
                }
                let Some((value, count)) = self.anchors.get(&anchor).cloned() else {
                    return fail(&span, "alias to an unknown anchor");
                };
                self.add_nodes(count, &span)?;
                let pointer = self.current_pointer();
                self.positions.entry(pointer).or_insert(Position::of(&span));
                self.place(value, 0, &span)
            }
        }
    }

    /// Checks the key/depth rules when a collection opens.
    fn open(&mut self, span: &Span) -> Result<(), YamlError> {
        if self.expecting_key() {
            return fail(span, "mapping keys must be plain strings");
        }
        if self.stack.len() >= MAX_DEPTH {
            return fail(span, format!("nesting is deeper than {MAX_DEPTH} levels"));
        }
        self.add_nodes(1, span)?;
        let pointer = self.current_pointer();
        self.positions.entry(pointer).or_insert(Position::of(span));
        Ok(())
    }
}

/// Parses one YAML (or JSON) document into a located tree.
pub fn parse(text: &str) -> Result<Located, YamlError> {
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        positions: HashMap::new(),
        keys: HashMap::new(),
        nodes: 0,
        root: None,
        documents: 0,
    };
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => builder.event(event, span)?,
            Err(error) => {
                let marker = error.marker();
                return Err(YamlError {
                    position: Position {
                        line: marker.line(),
                        column: marker.col() + 1,
                    },
                    message: error.info().to_string(),
                });
            }
        }
    }
    Ok(Located {
        value: builder.root.unwrap_or(Value::Null),
        positions: builder.positions,
        keys: builder.keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_pointers() {
        let located = parse("a:\n  b: [1, two]\n  c: {d: true}\n").unwrap();
        assert_eq!(located.value["a"]["b"][1], Value::String("two".into()));
        assert_eq!(
            located.position_of("/a/b/1"),
            Position {
                line: 2,
                column: 10
            }
        );
        assert_eq!(
            located.position_of("/a/c/d"),
            Position {
                line: 3,
                column: 10
            }
        );
        assert_eq!(
            located.position_of("/a/c/missing"),
            Position { line: 3, column: 6 }
        );
    }

    #[test]
    fn core_schema_scalars() {
        let located = parse("[yes, no, 1, -2.5, null, '1', 1e3, on]").unwrap();
        assert_eq!(
            located.value,
            serde_json::json!(["yes", "no", 1, -2.5, null, "1", 1000.0, "on"])
        );
    }

    #[test]
    fn alias_bombs_are_capped() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..8 {
            let previous = format!("*a{}", level - 1);
            let items = vec![previous; 10].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        let error = parse(&text).unwrap_err();
        assert!(error.message.contains("nodes"), "{error:?}");
    }

    #[test]
    fn duplicate_keys_and_tags_are_errors() {
        let error = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(error.position.line, 3);
        assert!(error.message.contains("duplicate"));
        assert!(parse("a: !!binary aGk=\n").is_err());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }
}
