//! A Go text/template subset over JSON values, for `--format` and `inspect -f`: fields
//! (`.IPAM.Config`), variables, pipelines, `if`/`else`/`range`/`with`, and Docker's functions
//! (`json`, `index`, `len`, `join`, `lower`, `upper`, `split`, `title`, `println`, `printf`,
//! `eq`, `ne`, `not`, `and`, `or`).
//!
//! Written here rather than taken from the `gtmpl` crate: gtmpl keeps maps in a `HashMap`, so
//! `{{json .IPAM}}` and `range` would lose the key order dockerd prints; this evaluator works
//! on `serde_json::Value` with insertion order kept.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        let after = &rest[start + 2..];
        let end = action_end(after).ok_or("unclosed action: missing }}")?;
        let mut inner = &after[..end];
        if let Some(s) = inner.strip_prefix('-') {
            if s.starts_with(' ') || s.is_empty() {
                text = text.trim_end().to_string();
                inner = s;
            }
        }
        let mut trim_next = false;
        if let Some(s) = inner.strip_suffix('-') {
            if s.ends_with(' ') || s.is_empty() {
                trim_next = true;
                inner = s;
            }
        }
        if !text.is_empty() {
            out.push(Tok::Text(text));
        }
        let inner = inner.trim();
        if !inner.starts_with("/*") {
            out.push(Tok::Action(inner.to_string()));
        }
        rest = &after[end + 2..];
        if trim_next {
            rest = rest.trim_start();
        }
    }
    if !rest.is_empty() {
        out.push(Tok::Text(rest.to_string()));
    }
    Ok(out)
}

/// Where the action that `s` starts with ends (its `}}`), not counting a `}}` inside a quoted
/// or raw string (`{{"a}}b"}}` is one action).
fn action_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Out(String),
    If(Vec<(String, Vec<Node>)>, Vec<Node>),
    Range {
        vars: Vec<String>,
        pipe: String,
        body: Vec<Node>,
        else_: Vec<Node>,
    },
    With(String, Vec<Node>, Vec<Node>),
    Assign(String, String),
}

fn parse(toks: &[Tok], pos: &mut usize, stop: &[&str]) -> Result<(Vec<Node>, String), String> {
    let mut nodes = Vec::new();
    while *pos < toks.len() {
        let t = toks[*pos].clone();
        *pos += 1;
        match t {
            Tok::Text(s) => nodes.push(Node::Text(s)),
            Tok::Action(a) => {
                let word = a.split_whitespace().next().unwrap_or("");
                if stop.contains(&word) || (word == "else" && stop.contains(&"else")) {
                    return Ok((nodes, a));
                }
                match word {
                    "if" => {
                        let mut branches = vec![];
                        let mut cond = a[2..].trim().to_string();
                        let else_nodes;
                        loop {
                            let (body, end) = parse(toks, pos, &["end", "else"])?;
                            branches.push((cond.clone(), body));
                            if end == "end" {
                                else_nodes = vec![];
                                break;
                            }
                            let rest = end[4..].trim();
                            if let Some(c) = rest.strip_prefix("if ") {
                                cond = c.trim().to_string();
                                continue;
                            }
                            let (body, _) = parse(toks, pos, &["end"])?;
                            else_nodes = body;
                            break;
                        }
                        nodes.push(Node::If(branches, else_nodes));
                    }
                    "range" | "with" => {
                        let spec = a[word.len()..].trim();
                        let (body, end) = parse(toks, pos, &["end", "else"])?;
                        let else_ = if end.starts_with("else") {
                            parse(toks, pos, &["end"])?.0
                        } else {
                            vec![]
                        };
                        if word == "with" {
                            nodes.push(Node::With(spec.to_string(), body, else_));
                        } else {
                            let (vars, pipe) = match spec.split_once(":=") {
                                Some((v, p)) => (
                                    v.split(',')
                                        .map(|s| s.trim().to_string())
                                        .filter(|s| !s.is_empty())
                                        .collect(),
                                    p.trim().to_string(),
                                ),
                                None => (vec![], spec.to_string()),
                            };
                            nodes.push(Node::Range {
                                vars,
                                pipe,
                                body,
                                else_,
                            });
                        }
                    }
                    "end" | "else" => return Err(format!("unexpected {{{{{word}}}}}")),
                    _ => {
                        if word.starts_with('$') && a.contains(":=") {
                            let (v, p) = a.split_once(":=").unwrap();
                            nodes.push(Node::Assign(v.trim().to_string(), p.trim().to_string()));
                        } else {
                            nodes.push(Node::Out(a));
                        }
                    }
                }
            }
        }
    }
    if stop.is_empty() {
        Ok((nodes, String::new()))
    } else {
        Err("missing {{end}}".into())
    }
}

