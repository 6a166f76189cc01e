//! Output as the docker CLI prints it: tables laid out like its tabwriter, `--format`
//! (`table …`, `json`, templates), natural name order, inspect arrays and their errors.

use std::collections::BTreeMap;

use serde_json::Value;

use super::template;
use crate::Error;

/// The CLI's result: an exit code (errors are already printed).
pub type Exit = i32;

pub fn err_line(e: impl std::fmt::Display) {
    errln!("Error: {e}");
}

/// What a command printed, when it runs in a daemon for a client.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Captured {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

tokio::task_local! {
    /// Set while a daemon runs a command for a client: output goes here, not to a terminal.
    pub static CAPTURE: std::cell::RefCell<Captured>;
}

/// Whether output is being captured for a client (no terminal to ask questions on).
pub fn capturing() -> bool {
    CAPTURE.try_with(|_| ()).is_ok()
}

pub fn write_out(s: &str) {
    if CAPTURE
        .try_with(|c| c.borrow_mut().stdout.push_str(s))
        .is_err()
    {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(s.as_bytes());
    }
}

pub fn write_err(s: &str) {
    if CAPTURE
        .try_with(|c| c.borrow_mut().stderr.push_str(s))
        .is_err()
    {
        use std::io::Write;
        let _ = std::io::stderr().lock().write_all(s.as_bytes());
    }
}

pub fn kv_list(items: &[String], what: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut m = BTreeMap::new();
    for i in items {
        match i.split_once('=') {
            Some((k, v)) => m.insert(k.to_string(), v.to_string()),
            None if what == "label" => m.insert(i.to_string(), String::new()),
            None => {
                return Err(Error::invalid(format!(
                    "invalid {what} {i:?}: use key=value"
                )))
            }
        };
    }
    Ok(m)
}

pub fn parse_net(s: &str, what: &str) -> Result<ipnetwork::IpNetwork, Error> {
    s.parse().map_err(|_| {
        Error::invalid(format!(
            "invalid {what} {s:?}: use CIDR notation such as 172.30.0.0/16"
        ))
    })
}

/// docker's tabwriter: minwidth 10, padding 3, last column unpadded.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count() + 3).max(10);
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(widths[i] - c.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Render rows with a docker `--format` (`table …`, `json`, or a template).
pub fn format_rows(
    format: &str,
    rows: &[Value],
    headers: &[(&str, &str)],
) -> Result<String, String> {
    if format == "json" {
        return Ok(rows.iter().map(|r| format!("{r}\n")).collect());
    }
    let (is_table, tpl) = match format.strip_prefix("table") {
        Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
            (true, rest.trim_start())
        }
        _ => (false, format),
    };
    let tpl = tpl.replace("\\t", "\t").replace("\\n", "\n");
    let t = template::Template::parse(&tpl)?;
    let mut lines: Vec<Vec<String>> = Vec::new();
    if is_table {
        let mut h = tpl.clone();
        for (field, title) in headers {
            h = h.replace(&format!("{{{{.{field}}}}}"), title);
        }
        lines.push(h.split('\t').map(str::to_string).collect());
    }
    let mut plain = String::new();
    for r in rows {
        let s = t.render(r)?;
        if is_table {
            lines.push(s.split('\t').map(str::to_string).collect());
        } else {
            plain.push_str(&s);
            plain.push('\n');
        }
    }
    Ok(if is_table { table(&lines) } else { plain })
}

/// Docker sorts names naturally (web2 before web10).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (x.peek().copied(), y.peek().copied()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let mut n1 = String::new();
                while let Some(c) = x.peek().copied().filter(char::is_ascii_digit) {
                    n1.push(c);
                    x.next();
                }
                let mut n2 = String::new();
                while let Some(c) = y.peek().copied().filter(char::is_ascii_digit) {
                    n2.push(c);
                    y.next();
                }
                let o = n1
                    .trim_start_matches('0')
                    .len()
                    .cmp(&n2.trim_start_matches('0').len())
                    .then(n1.trim_start_matches('0').cmp(n2.trim_start_matches('0')));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(&d);
                }
                x.next();
                y.next();
            }
        }
    }
}

pub fn pretty(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(v, &mut ser).unwrap();
    String::from_utf8(buf).unwrap()
}

/// Print inspect results like the docker CLI: the array (or per-item template output), then
/// the errors; exit 1 if anything was missing.
pub fn print_inspect(found: Vec<Value>, errors: Vec<Error>, format: Option<&str>) -> Exit {
    match format {
        None => outln!("{}", pretty(&Value::Array(found))),
        Some(f) => match template::Template::parse(f) {
            Ok(t) => {
                for v in &found {
                    match t.render(v) {
                        Ok(s) => outln!("{s}"),
                        Err(e) => {
                            err_line(format!("template: {e}"));
                            return 1;
                        }
                    }
                }
            }
            Err(e) => {
                err_line(e);
                return 1;
            }
        },
    }
    for e in &errors {
        err_line(e);
    }
    i32::from(!errors.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_matches_docker() {
        let t = table(&[
            vec![
                "NETWORK ID".into(),
                "NAME".into(),
                "DRIVER".into(),
                "SCOPE".into(),
            ],
            vec![
                "0123456789ab".into(),
                "bridge".into(),
                "bridge".into(),
                "local".into(),
            ],
        ]);
        assert_eq!(
            t,
            "NETWORK ID     NAME      DRIVER    SCOPE\n0123456789ab   bridge    bridge    local\n"
        );
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["web10", "web2", "api", "web1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["api", "web1", "web2", "web10"]);
    }
}
