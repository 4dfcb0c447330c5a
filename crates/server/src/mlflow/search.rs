//! MLflow's search grammar (search_utils.py): filters and order_by, evaluated in memory over [`Row`]s.

use super::error::{MlError, MlResult};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// What one searched entity (run, experiment, logged model) offers to filters and sorts.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub metrics: BTreeMap<String, f64>,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub text: BTreeMap<&'static str, String>,
    pub numbers: BTreeMap<&'static str, f64>,
    /// (name, digest, context) of each dataset input; the context is absent for an input without the
    /// `mlflow.data.context` tag, which MLflow's join leaves out of every context comparison (`!=` too).
    pub datasets: Vec<[Option<String>; 3]>,
}

/// Which identifiers a search accepts; attribute aliases map to the canonical name.
pub struct Grammar {
    pub text_attrs: &'static [&'static str],
    pub number_attrs: &'static [&'static str],
    pub aliases: &'static [(&'static str, &'static str)],
    pub metrics: bool,
    pub params: bool,
    pub datasets: bool,
    /// Every text identifier takes `IN` / `NOT IN` and none takes `IS NULL` (MLflow's logged-models grammar).
    pub text_lists: bool,
}

pub const RUNS: Grammar = Grammar {
    text_attrs: &[
        "run_id",
        "run_name",
        "status",
        "user_id",
        "artifact_uri",
        "lifecycle_stage",
    ],
    number_attrs: &["start_time", "end_time"],
    aliases: &[
        ("created", "start_time"),
        ("Created", "start_time"),
        ("run name", "run_name"),
    ],
    metrics: true,
    params: true,
    datasets: true,
    text_lists: false,
};

pub const EXPERIMENTS: Grammar = Grammar {
    text_attrs: &["name"],
    number_attrs: &["creation_time", "last_update_time", "experiment_id"],
    aliases: &[],
    metrics: false,
    params: false,
    datasets: false,
    text_lists: false,
};

