//! Templates: strings with `{{ expr }}` parts, rendered once per produced event.
//!
//! Suite files use templates wherever a value differs between events or runs: bodies,
//! headers, URLs, file names, the SUT's command line. An expression is one of
//!
//! | expression | renders as |
//! | --- | --- |
//! | `uuid()` | a fresh random UUID |
//! | `run_id` | the run's id |
//! | `correlation_id` | the event's correlation id |
//! | `seq` | the event's 0-based index within its scenario |
//! | `stream` | the event's stream under `roundtrip load` (0 to `load.streams` − 1); 0 in a functional run |
//! | `now()` | the current time, RFC 3339 in UTC with milliseconds |
//! | `now_ms()` | the current time in Unix milliseconds |
//! | `env("NAME")` | an environment variable (an error if it is unset) |
//! | `env("NAME", "default")` | an environment variable, or the default |
//! | `port.NAME` | a TCP port on 127.0.0.1 that was free when the run chose it; the same for every use of `NAME` in the run |
//! | `channel.NAME.url` | where the listener of channel `NAME` was bound, as a URL (`http://127.0.0.1:41234/processed`) |
//! | `channel.NAME.addr` | the same, as `host:port` |
//!
//! `port.NAME` and `channel.NAME.*` come from the run, through the context's
//! [`port`](TemplateContext::port) and [`channel_address`](TemplateContext::channel_address);
//! a context without a run has neither.
//!
//! Whitespace inside the braces is optional. Everything is pure: the clock, the UUID
//! source and the environment come from a [`TemplateContext`] that the caller provides.
//!
//! ```
//! use roundtrip_core::template::{Template, TemplateContext};
//!
//! struct Fixed;
//! impl TemplateContext for Fixed {
//!     fn run_id(&self) -> &str { "run-1" }
//!     fn correlation_id(&self) -> &str { "c-7" }
//!     fn seq(&self) -> u64 { 3 }
//!     fn now_unix_nanos(&self) -> i64 { 0 }
//!     fn new_uuid(&self) -> String { "u".into() }
//!     fn env(&self, _: &str) -> Option<String> { None }
//! }
//!
//! let t = Template::parse("order {{seq}} of {{ run_id }} at {{ now() }}")?;
//! assert_eq!(t.render(&Fixed)?, "order 3 of run-1 at 1970-01-01T00:00:00.000Z");
//! # Ok::<(), roundtrip_core::template::TemplateError>(())
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::suite::diagnostic::closest;

/// Everything a template may read, provided by the caller (the engine, or a test).
pub trait TemplateContext {
    /// The run's id (`{{ run_id }}`).
    fn run_id(&self) -> &str;
    /// The event's correlation id (`{{ correlation_id }}`).
    fn correlation_id(&self) -> &str;
    /// The event's 0-based index within its scenario (`{{ seq }}`).
    fn seq(&self) -> u64;
    /// The event's stream (`{{ stream }}`): under `roundtrip load`, which of the
    /// scenario's `load.streams` it belongs to; 0 otherwise.
    fn stream(&self) -> u64 {
        0
    }
    /// The current wall-clock time in nanoseconds since the Unix epoch (`{{ now() }}`,
    /// `{{ now_ms() }}`).
    fn now_unix_nanos(&self) -> i64;
    /// A fresh UUID (`{{ uuid() }}`), hyphenated.
    fn new_uuid(&self) -> String;
    /// An environment variable (`{{ env("NAME") }}`), `None` when unset.
    fn env(&self, name: &str) -> Option<String>;
    /// The run's port called `name` (`{{ port.NAME }}`), or why there is none.
    fn port(&self, name: &str) -> Result<u16, String> {
        let _ = name;
        Err("ports are chosen by a run, and there is none here".to_owned())
    }
    /// Where `channel`'s listener was bound (`{{ channel.NAME.url }}`, `.addr`), or why
    /// that is not known.
    fn channel_address(&self, channel: &str, part: AddressPart) -> Result<String, String> {
        let _ = (channel, part);
        Err("a channel's address is known only once its listener started".to_owned())
    }
}

/// Which form of a channel's bound address a template asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPart {
    /// `url`: `http://host:port/path`.
    Url,
    /// `addr`: `host:port`.
    Addr,
}

impl AddressPart {
    /// The name written in a template.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressPart::Url => "url",
            AddressPart::Addr => "addr",
        }
    }
}

