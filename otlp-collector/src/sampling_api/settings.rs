//! Collectors sharing a store must compute rates with the same settings.
//!
//! With `[sampling_api.adaptive] source = "store"` every collector computes
//! the served strategies from the same store-wide counts, so they serve the
//! same bytes only if they also agree on every setting that turns counts
//! into strategies. A collector started with another target (a stale
//! configuration, a half-finished rollout) would silently serve different
//! rates to the SDKs that happen to poll it. So each collector writes a
//! **fingerprint** of those settings into the store every period, as a row
//! of the adaptive counts table under a reserved period length
//! ([`SETTINGS_PERIOD_SECS`], never a real one: `interval_secs` is at least
//! 1), and compares the fingerprints the others wrote with its own: a
//! difference is logged as an error naming each differing setting with both
//! values, and counted in `ferrotrace_sampling_adaptive_settings_conflicts`.
//!
//! The fingerprint is readable text (`key=value;...`), not a hash, so the
//! log can say *which* setting differs; pinned services are summarised by a
//! digest (their full text could be long).

use std::collections::{BTreeMap, BTreeSet};

use super::config::SamplingApiConfig;

/// The `period_secs` of settings rows (a real period has at least 1 s).
pub const SETTINGS_PERIOD_SECS: u32 = 0;

/// Leads every fingerprint; a collector of a later format is reported as
/// differing in `format` rather than misread.
const FORMAT: &str = "format=1";

/// The settings that decide the strategies a collector serves from the
/// store's counts, as `key=value` pairs joined by `;`.
pub fn fingerprint(api: &SamplingApiConfig) -> String {
    let a = &api.adaptive;
    let pairs: [(&str, String); 9] = [
        (
            "adaptive.target_traces_per_second",
            a.target_traces_per_second.to_string(),
        ),
        ("adaptive.min_probability", a.min_probability.to_string()),
        (
            "adaptive.service_max_traces_per_second",
            a.service_max_traces_per_second.to_string(),
        ),
        ("adaptive.interval_secs", a.interval_secs.to_string()),
        (
            "adaptive.smoothing_periods",
            a.smoothing_periods.to_string(),
        ),
        ("adaptive.max_operations", a.max_operations.to_string()),
        ("default_probability", api.default_probability.to_string()),
        (
            "default_lower_bound_traces_per_second",
            api.default_lower_bound_traces_per_second.to_string(),
        ),
        ("services", pinned_digest(api)),
    ];
    let mut out = String::from(FORMAT);
    for (k, v) in pairs {
        out.push(';');
        out.push_str(k);
        out.push('=');
        out.push_str(&v);
    }
    out
}

/// The pinned services (`[sampling_api.services]`, which win over adaptive
/// rates) as a count and a 64-bit FNV-1a digest of their canonical text
/// (names and probabilities in sorted order): the same on every machine.
fn pinned_digest(api: &SamplingApiConfig) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |s: &str| {
        for b in s.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, s) in &api.services {
        feed(name);
        feed(&s.probability.map_or("-".into(), |p| p.to_string()));
        for (op, p) in &s.operations {
            feed(op);
            feed(&p.to_string());
        }
    }
    format!("{}:{h:016x}", api.services.len())
}

fn pairs(fp: &str) -> BTreeMap<&str, &str> {
    fp.split(';')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect()
}

/// The settings whose values differ: `(key, here, there)`, `"(none)"` for
/// a key one side lacks (another fingerprint format).
pub fn differences(mine: &str, theirs: &str) -> Vec<(String, String, String)> {
    let (a, b) = (pairs(mine), pairs(theirs));
    let keys: BTreeSet<&str> = a.keys().chain(b.keys()).copied().collect();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (a.get(k).copied(), b.get(k).copied());
            (x != y).then(|| {
                (
                    k.to_string(),
                    x.unwrap_or("(none)").to_string(),
                    y.unwrap_or("(none)").to_string(),
                )
            })
        })
        .collect()
}

/// The error logged for settings `theirs` seen beside this collector's.
pub fn describe(mine: &str, theirs: &str) -> String {
    let diffs: Vec<String> = differences(mine, theirs)
        .into_iter()
        .map(|(k, here, there)| format!("sampling_api.{k} is {here} here but {there} there"))
        .collect();
    format!(
        "collectors sharing this store compute adaptive sampling rates with different settings \
         ({}), so SDKs get different strategies depending on the collector they poll: give \
         every collector on the store the same [sampling_api] settings",
        diffs.join("; ")
    )
}

/// How often an unchanged conflict is logged again.
const RELOG_NS: u64 = 600 * 1_000_000_000;

/// Follows the fingerprints seen in the store: the conflicting ones, and
/// when they were last logged.
#[derive(Debug)]
pub struct ConflictTracker {
    mine: String,
    logged: BTreeSet<String>,
    logged_at_ns: u64,
}

impl ConflictTracker {
    /// A tracker for this collector's fingerprint.
    pub fn new(mine: String) -> Self {
        ConflictTracker {
            mine,
            logged: BTreeSet::new(),
            logged_at_ns: 0,
        }
    }

    /// This collector's fingerprint.
    pub fn mine(&self) -> &str {
        &self.mine
    }

