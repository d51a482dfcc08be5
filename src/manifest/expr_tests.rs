//! Tests of the expression parser.

use super::*;

fn col(name: &str) -> Box<Expr> {
    Box::new(Expr::Column(name.into()))
}

#[test]
fn precedence_and_functions() {
    let expr = parse_expr("len(text) > 0 and label != 'other' or not flag").unwrap();
    let expected = Expr::Binary(
        BinaryOp::Or,
        Box::new(Expr::Binary(
            BinaryOp::And,
            Box::new(Expr::Binary(
                BinaryOp::Gt,
                Box::new(Expr::Call(Function::Len, vec![Expr::Column("text".into())])),
                Box::new(Expr::Literal(Literal::Int(0))),
            )),
            Box::new(Expr::Binary(
                BinaryOp::NotEq,
                col("label"),
                Box::new(Expr::Literal(Literal::Str("other".into()))),
            )),
        )),
        Box::new(Expr::Not(col("flag"))),
    );
    assert_eq!(expr, expected);
    assert_eq!(
        parse_expr("a + b * 2").unwrap(),
        Expr::Binary(
            BinaryOp::Add,
            col("a"),
            Box::new(Expr::Binary(
                BinaryOp::Mul,
                col("b"),
                Box::new(Expr::Literal(Literal::Int(2)))
            ))
        )
    );
}

#[test]
fn in_lists_null_checks_and_quoted_columns() {
    assert_eq!(
        parse_expr("`unit price` not in [1, -2.5, \"x\"]").unwrap(),
        Expr::InList {
            value: col("unit price"),
            list: vec![
                Literal::Int(1),
                Literal::Float(-2.5),
                Literal::Str("x".into())
            ],
            negated: true
        }
    );
    assert_eq!(
        parse_expr("note is not null").unwrap(),
        Expr::IsNull {
            value: col("note"),
            negated: true
        }
    );
    assert_eq!(
        parse_expr("coalesce(a, b) == 1e3").unwrap().columns(),
        vec!["a", "b"]
    );
}

#[test]
fn errors_say_where() {
    let error = parse_expr("len(text) >").unwrap_err();
    assert_eq!(error.offset, 11);
    let error = parse_expr("frobnicate(x)").unwrap_err();
    assert!(error.message.contains("unknown function"), "{error}");
    assert!(
        parse_expr("a == 'open")
            .unwrap_err()
            .message
            .contains("unterminated")
    );
    assert!(
        parse_expr("len(a, b)")
            .unwrap_err()
            .message
            .contains("takes 1")
    );
    assert!(parse_expr("a b").is_err());
    assert!(parse_expr(&"(".repeat(100)).is_err());
    assert!(parse_expr("").is_err());
}