/// Why a template could not be parsed or rendered. Columns are 1-based character
/// positions within the template string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{{` without its `}}`.
    #[error("unterminated `{{{{` at column {column}: close it with `}}}}`")]
    Unterminated {
        /// Where the `{{` starts.
        column: usize,
    },
    /// `{{ }}` with nothing inside.
    #[error("empty expression `{{{{ }}}}` at column {column}")]
    Empty {
        /// Where the `{{` starts.
        column: usize,
    },
    /// An expression that is not one of the known ones.
    #[error(
        "unknown template expression `{expr}` at column {column}{}",
        suggestion_text(.suggestion.as_deref())
    )]
    Unknown {
        /// The expression as written, trimmed.
        expr: String,
        /// Where the `{{` starts.
        column: usize,
        /// The closest known expression, when one is close.
        suggestion: Option<String>,
    },
    /// A known function called with the wrong arguments.
    #[error("invalid call `{expr}` at column {column}: {reason}")]
    Arguments {
        /// The expression as written, trimmed.
        expr: String,
        /// Where the `{{` starts.
        column: usize,
        /// What is wrong and how it should look.
        reason: String,
    },
    /// A `port.NAME` or `channel.NAME.*` that has no value where it is rendered.
    #[error("`{{{{ {expr} }}}}` has no value here: {reason}")]
    Unavailable {
        /// The expression, as written.
        expr: String,
        /// Why.
        reason: String,
    },
    /// `env("NAME")` without a default, and the variable is not set.
    #[error(
        "environment variable `{name}` is not set (set it, or give a default: \
         `env(\"{name}\", \"…\")`)"
    )]
    EnvUnset {
        /// The variable's name.
        name: String,
    },
}

fn suggestion_text(s: Option<&str>) -> String {
    s.map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

impl TemplateError {
    /// The column the error points at, when it comes from parsing.
    pub fn column(&self) -> Option<usize> {
        match self {
            TemplateError::Unterminated { column }
            | TemplateError::Empty { column }
            | TemplateError::Unknown { column, .. }
            | TemplateError::Arguments { column, .. } => Some(*column),
            TemplateError::EnvUnset { .. } | TemplateError::Unavailable { .. } => None,
        }
    }
}

/// One template expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `uuid()`
    Uuid,
    /// `run_id`
    RunId,
    /// `correlation_id`
    CorrelationId,
    /// `seq`
    Seq,
    /// `stream`
    Stream,
    /// `now()`
    Now,
    /// `now_ms()`
    NowMs,
    /// `env("NAME")` or `env("NAME", "default")`
    Env {
        /// The variable's name.
        name: String,
        /// The value used when the variable is unset.
        default: Option<String>,
    },
    /// `port.NAME`
    Port {
        /// The port's name.
        name: String,
    },
    /// `channel.NAME.url` or `channel.NAME.addr`
    ChannelAddress {
        /// The channel.
        channel: String,
        /// Which form.
        part: AddressPart,
    },
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Uuid => f.write_str("uuid()"),
            Expr::RunId => f.write_str("run_id"),
            Expr::CorrelationId => f.write_str("correlation_id"),
            Expr::Seq => f.write_str("seq"),
            Expr::Stream => f.write_str("stream"),
            Expr::Now => f.write_str("now()"),
            Expr::NowMs => f.write_str("now_ms()"),
            Expr::Env {
                name,
                default: None,
            } => write!(f, "env({name:?})"),
            Expr::Env {
                name,
                default: Some(d),
            } => write!(f, "env({name:?}, {d:?})"),
            Expr::Port { name } => write!(f, "port.{name}"),
            Expr::ChannelAddress { channel, part } => {
                write!(f, "channel.{channel}.{}", part.as_str())
            }
        }
    }
}