pub const LOGGED_MODELS: Grammar = Grammar {
    text_attrs: &["name", "model_id", "model_type", "status", "source_run_id"],
    number_attrs: &["creation_timestamp", "last_updated_timestamp"],
    aliases: &[
        ("creation_time", "creation_timestamp"),
        ("last_updated_time", "last_updated_timestamp"),
        ("run_id", "source_run_id"),
    ],
    metrics: true,
    params: true,
    datasets: false,
    text_lists: true,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Metric,
    Param,
    Tag,
    TextAttr,
    NumberAttr,
    Dataset,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub kind: Kind,
    pub key: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Number(f64),
    Text(String),
    List(Vec<String>),
    Nothing,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub ident: Ident,
    pub op: Op,
    pub value: Literal,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A bare word: identifier, keyword or unquoted value.
    Word(String),
    /// `prefix.` followed by a backtick- or double-quoted key, or a backtick-quoted name.
    QuotedIdent(String),
    Str(String),
    Number(f64),
    Cmp(&'static str),
    LParen,
    RParen,
    Comma,
}

struct Token {
    tok: Tok,
    text: String,
    pos: usize,
}

fn err_at(input: &str, t: Option<&Token>, what: &str) -> MlError {
    match t {
        Some(t) => MlError::invalid(format!(
            "Invalid filter '{input}': {what} at '{}' (character {})",
            t.text,
            t.pos + 1
        )),
        None => MlError::invalid(format!("Invalid filter '{input}': {what} at the end")),
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-')
}

/// Reads a quoted run starting at `start` (the opening quote); returns the content and the end index. As in
/// MLflow's parser (sqlparse), a doubled quote and a backslash before any character (but in backticks) stay
/// inside the run, and they are not unescaped: MLflow strips only the outer quotes, so `'it''s'` matches the
/// text `it''s`, not `it's` (which is written `"it's"`).
fn quoted(input: &str, start: usize, q: char) -> MlResult<(String, usize)> {
    let mut out = String::new();
    let mut it = input[start + 1..].char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c == '\\' && q != '`' {
            out.push(c);
            if let Some((_, next)) = it.next() {
                out.push(next);
            }
            continue;
        }
        if c == q {
            if it.peek().map(|(_, n)| *n) == Some(q) {
                out.push(q);
                out.push(q);
                it.next();
                continue;
            }
            return Ok((out, start + 1 + i + 1));
        }
        out.push(c);
    }
    Err(MlError::invalid(format!(
        "Invalid filter '{input}': unterminated quote {q} starting at character {}",
        start + 1
    )))
}

fn tokenize(input: &str) -> MlResult<Vec<Token>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        let c = rest.chars().next().unwrap_or(' ');
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let (tok, end) = match c {
            '\'' | '"' => {
                let (s, end) = quoted(input, i, c)?;
                (Tok::Str(s), end)
            }
            '`' => {
                let (s, end) = quoted(input, i, '`')?;
                (Tok::QuotedIdent(s), end)
            }
            '(' => (Tok::LParen, i + 1),
            ')' => (Tok::RParen, i + 1),
            ',' => (Tok::Comma, i + 1),
            '!' | '<' | '>' | '=' => {
                let two = rest.get(..2).unwrap_or("");
                match two {
                    "!=" => (Tok::Cmp("!="), i + 2),
                    "<=" => (Tok::Cmp("<="), i + 2),
                    ">=" => (Tok::Cmp(">="), i + 2),
                    "==" => (Tok::Cmp("=="), i + 2),
                    "<>" => (Tok::Cmp("<>"), i + 2),
                    _ if c == '!' => (Tok::Cmp("!"), i + 1),
                    _ if c == '<' => (Tok::Cmp("<"), i + 1),
                    _ if c == '>' => (Tok::Cmp(">"), i + 1),
                    _ => (Tok::Cmp("="), i + 1),
                }
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+' || c == '.')
                    && rest[1..].starts_with(|d: char| d.is_ascii_digit() || d == '.')) =>
            {
                let len = rest
                    .char_indices()
                    .skip(1)
                    .find(|&(j, d)| {
                        !(d.is_ascii_alphanumeric()
                            || d == '.'
                            || ((d == '-' || d == '+')
                                && matches!(rest.as_bytes()[j - 1], b'e' | b'E')))
                    })
                    .map_or(rest.len(), |(j, _)| j);
                let text = &rest[..len];
                let v: f64 = text.parse().map_err(|_| {
                    MlError::invalid(format!(
                        "Invalid filter '{input}': '{text}' is not a number (character {})",
                        i + 1
                    ))
                })?;
                (Tok::Number(v), i + len)
            }
            c if is_word_char(c) => {
                let len = rest
                    .char_indices()
                    .find(|&(_, d)| !is_word_char(d))
                    .map_or(rest.len(), |(j, _)| j);
                let word = &rest[..len];
                let next = rest[len..].chars().next();
                match next {
                    Some(q @ ('`' | '"')) if word.ends_with('.') => {
                        let (key, end) = quoted(input, i + len, q)?;
                        (Tok::QuotedIdent(format!("{word}{key}")), end)
                    }
                    _ => (Tok::Word(word.to_string()), i + len),
                }
            }
            other => {
                return Err(MlError::invalid(format!(
                    "Invalid filter '{input}': unexpected character '{other}' (character {})",
                    i + 1
                )))
            }
        };
        out.push(Token {
            tok,
            text: input[i..end].to_string(),
            pos: i,
        });
        i = end;
    }
    Ok(out)
}

fn keyword(t: Option<&Token>, kw: &str) -> bool {
    matches!(t, Some(Token { tok: Tok::Word(w), .. }) if w.eq_ignore_ascii_case(kw))
}

/// Resolves `prefix.key` (or a bare attribute name) against the grammar.
fn ident(g: &Grammar, raw: &str, quoted_whole: bool) -> Result<Ident, String> {
    let (prefix, key) = match raw.split_once('.') {
        Some((p, k)) if !quoted_whole => (Some(p), k),
        _ => (None, raw),
    };
    let kind = match prefix.map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("metrics" | "metric") if g.metrics => Some(Kind::Metric),
        Some("params" | "param" | "parameters" | "parameter") if g.params => Some(Kind::Param),
        Some("tags" | "tag") => Some(Kind::Tag),
        Some("attributes" | "attribute" | "attr" | "run") => None,
        Some("datasets" | "dataset") if g.datasets => Some(Kind::Dataset),
        Some(p) => {
            return Err(format!(
                "invalid entity type '{p}'; valid values are {}",
                entity_types(g)
            ))
        }
    };
    if key.is_empty() {
        return Err("the identifier has no key".into());
    }
    match kind {
        Some(Kind::Dataset) if !matches!(key, "name" | "digest" | "context") => Err(format!(
            "invalid dataset attribute '{key}'; valid ones are name, digest, context"
        )),
        Some(kind) => Ok(Ident {
            kind,
            key: key.to_string(),
        }),
        None => attribute(g, key),
    }
}

