//! The small expression language of `filter` and `derive` transform ops, parsed here into an
//! AST (no polars): `len(text) > 0 and label != "other"`, `lower(trim(title)) + ": " + text`,
//! `amount * 1.2`, `country in ["DE", "FR"]`, `note is not null`.
//!
//! Columns are bare identifiers or back-quoted (`` `unit price` ``); strings use double or single
//! quotes. Precedence, loosest first: `or`, `and`, `not`, comparisons (`== != < <= > >= in is`),
//! `+ -`, `* / %`, unary `-`.

use std::fmt;

use crate::manifest::token::{Token, tokenize};

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Functions the language knows, with their arity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Length in characters.
    Len,
    Lower,
    Upper,
    Trim,
    Contains,
    StartsWith,
    EndsWith,
    Coalesce,
    Abs,
}

impl Function {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "len" => Self::Len,
            "lower" => Self::Lower,
            "upper" => Self::Upper,
            "trim" => Self::Trim,
            "contains" => Self::Contains,
            "starts_with" => Self::StartsWith,
            "ends_with" => Self::EndsWith,
            "coalesce" => Self::Coalesce,
            "abs" => Self::Abs,
            _ => return None,
        })
    }

    /// (min, max) number of arguments.
    fn arity(self) -> (usize, usize) {
        match self {
            Self::Len | Self::Lower | Self::Upper | Self::Trim | Self::Abs => (1, 1),
            Self::Contains | Self::StartsWith | Self::EndsWith => (2, 2),
            Self::Coalesce => (2, 8),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column(String),
    Literal(Literal),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Call(Function, Vec<Expr>),
    InList {
        value: Box<Expr>,
        list: Vec<Literal>,
        negated: bool,
    },
    IsNull {
        value: Box<Expr>,
        negated: bool,
    },
}

impl Expr {
    /// Every column the expression reads.
    pub fn columns(&self) -> Vec<String> {
        let mut columns = Vec::new();
        self.collect_columns(&mut columns);
        columns
    }

    fn collect_columns(&self, out: &mut Vec<String>) {
        match self {
            Self::Column(name) => {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
            Self::Literal(_) => {}
            Self::Not(inner) | Self::Negate(inner) => inner.collect_columns(out),
            Self::Binary(_, left, right) => {
                left.collect_columns(out);
                right.collect_columns(out);
            }
            Self::Call(_, args) => args.iter().for_each(|arg| arg.collect_columns(out)),
            Self::InList { value, .. } | Self::IsNull { value, .. } => value.collect_columns(out),
        }
    }
}

/// Where and why an expression does not parse (offset in characters).
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.offset + 1)
    }
}

/// Longest expression accepted.
pub const MAX_EXPR_CHARS: usize = 4096;
const MAX_NESTING: usize = 64;

struct Parser {
    tokens: Vec<(Token, usize)>,
    index: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn offset(&self) -> usize {
        self.tokens
            .get(self.index)
            .map_or(self.end, |(_, offset)| *offset)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError {
            offset: self.offset(),
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.index).map(|(token, _)| token)
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        match self.peek() {
            Some(Token::Ident(word)) => word.eq_ignore_ascii_case(keyword),
            Some(Token::Symbol(symbol)) => *symbol == keyword,
            _ => false,
        }
    }

