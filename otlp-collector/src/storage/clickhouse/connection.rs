//! URLs, HTTP clients, error mapping, and running an operation on the first
//! replica of a shard that answers.

use clickhouse::Client;

use super::options::Compression;
use crate::storage::{StorageError, StorageResult};

/// Maps a client error: network problems and timeouts are retryable.
pub(super) fn map_err(e: clickhouse::error::Error) -> StorageError {
    use clickhouse::error::Error as E;
    match e {
        E::Network(_) | E::TimedOut => StorageError::Unavailable(format!(
            "{UNREACHABLE}: {e}; check that the server is up and --storage-url is right"
        )),
        E::BadResponse(msg) if transient_server_error(&msg) => {
            StorageError::Unavailable(format!("clickhouse (transient, retried): {msg}"))
        }
        E::BadResponse(msg) => StorageError::Backend(format!("clickhouse: {msg}")),
        other => StorageError::Backend(format!("clickhouse: {other}")),
    }
}

/// How an error from a server that did not answer begins (the entry-server
/// failover moves on only for these).
pub(super) const UNREACHABLE: &str = "clickhouse unreachable";

/// ClickHouse server error codes that say "not now" rather than "never":
/// the server could not reach another server of the cluster (a replica or
/// shard going down mid-insert through a `Distributed` table: 209
/// SOCKET_TIMEOUT, 210 NETWORK_ERROR, 279 ALL_CONNECTION_TRIES_FAILED,
/// 319 UNKNOWN_STATUS_OF_INSERT), lost its ZooKeeper session (225
/// NO_ZOOKEEPER, 242 TABLE_IS_READ_ONLY, 999 KEEPER_EXCEPTION) or is
/// overloaded (159 TIMEOUT_EXCEEDED, 202 TOO_MANY_SIMULTANEOUS_QUERIES, 252
/// TOO_MANY_PARTS). Such a batch is retried with backoff like an
/// unreachable server, never dropped after `max_attempts_non_retryable`
/// (a rollup batch was, when a replica stopped during the multi-node test).
pub(super) fn transient_server_error(msg: &str) -> bool {
    const TRANSIENT: [u32; 10] = [159, 202, 209, 210, 225, 242, 252, 279, 319, 999];
    msg.split("Code: ")
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse::<u32>().ok()
        })
        .is_some_and(|code| TRANSIENT.contains(&code))
}

/// Connection parts of a ClickHouse URL `http://[user[:password]@]host:port[/database]`.
pub(super) struct ParsedUrl {
    pub(super) base: String,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) database: Option<String>,
}

/// Checks a ClickHouse URL without connecting (used at start, so that a
/// malformed URL fails the start instead of being retried forever).
pub(crate) fn check_url(url: &str) -> StorageResult<()> {
    parse_url(url).map(|_| ())
}

pub(super) fn parse_url(url: &str) -> StorageResult<ParsedUrl> {
    let bad = |why: &str| {
        StorageError::Backend(format!(
            "invalid ClickHouse URL {:?} ({why}); expected http://[user[:password]@]host:8123[/database]",
            crate::storage::url::redact_url(url)
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let scheme = match scheme {
        "http" | "clickhouse" => "http",
        "https" => {
            return Err(bad(
                "https is not supported: TLS to ClickHouse is not implemented",
            ))
        }
        _ => return Err(bad("scheme must be http")),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, p.split(['?', '#']).next().unwrap_or("")),
        None => (rest, ""),
    };
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| bad("user or password is not valid percent-encoded UTF-8"))
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (Some(decode(n)?), Some(decode(p)?)),
            None => (Some(decode(u)?), None),
        },
        None => (None, None),
    };
    let database = (!path.is_empty()).then(|| path.trim_end_matches('/').to_string());
    Ok(ParsedUrl {
        base: format!("{scheme}://{host}"),
        user,
        password,
        database,
    })
}

pub(super) fn client_for(
    url: &ParsedUrl,
    database: Option<&str>,
    compression: Compression,
) -> Client {
    let mut c = Client::default()
        .with_url(&url.base)
        .with_validation(false)
        .with_compression(match compression {
            Compression::Lz4 => clickhouse::Compression::Lz4,
            Compression::None => clickhouse::Compression::None,
        });
    if let Some(u) = &url.user {
        c = c.with_user(u);
    }
    if let Some(p) = &url.password {
        c = c.with_password(p);
    }
    if let Some(db) = database {
        c = c.with_database(db);
    }
    c
}

/// One server of the cluster (or the single server).
pub(super) struct Node {
    /// URL with the password hidden, for messages.
    pub(super) url: String,
    pub(super) client: Client,
}

/// Runs `op` on the first replica of a shard that answers: a replica that is
/// unreachable is skipped for the next one (logged), any other error ends it.
pub(super) async fn on_one_replica<'a, T, F, Fut>(
    replicas: &'a [Node],
    what: &str,
    op: F,
) -> StorageResult<T>
where
    F: Fn(&'a Client) -> Fut,
    Fut: std::future::Future<Output = StorageResult<T>>,
{
    let mut i = 0;
    loop {
        match op(&replicas[i].client).await {
            Err(StorageError::Unavailable(why)) if i + 1 < replicas.len() => {
                tracing::warn!(server = %replicas[i].url, error = %why, what, "clickhouse replica unreachable; using the next one");
                i += 1;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::options::valid_identifier;
    #[test]
    fn transient_server_errors_are_retried_and_others_are_not() {
        use super::transient_server_error as t;
        assert!(t(
            "Code: 210, e.displayText() = DB::NetException: Connection reset by peer"
        ));
        assert!(t(
            "Code: 242, e.displayText() = DB::Exception: Table is in readonly mode"
        ));
        assert!(t(
            "Code: 279, e.displayText() = DB::NetException: All connection tries failed"
        ));
        assert!(!t(
            "Code: 62, e.displayText() = DB::Exception: Syntax error"
        ));
        assert!(!t("Code: 2100, e.displayText() = nothing"));
        assert!(!t("no code at all"));
        assert!(!t("Code: "));
    }

    use super::*;

    #[test]
    fn parses_urls() {
        let u = parse_url("http://bob:p%40ss@127.0.0.1:8123/traces").unwrap();
        assert_eq!(u.base, "http://127.0.0.1:8123");
        assert_eq!(u.user.as_deref(), Some("bob"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.database.as_deref(), Some("traces"));
        let u = parse_url("http://localhost:8123").unwrap();
        assert_eq!(u.database, None);
        assert!(parse_url("https://x:1").is_err());
        assert!(parse_url("localhost:8123").is_err());
        assert!(valid_identifier("ft_db1"));
        assert!(!valid_identifier("a;DROP"));
        assert!(!valid_identifier("1a"));
    }
}
