//! Parsing and validation of query parameters shared by the native, Jaeger v1
//! and Jaeger v3 APIs: trace ids, timestamps, Go-style durations, typed
//! attribute conditions and limits. Every failure is a [`ParamError`] whose
//! message names the parameter and says what a valid value looks like.

use crate::model::{AttrValue, TraceId};
use crate::storage::AttrFilter;

/// A query parameter was missing or malformed (answered with HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

impl ParamError {
    /// Builds an error from a message.
    pub fn new(msg: impl Into<String>) -> Self {
        ParamError(msg.into())
    }
}

/// Parses a trace id given as 1 to 32 hex characters (any case). Shorter ids
/// are left-padded with zeros, so the 16-character form of an id whose high
/// half is zero, and ids whose leading zeros were stripped, all find the trace.
pub fn parse_trace_id(s: &str) -> Result<TraceId, ParamError> {
    let s = s.trim();
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParamError::new(format!(
            "invalid trace id {:?}: expected 32 hex characters (or 16 when the high half is zero)",
            truncate(s, 64)
        )));
    }
    let padded = format!("{s:0>32}");
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        // Cannot fail: every character was checked to be a hex digit above.
        *b = u8::from_str_radix(&padded[i * 2..i * 2 + 2], 16).unwrap_or(0);
    }
    if id == [0u8; 16] {
        return Err(ParamError::new(
            "invalid trace id: the all-zero id is not a valid trace id",
        ));
    }
    Ok(id)
}

/// Parses a trace id as Jaeger's HTTP APIs accept it in a path: hex as
/// [`parse_trace_id`] reads it, or else standard or URL-safe base64, padded or
/// not, of 16 bytes (or of 8, the low half), as the OTLP JSON `bytes` form.
pub fn parse_jaeger_trace_id(s: &str) -> Result<TraceId, ParamError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    let hex_err = match parse_trace_id(s) {
        Ok(id) => return Ok(id),
        Err(e) => e,
    };
    // 16 bytes are 24 base64 characters with padding, 22 without.
    let t = s.trim();
    if t.len() <= 24 {
        for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let Ok(b) = engine.decode(t) else { continue };
            let mut id = [0u8; 16];
            match b.len() {
                16 => id.copy_from_slice(&b),
                8 => id[8..].copy_from_slice(&b),
                _ => continue,
            }
            if id == [0u8; 16] {
                return Err(ParamError::new(
                    "invalid trace id: the all-zero id is not a valid trace id",
                ));
            }
            return Ok(id);
        }
    }
    Err(ParamError::new(format!("{hex_err}, or base64 of 16 bytes")))
}

/// The Jaeger UI's `lookback` values (`1h`, `2d`, `7d`, `2w`, Go durations) in
/// nanoseconds; `None` for anything else (`custom`, garbage), which Jaeger
/// ignores rather than refuses.
pub fn parse_lookback(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last()? {
        (i, 'd') => (&s[..i], 86_400_000_000_000u64),
        (i, 'w') => (&s[..i], 7 * 86_400_000_000_000u64),
        _ => return parse_duration("lookback", s, 1_000).ok(),
    };
    num.parse::<u64>().ok()?.checked_mul(unit)
}

/// Parses a Go-style duration (`1.2s`, `150ms`, `1h30m`, `250us`, `10µs`, `5ns`)
/// into nanoseconds. A bare integer is taken as microseconds when
/// `bare_unit_ns` is 1000, nanoseconds when it is 1, and so on.
pub fn parse_duration(name: &str, s: &str, bare_unit_ns: u64) -> Result<u64, ParamError> {
    let s = s.trim();
    let bad = || {
        ParamError::new(format!(
            "invalid {name} {:?}: expected a duration such as 150ms, 1.2s, 1m30s (units ns, us, µs, ms, s, m, h)",
            truncate(s, 64)
        ))
    };
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<u64>() {
        return n.checked_mul(bare_unit_ns).ok_or_else(bad);
    }
    // Decimal arithmetic in units of 1e-18 ns, so that every duration that
    // fits in u64 nanoseconds is exact (f64 loses nanoseconds past ~104 days).
    const SCALE: u128 = 1_000_000_000_000_000_000;
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (int, frac) = rest[..num_len]
            .split_once('.')
            .unwrap_or((&rest[..num_len], ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad());
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let whole_ns = whole
            .checked_mul(mult)
            .filter(|ns| *ns <= u128::from(u64::MAX))
            .ok_or_else(bad)?;
        // Digits past the 18th are below 1e-18 of the unit: ignored.
        let frac = &frac[..frac.len().min(18)];
        let frac_part: u128 = if frac.is_empty() {
            0
        } else {
            let f: u128 = frac.parse().map_err(|_| bad())?;
            f * mult * 10u128.pow(18 - frac.len() as u32)
        };
        total = total
            .checked_add(whole_ns * SCALE + frac_part)
            .ok_or_else(bad)?;
    }
    u64::try_from((total + SCALE / 2) / SCALE).map_err(|_| bad())
}