fn entity_types(g: &Grammar) -> String {
    let mut v = Vec::new();
    if g.metrics {
        v.push("metrics");
    }
    if g.params {
        v.push("params");
    }
    v.extend(["tags", "attributes"]);
    if g.datasets {
        v.push("datasets");
    }
    v.join(", ")
}

fn attribute(g: &Grammar, key: &str) -> Result<Ident, String> {
    let key = g
        .aliases
        .iter()
        .find(|(a, _)| *a == key)
        .map_or(key, |(_, k)| *k);
    let kind = if g.text_attrs.contains(&key) {
        Kind::TextAttr
    } else if g.number_attrs.contains(&key) {
        Kind::NumberAttr
    } else {
        let mut valid: Vec<&str> = g.text_attrs.to_vec();
        valid.extend(g.number_attrs);
        return Err(format!(
            "invalid attribute key '{key}'; valid keys are {}",
            valid.join(", ")
        ));
    };
    Ok(Ident {
        kind,
        key: key.to_string(),
    })
}

/// Parses a filter into its conditions (all must hold). Empty or blank: no conditions. An AND with nothing on
/// one side (leading, trailing or doubled) is passed over, as MLflow's parser (sqlparse) passes over it.
pub fn parse_filter(g: &Grammar, input: &str) -> MlResult<Vec<Condition>> {
    let toks = tokenize(input)?;
    if toks.is_empty() && !input.is_empty() {
        // Blanks alone: MLflow's parser finds no statement in them (an empty filter is no filter).
        return Err(MlError::invalid(format!(
            "Invalid filter '{input}'. Could not be parsed."
        )));
    }
    let and_at = |i: usize| keyword(toks.get(i), "and");
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while and_at(i) {
            i += 1;
        }
        if i >= toks.len() {
            return Ok(out);
        }
        let (cond, next) = condition(g, input, &toks, i)?;
        out.push(cond);
        i = next;
        if i < toks.len() && !and_at(i) {
            let what = if keyword(toks.get(i), "or") {
                "OR is not supported, only AND"
            } else {
                "expected AND"
            };
            return Err(err_at(input, toks.get(i), what));
        }
    }
}

fn condition(g: &Grammar, input: &str, t: &[Token], i: usize) -> MlResult<(Condition, usize)> {
    let id = match t.get(i).map(|x| &x.tok) {
        Some(Tok::Word(w)) => ident(g, w, false),
        Some(Tok::QuotedIdent(w)) => ident(g, w, !w.contains('.') || t[i].text.starts_with('`')),
        _ => return Err(err_at(input, t.get(i), "expected an identifier")),
    }
    .map_err(|m| err_at(input, t.get(i), &m))?;
    let (op, mut j) = operator(input, t, i + 1)?;
    let value = match op {
        Op::IsNull | Op::IsNotNull => Literal::Nothing,
        Op::In | Op::NotIn => {
            let (list, end) = list(input, t, j)?;
            j = end;
            Literal::List(list)
        }
        _ => {
            let v = match t.get(j).map(|x| &x.tok) {
                Some(Tok::Number(n)) => Literal::Number(*n),
                Some(Tok::Str(s)) => Literal::Text(s.clone()),
                _ => return Err(err_at(input, t.get(j), "expected a value")),
            };
            j += 1;
            v
        }
    };
    let cond = Condition {
        ident: id,
        op,
        value,
    };
    check(g, &cond).map_err(|m| err_at(input, t.get(i), &m))?;
    Ok((cond, j))
}

