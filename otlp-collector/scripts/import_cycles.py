#!/usr/bin/env python3
"""Lists import cycles between the collector's modules.

Reads every `crate::...` path (in `use` lines and inline paths) and every
`super::...` path in otlp-collector/src, resolves each to the module file that
defines it (the longest prefix that is a file), and prints the strongly
connected components of the resulting file graph that have more than one file.
Paths relative to the module itself (`child::x` for a child it
declares) count too. Test modules (`#[cfg(test)] mod tests { ... }` to the end of the file) are
skipped: a test may use anything. A file's own child modules are not edges
(a parent declaring `mod child;` is not an import), but a use of it is.

Cycles made only of parent/child edges (a child's `super::` use of its
parent) are printed for information and do not fail the check.

Usage: python3 otlp-collector/scripts/import_cycles.py   (exit status 1 on a cycle)
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def files():
    out = {}
    for root, _, names in os.walk(SRC):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(root, n)
                if os.path.relpath(p, SRC).startswith("bin"):
                    continue
                out[module_of(p)] = p
    return out


def strip_tests(text):
    m = re.search(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod \w+\s*\{", text)
    return text[: m.start()] if m else text


def resolve(segs, mods):
    for n in range(len(segs), 0, -1):
        if tuple(segs[:n]) in mods:
            return tuple(segs[:n])
    return None


def expand_use_groups(text):
    """`use crate::a::{b, c::d};` -> paths crate::a::b, crate::a::c::d."""
    paths = []
    for m in re.finditer(r"\buse\s+((?:crate|super)(?:::\w+)*)::\{([^;]*)\};", text):
        base, inner = m.group(1), m.group(2)
        depth, cur, parts = 0, "", []
        for ch in inner:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        for p in parts:
            p = re.sub(r"\s+", "", p).split("{")[0].split(" as ")[0]
            if p and p != "self":
                paths.append(base + "::" + p.rstrip(":"))
            elif p == "self":
                paths.append(base)
    return paths


def edges(mods):
    graph = {m: set() for m in mods}
    for mod, path in mods.items():
        text = strip_tests(open(path, encoding="utf-8").read())
        text = re.sub(r"//[^\n]*", "", text)
        found = expand_use_groups(text)
        found += re.findall(r"\b(?:crate|super)(?:::\w+)+", text)
        # Paths relative to this module: `child::Item` and `use child::{..}`
        # for a child module it declares.
        for child in re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod (\w+);", text, re.M):
            if re.search(r"(?<![:\w])" + child + r"::", text):
                found.append("self::" + child)
        for p in found:
            segs = p.split("::")
            if segs[0] == "crate":
                segs = segs[1:]
            elif segs[0] == "self":
                segs = list(mod) + segs[1:]
            else:
                # `super` of module a::b (file a/b.rs or a/b/mod.rs) is a.
                base = list(mod)
                while segs and segs[0] == "super":
                    segs = segs[1:]
                    base = base[:-1]
                segs = base + segs
            target = resolve(segs, mods)
            if target is None or target == mod:
                continue
            graph[mod].add(target)
    return graph


def sccs(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def related(a, b):
    """True when one module is the other's ancestor (parent and child)."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def main():
    mods = files()
    graph = edges(mods)
    # A child using its parent's items through `super::` while the parent
    # uses the child is Rust's ordinary module idiom; such cycles are listed
    # for information. Any other cycle (between siblings, or across top-level
    # modules) is a layering error and fails the check.
    unrelated = {m: {t for t in ts if not related(m, t)} for m, ts in graph.items()}
    bad = sccs(unrelated)
    for c in bad:
        names = sorted("::".join(m) or "crate" for m in c)
        print(f"cycle of {len(c)} modules: " + ", ".join(names))
    if not bad:
        print(f"no import cycles among {len(mods)} modules")
    for c in sccs(graph):
        if not any(set(c) <= set(b) for b in bad):
            names = sorted("::".join(m) or "crate" for m in c)
            print("  (parent/child only: " + ", ".join(names) + ")")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