/// Parses a timestamp: RFC 3339 (`2024-05-01T10:00:00Z`, fractional seconds and
/// offsets allowed) or an integer in the given unit (`unit_ns` = 1 for
/// nanoseconds, 1000 for microseconds, 1_000_000 for milliseconds).
pub fn parse_time(name: &str, s: &str, unit_ns: u64) -> Result<u64, ParamError> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return n.checked_mul(unit_ns).ok_or_else(|| {
            ParamError::new(format!("invalid {name} {s:?}: the value is too large"))
        });
    }
    parse_rfc3339(s).ok_or_else(|| {
        ParamError::new(format!(
            "invalid {name} {:?}: expected an RFC 3339 time such as 2024-05-01T10:00:00Z or an integer timestamp",
            truncate(s, 64)
        ))
    })
}

/// Parses an RFC 3339 timestamp into nanoseconds since the Unix epoch.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ns: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut d = digits.chars().take(9).collect::<String>();
        while d.len() < 9 {
            d.push('0');
        }
        frac_ns = d.parse().ok()?;
    }
    let offset_s: i64 = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(c @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let v = oh * 3600 + om * 60;
            if *c == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    // 2024-02-31 is not a date (days_from_civil would read it as March 2).
    if civil_from_days(days) != (year, month, day) {
        return None;
    }
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    if secs < 0 {
        return None;
    }
    (secs as u64)
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns as u64)
}

/// Formats nanoseconds since the epoch as RFC 3339 in UTC with nanoseconds.
pub fn format_rfc3339(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let nanos = ns % 1_000_000_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

// Howard Hinnant's days-from-civil algorithm (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Infers a typed value from query text: `true`/`false` → bool, an integer →
/// int, a decimal number → double, anything else → string. A value wrapped in
/// double quotes is always a string (`"200"` matches the string, not the int).
pub fn infer_value(v: &str) -> AttrValue {
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        return AttrValue::Str(v[1..v.len() - 1].into());
    }
    match v {
        "true" => return AttrValue::Bool(true),
        "false" => return AttrValue::Bool(false),
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return AttrValue::Int(i);
    }
    if v.contains('.') {
        if let Ok(d) = v.parse::<f64>() {
            if d.is_finite() {
                return AttrValue::Double(d);
            }
        }
    }
    AttrValue::Str(v.into())
}

/// Parses one `key=value` attribute condition (the value typed by [`infer_value`]).
pub fn parse_attr_condition(s: &str, sep: char) -> Result<AttrFilter, ParamError> {
    let (k, v) = s.split_once(sep).ok_or_else(|| {
        ParamError::new(format!(
            "invalid attribute condition {:?}: expected key{sep}value, e.g. http.status_code{sep}500",
            truncate(s, 64)
        ))
    })?;
    let key = k.trim();
    if key.is_empty() {
        return Err(ParamError::new(format!(
            "invalid attribute condition {:?}: the key is empty",
            truncate(s, 64)
        )));
    }
    Ok(AttrFilter::typed(key, infer_value(v.trim())))
}

/// Parses a limit, rejecting 0 and anything above `max`.
pub fn parse_limit(s: Option<&str>, default: usize, max: usize) -> Result<usize, ParamError> {
    let Some(s) = s else { return Ok(default) };
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ParamError::new(format!(
            "invalid limit {:?}: expected an integer from 1 to {max}",
            truncate(s, 32)
        ))),
    }
}