fn operator(input: &str, t: &[Token], i: usize) -> MlResult<(Op, usize)> {
    let word = |k| keyword(t.get(i), k);
    let op = match t.get(i).map(|x| &x.tok) {
        Some(Tok::Cmp("=")) => Op::Eq,
        Some(Tok::Cmp("!=")) => Op::Ne,
        Some(Tok::Cmp("<")) => Op::Lt,
        Some(Tok::Cmp("<=")) => Op::Le,
        Some(Tok::Cmp(">")) => Op::Gt,
        Some(Tok::Cmp(">=")) => Op::Ge,
        _ if word("like") => Op::Like,
        _ if word("ilike") => Op::ILike,
        _ if word("in") => Op::In,
        _ if word("not") && keyword(t.get(i + 1), "in") => return Ok((Op::NotIn, i + 2)),
        _ if word("is") && keyword(t.get(i + 1), "null") => return Ok((Op::IsNull, i + 2)),
        _ if word("is") && keyword(t.get(i + 1), "not") && keyword(t.get(i + 2), "null") => {
            return Ok((Op::IsNotNull, i + 3))
        }
        _ => return Err(err_at(input, t.get(i), "expected a comparison operator")),
    };
    Ok((op, i + 1))
}

fn list(input: &str, t: &[Token], mut i: usize) -> MlResult<(Vec<String>, usize)> {
    if t.get(i).map(|x| &x.tok) != Some(&Tok::LParen) {
        return Err(err_at(input, t.get(i), "expected '(' to start a list"));
    }
    i += 1;
    let mut out = Vec::new();
    loop {
        match t.get(i).map(|x| &x.tok) {
            Some(Tok::Str(s)) => out.push(s.clone()),
            _ => {
                return Err(err_at(
                    input,
                    t.get(i),
                    "expected a quoted string in the list",
                ))
            }
        }
        i += 1;
        match t.get(i).map(|x| &x.tok) {
            // A trailing comma before ')' is allowed, as MLflow's parser (Python's tuple syntax) allows it.
            Some(Tok::Comma) if t.get(i + 1).map(|x| &x.tok) == Some(&Tok::RParen) => {
                return Ok((out, i + 2))
            }
            Some(Tok::Comma) => i += 1,
            Some(Tok::RParen) => return Ok((out, i + 1)),
            _ => return Err(err_at(input, t.get(i), "expected ',' or ')'")),
        }
    }
}

/// Which operators and value types each kind of identifier takes (MLflow's rules).
fn check(g: &Grammar, c: &Condition) -> Result<(), String> {
    use Op::*;
    let numeric = matches!(c.ident.kind, Kind::Metric | Kind::NumberAttr);
    let op_ok = match c.ident.kind {
        Kind::Metric | Kind::NumberAttr => matches!(c.op, Eq | Ne | Lt | Le | Gt | Ge),
        _ if g.text_lists => matches!(c.op, Eq | Ne | Like | ILike | In | NotIn),
        Kind::Param | Kind::Tag => matches!(c.op, Eq | Ne | Like | ILike | IsNull | IsNotNull),
        Kind::TextAttr if c.ident.key == "run_id" || c.ident.key == "model_id" => {
            matches!(c.op, Eq | Ne | Like | ILike | In | NotIn)
        }
        Kind::TextAttr => matches!(c.op, Eq | Ne | Like | ILike),
        Kind::Dataset => matches!(c.op, Eq | Ne | Like | ILike | In | NotIn),
    };
    if !op_ok {
        return Err(format!(
            "invalid comparator {:?} for '{}'",
            c.op, c.ident.key
        ));
    }
    match (&c.value, numeric) {
        (Literal::Text(s), true) => Err(format!(
            "expected a numeric value for '{}', found '{s}'",
            c.ident.key
        )),
        (Literal::Number(n), false) => Err(format!(
            "expected a quoted string value for '{}', found {n}",
            c.ident.key
        )),
        _ => Ok(()),
    }
}

/// SQL LIKE: `%` any run, `_` one character.
pub fn like(value: &str, pattern: &str, case_insensitive: bool) -> bool {
    let (v, p): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            value.to_lowercase().chars().collect(),
            pattern.to_lowercase().chars().collect(),
        )
    } else {
        (value.chars().collect(), pattern.chars().collect())
    };
    like_at(&v, &p)
}

