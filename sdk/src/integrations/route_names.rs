//! Interned server span names (`{METHOD} {route}`) and `http.route` values.
//!
//! A router has a small, fixed set of routes, yet the server layer used to
//! allocate both strings for every sampled request (and the export thread
//! freed them, a cross-thread free). Here each distinct route and name is
//! copied once into memory kept for the life of the process and handed out
//! as `&'static str`, through a per-thread cache so the common case takes no
//! lock. Bounded: at most [`MAX_INTERNED`] strings per process (routes longer
//! than [`MAX_ROUTE_LEN`] are never interned) and [`MAX_ROUTES_PER_THREAD`]
//! cached routes per thread; past either bound the caller allocates as before.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::Mutex;

use super::recent::Recent;

/// Most strings (routes and names) interned per process.
pub(crate) const MAX_INTERNED: usize = 1024;
/// Longest route interned (bytes).
pub(crate) const MAX_ROUTE_LEN: usize = 256;
/// Most routes a thread caches.
pub(crate) const MAX_ROUTES_PER_THREAD: usize = 256;

/// FNV-1a: routes are short and come from the router (or the application's
/// route function), so a keyed hash buys nothing here and costs ~3× more.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// Methods with a slot of their own (the known ones and `HTTP` for the rest).
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "HTTP",
];

struct Entry {
    route: &'static str,
    names: [Option<&'static str>; METHODS.len()],
}

static GLOBAL: Mutex<Option<FnvMap<Box<str>, &'static str>>> = Mutex::new(None);

thread_local! {
    static CACHE: RefCell<FnvMap<Box<str>, Entry>> = RefCell::new(FnvMap::default());
}

/// `s` as a process-lifetime string, shared by every thread; `None` once
/// [`MAX_INTERNED`] strings exist.
fn intern(s: &str) -> Option<&'static str> {
    let mut g = GLOBAL.lock();
    let map = g.get_or_insert_with(FnvMap::default);
    if let Some(&v) = map.get(s) {
        return Some(v);
    }
    if map.len() >= MAX_INTERNED {
        return None;
    }
    let v: &'static str = Box::leak(Box::from(s));
    map.insert(Box::from(s), v);
    Some(v)
}

fn intern_name(method: &str, route: &str) -> Option<&'static str> {
    let mut name = String::with_capacity(method.len() + 1 + route.len());
    name.push_str(method);
    name.push(' ');
    name.push_str(route);
    intern(&name)
}

/// The routes this thread named last, with their method and name: a
/// request usually repeats one of a few recent routes, and finding it here
/// is a comparison or two instead of hashing the route (~150 instructions
/// per request, measured). Bounded, replaced in turn.
const RECENT: usize = 4;

thread_local! {
    static RECENT_ROUTES: RefCell<Recent<(&'static str, usize, &'static str), RECENT>> =
        const { RefCell::new(Recent::new()) };
}

fn recent(route: &str, slot: usize) -> Option<(&'static str, &'static str)> {
    RECENT_ROUTES
        .try_with(|r| {
            let r = r.try_borrow().ok()?;
            r.find(|(known, s, _)| *s == slot && *known == route)
                .map(|&(known, _, name)| (known, name))
        })
        .ok()
        .flatten()
}

fn remember(route: &'static str, slot: usize, name: &'static str) {
    let _ = RECENT_ROUTES.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            r.put((route, slot, name));
        }
    });
}

/// The interned `http.route` value and span name for `method` (one of the
/// names `method_name` gives, or `HTTP`) and `route`, or `None` when a bound
/// is reached (the caller then allocates). Always inlined: the server
/// layer names a span in two places (with its attributes, or alone for a
/// sampler that decides by name), and as a call it cost every sampled
/// request ~65 instructions.
#[inline(always)]
pub(crate) fn route_and_name(
    method: &'static str,
    route: &str,
) -> Option<(&'static str, &'static str)> {
    if route.len() > MAX_ROUTE_LEN {
        return None;
    }
    let slot = METHODS.iter().position(|m| *m == method)?;
    if let Some(found) = recent(route, slot) {
        return Some(found);
    }
    let (route, name) = cached(method, slot, route)?;
    remember(route, slot, name);
    Some((route, name))
}