/// A parsed template.
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, String> {
        let toks = lex(src).map_err(|e| format!("template parsing error: {e}"))?;
        let mut pos = 0;
        let (nodes, _) =
            parse(&toks, &mut pos, &[]).map_err(|e| format!("template parsing error: {e}"))?;
        Ok(Template { nodes })
    }

    pub fn render(&self, data: &Value) -> Result<String, String> {
        let mut out = String::new();
        let mut vars = vec![("$".to_string(), data.clone())];
        exec(&self.nodes, data, &mut vars, &mut out)?;
        Ok(out)
    }
}

fn exec(
    nodes: &[Node],
    dot: &Value,
    vars: &mut Vec<(String, Value)>,
    out: &mut String,
) -> Result<(), String> {
    for n in nodes {
        match n {
            Node::Text(s) => out.push_str(s),
            Node::Out(p) => {
                let v = eval_pipe(p, dot, vars)?;
                out.push_str(&display(&v));
            }
            Node::Assign(name, p) => {
                let v = eval_pipe(p, dot, vars)?;
                vars.push((name.clone(), v));
            }
            Node::If(branches, else_) => {
                let mut done = false;
                for (cond, body) in branches {
                    if truthy(&eval_pipe(cond, dot, vars)?) {
                        exec(body, dot, vars, out)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    exec(else_, dot, vars, out)?;
                }
            }
            Node::With(p, body, else_) => {
                let v = eval_pipe(p, dot, vars)?;
                if truthy(&v) {
                    exec(body, &v, vars, out)?;
                } else {
                    exec(else_, dot, vars, out)?;
                }
            }
            Node::Range {
                vars: names,
                pipe,
                body,
                else_,
            } => {
                let v = eval_pipe(pipe, dot, vars)?;
                let items: Vec<(Value, Value)> = match &v {
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, x)| (Value::from(i), x.clone()))
                        .collect(),
                    Value::Object(m) => {
                        let mut keys: Vec<&String> = m.keys().collect();
                        keys.sort();
                        keys.into_iter()
                            .map(|k| (Value::from(k.clone()), m[k].clone()))
                            .collect()
                    }
                    Value::Null => vec![],
                    other => return Err(format!("range can't iterate over {}", display(other))),
                };
                if items.is_empty() {
                    exec(else_, dot, vars, out)?;
                }
                for (k, item) in items {
                    let mark = vars.len();
                    match names.len() {
                        0 => {}
                        1 => vars.push((names[0].clone(), item.clone())),
                        _ => {
                            vars.push((names[0].clone(), k));
                            vars.push((names[1].clone(), item.clone()));
                        }
                    }
                    exec(body, &item, vars, out)?;
                    vars.truncate(mark);
                }
            }
        }
    }
    Ok(())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// Go's default formatting of a value.