/// The classic wildcard walk: on a mismatch, go back to the last `%` and let it take one more character.
/// Each `%` only ever moves forward, so a pattern of many `%`s costs O(value × pattern) at worst; trying
/// every split recursively took exponential time (16 `%`s against a 16-character name: seconds of a core).
fn like_at(v: &[char], p: &[char]) -> bool {
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < v.len() {
        match p.get(j) {
            Some('%') => {
                star = Some((j, i));
                j += 1;
            }
            Some(&c) if c == '_' || c == v[i] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some((sj, si)) => {
                    star = Some((sj, si + 1));
                    i = si + 1;
                    j = sj + 1;
                }
                None => return false,
            },
        }
    }
    p[j..].iter().all(|&c| c == '%')
}

fn text_matches(op: Op, value: Option<&str>, lit: &Literal) -> bool {
    let Some(v) = value else {
        return op == Op::IsNull;
    };
    match (op, lit) {
        (Op::IsNull, _) => false,
        (Op::IsNotNull, _) => true,
        (Op::Eq, Literal::Text(s)) => v == s,
        (Op::Ne, Literal::Text(s)) => v != s,
        (Op::Like, Literal::Text(s)) => like(v, s, false),
        (Op::ILike, Literal::Text(s)) => like(v, s, true),
        (Op::In, Literal::List(l)) => l.iter().any(|s| s == v),
        (Op::NotIn, Literal::List(l)) => !l.iter().any(|s| s == v),
        _ => false,
    }
}

pub fn number_matches(op: Op, value: Option<f64>, lit: &Literal) -> bool {
    let (Some(v), Literal::Number(n)) = (value, lit) else {
        return false;
    };
    match op {
        Op::Eq => v == *n,
        Op::Ne => v != *n,
        Op::Lt => v < *n,
        Op::Le => v <= *n,
        Op::Gt => v > *n,
        Op::Ge => v >= *n,
        _ => false,
    }
}

/// Whether a row satisfies one condition. Missing values satisfy nothing but IS NULL.
pub fn matches(row: &Row, c: &Condition) -> bool {
    let key = c.ident.key.as_str();
    match c.ident.kind {
        Kind::Metric => number_matches(c.op, row.metrics.get(key).copied(), &c.value),
        Kind::NumberAttr => number_matches(c.op, row.numbers.get(key).copied(), &c.value),
        Kind::Param => text_matches(c.op, row.params.get(key).map(String::as_str), &c.value),
        Kind::Tag => text_matches(c.op, row.tags.get(key).map(String::as_str), &c.value),
        Kind::TextAttr => text_matches(c.op, row.text.get(key).map(String::as_str), &c.value),
        Kind::Dataset => {
            let idx = match key {
                "name" => 0,
                "digest" => 1,
                _ => 2,
            };
            row.datasets
                .iter()
                .any(|d| text_matches(c.op, d[idx].as_deref(), &c.value))
        }
    }
}

pub fn matches_all(row: &Row, conds: &[Condition]) -> bool {
    conds.iter().all(|c| matches(row, c))
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrderBy {
    pub ident: Ident,
    pub ascending: bool,
}

/// Parses `"<identifier> [ASC|DESC]"`.
pub fn parse_order_by(g: &Grammar, clause: &str) -> MlResult<OrderBy> {
    let bad = |what: &str| MlError::invalid(format!("Invalid order_by clause '{clause}': {what}"));
    let toks = tokenize(clause).map_err(|e| bad(&e.message))?;
    let ident = match toks.first().map(|t| &t.tok) {
        Some(Tok::Word(w)) => ident(g, w, false),
        Some(Tok::QuotedIdent(w)) => ident(g, w, toks[0].text.starts_with('`')),
        _ => return Err(bad("expected an identifier")),
    }
    .map_err(|m| bad(&m))?;
    if ident.kind == Kind::Dataset {
        return Err(bad("datasets cannot be ordered by"));
    }
    let ascending = match toks.get(1) {
        None => true,
        Some(t) if keyword(Some(t), "asc") => true,
        Some(t) if keyword(Some(t), "desc") => false,
        Some(t) => return Err(bad(&format!("expected ASC or DESC at '{}'", t.text))),
    };
    if let Some(t) = toks.get(2) {
        return Err(bad(&format!("unexpected '{}'", t.text)));
    }
    Ok(OrderBy { ident, ascending })
}

#[derive(Clone, Debug, PartialEq)]
enum SortValue<'a> {
    Number(f64),
    Text(&'a str),
}

fn sort_value<'a>(row: &'a Row, id: &Ident) -> Option<SortValue<'a>> {
    let key = id.key.as_str();
    match id.kind {
        Kind::Metric => row.metrics.get(key).copied().map(SortValue::Number),
        Kind::NumberAttr => row.numbers.get(key).copied().map(SortValue::Number),
        Kind::Param => row.params.get(key).map(|v| SortValue::Text(v.as_str())),
        Kind::Tag => row.tags.get(key).map(|v| SortValue::Text(v.as_str())),
        Kind::TextAttr => row.text.get(key).map(|v| SortValue::Text(v.as_str())),
        Kind::Dataset => None,
    }
}