/// The expressions a template may use, as written.
pub const EXPRESSIONS: &[&str] = &[
    "uuid()",
    "run_id",
    "correlation_id",
    "seq",
    "stream",
    "now()",
    "now_ms()",
    "env(\"NAME\")",
    "env(\"NAME\", \"default\")",
    "port.NAME",
    "channel.NAME.url",
    "channel.NAME.addr",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Expr(Expr),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template string.
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = s;
        let mut consumed_chars = 0usize;
        while let Some(open) = rest.find("{{") {
            let column = consumed_chars + rest[..open].chars().count() + 1;
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let inner_start = open + 2;
            let Some(close) = rest[inner_start..].find("}}") else {
                return Err(TemplateError::Unterminated { column });
            };
            let inner = &rest[inner_start..inner_start + close];
            parts.push(Part::Expr(parse_expr(inner, column)?));
            let end = inner_start + close + 2;
            consumed_chars += rest[..end].chars().count();
            rest = &rest[end..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// Whether the template has no expressions (renders to itself).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The expressions, in order.
    pub fn expressions(&self) -> impl Iterator<Item = &Expr> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(e) => Some(e),
            Part::Literal(_) => None,
        })
    }

    /// The single expression when the template is exactly one `{{ … }}` and nothing else.
    fn sole_expr(&self) -> Option<&Expr> {
        match self.parts.as_slice() {
            [Part::Expr(e)] => Some(e),
            _ => None,
        }
    }

    /// Renders only the `env(…)` expressions, with `lookup`, and writes every other
    /// expression back as `{{ expr }}`: the text that is left renders later, per run or
    /// per event, to the same result. `None` when there is no `env(…)` to render.
    pub fn render_env(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Result<String, TemplateError>> {
        if !self
            .parts
            .iter()
            .any(|p| matches!(p, Part::Expr(Expr::Env { .. })))
        {
            return None;
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Expr(Expr::Env { name, default }) => match (lookup(name), default) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => {
                        return Some(Err(TemplateError::EnvUnset { name: name.clone() }));
                    }
                },
                Part::Expr(e) => {
                    out.push_str("{{ ");
                    out.push_str(&e.to_string());
                    out.push_str(" }}");
                }
            }
        }
        Some(Ok(out))
    }

    /// Renders the template.
    pub fn render(&self, ctx: &dyn TemplateContext) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Expr(e) => out.push_str(&eval(e, ctx)?),
            }
        }
        Ok(out)
    }
}

fn eval(e: &Expr, ctx: &dyn TemplateContext) -> Result<String, TemplateError> {
    Ok(match e {
        Expr::Uuid => ctx.new_uuid(),
        Expr::RunId => ctx.run_id().to_owned(),
        Expr::CorrelationId => ctx.correlation_id().to_owned(),
        Expr::Seq => ctx.seq().to_string(),
        Expr::Stream => ctx.stream().to_string(),
        Expr::Now => rfc3339_millis(ctx.now_unix_nanos()),
        Expr::NowMs => unix_millis(ctx.now_unix_nanos()).to_string(),
        Expr::Env { name, default } => match (ctx.env(name), default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.clone(),
            (None, None) => return Err(TemplateError::EnvUnset { name: name.clone() }),
        },
        Expr::Port { name } => ctx
            .port(name)
            .map_err(|reason| TemplateError::Unavailable {
                expr: e.to_string(),
                reason,
            })?
            .to_string(),
        Expr::ChannelAddress { channel, part } => {
            ctx.channel_address(channel, *part)
                .map_err(|reason| TemplateError::Unavailable {
                    expr: e.to_string(),
                    reason,
                })?
        }
    })
}

fn unix_millis(nanos: i64) -> i64 {
    nanos.div_euclid(1_000_000)
}

/// RFC 3339 with milliseconds; a clock before 1970 (never a real one) shows the epoch.
fn rfc3339_millis(nanos: i64) -> String {
    let since_epoch = Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
    let t: SystemTime = UNIX_EPOCH.checked_add(since_epoch).unwrap_or(UNIX_EPOCH);
    humantime::format_rfc3339_millis(t).to_string()
}