pub fn display(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(display).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            format!(
                "map[{}]",
                keys.iter()
                    .map(|k| format!("{k}:{}", display(&m[*k])))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

/// Split a command into words, keeping quoted strings and parenthesised groups whole.
fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut depth = 0;
    while let Some(c) = chars.next() {
        match c {
            '"' | '`' => {
                cur.push(c);
                for d in chars.by_ref() {
                    cur.push(d);
                    if d == c && !cur.ends_with("\\\"") {
                        break;
                    }
                }
            }
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            c if c.is_whitespace() && depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn split_pipe(p: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut q: Option<char> = None;
    let mut depth = 0;
    for c in p.chars() {
        match (q, c) {
            (Some(qc), c) if c == qc => {
                q = None;
                cur.push(c)
            }
            (Some(_), c) => cur.push(c),
            (None, '"') | (None, '`') => {
                q = Some(c);
                cur.push(c)
            }
            (None, '(') => {
                depth += 1;
                cur.push(c)
            }
            (None, ')') => {
                depth -= 1;
                cur.push(c)
            }
            (None, '|') if depth == 0 => parts.push(std::mem::take(&mut cur)),
            (None, c) => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

fn eval_pipe(p: &str, dot: &Value, vars: &[(String, Value)]) -> Result<Value, String> {
    let mut acc: Option<Value> = None;
    for cmd in split_pipe(p) {
        let w = words(cmd.trim())?;
        if w.is_empty() {
            return Err("missing value for command".into());
        }
        let mut args: Vec<Value> = Vec::new();
        let is_fn = FUNCS.contains(&w[0].as_str());
        for a in &w[if is_fn { 1 } else { 0 }..] {
            args.push(operand(a, dot, vars)?);
        }
        if let Some(prev) = acc.take() {
            args.push(prev);
        }
        acc = Some(if is_fn {
            call(&w[0], &args)?
        } else if args.len() == 1 {
            args.pop().unwrap()
        } else {
            // `.Method arg`: Docker's `.Label "k"` style lookups on maps.
            let base = &args[0];
            match (&w[0], args.get(1)) {
                (_, Some(Value::String(k))) => base.get(k).cloned().unwrap_or(Value::Null),
                _ => return Err(format!("can't give argument to non-function {}", w[0])),
            }
        });
    }
    Ok(acc.unwrap_or(Value::Null))
}

fn operand(a: &str, dot: &Value, vars: &[(String, Value)]) -> Result<Value, String> {
    if let Some(inner) = a.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
        return eval_pipe(inner, dot, vars);
    }
    if a.starts_with('"') {
        return serde_json::from_str::<String>(a)
            .map(Value::from)
            .map_err(|_| format!("bad string {a}"));
    }
    if let Some(s) = a.strip_prefix('`').and_then(|s| s.strip_suffix('`')) {
        return Ok(Value::from(s));
    }
    match a {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        "nil" => return Ok(Value::Null),
        _ => {}
    }
    if let Ok(n) = a.parse::<i64>() {
        return Ok(Value::from(n));
    }
    let (base, path) = if let Some(rest) = a.strip_prefix('$') {
        let (name, path) = match rest.find('.') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let name = format!("${name}");
        let v = vars
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone());
        (
            v.ok_or_else(|| format!("undefined variable \"{name}\""))?,
            path.to_string(),
        )
    } else if a.starts_with('.') {
        (dot.clone(), a.to_string())
    } else {
        return Err(format!("function \"{a}\" not defined"));
    };
    let mut v = base;
    for field in path.split('.').filter(|s| !s.is_empty()) {
        v = match &v {
            Value::Object(m) => m.get(field).cloned().unwrap_or(Value::Null),
            Value::Null => Value::Null,
            other => {
                return Err(format!(
                    "can't evaluate field {field} in type {}",
                    type_name(other)
                ))
            }
        };
    }
    Ok(v)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

const FUNCS: &[&str] = &[
    "json", "index", "len", "join", "lower", "upper", "split", "title", "println", "print",
    "printf", "eq", "ne", "not", "and", "or", "pad", "truncate",
];

fn s(v: &Value) -> String {
    display(v)
}

fn call(f: &str, a: &[Value]) -> Result<Value, String> {
    // Go's arities: `need` at least n, `exactly` n (its messages, which Docker prints).
    let need = |n: usize| {
        if a.len() < n {
            Err(format!(
                "wrong number of args for {f}: want at least {n} got {}",
                a.len()
            ))
        } else {
            Ok(())
        }
    };
    let exactly = |n: usize| {
        if a.len() != n {
            Err(format!(
                "wrong number of args for {f}: want {n} got {}",
                a.len()
            ))
        } else {
            Ok(())
        }
    };
    Ok(match f {
        "json" => {
            exactly(1)?;
            Value::from(serde_json::to_string(&a[0]).unwrap())
        }
        "index" => {
            need(2)?;
            let mut v = a[0].clone();
            for k in &a[1..] {
                v = match (&v, k) {
                    (Value::Object(m), Value::String(k)) => {
                        m.get(k).cloned().unwrap_or(Value::Null)
                    }
                    (Value::Array(x), Value::Number(n)) => x
                        .get(n.as_u64().unwrap_or(u64::MAX) as usize)
                        .cloned()
                        .ok_or_else(|| format!("index out of range: {n}"))?,
                    _ => Value::Null,
                };
            }
            v
        }
        "len" => {
            exactly(1)?;
            Value::from(match &a[0] {
                Value::Array(x) => x.len(),
                Value::Object(m) => m.len(),
                Value::String(x) => x.len(),
                _ => 0,
            })
        }
        "join" => {
            exactly(2)?;
            match &a[0] {
                Value::Array(x) => Value::from(x.iter().map(s).collect::<Vec<_>>().join(&s(&a[1]))),
                other => Value::from(s(other)),
            }
        }
        "lower" => {
            exactly(1)?;
            Value::from(s(&a[0]).to_lowercase())
        }
        "upper" => {
            exactly(1)?;
            Value::from(s(&a[0]).to_uppercase())
        }
        "title" => {
            exactly(1)?;
            let t = s(&a[0]);
            let mut c = t.chars();
            Value::from(
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default(),
            )
        }
        "split" => {
            exactly(2)?;
            Value::from(
                s(&a[0])
                    .split(&s(&a[1]))
                    .map(Value::from)
                    .collect::<Vec<_>>(),
            )
        }
        "truncate" => {
            exactly(2)?;
            let n = a[1].as_u64().unwrap_or(0) as usize;
            Value::from(s(&a[0]).chars().take(n).collect::<String>())
        }
        "pad" => {
            exactly(3)?;
            let l = " ".repeat(a[1].as_u64().unwrap_or(0) as usize);
            let r = " ".repeat(a[2].as_u64().unwrap_or(0) as usize);
            Value::from(format!("{l}{}{r}", s(&a[0])))
        }
        "println" => Value::from(a.iter().map(s).collect::<Vec<_>>().join(" ") + "\n"),
        "print" => Value::from(a.iter().map(s).collect::<Vec<_>>().join("")),
        "printf" => {
            need(1)?;
            let fmt = s(&a[0]);
            let mut out = String::new();
            let mut args = a[1..].iter();
            let mut chars = fmt.chars();
            while let Some(c) = chars.next() {
                if c != '%' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('%') => out.push('%'),
                    Some('q') => out.push_str(
                        &serde_json::to_string(&s(args.next().unwrap_or(&Value::Null))).unwrap(),
                    ),
                    Some(_) => out.push_str(&s(args.next().unwrap_or(&Value::Null))),
                    None => out.push('%'),
                }
            }
            Value::from(out)
        }
        "eq" => {
            need(2)?;
            Value::Bool(a[1..].iter().any(|x| *x == a[0]))
        }
        "ne" => {
            exactly(2)?;
            Value::Bool(a[0] != a[1])
        }
        "not" => {
            exactly(1)?;
            Value::Bool(!truthy(&a[0]))
        }
        "and" if a.is_empty() => return Err(need(1).unwrap_err()),
        "or" if a.is_empty() => return Err(need(1).unwrap_err()),
        "and" => a
            .iter()
            .find(|x| !truthy(x))
            .or(a.last())
            .cloned()
            .unwrap_or(Value::Null),
        "or" => a
            .iter()
            .find(|x| truthy(x))
            .or(a.last())
            .cloned()
            .unwrap_or(Value::Null),
        _ => return Err(format!("function \"{f}\" not defined")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    #[test]
    fn docker_formats() {
        let v = json!({"Name": "dev", "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "172.30.0.0/16", "Gateway": "172.30.1.254"}]},
                       "Labels": {"b": "2", "a": "1"}, "Options": {"com.docker.network.driver.mtu": "9000"}});
        assert_eq!(r("{{.Name}}", &v), "dev");
        assert_eq!(
            r("{{json .IPAM}}", &v),
            r#"{"Driver":"default","Options":{},"Config":[{"Subnet":"172.30.0.0/16","Gateway":"172.30.1.254"}]}"#
        );
        assert_eq!(
            r(
                "{{range .IPAM.Config}}{{.Subnet}} via {{.Gateway}}{{end}}",
                &v
            ),
            "172.30.0.0/16 via 172.30.1.254"
        );
        assert_eq!(
            r(r#"{{index .Options "com.docker.network.driver.mtu"}}"#, &v),
            "9000"
        );
        assert_eq!(
            r("{{range $k, $v := .Labels}}{{$k}}={{$v}};{{end}}", &v),
            "a=1;b=2;"
        );
        assert_eq!(
            r(
                "{{if .Labels.a}}yes{{else}}no{{end}} {{if .Missing}}yes{{else}}no{{end}}",
                &v
            ),
            "yes no"
        );
        assert_eq!(r("{{.Name | upper}} {{len .IPAM.Config}}", &v), "DEV 1");
        assert_eq!(r("{{- .Name -}}  \n", &v), "dev");
        assert_eq!(r(r#"{{printf "%s!" .Name}}"#, &v), "dev!");
        assert!(Template::parse("{{if .X}}").is_err());
        assert!(Template::parse("{{.X").is_err());
    }

    #[test]
    fn functions_check_their_arity_and_quotes_may_hold_braces() {
        let v = serde_json::json!({ "Name": "dev" });
        for (f, want) in [
            ("lower", "want 1 got 0"),
            ("upper", "want 1 got 0"),
            ("title", "want 1 got 0"),
            ("not", "want 1 got 0"),
            ("and", "want at least 1 got 0"),
            ("or", "want at least 1 got 0"),
            ("json", "want 1 got 0"),
        ] {
            let e = Template::parse(&format!("{{{{{f}}}}}"))
                .unwrap()
                .render(&v)
                .unwrap_err();
            assert!(
                e.contains(&format!("wrong number of args for {f}: {want}")),
                "{e}"
            );
        }
        assert!(Template::parse("{{lower .Name .Name}}")
            .unwrap()
            .render(&v)
            .is_err());
        assert_eq!(r(r#"{{"a}}b"}}-{{.Name}}"#, &v), "a}}b-dev");
        assert_eq!(r(r#"{{"q\"}}"}}"#, &v), "q\"}}");
        assert_eq!(r("{{`}}`}}", &v), "}}");
    }

    /// `--format` takes anything a user types: no input makes it panic (a bounded run here;
    /// `WEFT_PROPTEST_CASES` for a long one).
    #[test]
    fn no_template_makes_it_panic() {
        use proptest::prelude::*;
        let cases = std::env::var("WEFT_PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(4000);
        let v = serde_json::json!({
            "Name": "dev", "Labels": {"a": "1"}, "IPAM": {"Config": [{"Subnet": "10.0.0.0/24"}]},
            "N": 3, "L": [1, "x", null], "B": true
        });
        let piece = prop::sample::select(vec![
            "{{",
            "}}",
            "{{-",
            "-}}",
            " ",
            ".",
            ".Name",
            ".IPAM.Config",
            ".L",
            ".N",
            "$",
            "$x",
            ":=",
            "=",
            "|",
            "\"",
            "`",
            "\\",
            "(",
            ")",
            ",",
            "if",
            "else",
            "end",
            "range",
            "with",
            "lower",
            "upper",
            "title",
            "not",
            "and",
            "or",
            "json",
            "index",
            "len",
            "join",
            "split",
            "printf",
            "println",
            "print",
            "eq",
            "ne",
            "pad",
            "truncate",
            "0",
            "-1",
            "99999999999999999999",
            "\"%s %q %\"",
            "\"x\"",
            "/*",
            "*/",
            "\n",
            "é",
        ]);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        // Shaped like templates: actions of functions with 0–3 arguments in pipelines, the
        // control words, and text between them — and, beside them, any sequence of pieces.
        let arg = prop::sample::select(vec![
            ".Name",
            ".L",
            ".N",
            ".B",
            ".Labels",
            ".IPAM.Config",
            "$",
            "$x",
            "\"x\"",
            "\"%s%q\"",
            "`}}`",
            "0",
            "-1",
            "2",
            "99999999999999999999",
            "(len .L)",
            "(index .L 7)",
        ]);
        let mut funcs: Vec<&str> = FUNCS.to_vec();
        funcs.extend([".Name", "nosuch", "$x"]);
        let cmd = (
            prop::sample::select(funcs),
            prop::collection::vec(arg, 0..4),
        )
            .prop_map(|(f, a)| format!("{f} {}", a.join(" ")));
        let pipe =
            prop::collection::vec(cmd, 1..3).prop_map(|c| format!("{{{{{}}}}}", c.join(" | ")));
        let control = prop::sample::select(vec![
            "{{if .N}}",
            "{{else}}",
            "{{end}}",
            "{{range .L}}",
            "{{range $i, $e := .Labels}}",
            "{{with .Name}}",
            "{{$x := .N}}",
            "{{- .Name -}}",
            "{{/* c */}}",
        ])
        .prop_map(str::to_string);
        let action = prop_oneof![3 => pipe, 1 => control];
        let text = prop::sample::select(vec!["", "a", " ", "}}", "\n"]);
        let shaped = prop::collection::vec((text, action), 0..6).prop_map(|v| {
            v.into_iter()
                .map(|(t, a)| format!("{t}{a}"))
                .collect::<String>()
        });
        let loose = prop::collection::vec(piece, 0..24).prop_map(|p| p.concat());
        runner
            .run(&prop_oneof![shaped, loose], |src| {
                if let Ok(t) = Template::parse(&src) {
                    let _ = t.render(&v);
                }
                Ok(())
            })
            .unwrap();
    }
}