/// Rank of a value's class: real values first, then NaN, then missing, whatever the direction (MLflow's
/// `CASE WHEN is_nan THEN 1 WHEN value IS NULL THEN 2 ELSE 0`).
fn class(v: &Option<SortValue>) -> u8 {
    match v {
        Some(SortValue::Number(n)) if n.is_nan() => 1,
        Some(_) => 0,
        None => 2,
    }
}

fn compare_by(a: &Row, b: &Row, o: &OrderBy) -> Ordering {
    let (va, vb) = (sort_value(a, &o.ident), sort_value(b, &o.ident));
    let by_class = class(&va).cmp(&class(&vb));
    if by_class != Ordering::Equal {
        return by_class;
    }
    let ord = match (va, vb) {
        (Some(SortValue::Number(x)), Some(SortValue::Number(y))) => {
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Some(SortValue::Text(x)), Some(SortValue::Text(y))) => x.cmp(y),
        _ => Ordering::Equal,
    };
    if o.ascending {
        ord
    } else {
        ord.reverse()
    }
}

/// Sorts rows by the clauses, then by `tie_breakers` (appended only where the clauses do not already name
/// the same identifier).
pub fn sort<T>(items: &mut [(Row, T)], clauses: &[OrderBy], tie_breakers: &[OrderBy]) {
    let mut all: Vec<&OrderBy> = clauses.iter().collect();
    for t in tie_breakers {
        if !clauses.iter().any(|c| c.ident == t.ident) {
            all.push(t);
        }
    }
    items.sort_by(|(a, _), (b, _)| {
        all.iter()
            .map(|o| compare_by(a, b, o))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    });
}

/// An attribute sort clause, for tie-breakers.
pub fn attr_order(kind: Kind, key: &str, ascending: bool) -> OrderBy {
    OrderBy {
        ident: Ident {
            kind,
            key: key.to_string(),
        },
        ascending,
    }
}

/// Page tokens are opaque to clients: the offset into the sorted results, hex-encoded.
pub fn encode_token(offset: usize) -> String {
    encode_token_text(&offset.to_string())
}

pub fn decode_token(token: &str) -> MlResult<usize> {
    decode_token_text(token)?
        .parse()
        .map_err(|_| bad_token(token))
}