/// [`route_and_name`] through the thread's route table (and the interned
/// strings behind it).
fn cached(method: &'static str, slot: usize, route: &str) -> Option<(&'static str, &'static str)> {
    CACHE
        .try_with(|cache| {
            let mut cache = cache.try_borrow_mut().ok()?;
            if let Some(e) = cache.get_mut(route) {
                let name = match e.names[slot] {
                    Some(n) => n,
                    None => *e.names[slot].insert(intern_name(method, route)?),
                };
                return Some((e.route, name));
            }
            if cache.len() >= MAX_ROUTES_PER_THREAD {
                return None;
            }
            let r = intern(route)?;
            let n = intern_name(method, route)?;
            let mut names = [None; METHODS.len()];
            names[slot] = Some(n);
            cache.insert(Box::from(route), Entry { route: r, names });
            Some((r, n))
        })
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_strings_every_time_and_per_method() {
        let (r1, n1) = route_and_name("GET", "/interned/{id}").unwrap();
        let (r2, n2) = route_and_name("GET", "/interned/{id}").unwrap();
        assert_eq!((r1, n1), ("/interned/{id}", "GET /interned/{id}"));
        assert!(std::ptr::eq(r1, r2) && std::ptr::eq(n1, n2));
        let (r3, n3) = route_and_name("POST", "/interned/{id}").unwrap();
        assert!(std::ptr::eq(r1, r3));
        assert_eq!(n3, "POST /interned/{id}");
        // Another thread shares the process-wide copies.
        let (r4, n4) = std::thread::spawn(|| route_and_name("GET", "/interned/{id}").unwrap())
            .join()
            .unwrap();
        assert!(std::ptr::eq(r1, r4) && std::ptr::eq(n1, n4));
        assert_eq!(route_and_name("BREW", "/interned/{id}"), None);
        assert_eq!(route_and_name("GET", &"x".repeat(MAX_ROUTE_LEN + 1)), None);
    }

    /// Recent routes answer as the table: the same strings, per method,
    /// through more routes than the recent list holds.
    #[test]
    fn recent_routes_answer_as_the_table() {
        std::thread::spawn(|| {
            let routes: Vec<String> = (0..7).map(|i| format!("/recent/{i}/{{id}}")).collect();
            let mut first = std::collections::HashMap::new();
            for round in 0..5 {
                for (i, r) in routes.iter().enumerate() {
                    for m in ["GET", "POST"] {
                        if (i + round) % 3 == 0 && m == "POST" {
                            continue;
                        }
                        let got = route_and_name(m, r).expect("within bounds");
                        assert_eq!(got.0, r.as_str());
                        assert_eq!(got.1, format!("{m} {r}"));
                        let kept = *first.entry((m, r.clone())).or_insert(got);
                        assert!(std::ptr::eq(kept.0, got.0) && std::ptr::eq(kept.1, got.1));
                    }
                }
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn bounded_per_thread() {
        std::thread::spawn(|| {
            let mut cached = 0;
            for i in 0..MAX_ROUTES_PER_THREAD + 10 {
                if route_and_name("GET", &format!("/bounded/{i}")).is_some() {
                    cached += 1;
                }
            }
            // The global bound may cut in first when other tests interned too.
            assert!(cached <= MAX_ROUTES_PER_THREAD, "{cached}");
            let past = format!("/bounded/{}", MAX_ROUTES_PER_THREAD + 5);
            assert_eq!(route_and_name("GET", &past), None);
        })
        .join()
        .unwrap();
        let g = GLOBAL.lock();
        assert!(g.as_ref().map_or(0, |m| m.len()) <= MAX_INTERNED);
    }
}