    fn eat(&mut self, keyword: &str) -> bool {
        if self.peek_keyword(keyword) {
            self.index += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, symbol: &str) -> Result<(), ExprError> {
        if self.eat(symbol) {
            Ok(())
        } else {
            self.error(format!("expected {symbol:?}"))
        }
    }

    fn nested<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, ExprError>,
    ) -> Result<T, ExprError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return self.error("expression nests too deeply");
        }
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.eat("or") {
            let right = self.and()?;
            left = Expr::Binary(BinaryOp::Or, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.not()?;
        while self.eat("and") {
            let right = self.not()?;
            left = Expr::Binary(BinaryOp::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.eat("not") {
            let inner = self.nested(Self::not)?;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ExprError> {
        let left = self.additive()?;
        let op = match self.peek() {
            Some(Token::Symbol("==")) => BinaryOp::Eq,
            Some(Token::Symbol("!=")) => BinaryOp::NotEq,
            Some(Token::Symbol("<")) => BinaryOp::Lt,
            Some(Token::Symbol("<=")) => BinaryOp::LtEq,
            Some(Token::Symbol(">")) => BinaryOp::Gt,
            Some(Token::Symbol(">=")) => BinaryOp::GtEq,
            _ => {
                if self.eat("is") {
                    let negated = self.eat("not");
                    if !self.eat("null") {
                        return self.error("expected `null` after `is`");
                    }
                    return Ok(Expr::IsNull {
                        value: Box::new(left),
                        negated,
                    });
                }
                let negated = self.peek_keyword("not")
                    && matches!(self.tokens.get(self.index + 1), Some((Token::Ident(word), _)) if word == "in");
                if negated {
                    self.index += 1;
                }
                if self.eat("in") {
                    let list = self.literal_list()?;
                    return Ok(Expr::InList {
                        value: Box::new(left),
                        list,
                        negated,
                    });
                }
                return Ok(left);
            }
        };
        self.index += 1;
        let right = self.additive()?;
        Ok(Expr::Binary(op, Box::new(left), Box::new(right)))
    }

    fn literal_list(&mut self) -> Result<Vec<Literal>, ExprError> {
        self.expect("[")?;
        let mut list = Vec::new();
        if self.eat("]") {
            return Ok(list);
        }
        loop {
            match self.primary()? {
                Expr::Literal(literal) => list.push(literal),
                Expr::Negate(inner) => match *inner {
                    Expr::Literal(Literal::Int(int)) => list.push(Literal::Int(-int)),
                    Expr::Literal(Literal::Float(float)) => list.push(Literal::Float(-float)),
                    _ => return self.error("`in` lists hold literals only"),
                },
                _ => return self.error("`in` lists hold literals only"),
            }
            if self.eat("]") {
                return Ok(list);
            }
            self.expect(",")?;
        }
    }

    fn additive(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Some(Token::Symbol("+")) => BinaryOp::Add,
                Some(Token::Symbol("-")) => BinaryOp::Sub,
                _ => return Ok(left),
            };
            self.index += 1;
            let right = self.multiplicative()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Token::Symbol("*")) => BinaryOp::Mul,
                Some(Token::Symbol("/")) => BinaryOp::Div,
                Some(Token::Symbol("%")) => BinaryOp::Rem,
                _ => return Ok(left),
            };
            self.index += 1;
            let right = self.unary()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat("-") {
            let inner = self.nested(Self::unary)?;
            return Ok(Expr::Negate(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let Some((token, _)) = self.tokens.get(self.index).cloned() else {
            return self.error("unexpected end of expression");
        };
        self.index += 1;
        match token {
            Token::Int(int) => Ok(Expr::Literal(Literal::Int(int))),
            Token::Float(float) => Ok(Expr::Literal(Literal::Float(float))),
            Token::Str(text) => Ok(Expr::Literal(Literal::Str(text))),
            Token::Column(name) => Ok(Expr::Column(name)),
            Token::Symbol("(") => {
                let inner = self.nested(Self::or)?;
                self.expect(")")?;
                Ok(inner)
            }
            Token::Symbol("-") => {
                self.index -= 1;
                self.unary()
            }
            Token::Ident(word) => match word.to_ascii_lowercase().as_str() {
                "true" => Ok(Expr::Literal(Literal::Bool(true))),
                "false" => Ok(Expr::Literal(Literal::Bool(false))),
                "null" => Ok(Expr::Literal(Literal::Null)),
                "and" | "or" | "not" | "in" | "is" => {
                    self.index -= 1;
                    self.error(format!("unexpected keyword {word:?}"))
                }
                _ if self.peek_keyword("(") => {
                    let Some(function) = Function::from_name(&word) else {
                        self.index -= 1;
                        return self.error(format!(
                            "unknown function {word:?} (known: len, lower, upper, trim, contains, starts_with, ends_with, coalesce, abs)"
                        ));
                    };
                    self.index += 1;
                    let mut args = Vec::new();
                    if !self.eat(")") {
                        loop {
                            args.push(self.nested(Self::or)?);
                            if self.eat(")") {
                                break;
                            }
                            self.expect(",")?;
                        }
                    }
                    let (min, max) = function.arity();
                    if args.len() < min || args.len() > max {
                        return self.error(format!(
                            "{word} takes {} argument(s), got {}",
                            if min == max {
                                min.to_string()
                            } else {
                                format!("{min}-{max}")
                            },
                            args.len()
                        ));
                    }
                    Ok(Expr::Call(function, args))
                }
                _ => Ok(Expr::Column(word)),
            },
            Token::Symbol(symbol) => {
                self.index -= 1;
                self.error(format!("unexpected {symbol:?}"))
            }
        }
    }
}

/// Parses an expression.
pub fn parse_expr(text: &str) -> Result<Expr, ExprError> {
    if text.chars().count() > MAX_EXPR_CHARS {
        return Err(ExprError {
            offset: 0,
            message: format!("expression is longer than {MAX_EXPR_CHARS} characters"),
        });
    }
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        end: text.chars().count(),
        tokens,
        index: 0,
        depth: 0,
    };
    if parser.tokens.is_empty() {
        return parser.error("empty expression");
    }
    let expr = parser.or()?;
    if parser.index < parser.tokens.len() {
        return parser.error("unexpected text after the expression");
    }
    Ok(expr)
}

#[cfg(test)]
#[path = "expr_tests.rs"]
mod tests;