fn parse_expr(inner: &str, column: usize) -> Result<Expr, TemplateError> {
    let expr = inner.trim();
    if expr.is_empty() {
        return Err(TemplateError::Empty { column });
    }
    if let Some(name) = expr.strip_prefix("port.") {
        return parse_port(name.trim()).map_err(|reason| TemplateError::Arguments {
            expr: expr.to_owned(),
            column,
            reason,
        });
    }
    if let Some(rest) = expr.strip_prefix("channel.") {
        return parse_channel_address(rest).map_err(|reason| TemplateError::Arguments {
            expr: expr.to_owned(),
            column,
            reason,
        });
    }
    let name_end = expr
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    let (name, after) = expr.split_at(name_end);
    let after = after.trim_start();
    let args = if after.is_empty() {
        None
    } else if let Some(inside) = after.strip_prefix('(').and_then(|a| a.strip_suffix(')')) {
        Some(inside)
    } else {
        return Err(unknown(expr, column));
    };
    let no_args = |e: Expr| -> Result<Expr, TemplateError> {
        match args {
            Some(a) if a.trim().is_empty() => Ok(e),
            Some(_) => Err(TemplateError::Arguments {
                expr: expr.to_owned(),
                column,
                reason: format!("`{e}` takes no arguments"),
            }),
            None => Err(TemplateError::Arguments {
                expr: expr.to_owned(),
                column,
                reason: format!("`{name}` is a function: write `{e}`"),
            }),
        }
    };
    let variable = |e: Expr| -> Result<Expr, TemplateError> {
        match args {
            None => Ok(e),
            Some(_) => Err(TemplateError::Arguments {
                expr: expr.to_owned(),
                column,
                reason: format!("`{name}` is not a function: write `{name}`"),
            }),
        }
    };
    match name {
        "uuid" => no_args(Expr::Uuid),
        "now" => no_args(Expr::Now),
        "now_ms" => no_args(Expr::NowMs),
        "run_id" => variable(Expr::RunId),
        "correlation_id" => variable(Expr::CorrelationId),
        "seq" => variable(Expr::Seq),
        "stream" => variable(Expr::Stream),
        "env" => {
            let Some(args) = args else {
                return Err(TemplateError::Arguments {
                    expr: expr.to_owned(),
                    column,
                    reason:
                        "`env` is a function: write `env(\"NAME\")` or `env(\"NAME\", \"default\")`"
                            .to_owned(),
                });
            };
            parse_env_args(args).map_err(|reason| TemplateError::Arguments {
                expr: expr.to_owned(),
                column,
                reason,
            })
        }
        _ => Err(unknown(expr, column)),
    }
}

/// `NAME` of `port.NAME`: letters, digits, `_` and `-`.
fn parse_port(name: &str) -> Result<Expr, String> {
    if name.is_empty() {
        return Err("name the port: `port.in`".to_owned());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "a port's name has letters, digits, `_` and `-`, not `{}`",
            bad.escape_default()
        ));
    }
    Ok(Expr::Port {
        name: name.to_owned(),
    })
}

/// `NAME.url` or `NAME.addr` of `channel.NAME.url`; a channel's name may hold dots.
fn parse_channel_address(rest: &str) -> Result<Expr, String> {
    const SHAPE: &str = "write `channel.NAME.url` or `channel.NAME.addr`";
    let Some((channel, part)) = rest.rsplit_once('.') else {
        return Err(format!("say which form of the address; {SHAPE}"));
    };
    let part = match part.trim() {
        "url" => AddressPart::Url,
        "addr" => AddressPart::Addr,
        other => {
            return Err(format!(
                "a channel has `url` and `addr`, not `{other}`; {SHAPE}"
            ));
        }
    };
    if channel.is_empty() || channel.trim() != channel {
        return Err(format!("name the channel; {SHAPE}"));
    }
    Ok(Expr::ChannelAddress {
        channel: channel.to_owned(),
        part,
    })
}

fn unknown(expr: &str, column: usize) -> TemplateError {
    const NAMES: &[(&str, &str)] = &[
        ("uuid", "uuid()"),
        ("run_id", "run_id"),
        ("correlation_id", "correlation_id"),
        ("seq", "seq"),
        ("stream", "stream"),
        ("now", "now()"),
        ("now_ms", "now_ms()"),
        ("env", "env(\"NAME\")"),
        ("port", "port.NAME"),
        ("channel", "channel.NAME.url"),
    ];
    let head: String = expr
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let suggestion = closest(&head, NAMES.iter().map(|(name, _)| *name)).and_then(|name| {
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, written)| (*written).to_owned())
    });
    TemplateError::Unknown {
        expr: expr.to_owned(),
        column,
        suggestion,
    }
}