    /// Takes the fingerprints read from the store at `now_ns` (this
    /// collector's own among them, or not); returns the number of distinct
    /// other settings, and the errors to log now: one per conflicting
    /// fingerprint when the set changed, or again every 10 minutes while it
    /// lasts.
    pub fn observe<'a>(
        &mut self,
        seen: impl IntoIterator<Item = &'a str>,
        now_ns: u64,
    ) -> (usize, Vec<String>) {
        let others: BTreeSet<String> = seen
            .into_iter()
            .filter(|f| *f != self.mine)
            .map(str::to_string)
            .collect();
        let mut log = Vec::new();
        if !others.is_empty()
            && (others != self.logged || now_ns.saturating_sub(self.logged_at_ns) >= RELOG_NS)
        {
            log = others.iter().map(|f| describe(&self.mine, f)).collect();
            self.logged_at_ns = now_ns;
        }
        let n = others.len();
        self.logged = others;
        (n, log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_settings_give_identical_fingerprints() {
        let a = SamplingApiConfig::default();
        let b = SamplingApiConfig::default();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert!(differences(&fingerprint(&a), &fingerprint(&b)).is_empty());
        // The listening address does not change strategies.
        let c = SamplingApiConfig {
            addr: "0.0.0.0:1".into(),
            enabled: true,
            ..Default::default()
        };
        assert_eq!(fingerprint(&a), fingerprint(&c));
    }

    /// Each setting that changes the served strategies changes the
    /// fingerprint, and the description names it with both values.
    #[test]
    fn each_differing_setting_is_named_with_both_values() {
        let base = SamplingApiConfig::default();
        let mine = fingerprint(&base);
        type Edit = fn(&mut SamplingApiConfig);
        let cases: [(&str, Edit, &str); 9] = [
            (
                "adaptive.target_traces_per_second",
                |c| c.adaptive.target_traces_per_second = 5.0,
                "1 here but 5 there",
            ),
            (
                "adaptive.min_probability",
                |c| c.adaptive.min_probability = 0.001,
                "0.0001 here but 0.001 there",
            ),
            (
                "adaptive.service_max_traces_per_second",
                |c| c.adaptive.service_max_traces_per_second = 50.0,
                "0 here but 50 there",
            ),
            (
                "adaptive.interval_secs",
                |c| c.adaptive.interval_secs = 30,
                "10 here but 30 there",
            ),
            (
                "adaptive.smoothing_periods",
                |c| c.adaptive.smoothing_periods = 3,
                "6 here but 3 there",
            ),
            (
                "adaptive.max_operations",
                |c| c.adaptive.max_operations = 7,
                "10000 here but 7 there",
            ),
            (
                "default_probability",
                |c| c.default_probability = 0.5,
                "0.001 here but 0.5 there",
            ),
            (
                "default_lower_bound_traces_per_second",
                |c| c.default_lower_bound_traces_per_second = 0.1,
                "0 here but 0.1 there",
            ),
            (
                "services",
                |c| {
                    c.services.insert("checkout".into(), Default::default());
                },
                "0:",
            ),
        ];
        for (key, edit, values) in cases {
            let mut c = base.clone();
            edit(&mut c);
            let theirs = fingerprint(&c);
            let d = differences(&mine, &theirs);
            assert_eq!(d.len(), 1, "{key}: {d:?}");
            assert_eq!(d[0].0, key);
            let msg = describe(&mine, &theirs);
            assert!(msg.contains(&format!("sampling_api.{key} is")), "{msg}");
            assert!(msg.contains(values), "{key}: {msg}");
        }
        // A pinned operation's probability is part of the digest.
        let mut a = base.clone();
        let mut s = super::super::config::ServiceStrategyConfig::default();
        s.operations.insert("GET /".into(), 0.5);
        a.services.insert("web".into(), s.clone());
        let mut b = a.clone();
        b.services
            .get_mut("web")
            .unwrap()
            .operations
            .insert("GET /".into(), 0.25);
        assert_ne!(fingerprint(&a), fingerprint(&b));
        // Another format is reported, not misread.
        let d = differences(&mine, "format=2;x=1");
        assert!(d.iter().any(|(k, _, _)| k == "format"), "{d:?}");
    }

    #[test]
    fn the_tracker_counts_other_settings_and_logs_changes_and_every_ten_minutes() {
        let mine = fingerprint(&SamplingApiConfig::default());
        let mut other = SamplingApiConfig::default();
        other.adaptive.target_traces_per_second = 3.0;
        let other = fingerprint(&other);
        let mut t = ConflictTracker::new(mine.clone());
        let s = 1_000_000_000u64;
        assert_eq!(t.observe([mine.as_str()], s), (0, vec![]));
        assert_eq!(t.observe([], s), (0, vec![]));
        let (n, log) = t.observe([mine.as_str(), other.as_str(), other.as_str()], 2 * s);
        assert_eq!(n, 1);
        assert_eq!(log.len(), 1);
        assert!(
            log[0].contains("target_traces_per_second is 1 here but 3 there"),
            "{}",
            log[0]
        );
        // Unchanged: counted, not logged again until 10 minutes have passed.
        assert_eq!(t.observe([other.as_str()], 3 * s), (1, vec![]));
        assert_eq!(t.observe([other.as_str()], 602 * s).1.len(), 1);
        // Gone: 0; back: logged at once.
        assert_eq!(t.observe([mine.as_str()], 603 * s), (0, vec![]));
        assert_eq!(t.observe([other.as_str()], 604 * s).1.len(), 1);
    }
}
