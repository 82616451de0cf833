//! `--where` as SQL over a collection's table: the parsed [`Filter`] (checked against the
//! columns already) becomes a `WHERE` clause with every literal a bound parameter, so a filter
//! can never inject SQL. Columns of the table are used as they are; DICOM tags and CSV
//! columns are read out of `metadata jsonb`. Text compares byte by byte (`COLLATE "C"`), as
//! the file store does, and `LIKE` has no escape character, as the file store's has none.

use postgres::types::ToSql;

use crate::filter::{Filter, Op, Value};
use crate::metadata::CORE_COLUMNS;

/// Parameters of a query, in `$n` order.
pub(crate) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// The SQL of `filter`, adding its literals to `params`.
pub(crate) fn to_sql(filter: &Filter, params: &mut Params) -> String {
    match filter {
        Filter::Compare(name, op, value) => {
            let op = match op {
                Op::Eq => "=",
                Op::Ne => "<>",
                Op::Lt => "<",
                Op::Le => "<=",
                Op::Gt => ">",
                Op::Ge => ">=",
            };
            format!("({} {op} {})", column(name, value), bind(value, params))
        }
        Filter::In(name, values, negated) => {
            let Some(first) = values.first() else {
                return "(NULL::boolean)".into();
            };
            let list: Vec<String> = values.iter().map(|v| bind(v, params)).collect();
            format!(
                "({} {}IN ({}))",
                column(name, first),
                if *negated { "NOT " } else { "" },
                list.join(", ")
            )
        }
        Filter::Like(name, pattern, negated) => {
            let p = bind(&Value::Text(pattern.clone()), params);
            format!(
                "({} {}LIKE {p} ESCAPE '')",
                column(name, &Value::Text(String::new())),
                if *negated { "NOT " } else { "" }
            )
        }
        Filter::IsNull(name, negated) => format!(
            "({} IS {}NULL)",
            raw_column(name),
            if *negated { "NOT " } else { "" }
        ),
        Filter::And(a, b) => format!("({} AND {})", to_sql(a, params), to_sql(b, params)),
        Filter::Or(a, b) => format!("({} OR {})", to_sql(a, params), to_sql(b, params)),
        Filter::Not(a) => format!("(NOT {})", to_sql(a, params)),
    }
}

/// The column as SQL, typed for comparing with `value`.
fn column(name: &str, value: &Value) -> String {
    match value {
        Value::Text(_) => format!("({} COLLATE \"C\")", raw_column(name)),
        Value::Number(_) => format!("({})::float8", raw_column(name)),
    }
}

fn raw_column(name: &str) -> String {
    if CORE_COLUMNS.contains(&name) {
        // A checked column name, quoted as an identifier.
        format!("\"{name}\"")
    } else {
        format!("(metadata ->> '{}')", name.replace('\'', "''"))
    }
}

fn bind(value: &Value, params: &mut Params) -> String {
    match value {
        Value::Text(t) => params.push(Box::new(t.clone())),
        Value::Number(n) => params.push(Box::new(*n)),
    }
    let n = params.len();
    match value {
        Value::Text(_) => format!("${n}::text"),
        Value::Number(_) => format!("${n}::float8"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(expr: &str) -> (String, usize) {
        let columns = vec![
            ("image_path".to_string(), false),
            ("size".to_string(), true),
            ("modality".to_string(), false),
        ];
        let f = Filter::parse_columns(expr, &columns).unwrap();
        let mut params = Params::new();
        let s = to_sql(&f, &mut params);
        (s, params.len())
    }

    #[test]
    fn literals_are_parameters() {
        let (s, n) = sql("modality = 'CT''; DROP TABLE x' and size >= 10");
        assert_eq!(n, 2);
        assert!(!s.contains("DROP"), "{s}");
        assert_eq!(
            s,
            "((((metadata ->> 'modality') COLLATE \"C\") = $1::text) AND \
             ((\"size\")::float8 >= $2::float8))"
        );
    }

    #[test]
    fn in_like_null_not() {
        let (s, n) =
            sql("not (modality in ('CT', 'MR') or image_path like '%a_b') and size is null");
        assert_eq!(n, 3);
        assert!(s.contains("IN ($1::text, $2::text)"), "{s}");
        assert!(s.contains("LIKE $3::text ESCAPE ''"), "{s}");
        assert!(s.contains("(\"size\" IS NULL)"), "{s}");
    }
}