/// Parses `"NAME"` or `"NAME", "default"` (double-quoted, with `\"` and `\\` escapes).
fn parse_env_args(args: &str) -> Result<Expr, String> {
    const SHAPE: &str = "write `env(\"NAME\")` or `env(\"NAME\", \"default\")`";
    let mut strings = Vec::new();
    let mut rest = args.trim();
    loop {
        let Some(body) = rest.strip_prefix('"') else {
            return Err(format!("arguments must be double-quoted strings; {SHAPE}"));
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\'))) => value.push(e),
                    _ => return Err("only `\\\"` and `\\\\` escapes are allowed".to_owned()),
                },
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let Some(end) = end else {
            return Err(format!("unterminated string; {SHAPE}"));
        };
        strings.push(value);
        rest = body[end..].trim_start();
        if rest.is_empty() {
            break;
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None => return Err(format!("expected `,` between arguments; {SHAPE}")),
        }
    }
    let mut strings = strings.into_iter();
    match (strings.next(), strings.next(), strings.next()) {
        (Some(name), default, None) if !name.is_empty() => Ok(Expr::Env { name, default }),
        (Some(_), _, None) => Err("the variable name is empty".to_owned()),
        _ => Err(format!("too many arguments; {SHAPE}")),
    }
}

/// A JSON value whose strings (object keys included) are templates, parsed once and
/// rendered per event. A string that is exactly one `{{ seq }}`, `{{ stream }}` or `{{ now_ms() }}`
/// renders to a JSON number.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    /// A value without strings: rendered as it is.
    Value(Value),
    /// A string.
    String(Template),
    /// An array.
    Array(Vec<JsonTemplate>),
    /// An object: its keys and values, in order.
    Object(Vec<(Template, JsonTemplate)>),
}

