//! The tokenizer of the transform expression language.

use crate::manifest::expr::ExprError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    Ident(String),
    Column(String),
    Str(String),
    Int(i64),
    Float(f64),
    Symbol(&'static str),
}

pub(crate) fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    let error = |offset: usize, message: &str| ExprError {
        offset,
        message: message.to_string(),
    };
    while index < chars.len() {
        let start = index;
        let c = chars[index];
        if c.is_whitespace() {
            index += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while index < chars.len()
                && (chars[index].is_ascii_alphanumeric() || chars[index] == '_')
            {
                index += 1;
            }
            tokens.push((Token::Ident(chars[start..index].iter().collect()), start));
            continue;
        }
        if c.is_ascii_digit()
            || (c == '.' && chars.get(index + 1).is_some_and(char::is_ascii_digit))
        {
            while index < chars.len()
                && (chars[index].is_ascii_digit()
                    || chars[index] == '.'
                    || ((chars[index] == 'e' || chars[index] == 'E')
                        && chars
                            .get(index + 1)
                            .is_some_and(|n| n.is_ascii_digit() || *n == '-' || *n == '+'))
                    || ((chars[index] == '-' || chars[index] == '+')
                        && matches!(chars[index - 1], 'e' | 'E')))
            {
                index += 1;
            }
            let literal: String = chars[start..index].iter().collect();
            let token = match literal.parse::<i64>() {
                Ok(int) => Token::Int(int),
                Err(_) => Token::Float(
                    literal
                        .parse::<f64>()
                        .map_err(|_| error(start, &format!("bad number {literal:?}")))?,
                ),
            };
            tokens.push((token, start));
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            index += 1;
            let mut value = String::new();
            loop {
                match chars.get(index) {
                    None => return Err(error(start, "unterminated quote")),
                    Some('\\') if c != '`' => {
                        match chars.get(index + 1) {
                            Some('n') => value.push('\n'),
                            Some('t') => value.push('\t'),
                            Some(other) => value.push(*other),
                            None => return Err(error(start, "unterminated quote")),
                        }
                        index += 2;
                    }
                    Some(q) if *q == c => {
                        index += 1;
                        break;
                    }
                    Some(other) => {
                        value.push(*other);
                        index += 1;
                    }
                }
            }
            let token = if c == '`' {
                Token::Column(value)
            } else {
                Token::Str(value)
            };
            tokens.push((token, start));
            continue;
        }
        let two: String = chars[index..(index + 2).min(chars.len())].iter().collect();
        let symbol = match two.as_str() {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            "&&" => Some("and"),
            "||" => Some("or"),
            _ => None,
        };
        if let Some(symbol) = symbol {
            tokens.push((Token::Symbol(symbol), start));
            index += 2;
            continue;
        }
        let symbol = match c {
            '<' => "<",
            '>' => ">",
            '+' => "+",
            '-' => "-",
            '*' => "*",
            '/' => "/",
            '%' => "%",
            '(' => "(",
            ')' => ")",
            '[' => "[",
            ']' => "]",
            ',' => ",",
            '!' => "not",
            '=' => "==",
            _ => return Err(error(start, &format!("unexpected character {c:?}"))),
        };
        tokens.push((Token::Symbol(symbol), start));
        index += 1;
    }
    Ok(tokens)
}
