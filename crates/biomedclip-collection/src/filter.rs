//! `--where`: a filter on metadata columns in a small SQL subset, e.g.
//! `modality = 'CT' and (body_part_examined in ('CHEST', 'LUNG') or study_date >= '2020')`.
//!
//! Comparisons (`= != <> < <= > >=`), `in (...)`, `like` (`%` and `_`), `is [not] null`,
//! joined by `and`, `or`, `not` and parentheses. Text columns compare with quoted strings,
//! number columns (`size`) with numbers. As in SQL, a comparison with a missing value is
//! false. By hand: the SQL parser crates parse whole dialects into ASTs that would still need
//! this evaluator, for a grammar of a dozen rules.

use crate::error::{Error, Result};
use crate::metadata::{Column, Table};

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `'text'`.
    Text(String),
    /// A number.
    Number(f64),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// `=`.
    Eq,
    /// `!=` or `<>`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `column op value`.
    Compare(String, Op, Value),
    /// `column [not] in (values)`.
    In(String, Vec<Value>, bool),
    /// `column [not] like 'pattern'`.
    Like(String, String, bool),
    /// `column is [not] null`.
    IsNull(String, bool),
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
    /// Not.
    Not(Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Text(String),
    Number(f64),
    Op(Op),
    Open,
    Close,
    Comma,
}

fn tokenize(s: &str) -> std::result::Result<Vec<(usize, Token)>, String> {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((at, Token::Open));
                i += 1;
            }
            ')' => {
                out.push((at, Token::Close));
                i += 1;
            }
            ',' => {
                out.push((at, Token::Comma));
                i += 1;
            }
            '\'' | '"' => {
                // 'text' is a string, "name" a quoted column name; a doubled quote escapes.
                let quote = c;
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated {quote} starting at {at}")),
                        Some(&(_, q)) if q == quote => {
                            if chars.get(i + 1).is_some_and(|&(_, n)| n == quote) {
                                text.push(quote);
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(&(_, ch)) => {
                            text.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push((
                    at,
                    if quote == '\'' {
                        Token::Text(text)
                    } else {
                        Token::Ident(text)
                    },
                ));
            }
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1).map(|&(_, n)| n);
                let (op, len) = match (c, next) {
                    ('=', _) => (Op::Eq, 1),
                    ('!', Some('=')) => (Op::Ne, 2),
                    ('<', Some('>')) => (Op::Ne, 2),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('>', _) => (Op::Gt, 1),
                    _ => return Err(format!("unexpected {c:?} at {at}")),
                };
                out.push((at, Token::Op(op)));
                i += len;
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let start = i;
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|&(_, d)| d.is_ascii_digit() || d == '.' || d == 'e' || d == 'E')
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().map(|&(_, ch)| ch).collect();
                let n = text
                    .parse::<f64>()
                    .map_err(|_| format!("{text:?} at {at} is not a number"))?;
                out.push((at, Token::Number(n)));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|&(_, d)| d.is_alphanumeric() || d == '_')
                {
                    i += 1;
                }
                out.push((
                    at,
                    Token::Ident(chars[start..i].iter().map(|&(_, ch)| ch).collect()),
                ));
            }
            other => return Err(format!("unexpected {other:?} at {at}")),
        }
    }
    Ok(out)
}