/// Any short position text as an opaque token (hex), for listings whose position is more than an offset.
pub fn encode_token_text(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The text of a token made by [`encode_token_text`]; MLflow's 400 for anything else.
pub fn decode_token_text(token: &str) -> MlResult<String> {
    if !token.len().is_multiple_of(2) || token.len() > 80 {
        return Err(bad_token(token));
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes.ok_or_else(|| bad_token(token))?).map_err(|_| bad_token(token))
}

fn bad_token(token: &str) -> MlError {
    MlError::invalid(format!("Invalid page token '{token}'"))
}

/// Applies `max_results`/`page_token` to sorted results; the token of the next page, if any.
pub fn page<T>(
    items: Vec<T>,
    max_results: usize,
    token: Option<&str>,
) -> MlResult<(Vec<T>, Option<String>)> {
    let start = token
        .filter(|t| !t.is_empty())
        .map(decode_token)
        .transpose()?
        .unwrap_or(0);
    let total = items.len();
    let end = start.saturating_add(max_results).min(total);
    let out: Vec<T> = items.into_iter().skip(start).take(max_results).collect();
    let next = (end < total).then(|| encode_token(end));
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        let mut r = Row::default();
        r.metrics.insert("acc".into(), 0.9);
        r.metrics.insert("f1 score".into(), 0.5);
        r.params.insert("lr".into(), "0.01".into());
        r.tags.insert("mlflow.runName".into(), "Bright-Fox".into());
        r.text.insert("run_id", "abc".into());
        r.text.insert("status", "FINISHED".into());
        r.numbers.insert("start_time", 100.0);
        r.datasets.push([
            Some("train".into()),
            Some("d1".into()),
            Some("training".into()),
        ]);
        r.datasets
            .push([Some("eval".into()), Some("d2".into()), None]);
        r
    }

    fn eval(f: &str) -> bool {
        matches_all(&row(), &parse_filter(&RUNS, f).unwrap())
    }

    fn err(f: &str) -> String {
        parse_filter(&RUNS, f).unwrap_err().message
    }

    #[test]
    fn filters_evaluate_like_mlflow() {
        assert!(eval(""));
        assert!(eval("metrics.acc > 0.5 and params.lr = '0.01'"));
        assert!(eval("metric.`f1 score` <= 0.5"));
        assert!(eval("metrics.\"f1 score\" = 0.5"));
        assert!(eval("tags.`mlflow.runName` LIKE 'Bright%'"));
        assert!(!eval("tags.`mlflow.runName` LIKE 'bright%'"));
        assert!(eval("tags.\"mlflow.runName\" ILIKE 'bright%'"));
        assert!(eval(
            "attributes.status = 'FINISHED' AND run_id IN ('x', 'abc')"
        ));
        assert!(eval("attr.run_id NOT IN ('x')"));
        assert!(eval("run_id IN ('abc',)"));
        assert!(!eval("run_id IN ('x', 'y',)"));
        assert!(eval("params.missing IS NULL AND params.lr IS NOT NULL"));
        assert!(!eval("metrics.missing != 1"));
        assert!(eval("created >= 100"));
        assert!(eval(
            "datasets.name = 'train' and dataset.context = 'training'"
        ));
        assert!(!eval("datasets.context != 'training'"));
        assert!(eval("datasets.name != 'train'"));
        assert!(eval("datasets.digest = 'd2'"));
        assert!(eval("metrics.acc>0.5"));
        assert!(eval("metrics.acc = 9e-1"));
        assert!(!eval("metrics.acc < -1"));
    }

    #[test]
    fn logged_models_take_lists_on_text_and_no_null_tests() {
        assert!(parse_filter(
            &LOGGED_MODELS,
            "name IN ('a', 'b') AND params.p NOT IN ('x')"
        )
        .is_ok());
        let err = parse_filter(&LOGGED_MODELS, "tags.t IS NULL")
            .unwrap_err()
            .message;
        assert!(err.contains("invalid comparator IsNull"), "{err}");
        assert!(parse_filter(&RUNS, "params.p IN ('x')").is_err());
    }

    #[test]
    fn bad_filters_point_at_the_token() {
        assert_eq!(
            err("metrics.acc > 0.5 OR params.lr = 'x'"),
            "Invalid filter 'metrics.acc > 0.5 OR params.lr = 'x'': OR is not supported, only AND at 'OR' (character 19)"
        );
        assert!(err("foo.bar = 'x'").contains("invalid entity type 'foo'"));
        assert!(err("nope = 'x'").contains("invalid attribute key 'nope'"));
        assert!(err("metrics.acc = 'x'").contains("expected a numeric value for 'acc', found 'x'"));
        assert!(err("params.lr > '1'").contains("invalid comparator Gt for 'lr' at 'params.lr'"));
        assert!(err("status IN ('a')").contains("invalid comparator In"));
        assert!(err("params.lr = 'x").contains("unterminated quote"));
        assert!(err("params.lr =").ends_with("expected a value at the end"));
        for lenient in [
            "params.lr = 'a' AND",
            "and params.lr = 'a'",
            "params.lr = 'a' AND AND params.b = 'c'",
        ] {
            assert!(
                parse_filter(&RUNS, lenient).is_ok(),
                "MLflow accepts {lenient:?}"
            );
        }
        assert!(err("run_id IN ('a' 'b')").contains("expected ',' or ')' at ''b''"));
        assert!(err("params.lr 'x'").contains("expected a comparison operator at ''x''"));
        let e = parse_filter(&RUNS, "metrics.a ~ 1").unwrap_err();
        assert_eq!(e.code, "INVALID_PARAMETER_VALUE");
    }

    #[test]
    fn order_by_puts_nan_then_missing_last() {
        let mk = |v: Option<f64>, t: f64| {
            let mut r = Row::default();
            if let Some(v) = v {
                r.metrics.insert("m".into(), v);
            }
            r.numbers.insert("start_time", t);
            r
        };
        let mut items = vec![
            (mk(None, 1.0), "none"),
            (mk(Some(f64::NAN), 2.0), "nan"),
            (mk(Some(1.0), 3.0), "one"),
            (mk(Some(2.0), 4.0), "two"),
        ];
        let tie = [attr_order(Kind::NumberAttr, "start_time", false)];
        for (clause, want) in [
            ("metrics.m DESC", ["two", "one", "nan", "none"]),
            ("metrics.m", ["one", "two", "nan", "none"]),
            ("start_time ASC", ["none", "nan", "one", "two"]),
        ] {
            let o = parse_order_by(&RUNS, clause).unwrap();
            sort(&mut items, &[o], &tie);
            let got: Vec<&str> = items.iter().map(|(_, n)| *n).collect();
            assert_eq!(got, want, "{clause}");
        }
        assert!(parse_order_by(&RUNS, "metrics.m SIDEWAYS")
            .unwrap_err()
            .message
            .contains("expected ASC or DESC at 'SIDEWAYS'"));
    }

    /// LIKE by its definition: every split a `%` could take (exponential, so for short inputs only).
    fn like_by_definition(v: &[char], p: &[char]) -> bool {
        match p.first() {
            None => v.is_empty(),
            Some('%') => (0..=v.len()).any(|k| like_by_definition(&v[k..], &p[1..])),
            Some('_') => !v.is_empty() && like_by_definition(&v[1..], &p[1..]),
            Some(c) => v.first() == Some(c) && like_by_definition(&v[1..], &p[1..]),
        }
    }

    #[test]
    fn like_agrees_with_its_definition_on_every_short_input() {
        fn all(alphabet: &[char], len: usize) -> Vec<Vec<char>> {
            let mut out = vec![vec![]];
            for _ in 0..len {
                let longer: Vec<Vec<char>> = out
                    .iter()
                    .filter(|w| w.len() == out.last().map_or(0, Vec::len))
                    .flat_map(|w| alphabet.iter().map(move |&c| [w.clone(), vec![c]].concat()))
                    .collect();
                out.extend(longer);
            }
            out
        }
        let values = all(&['a', 'b'], 5);
        let patterns = all(&['a', 'b', '%', '_'], 5);
        for v in &values {
            for p in &patterns {
                assert_eq!(like_at(v, p), like_by_definition(v, p), "{v:?} LIKE {p:?}");
            }
        }
    }

    #[test]
    fn many_percent_signs_take_one_pass_not_every_split() {
        let name = "zesty-rocket-574-".repeat(4);
        let pattern = format!("{}Q", "%".repeat(60));
        assert!(!like(&name, &pattern, false));
        assert!(like(&name, &format!("{}4-", "%".repeat(60)), true));
    }

    #[test]
    fn pages_with_opaque_tokens() {
        let (p, next) = page((0..5).collect::<Vec<_>>(), 2, None).unwrap();
        assert_eq!(p, [0, 1]);
        let (p, next) = page((0..5).collect::<Vec<_>>(), 2, next.as_deref()).unwrap();
        assert_eq!(p, [2, 3]);
        let (p, next) = page((0..5).collect::<Vec<_>>(), 2, next.as_deref()).unwrap();
        assert_eq!((p, next), (vec![4], None));
        assert!(decode_token("zz").is_err());
        assert!(like("abc", "a_c", false) && like("ABC", "a%", true) && !like("abc", "b%", false));
    }
}
