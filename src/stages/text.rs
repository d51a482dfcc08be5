//! Text normalisation of the `normalizeText` op in one pass per value: Unicode normal form
//! (skipped for ASCII, which every form leaves unchanged), white-space collapsing, trimming and
//! lower-casing, written into one reused buffer, split over the cores. Four separate polars
//! string kernels would each allocate a new column; a column that is already clean is returned
//! as it is after one read-only scan.

use polars::prelude::*;
use unicode_normalization::UnicodeNormalization;

use crate::manifest::{NormalizeTextOp, UnicodeForm as Form};

/// What one `normalizeText` op does to each value.
#[derive(Debug, Clone, Copy)]
pub struct TextOptions {
    pub form: Form,
    pub collapse_whitespace: bool,
    pub trim: bool,
    pub lowercase: bool,
}

impl TextOptions {
    pub fn of(op: &NormalizeTextOp) -> Self {
        Self {
            form: op.unicode.unwrap_or(Form::Nfkc),
            collapse_whitespace: op.collapse_whitespace,
            trim: op.trim.unwrap_or(true),
            lowercase: op.lowercase,
        }
    }
}

fn unicode_form(text: &str, form: Form) -> String {
    match form {
        Form::Nfc => text.nfc().collect(),
        Form::Nfkc => text.nfkc().collect(),
        Form::Nfd => text.nfd().collect(),
        Form::Nfkd => text.nfkd().collect(),
    }
}

/// Whether an ASCII value is already what the options make of it (the common case).
fn ascii_unchanged(text: &str, options: &TextOptions) -> bool {
    let bytes = text.as_bytes();
    let edge_space = |b: Option<&u8>| b.is_some_and(u8::is_ascii_whitespace);
    if options.trim && (edge_space(bytes.first()) || edge_space(bytes.last())) {
        return false;
    }
    if options.lowercase && bytes.iter().any(u8::is_ascii_uppercase) {
        return false;
    }
    if options.collapse_whitespace {
        let mut previous_space = false;
        for &b in bytes {
            if b.is_ascii_whitespace() {
                if b != b' ' || previous_space {
                    return false;
                }
                previous_space = true;
            } else {
                previous_space = false;
            }
        }
    }
    true
}

/// Writes the normalised `text` into `out` (cleared by the caller).
pub fn normalize_into(text: &str, options: &TextOptions, out: &mut String) {
    if text.is_ascii() && ascii_unchanged(text, options) {
        out.push_str(text);
        return;
    }
    let converted;
    let text = if text.is_ascii() {
        text
    } else {
        converted = unicode_form(text, options.form);
        converted.as_str()
    };
    if options.collapse_whitespace {
        let mut pending_space = false;
        let mut started = false;
        for c in text.chars() {
            if c.is_whitespace() {
                pending_space = true;
                continue;
            }
            if pending_space && (started || !options.trim) {
                out.push(' ');
            }
            pending_space = false;
            started = true;
            out.push(c);
        }
        if pending_space && !options.trim {
            out.push(' ');
        }
    } else if options.trim {
        out.push_str(text.trim());
    } else {
        out.push_str(text);
    }
    if options.lowercase {
        if out.is_ascii() {
            out.make_ascii_lowercase();
        } else {
            *out = out.to_lowercase();
        }
    }
}

/// Normalises every value, splitting large columns over the available cores.
fn normalize_column(strings: &StringChunked, options: &TextOptions) -> PolarsResult<StringChunked> {
    let run = |part: &StringChunked| {
        part.apply_into_string_amortized(|text, out| normalize_into(text, options, out))
    };
    // Already-clean data (the common case) costs one read-only scan and no copy.
    let unchanged = |text: &str| text.is_ascii() && ascii_unchanged(text, options);
    if strings.iter().all(|value| value.is_none_or(unchanged)) {
        return Ok(strings.clone());
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let len = strings.len();
    if threads < 2 || len < 50_000 {
        return Ok(run(strings));
    }
    let size = len.div_ceil(threads);
    let parts: PolarsResult<Vec<StringChunked>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|index| {
                let part = strings.slice((index * size) as i64, size);
                scope.spawn(move || run(&part))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .map_err(|_| polars_err!(ComputeError: "text normalisation failed"))
            })
            .collect()
    });
    let mut parts = parts?.into_iter();
    let mut joined = parts.next().unwrap_or_default();
    for part in parts {
        joined.append_owned(part)?;
    }
    Ok(joined)
}

/// The expression normalising `column` with `options`.
pub fn normalize_expr(column: &str, options: TextOptions) -> Expr {
    col(column)
        .cast(DataType::String)
        .map(
            move |values: Column| Ok(normalize_column(values.str()?, &options)?.into_column()),
            |_, field| Ok(Field::new(field.name().clone(), DataType::String)),
        )
        .alias(column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, collapse: bool, trim: bool, lowercase: bool) -> String {
        let options = TextOptions {
            form: Form::Nfkc,
            collapse_whitespace: collapse,
            trim,
            lowercase,
        };
        let mut out = String::new();
        normalize_into(text, &options, &mut out);
        out
    }

    #[test]
    fn collapse_trim_and_lowercase_in_one_pass() {
        assert_eq!(
            run("  Hello \t  World\u{a0}", true, true, true),
            "hello world"
        );
        assert_eq!(run("  Hello   World ", true, false, false), " Hello World ");
        assert_eq!(run("  Hello   World ", false, true, false), "Hello   World");
        assert_eq!(run("ＦＵＬＬ width", false, true, true), "full width");
        assert_eq!(
            run("ΣΑΣ", false, true, true),
            "σας",
            "final sigma as str::to_lowercase"
        );
        assert_eq!(run("", true, true, true), "");
    }
}