impl JsonTemplate {
    /// Parses every template inside `value`.
    pub fn compile(value: &Value) -> Result<JsonTemplate, TemplateError> {
        Ok(match value {
            Value::String(s) => JsonTemplate::String(Template::parse(s)?),
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .map(JsonTemplate::compile)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.iter()
                    .map(|(k, v)| Ok((Template::parse(k)?, JsonTemplate::compile(v)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => JsonTemplate::Value(other.clone()),
        })
    }

    /// The value for one event.
    pub fn render(&self, ctx: &dyn TemplateContext) -> Result<Value, TemplateError> {
        Ok(match self {
            JsonTemplate::Value(v) => v.clone(),
            JsonTemplate::String(t) => match t.sole_expr() {
                Some(Expr::Seq) => Value::from(ctx.seq()),
                Some(Expr::Stream) => Value::from(ctx.stream()),
                Some(Expr::NowMs) => Value::from(unix_millis(ctx.now_unix_nanos())),
                _ => Value::String(t.render(ctx)?),
            },
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| v.render(ctx))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(entries) => {
                let mut out = Map::with_capacity(entries.len());
                for (k, v) in entries {
                    out.insert(k.render(ctx)?, v.render(ctx)?);
                }
                Value::Object(out)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    struct Ctx {
        uuids: Cell<u32>,
        env: HashMap<&'static str, &'static str>,
    }

    impl Ctx {
        fn new() -> Ctx {
            Ctx {
                uuids: Cell::new(0),
                env: HashMap::from([("PORT", "7001"), ("EMPTY", "")]),
            }
        }
    }

    impl TemplateContext for Ctx {
        fn run_id(&self) -> &str {
            "run-42"
        }
        fn correlation_id(&self) -> &str {
            "0190-c"
        }
        fn seq(&self) -> u64 {
            7
        }
        fn now_unix_nanos(&self) -> i64 {
            1_700_000_000_123_456_789
        }
        fn new_uuid(&self) -> String {
            let n = self.uuids.get() + 1;
            self.uuids.set(n);
            format!("uuid-{n}")
        }
        fn env(&self, name: &str) -> Option<String> {
            self.env.get(name).map(|v| (*v).to_owned())
        }
        fn port(&self, name: &str) -> Result<u16, String> {
            match name {
                "in" => Ok(41_000),
                _ => Err(format!("no port `{name}`")),
            }
        }
        fn channel_address(&self, channel: &str, part: AddressPart) -> Result<String, String> {
            match (channel, part) {
                ("out.v2", AddressPart::Url) => Ok("http://127.0.0.1:41001/out".to_owned()),
                ("out.v2", AddressPart::Addr) => Ok("127.0.0.1:41001".to_owned()),
                _ => Err(format!("no channel `{channel}`")),
            }
        }
    }

    fn render(s: &str) -> Result<String, TemplateError> {
        Template::parse(s)?.render(&Ctx::new())
    }

    #[test]
    fn renders_every_expression() {
        assert_eq!(
            render("{{run_id}}/{{ correlation_id }}/{{  seq  }}"),
            Ok("run-42/0190-c/7".into())
        );
        assert_eq!(render("{{ now() }}"), Ok("2023-11-14T22:13:20.123Z".into()));
        assert_eq!(render("{{now_ms()}}"), Ok("1700000000123".into()));
        assert_eq!(
            render("a {{ uuid() }} b {{uuid()}}"),
            Ok("a uuid-1 b uuid-2".into())
        );
        assert_eq!(render("{{ env(\"PORT\") }}"), Ok("7001".into()));
        assert_eq!(render("{{ env(\"EMPTY\", \"x\") }}"), Ok(String::new()));
        assert_eq!(
            render("{{ env(\"NOPE\", \"127.0.0.1\") }}"),
            Ok("127.0.0.1".into())
        );
        assert_eq!(
            render(r#"{{ env("NOPE","a \"q\" \\ b") }}"#),
            Ok(r#"a "q" \ b"#.into())
        );
    }

    #[test]
    fn text_without_expressions_is_kept_verbatim() {
        assert_eq!(render("plain } { text }}"), Ok("plain } { text }}".into()));
        assert_eq!(render(""), Ok(String::new()));
        assert!(Template::parse("no braces").expect("parses").is_literal());
        assert!(!Template::parse("{{seq}}").expect("parses").is_literal());
    }

    #[test]
    fn negative_clocks_floor_to_the_millisecond() {
        assert_eq!(unix_millis(-1), -1);
        assert_eq!(rfc3339_millis(-1_000_000_000), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn unterminated_braces_report_their_column() {
        let err = Template::parse("id-{{ seq }}-{{ uuid()").expect_err("unterminated");
        assert_eq!(err, TemplateError::Unterminated { column: 14 });
        assert_eq!(
            err.to_string(),
            "unterminated `{{` at column 14: close it with `}}`"
        );
        // Columns count characters, not bytes.
        assert_eq!(
            Template::parse("é{{").expect_err("unterminated").column(),
            Some(2)
        );
    }

    #[test]
    fn unknown_expressions_suggest_the_closest() {
        let err = Template::parse("{{ uid() }}").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown template expression `uid()` at column 1; did you mean `uuid()`?"
        );
        let err = Template::parse("x{{ run_idd }}").expect_err("unknown");
        assert_eq!(
            err,
            TemplateError::Unknown {
                expr: "run_idd".into(),
                column: 2,
                suggestion: Some("run_id".into())
            }
        );
        let err = Template::parse("{{ 1 + 2 }}").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown template expression `1 + 2` at column 1"
        );
    }

    #[test]
    fn calls_and_variables_must_be_written_as_such() {
        let msg = |s: &str| Template::parse(s).expect_err("invalid").to_string();
        assert_eq!(
            msg("{{ uuid }}"),
            "invalid call `uuid` at column 1: `uuid` is a function: write `uuid()`"
        );
        assert_eq!(
            msg("{{ seq() }}"),
            "invalid call `seq()` at column 1: `seq` is not a function: write `seq`"
        );
        assert_eq!(
            msg("{{ now(1) }}"),
            "invalid call `now(1)` at column 1: `now()` takes no arguments"
        );
        assert_eq!(msg("{{ }}"), "empty expression `{{ }}` at column 1");
    }

    #[test]
    fn env_arguments_are_checked() {
        let msg = |s: &str| Template::parse(s).expect_err("invalid").to_string();
        assert!(msg("{{ env(PORT) }}").contains("must be double-quoted strings"));
        assert!(msg("{{ env(\"A\", \"b\", \"c\") }}").contains("too many arguments"));
        assert!(msg("{{ env(\"A\" \"b\") }}").contains("expected `,`"));
        assert!(msg("{{ env(\"A) }}").contains("unterminated string"));
        assert!(msg("{{ env(\"\") }}").contains("name is empty"));
        assert!(msg("{{ env }}").contains("`env` is a function"));
        assert!(msg("{{ env() }}").contains("must be double-quoted"));
    }

    #[test]
    fn unset_env_without_default_is_a_render_error() {
        let err = render("{{ env(\"NOT_SET_ANYWHERE\") }}").expect_err("unset");
        assert_eq!(
            err,
            TemplateError::EnvUnset {
                name: "NOT_SET_ANYWHERE".into()
            }
        );
        assert_eq!(err.column(), None);
        assert!(err.to_string().contains("env(\"NOT_SET_ANYWHERE\", \"…\")"));
    }

    #[test]
    fn json_renders_keys_and_values_and_numbers() {
        let body = json!({
            "id": "{{ uuid() }}",
            "seq": "{{seq}}",
            "at": "{{ now_ms() }}",
            "label": "n{{ seq }}",
            "{{ run_id }}": [1, true, null, "{{correlation_id}}"],
        });
        let out = JsonTemplate::compile(&body)
            .and_then(|t| t.render(&Ctx::new()))
            .expect("renders");
        assert_eq!(
            out,
            json!({
                "id": "uuid-1",
                "seq": 7,
                "at": 1_700_000_000_123_i64,
                "label": "n7",
                "run-42": [1, true, null, "0190-c"],
            })
        );
        // Key order is kept.
        let keys: Vec<&String> = out.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["id", "seq", "at", "label", "run-42"]);
    }

    #[test]
    fn json_checking_finds_errors_in_keys_and_nested_values() {
        let compile = |v: Value| JsonTemplate::compile(&v).map(drop);
        assert_eq!(compile(json!({"a": ["{{ seq }}", {"b": 1}]})), Ok(()));
        assert_eq!(
            compile(json!({"a": [{"b": "{{ seq"}]})),
            Err(TemplateError::Unterminated { column: 1 })
        );
        assert!(matches!(
            compile(json!({"{{ nope }}": 1})),
            Err(TemplateError::Unknown { .. })
        ));
        let unset = JsonTemplate::compile(&json!({"x": "{{ env(\"UNSET_X\") }}"})).expect("parses");
        assert!(unset.render(&Ctx::new()).is_err());
    }

    #[test]
    fn expressions_display_as_written() {
        let t = Template::parse(
            "{{uuid()}}{{ env(\"A\", \"b\") }}{{seq}}{{ port.in }}{{channel.a.b.addr}}",
        )
        .expect("parses");
        let shown: Vec<String> = t.expressions().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "uuid()",
                "env(\"A\", \"b\")",
                "seq",
                "port.in",
                "channel.a.b.addr"
            ]
        );
    }

    #[test]
    fn ports_and_channel_addresses_come_from_the_run() {
        assert_eq!(
            render("--listen 127.0.0.1:{{ port.in }} --emit {{ channel.out.v2.url }}"),
            Ok("--listen 127.0.0.1:41000 --emit http://127.0.0.1:41001/out".into())
        );
        assert_eq!(
            render("{{channel.out.v2.addr}}"),
            Ok("127.0.0.1:41001".into())
        );
        let err = render("{{ port.other }}").expect_err("no such port");
        assert_eq!(
            err.to_string(),
            "`{{ port.other }}` has no value here: no port `other`"
        );
        assert_eq!(err.column(), None);
        // A context without a run has neither.
        struct Bare;
        impl TemplateContext for Bare {
            fn run_id(&self) -> &str {
                ""
            }
            fn correlation_id(&self) -> &str {
                ""
            }
            fn seq(&self) -> u64 {
                0
            }
            fn now_unix_nanos(&self) -> i64 {
                0
            }
            fn new_uuid(&self) -> String {
                String::new()
            }
            fn env(&self, _: &str) -> Option<String> {
                None
            }
        }
        let bare = |s: &str| Template::parse(s).expect("parses").render(&Bare);
        assert!(bare("{{ port.in }}").is_err());
        assert!(bare("{{ channel.out.url }}").is_err());
    }

    #[test]
    fn ports_and_channel_addresses_are_written_as_such() {
        let msg = |s: &str| Template::parse(s).expect_err("invalid").to_string();
        assert!(msg("{{ port. }}").contains("name the port"));
        assert!(msg("{{ port.a b }}").contains("not ` `"));
        assert!(msg("{{ channel.out }}").contains("say which form"));
        assert!(msg("{{ channel.a.out }}").contains("a channel has `url` and `addr`, not `out`"));
        assert!(msg("{{ channel.out.host }}").contains("not `host`"));
        assert!(msg("{{ channel..url }}").contains("name the channel"));
        assert!(msg("{{ channel.url }}").contains("say which form"));
        assert!(msg("{{ port }}").contains("did you mean `port.NAME`?"));
        assert!(msg("{{ chanel.out.url }}").contains("unknown template expression"));
    }
}