/// Tokens one filter may have: far more than a person writes, few enough that evaluating a
/// chain of `and`/`or` cannot exhaust a thread's stack.
const MAX_TOKENS: usize = 4096;
/// Nesting of parentheses and `not` (the parser recurses once per level).
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    tokens: Vec<(usize, Token)>,
    at: usize,
    columns: &'a [(String, bool)],
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(_, t)| t)
    }

    fn position(&self) -> String {
        self.tokens
            .get(self.at)
            .map_or("at the end".into(), |(p, _)| format!("at {p}"))
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w.eq_ignore_ascii_case(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: Token, what: &str) -> std::result::Result<(), String> {
        if self.peek() == Some(&token) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {what} {}", self.position()))
        }
    }

    fn or(&mut self) -> std::result::Result<Filter, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> std::result::Result<Filter, String> {
        let mut left = self.not()?;
        while self.keyword("and") {
            left = Filter::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn nested<T>(
        &mut self,
        inner: impl FnOnce(&mut Self) -> std::result::Result<T, String>,
    ) -> std::result::Result<T, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "nested more than {MAX_DEPTH} levels deep {}",
                self.position()
            ));
        }
        let out = inner(self);
        self.depth -= 1;
        out
    }

    fn not(&mut self) -> std::result::Result<Filter, String> {
        if self.keyword("not") {
            return self.nested(|p| Ok(Filter::Not(Box::new(p.not()?))));
        }
        self.primary()
    }

    fn literal(&mut self, numeric: bool, column: &str) -> std::result::Result<Value, String> {
        let at = self.position();
        let value = match self.tokens.get(self.at).map(|(_, t)| t.clone()) {
            Some(Token::Text(t)) => Value::Text(t),
            Some(Token::Number(n)) => Value::Number(n),
            _ => return Err(format!("expected a 'quoted string' or a number {at}")),
        };
        self.at += 1;
        match (&value, numeric) {
            (Value::Text(_), true) => Err(format!(
                "column {column} holds numbers; compare it with a number, not a string ({at})"
            )),
            (Value::Number(_), false) => Err(format!(
                "column {column} holds text; compare it with a 'quoted string' ({at})"
            )),
            _ => Ok(value),
        }
    }

    fn primary(&mut self) -> std::result::Result<Filter, String> {
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            let inner = self.nested(Self::or)?;
            self.expect(Token::Close, "')'")?;
            return Ok(inner);
        }
        let at = self.position();
        let Some(Token::Ident(name)) = self.peek().cloned() else {
            return Err(format!("expected a column name {at}"));
        };
        self.at += 1;
        let Some((_, numeric)) = self.columns.iter().find(|(c, _)| *c == name).cloned() else {
            let names: Vec<&str> = self.columns.iter().map(|(c, _)| c.as_str()).collect();
            return Err(format!(
                "no column {name:?} ({at}); the columns are: {}",
                names.join(", ")
            ));
        };
        if self.keyword("is") {
            let negated = self.keyword("not");
            if !self.keyword("null") {
                return Err(format!("expected null {}", self.position()));
            }
            return Ok(Filter::IsNull(name, negated));
        }
        let negated = self.keyword("not");
        if self.keyword("in") {
            self.expect(Token::Open, "'(' after in")?;
            let mut values = vec![self.literal(numeric, &name)?];
            while self.peek() == Some(&Token::Comma) {
                self.at += 1;
                values.push(self.literal(numeric, &name)?);
            }
            self.expect(Token::Close, "')' closing the in list")?;
            return Ok(Filter::In(name, values, negated));
        }
        if self.keyword("like") {
            let at = self.position();
            let Some(Token::Text(pattern)) = self.peek().cloned() else {
                return Err(format!("expected a 'pattern' after like {at}"));
            };
            if numeric {
                return Err(format!("column {name} holds numbers; like needs text"));
            }
            self.at += 1;
            return Ok(Filter::Like(name, pattern, negated));
        }
        if negated {
            return Err(format!("expected in or like after not {}", self.position()));
        }
        let Some(Token::Op(op)) = self.peek().cloned() else {
            return Err(format!(
                "expected an operator (= != < <= > >= in like is) {}",
                self.position()
            ));
        };
        self.at += 1;
        let value = self.literal(numeric, &name)?;
        Ok(Filter::Compare(name, op, value))
    }
}

impl Filter {
    /// Parses `expr` against `table`'s columns.
    pub fn parse(expr: &str, table: &Table) -> Result<Filter> {
        let columns: Vec<(String, bool)> = table
            .names
            .iter()
            .zip(&table.columns)
            .map(|(n, c)| (n.clone(), matches!(c, Column::Int(_))))
            .collect();
        Filter::parse_columns(expr, &columns)
    }

    /// Parses `expr` against named columns (`true`: the column holds numbers).
    pub fn parse_columns(expr: &str, columns: &[(String, bool)]) -> Result<Filter> {
        let fail = |reason: String| Error::Filter {
            expr: expr.to_string(),
            reason,
        };
        let tokens = tokenize(expr).map_err(fail)?;
        if tokens.len() > MAX_TOKENS {
            return Err(fail(format!(
                "{} tokens; a filter may have at most {MAX_TOKENS}",
                tokens.len()
            )));
        }
        let mut parser = Parser {
            tokens,
            at: 0,
            columns,
            depth: 0,
        };
        let filter = parser.or().map_err(fail)?;
        if parser.at != parser.tokens.len() {
            return Err(fail(format!("unexpected text {}", parser.position())));
        }
        Ok(filter)
    }