/// Parses a limit as Jaeger does: anything above `max` is clamped to `max`
/// (the Jaeger UI offers larger limits), 0 means the default; only text that
/// is not a non-negative integer is rejected.
pub fn parse_limit_clamped(
    s: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, ParamError> {
    let Some(s) = s else { return Ok(default) };
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only an overflow can fail, and that is above `max` too.
        return Ok(match t.parse::<usize>() {
            Ok(0) => default,
            Ok(n) => n.min(max),
            Err(_) => max,
        });
    }
    Err(ParamError::new(format!(
        "invalid limit {:?}: expected a non-negative integer (values above {max} are reduced to {max})",
        truncate(s, 32)
    )))
}

/// Parses a boolean flag (`true`/`false`/`1`/`0`; empty means true, as in `?raw`).
pub fn parse_bool(name: &str, s: &str) -> Result<bool, ParamError> {
    match s.trim() {
        "" | "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(ParamError::new(format!(
            "invalid {name} {:?}: expected true or false",
            truncate(other, 32)
        ))),
    }
}

/// Cuts user text for echoing in an error message.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

pub use crate::model::now_ns;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_short_and_long() {
        let a = parse_trace_id("00000000000000000123456789abcdef").unwrap();
        assert_eq!(parse_trace_id("0123456789abcdef").unwrap(), a);
        assert_eq!(parse_trace_id("123456789ABCDEF").unwrap(), a);
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id("0").is_err());
        assert!(parse_trace_id(&"a".repeat(33)).is_err());
    }

    #[test]
    fn jaeger_trace_ids_hex_or_base64() {
        let id = parse_trace_id("0123456789abcdef0123456789abcdef").unwrap();
        for s in [
            "ASNFZ4mrze8BI0VniavN7w==",
            "ASNFZ4mrze8BI0VniavN7w",
            "0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse_jaeger_trace_id(s).unwrap(), id, "{s}");
        }
        let low = parse_trace_id("0123456789abcdef").unwrap();
        assert_eq!(parse_jaeger_trace_id("ASNFZ4mrze8=").unwrap(), low);
        // URL-safe alphabet: bytes fb ff → "-_".
        let mut want = [0u8; 16];
        want[0] = 0xfb;
        want[1] = 0xff;
        assert_eq!(
            parse_jaeger_trace_id("-_8AAAAAAAAAAAAAAAAAAA").unwrap(),
            want
        );
        assert_eq!(
            parse_jaeger_trace_id("+/8AAAAAAAAAAAAAAAAAAA").unwrap(),
            want
        );
        for bad in [
            "",
            "zz",
            "AAAAAAAAAAAAAAAAAAAAAA==",
            "ASNFZ4mrze8BI0VniavN",
            "A".repeat(40).as_str(),
        ] {
            assert!(parse_jaeger_trace_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn jaeger_ui_lookbacks() {
        let h = 3_600_000_000_000u64;
        assert_eq!(parse_lookback("1h"), Some(h));
        assert_eq!(parse_lookback("2d"), Some(48 * h));
        assert_eq!(parse_lookback("7d"), Some(168 * h));
        assert_eq!(parse_lookback("2w"), Some(336 * h));
        assert_eq!(parse_lookback("30m"), Some(h / 2));
        assert_eq!(parse_lookback("custom"), None);
        assert_eq!(parse_lookback("xd"), None);
        assert_eq!(parse_lookback(""), None);
        assert_eq!(parse_lookback("99999999999999999999w"), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("d", "1.2s", 1000).unwrap(), 1_200_000_000);
        assert_eq!(parse_duration("d", "1m30s", 1000).unwrap(), 90_000_000_000);
        assert_eq!(parse_duration("d", "150ms", 1000).unwrap(), 150_000_000);
        assert_eq!(parse_duration("d", "10µs", 1000).unwrap(), 10_000);
        assert_eq!(parse_duration("d", "7", 1000).unwrap(), 7_000);
        assert!(parse_duration("d", "1.2", 1000).is_err());
        assert!(parse_duration("d", "5 parsecs", 1000).is_err());
        assert!(parse_duration("d", "ms", 1000).is_err());
        // Exact to the nanosecond beyond f64's 2^53.
        assert_eq!(
            parse_duration("d", "97514758640877000ns", 1000).unwrap(),
            97_514_758_640_877_000
        );
        assert_eq!(
            parse_duration("d", "18446744073709551615ns", 1).unwrap(),
            u64::MAX
        );
        assert!(parse_duration("d", "18446744073709551616ns", 1).is_err());
        assert!(parse_duration("d", "5124095576h1s", 1).is_err());
        assert_eq!(parse_duration("d", "0.5ns", 1).unwrap(), 1);
        assert_eq!(parse_duration("d", ".25s", 1).unwrap(), 250_000_000);
        assert_eq!(
            parse_duration("d", "1.000000001s", 1).unwrap(),
            1_000_000_001
        );
        assert!(parse_duration("d", "1..2s", 1).is_err());
        assert!(parse_duration("d", ".s", 1).is_err());
    }

    #[test]
    fn rfc3339_round_trip() {
        let ns = parse_rfc3339("2024-05-01T10:00:00.5Z").unwrap();
        assert_eq!(ns, 1_714_557_600_500_000_000);
        assert_eq!(format_rfc3339(ns), "2024-05-01T10:00:00.500000000Z");
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00+02:00").unwrap(),
            1_714_557_600_000_000_000
        );
        assert!(parse_rfc3339("2024-13-01T10:00:00Z").is_none());
        assert!(parse_rfc3339("2024-02-30T10:00:00Z").is_none());
        assert!(parse_rfc3339("2023-02-29T10:00:00Z").is_none());
        assert!(parse_rfc3339("2024-02-29T10:00:00Z").is_some());
        assert!(parse_rfc3339("2024-04-31T10:00:00Z").is_none());
        assert!(parse_rfc3339("2024-05-01T10:00:00+24:00").is_none());
        assert!(parse_rfc3339("2024-05-01T10:00:00+02:60").is_none());
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn typed_values() {
        assert_eq!(infer_value("200"), AttrValue::Int(200));
        assert_eq!(infer_value("\"200\""), AttrValue::Str("200".into()));
        assert_eq!(infer_value("true"), AttrValue::Bool(true));
        assert_eq!(infer_value("1.5"), AttrValue::Double(1.5));
        assert_eq!(infer_value("GET"), AttrValue::Str("GET".into()));
    }

    #[test]
    fn jaeger_limits_clamp() {
        assert_eq!(parse_limit_clamped(None, 20, 100).unwrap(), 20);
        assert_eq!(parse_limit_clamped(Some("0"), 20, 100).unwrap(), 20);
        assert_eq!(parse_limit_clamped(Some("50"), 20, 100).unwrap(), 50);
        assert_eq!(parse_limit_clamped(Some("1500"), 20, 100).unwrap(), 100);
        assert_eq!(
            parse_limit_clamped(Some("99999999999999999999999"), 20, 100).unwrap(),
            100
        );
        assert!(parse_limit_clamped(Some("-1"), 20, 100).is_err());
        assert!(parse_limit_clamped(Some("ten"), 20, 100).is_err());
        assert!(
            parse_limit(Some("101"), 20, 100).is_err(),
            "native stays strict"
        );
    }
}

/// Decoded query-string pairs, in order, repeated keys kept.
#[derive(Clone, Debug, Default)]
pub struct Pairs(pub Vec<(String, String)>);

impl Pairs {
    /// Parses a raw query string (`None` = no query string).
    pub fn parse(raw: Option<&str>) -> Pairs {
        let Some(raw) = raw else {
            return Pairs::default();
        };
        Pairs(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    /// First value of any of `names` (aliases such as camelCase and snake_case).
    /// An empty value counts as absent, as browsers send empty form fields.
    pub fn get(&self, names: &[&str]) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| !v.is_empty() && names.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any of `names` is present at all (even empty, as in `?raw`).
    pub fn has(&self, names: &[&str]) -> bool {
        self.0.iter().any(|(k, _)| names.contains(&k.as_str()))
    }

    /// Value of a flag: absent → false, present and empty → true.
    pub fn flag(&self, names: &[&str]) -> Result<bool, ParamError> {
        match self.0.iter().find(|(k, _)| names.contains(&k.as_str())) {
            None => Ok(false),
            Some((k, v)) => parse_bool(k, v),
        }
    }

    /// All non-empty values of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space, `%XX` a
/// byte); invalid sequences are kept literally and invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match s
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
