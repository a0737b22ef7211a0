//! A bound on how deeply a SQL statement can nest, checked on its tokens before anything
//! builds a tree of it.
//!
//! Parsing, planning, optimizing, evaluating and even dropping a statement recurse once per
//! level of its expression tree. sqlparser limits parenthesis depth, but a chain such as
//! `1+1+...+1` or `a OR b OR ...` is parsed in a loop into a left-deep tree as deep as the
//! chain is long, and the recursion over it that follows overflows the thread's stack: a
//! process abort, not an error. So the statement's text is tokenized (a loop, no
//! recursion) and the depth of the tree it would make is bounded from above:
//!
//! - every open parenthesis or bracket is one level;
//! - within a level, every operator since the last comma or clause keyword can add one
//!   level (operators of an expression chain: arithmetic, comparison, `||`, `AND`, `OR`,
//!   `NOT`, `IS`, `LIKE`, `::` casts, ...);
//! - within a level, every set operation and join adds one level for the rest of it
//!   (`UNION`, `EXCEPT`, `INTERSECT` and joins nest left-deep too).
//!
//! The estimate is never below the real depth, so a statement under the limit cannot
//! overflow a stack sized for the limit (the query threads have [`QUERY_STACK_BYTES`]).

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The deepest expression tree a statement may make (see the module header).
pub const MAX_SQL_DEPTH: usize = 1000;

/// Stack of each thread that parses, plans or runs queries: room for [`MAX_SQL_DEPTH`]
/// levels of DataFusion's recursion with a wide margin (it is address space; only the
/// pages a query touches are ever backed by memory).
pub const QUERY_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Why a statement was refused before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooComplex {
    /// The estimated depth (at least this deep, past the limit).
    pub depth: usize,
    /// 1-based line and column where the limit was passed.
    pub line: u64,
    pub column: u64,
}

impl std::fmt::Display for TooComplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the statement nests deeper than {MAX_SQL_DEPTH} levels (operators chained in one expression, parentheses, set operations and joins) at line {} column {}: split it, or use IN (...) instead of long OR chains",
            self.line, self.column
        )
    }
}

/// Checks `sql` against [`MAX_SQL_DEPTH`]. Text that does not tokenize passes: the parser
/// reports it with its own message.
///
/// # Errors
/// [`TooComplex`] naming where the limit was passed.
pub fn check_depth(sql: &str) -> Result<(), TooComplex> {
    check_depth_with(sql, MAX_SQL_DEPTH)
}

fn check_depth_with(sql: &str, limit: usize) -> Result<(), TooComplex> {
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        return Ok(());
    };
    // Per open level: operators since the last reset, and set operations and joins.
    let mut levels: Vec<(usize, usize)> = vec![(0, 0)];
    for t in tokens {
        let depth_before = levels.len();
        match &t.token {
            Token::LParen | Token::LBracket | Token::LBrace => levels.push((0, 0)),
            Token::RParen | Token::RBracket | Token::RBrace if levels.len() > 1 => {
                levels.pop();
            }
            Token::Comma | Token::SemiColon => {
                if let Some(l) = levels.last_mut() {
                    l.0 = 0;
                }
            }
            Token::Word(w) => match w.keyword {
                Keyword::SELECT
                | Keyword::FROM
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::WHEN
                | Keyword::THEN
                | Keyword::ELSE
                | Keyword::AS => {
                    if let Some(l) = levels.last_mut() {
                        l.0 = 0;
                    }
                }
                Keyword::UNION | Keyword::EXCEPT | Keyword::INTERSECT | Keyword::JOIN => {
                    if let Some(l) = levels.last_mut() {
                        l.1 += 1;
                    }
                }
                Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::XOR
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::IN
                | Keyword::AT
                | Keyword::COLLATE => {
                    if let Some(l) = levels.last_mut() {
                        l.0 += 1;
                    }
                }
                _ => {}
            },
            Token::Whitespace(_) => continue,
            token if is_operator(token) => {
                if let Some(l) = levels.last_mut() {
                    l.0 += 1;
                }
            }
            _ => {}
        }
        let (ops, nested) = levels.last().copied().unwrap_or_default();
        let depth = depth_before.max(levels.len()) + ops + nested;
        if depth > limit {
            return Err(TooComplex {
                depth,
                line: t.span.start.line,
                column: t.span.start.column,
            });
        }
    }
    Ok(())
}

/// Tokens that combine or wrap expressions (each can add a level to the tree).
fn is_operator(t: &Token) -> bool {
    matches!(
        t,
        Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::DuckIntDiv
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::Caret
            | Token::Ampersand
            | Token::Pipe
            | Token::Tilde
            | Token::TildeAsterisk
            | Token::ExclamationMarkTilde
            | Token::ExclamationMarkTildeAsterisk
            | Token::DoubleTilde
            | Token::DoubleTildeAsterisk
            | Token::ExclamationMarkDoubleTilde
            | Token::ExclamationMarkDoubleTildeAsterisk
            | Token::ShiftLeft
            | Token::ShiftRight
            | Token::Sharp
            | Token::DoubleColon
            | Token::Arrow
            | Token::LongArrow
            | Token::HashArrow
            | Token::HashLongArrow
            | Token::AtArrow
            | Token::ArrowAt
            | Token::Period
            | Token::ExclamationMark
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(op: &str, n: usize) -> String {
        let terms: Vec<&str> = std::iter::repeat_n("x", n).collect();
        format!("SELECT {} FROM t", terms.join(op))
    }

    #[test]
    fn long_chains_of_every_kind_are_refused() {
        for op in ["+", " OR ", " AND ", " || ", "*", " = "] {
            let err = check_depth(&chain(op, 2000)).expect_err(op);
            assert!(err.depth > MAX_SQL_DEPTH, "{op}: {err:?}");
            assert_eq!(err.line, 1);
        }
        let casts = format!("SELECT x{} FROM t", "::int".repeat(2000));
        assert!(check_depth(&casts).is_err());
        let unions = vec!["SELECT 1"; 1500].join(" UNION ALL ");
        assert!(check_depth(&unions).is_err());
        let joins = format!("SELECT * FROM t{}", " JOIN t USING (x)".repeat(1200));
        assert!(check_depth(&joins).is_err());
    }

    #[test]
    fn ordinary_and_wide_statements_pass() {
        check_depth(&chain("+", 900)).expect("900 terms");
        // Width is not depth: a long IN list and many select items each reset.
        let list: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
        check_depth(&format!("SELECT * FROM t WHERE x IN ({})", list.join(","))).expect("in");
        let items: Vec<String> = (0..5000).map(|i| format!("a + {i} AS c{i}")).collect();
        check_depth(&format!("SELECT {} FROM t", items.join(", "))).expect("items");
        check_depth("SELECT host, avg(usage_user) FROM cpu WHERE time > now() - interval '1 hour' AND host = 'a' GROUP BY host ORDER BY 2 DESC LIMIT 5").expect("plain");
        // Not SQL: the parser reports it.
        check_depth("SELECT 'unterminated").expect("tokenizer errors pass");
    }

    #[test]
    fn the_limit_is_counted_where_it_is_passed() {
        let sql = format!("SELECT 1\nFROM t WHERE {}", ["x = 1"; 10].join(" OR "));
        let err = check_depth_with(&sql, 12).expect_err("deep");
        assert_eq!(err.line, 2);
    }
}
