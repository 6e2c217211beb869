//! Recording `tracing` fields straight into a span's (or event's) attribute
//! list: typed values as they are, strings shared when they repeat at their
//! callsite (see `integrations::shared_values`), and the special `otel.*`,
//! `error` and `message` fields parsed on the way without building strings.

use std::borrow::Cow;
use std::fmt;

use tracing_core::field::{Field, Visit};
use tracing_core::Metadata;

use crate::attributes::{Key, KeyValue, StringValue, Value};
use crate::integrations::shared_values::{self as values, StackText};
use crate::trace::{SpanKind, Status};

/// `otel.status_code`, parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StatusCode {
    Ok,
    Error,
    /// Anything else: ignored (the `error` field still applies).
    Other,
}

/// The special fields of one span or event.
#[derive(Default)]
pub(super) struct Special {
    pub(super) name: Option<Cow<'static, str>>,
    pub(super) kind: Option<SpanKind>,
    status_code: Option<StatusCode>,
    status_message: Option<Cow<'static, str>>,
    /// `Some("")` for an error without a description (`error = true`).
    pub(super) error: Option<Cow<'static, str>>,
    pub(super) message: Option<Cow<'static, str>>,
}

impl Special {
    /// The status the special fields ask for, if any.
    #[inline]
    pub(super) fn status(&mut self) -> Option<Status> {
        if self.status_code.is_none() && self.error.is_none() {
            // The usual span or event: no status field at all.
            return None;
        }
        self.status_slow()
    }

    fn status_slow(&mut self) -> Option<Status> {
        match self.status_code {
            Some(StatusCode::Ok) => return Some(Status::Ok),
            Some(StatusCode::Error) => {
                let d = self
                    .status_message
                    .take()
                    .or_else(|| self.error.clone())
                    .unwrap_or_default();
                return Some(Status::error(d));
            }
            _ => {}
        }
        self.error.clone().map(Status::error)
    }
}

fn parse_kind(s: &str) -> Option<SpanKind> {
    let s = s.trim_matches('"');
    const KINDS: [(&str, SpanKind); 5] = [
        ("server", SpanKind::Server),
        ("client", SpanKind::Client),
        ("producer", SpanKind::Producer),
        ("consumer", SpanKind::Consumer),
        ("internal", SpanKind::Internal),
    ];
    KINDS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|(_, k)| *k)
}

fn parse_status_code(s: &str) -> StatusCode {
    let s = s.trim_matches('"');
    if s.eq_ignore_ascii_case("ok") {
        StatusCode::Ok
    } else if s.eq_ignore_ascii_case("error") {
        StatusCode::Error
    } else {
        StatusCode::Other
    }
}

/// A field name's role, decided from its first byte before comparing.
enum Role {
    Name,
    Kind,
    StatusCode,
    StatusMessage,
    Message,
    Error,
    Plain,
}

#[inline]
fn role(name: &str) -> Role {
    match name.as_bytes().first() {
        Some(b'o') if name.starts_with("otel.") => match &name[5..] {
            "name" => Role::Name,
            "kind" => Role::Kind,
            "status_code" => Role::StatusCode,
            "status_message" => Role::StatusMessage,
            // Other `otel.*` fields: recorded as given, as before.
            _ => Role::Plain,
        },
        Some(b'm') if name == "message" => Role::Message,
        Some(b'e') if name == "error" => Role::Error,
        _ => Role::Plain,
    }
}

/// A [`Visit`] that appends to `attrs` and fills `special`.
pub(super) struct Recorder<'a> {
    /// The callsite's identity (its `'static` metadata's address).
    callsite: usize,
    attrs: &'a mut Vec<KeyValue>,
    pub(super) special: Special,
}

impl<'a> Recorder<'a> {
    pub(super) fn new(meta: &'static Metadata<'static>, attrs: &'a mut Vec<KeyValue>) -> Self {
        Recorder {
            callsite: meta as *const Metadata<'static> as usize,
            attrs,
            special: Special::default(),
        }
    }

    #[inline]
    fn push(&mut self, field: &Field, value: Value) {
        self.attrs.push(KeyValue {
            key: Key::from_static(field.name()),
            value,
        });
    }

    /// A textual value (a `&str`, or a formatted `?debug`/`%display`/error).
    fn text(&mut self, field: &Field, s: Cow<'_, str>) {
        let (site, idx) = (self.callsite, field.index());
        // Shared when it repeats its callsite's first value, else owned
        // (without a second copy when it was formatted into a `String`).
        let to_cow = |s: Cow<'_, str>| -> Cow<'static, str> {
            match values::shared(site, idx, &s) {
                Some(v) => Cow::Borrowed(v),
                None => Cow::Owned(s.into_owned()),
            }
        };
        match role(field.name()) {
            Role::Name => self.special.name = Some(to_cow(s)),
            Role::Kind => self.special.kind = parse_kind(&s),
            Role::StatusCode => self.special.status_code = Some(parse_status_code(&s)),
            Role::StatusMessage => self.special.status_message = Some(to_cow(s)),
            Role::Message => self.special.message = Some(to_cow(s)),
            Role::Error => {
                let v = to_cow(s);
                let attr = match &v {
                    Cow::Borrowed(b) => StringValue::Static(b),
                    Cow::Owned(o) => StringValue::Owned(o.as_str().into()),
                };
                self.push(field, Value::String(attr));
                self.special.error = Some(v);
            }
            Role::Plain => {
                let v = match to_cow(s) {
                    Cow::Borrowed(b) => StringValue::Static(b),
                    Cow::Owned(o) => StringValue::Owned(o.into_boxed_str()),
                };
                self.push(field, Value::String(v));
            }
        }
    }

    /// A `?debug`/`%display` value: formatted on the stack when short, so a
    /// repeated value costs no allocation.
    fn formatted(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut t = StackText::new();
        t.write_debug(value);
        match t.spilled() {
            true => self.text(field, Cow::Owned(t.into_string())),
            false => self.text(field, Cow::Borrowed(t.as_str())),
        }
    }

    fn typed(&mut self, field: &Field, value: Value) {
        match role(field.name()) {
            Role::Plain => self.push(field, value),
            Role::Error => {
                // `error = true`, `error = 42`: an error too, only `false` is
                // not. A bare `true` says nothing beyond "failed": no message.
                self.special.error = match &value {
                    Value::Bool(false) => None,
                    Value::Bool(true) => Some(Cow::Borrowed("")),
                    other => Some(Cow::Owned(display(other))),
                };
                self.push(field, value);
            }
            // A typed `otel.*` or `message`: its text.
            _ => self.text(field, Cow::Owned(display(&value))),
        }
    }
}

fn display(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::I64(i) => i.to_string(),
        Value::F64(x) => x.to_string(),
        Value::String(s) => s.as_str().to_owned(),
        Value::Array(a) => format!("{a:?}"),
    }
}

impl Visit for Recorder<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.typed(field, Value::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.typed(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.typed(field, Value::I64(v)),
            Err(_) => self.text(field, Cow::Owned(value.to_string())),
        }
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.typed(field, Value::I64(v)),
            Err(_) => self.text(field, Cow::Owned(value.to_string())),
        }
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        match i64::try_from(value) {
            Ok(v) => self.typed(field, Value::I64(v)),
            Err(_) => self.text(field, Cow::Owned(value.to_string())),
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.typed(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, Cow::Borrowed(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.formatted(field, &format_args!("{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.formatted(field, value);
    }
}