    /// Which rows of `table` pass.
    pub fn mask(&self, table: &Table) -> Vec<bool> {
        (0..table.rows())
            .map(|i| self.eval(table, i) == Some(true))
            .collect()
    }

    /// SQL's three-valued logic: `None` is unknown (a missing value was compared).
    fn eval(&self, table: &Table, row: usize) -> Option<bool> {
        let cell = |name: &str| -> Option<Value> {
            match table.column(name)? {
                Column::Text(v) => v[row].clone().map(Value::Text),
                Column::Int(v) => v[row].map(|n| Value::Number(n as f64)),
            }
        };
        match self {
            Filter::Compare(name, op, value) => {
                let ord = compare(&cell(name)?, value)?;
                Some(match op {
                    Op::Eq => ord.is_eq(),
                    Op::Ne => ord.is_ne(),
                    Op::Lt => ord.is_lt(),
                    Op::Le => ord.is_le(),
                    Op::Gt => ord.is_gt(),
                    Op::Ge => ord.is_ge(),
                })
            }
            Filter::In(name, values, negated) => {
                let v = cell(name)?;
                let found = values
                    .iter()
                    .any(|x| compare(&v, x) == Some(std::cmp::Ordering::Equal));
                Some(found != *negated)
            }
            Filter::Like(name, pattern, negated) => match cell(name)? {
                Value::Text(t) => Some(like(&t, pattern) != *negated),
                Value::Number(_) => None,
            },
            Filter::IsNull(name, negated) => Some(cell(name).is_none() != *negated),
            Filter::And(a, b) => match (a.eval(table, row), b.eval(table, row)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Filter::Or(a, b) => match (a.eval(table, row), b.eval(table, row)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Filter::Not(a) => a.eval(table, row).map(|v| !v),
        }
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
        (Value::Number(a), Value::Number(b)) => a.partial_cmp(b),
        _ => None,
    }
}

/// SQL `LIKE`: `%` any run of characters, `_` one character.
fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Classic wildcard matching with one backtrack point for the last `%`.
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            names: vec!["modality".into(), "size".into(), "body".into()],
            columns: vec![
                Column::Text(vec![
                    Some("CT".into()),
                    Some("MR".into()),
                    None,
                    Some("CT".into()),
                ]),
                Column::Int(vec![Some(10), Some(20), Some(30), Some(40)]),
                Column::Text(vec![
                    Some("CHEST".into()),
                    Some("HEAD".into()),
                    Some("CHEST".into()),
                    None,
                ]),
            ],
        }
    }

    fn rows(expr: &str) -> Vec<usize> {
        let t = table();
        let mask = Filter::parse(expr, &t).unwrap().mask(&t);
        (0..mask.len()).filter(|&i| mask[i]).collect()
    }

    #[test]
    fn evaluates_like_sql() {
        assert_eq!(rows("modality = 'CT'"), [0, 3]);
        assert_eq!(rows("modality != 'CT'"), [1]);
        assert_eq!(rows("not modality = 'CT'"), [1]);
        assert_eq!(rows("size >= 20 and size < 40"), [1, 2]);
        assert_eq!(rows("modality = 'CT' or body = 'CHEST'"), [0, 2, 3]);
        assert_eq!(rows("modality in ('MR', 'CT') and not (size > 30)"), [0, 1]);
        assert_eq!(rows("body like 'CH%'"), [0, 2]);
        assert_eq!(rows("body like '_EA_'"), [1]);
        assert_eq!(rows("modality is null"), [2]);
        assert_eq!(rows("body is not null"), [0, 1, 2]);
        assert_eq!(rows("\"modality\" = 'it''s'"), Vec::<usize>::new());
    }

    #[test]
    fn errors_name_the_problem() {
        let t = table();
        let err = |e: &str| Filter::parse(e, &t).unwrap_err().to_string();
        assert!(err("modalty = 'CT'").contains("no column \"modalty\""));
        assert!(err("size = '10'").contains("holds numbers"));
        assert!(err("modality = 3").contains("holds text"));
        assert!(err("modality = 'CT").contains("unterminated"));
        assert!(err("modality = 'CT' size").contains("unexpected text at 16"));
        let deep = format!("{}modality = 'CT'{}", "(".repeat(100), ")".repeat(100));
        assert!(err(&deep).contains("nested more than 64"));
        let long = vec!["size = 1"; 2000].join(" or ");
        assert!(err(&long).contains("at most 4096"));
    }
}
