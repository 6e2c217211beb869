//! Connection-string helpers shared by the database sinks and the sink opener.

/// Hides the password of a connection string, in URL form
/// (`postgres://user:secret@host/db`, `?password=secret`) or libpq key=value
/// form (`password=secret` or `password='a secret'`), for log lines.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    // Compiled per call: this runs once per log line of a failed connect.
    let kv = regex::Regex::new(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&#]+)")
        .expect("static regex");
    kv.replace_all(&out, "${1}***").into_owned()
}
