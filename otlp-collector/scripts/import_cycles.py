#!/usr/bin/env python3
"""Fails on import cycles between the collector's modules (run by scripts/test.sh).

What it reads, in every production file of otlp-collector/src (src/bin and
src/main.rs are other crates and are skipped):

- every `use` tree (groups nested to any depth, `self`, `as` renames, globs),
  whatever its first segment: `crate::`, `super::`, `self::`, a child module
  the file declares, or a name an earlier `use` brought into scope;
- every inline path (`crate::a::b::f()`, `super::X::new()`, `wal::Wal`, a
  path through an imported module name) anywhere in the code.

Comments and string literals are blanked first, and test-only code is cut:
any item, field or block under `#[cfg(test)]` (wherever it is in the file),
and any file declared as `#[cfg(test)] mod x;`. A test may use anything.

Each path is followed to the module that *defines* the item, through
re-exports (`pub use child::Item` in a `mod.rs` or in lib.rs, private `use`
declarations a child reaches through `super::`, and globs), so importing a
type from a parent that merely re-exports it counts as an edge to the module
that owns it. Inline modules (`mod pb { ... }`) are scopes of their file.

The graph has one node per module file. Edges between a module and one of
its ancestors are Rust's ordinary module idiom (a child using its parent's
items through `super::` while the parent declares or re-exports the child):
cycles made only with their help are printed for information. A cycle left
after removing them (between siblings, or across top-level modules) is a
layering error and fails the check; each of its edges is printed with the
path that makes it.

Usage: python3 otlp-collector/scripts/import_cycles.py [-v] [--src DIR]
       (exit status 1 on a cycle; -v also prints the edges of parent/child
       cycles; --src checks another source tree, as import_cycles_test.py does)
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
if "--src" in sys.argv:
    SRC = sys.argv[sys.argv.index("--src") + 1]
KEYWORDS_DEF = r"(?:fn|struct|enum|trait|type|const|static|mod|union)"


# ---------------------------------------------------------------- lexing


def blank(text):
    """Comments and string/char literals replaced by spaces (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif re.match(r'b?r(#*)"', text[i:i + 260]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'b?r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append('""' + re.sub(r"[^\n]", " ", text[i + 2:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('"' + re.sub(r"[^\n]", " ", text[i + 1:j]) + '"')
            i = j + 1
        elif c == "'":
            m = re.match(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'", text[i:])
            if m:
                out.append("' '" + " " * (m.end() - 3))
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def match_brace(text, i):
    """Index just past the `}` matching the `{` at i."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def scan_to(text, i, stops):
    """First index >= i of a char in `stops` at bracket depth 0 (or an unmatched closer)."""
    depth = 0
    for j in range(i, len(text)):
        ch = text[j]
        if depth == 0 and ch in stops:
            return j
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                return j
            depth -= 1
    return len(text)


CFG_TEST = re.compile(r"#\[cfg\((?:test|all\(test\b[^\]]*\))\)\]")


def strip_tests(text, test_mods):
    """Cuts every item, field or block under `#[cfg(test)]`; records `mod x;` names."""
    while True:
        m = CFG_TEST.search(text)
        if not m:
            return text
        i = m.end()
        # further attributes on the same item
        while True:
            k = re.match(r"\s*#\[[^\]]*\]", text[i:])
            if not k:
                break
            i += k.end()
        rest = text[i:]
        head = re.match(r"\s*(?:pub(?:\([^)]*\))?\s+)?(?:(?:unsafe|async|extern\s+\"\s*\")\s+)*(\w+!?|\{)", rest)
        word = head.group(1) if head else ""
        start = i + (head.end() - len(word) if head else 0)
        if word == "{":
            end = match_brace(text, start)
        elif word in ("use", "const", "static", "type", "let", "extern"):
            end = scan_to(text, start, ";") + 1
        elif word == "mod":
            j = scan_to(text, start, ";{")
            if j < len(text) and text[j] == ";":
                name = re.match(r"mod\s+(\w+)", text[start:]).group(1)
                test_mods.add(name)
                end = j + 1
            else:
                end = match_brace(text, j)
        elif word in ("fn", "struct", "enum", "impl", "trait", "union", "macro_rules!"):
            j = scan_to(text, start, ";{")
            end = match_brace(text, j) if j < len(text) and text[j] == "{" else j + 1
        else:  # a field, a match arm or an expression statement
            j = scan_to(text, start, ",;")
            end = j + 1 if j < len(text) and text[j] in ",;" else j
        text = text[: m.start()] + re.sub(r"[^\n]", " ", text[m.start():end]) + text[end:]


# ---------------------------------------------------------------- scopes


class Scope:
    """One module: a file, or an inline `mod x { }` inside a file."""

    def __init__(self, path, file, text):
        self.path = path  # module path, tuple of names
        self.file = file  # module path of the file that holds it
        self.children = set()  # declared child modules (files or inline)
        self.imports = {}  # name -> path as written (list of segments)
        self.globs = []  # paths as written
        self.use_paths = []  # every path a `use` names (list of segments)
        self.inline = []  # inline paths (list of segments)
        self.defs = set()
        self.parse(text)

    def parse(self, text):
        # inline child modules become their own scopes
        subs = []
        while True:
            m = re.search(r"(?<![\w])(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*\{", text)
            if not m:
                break
            end = match_brace(text, m.end() - 1)
            subs.append((m.group(1), text[m.end():end - 1]))
            text = text[: m.start()] + re.sub(r"[^\n]", " ", text[m.start():end]) + text[end:]
        self.subs = subs
        for name in re.findall(r"(?<![\w])mod\s+(\w+)\s*;", text):
            self.children.add(name)
        self.children.update(n for n, _ in subs)
        self.defs = set(re.findall(r"\b" + KEYWORDS_DEF + r"\s+(\w+)", text))
        self.defs |= set(re.findall(r"macro_rules!\s*(\w+)", text))

        def use_tree(m):
            self.parse_use(m.group(1))
            return re.sub(r"[^\n]", " ", m.group(0))

        text = re.sub(r"(?<![\w])use\s+([^;]*);", use_tree, text)
        for m in re.finditer(r"(?<![\w:])(\w+)((?:\s*::\s*\w+)+)", text):
            segs = [m.group(1)] + re.findall(r"\w+", m.group(2))
            self.inline.append(segs)

    def parse_use(self, tree):
        toks = re.findall(r"\w+|::|\{|\}|,|\*", tree)
        pos = [0]

        def peek():
            return toks[pos[0]] if pos[0] < len(toks) else None

        def take():
            pos[0] += 1
            return toks[pos[0] - 1]

        def parse(prefix):
            if peek() == "::" and not prefix:  # `::extern_crate`
                take()
                parse(["::"])
                return
            if peek() == "{":
                take()
                while peek() not in (None, "}"):
                    parse(list(prefix))
                    if peek() == ",":
                        take()
                take()
                return
            if peek() == "*":
                take()
                self.globs.append(prefix)
                self.use_paths.append(prefix)
                return
            seg = take()
            if seg is None:
                return
            if peek() == "::":
                take()
                parse(prefix + [seg])
                return
            if seg == "self":
                path, name = prefix, prefix[-1] if prefix else None
            else:
                path, name = prefix + [seg], seg
            if peek() == "as":
                take()
                name = take()
            if path and path[0] != "::":
                if name and name != "_":
                    self.imports[name] = path
                self.use_paths.append(path)

        while peek() is not None:
            parse([])
            if peek() == ",":
                take()


def load():
    files = {}
    for root, _, names in os.walk(SRC):
        for n in names:
            p = os.path.join(root, n)
            rel = os.path.relpath(p, SRC)
            if not n.endswith(".rs") or rel.startswith("bin") or rel == "main.rs":
                continue
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib"):
                parts = parts[:-1]
            files[tuple(parts)] = p
    scopes, test_only = {}, set()

    def add(path, file, text):
        s = Scope(path, file, text)
        scopes[path] = s
        for name, body in s.subs:
            add(path + (name,), file, body)

    for mod, p in files.items():
        test_mods = set()
        text = strip_tests(blank(open(p, encoding="utf-8").read()), test_mods)
        test_only |= {mod + (t,) for t in test_mods}
        add(mod, mod, text)
    # files declared only for tests (and everything under them)
    for mod in list(scopes):
        if any(mod[: len(t)] == t for t in test_only):
            del scopes[mod]
    return scopes


# ---------------------------------------------------------------- resolving


class Resolver:
    def __init__(self, scopes):
        self.s = scopes

    def absolute(self, scope, segs, depth=0):
        """A path as written in `scope` -> absolute segments, or None (another crate)."""
        if depth > 30 or not segs:
            return None
        first = segs[0]
        if first == "crate":
            return list(segs[1:])
        if first == "self":
            return list(scope.path) + list(segs[1:])
        if first == "super":
            base = list(scope.path)
            while segs and segs[0] == "super":
                segs, base = segs[1:], base[:-1]
            return base + list(segs)
        if first in scope.imports and scope.imports[first] is not segs:
            imp = self.absolute(scope, scope.imports[first], depth + 1)
            return None if imp is None else imp + list(segs[1:])
        if first in scope.children or first in scope.defs:
            return list(scope.path) + list(segs)
        for g in scope.globs:
            base = self.absolute(scope, g, depth + 1)
            if base is not None:
                found = self.owner(base + list(segs), depth + 1, strict=True)
                if found is not None:
                    return base + list(segs)
        return None

    def owner(self, segs, depth=0, strict=False):
        """The file module that defines the item at absolute path `segs`."""
        if depth > 30:
            return None
        n = len(segs)
        while n >= 0 and tuple(segs[:n]) not in self.s:
            n -= 1
        if n < 0:
            return None
        scope, rest = self.s[tuple(segs[:n])], segs[n:]
        if not rest:
            return scope.file
        name = rest[0]
        if name in scope.imports:
            target = self.absolute(scope, scope.imports[name], depth + 1)
            if target is not None:
                return self.owner(target + list(rest[1:]), depth + 1, strict)
        if name in scope.defs:
            return scope.file
        for g in scope.globs:
            base = self.absolute(scope, g, depth + 1)
            if base is not None:
                found = self.owner(base + list(rest), depth + 1, strict=True)
                if found is not None:
                    return found
        return None if strict else scope.file

    def edges(self):
        graph = {}
        for scope in self.s.values():
            out = graph.setdefault(scope.file, {})
            for segs in scope.use_paths + scope.inline:
                path = self.absolute(scope, segs)
                if path is None:
                    continue
                target = self.owner(path)
                if target is None or target == scope.file:
                    continue
                out.setdefault(target, "::".join(segs))
        return graph


# ---------------------------------------------------------------- cycles


def sccs(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in list(graph):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def related(a, b):
    """True when one module is the other's ancestor."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def name(m):
    return "::".join(m) or "crate"


def main():
    verbose = "-v" in sys.argv
    scopes = load()
    graph = Resolver(scopes).edges()
    files = {s.file for s in scopes.values()}
    # Edges between a module and one of its ancestors are left out of the
    # failing check: a child using its parent's items through `super::` while
    # the parent declares or re-exports the child is Rust's ordinary module
    # idiom. Any cycle left without them (between siblings, or across
    # top-level modules) is a layering error.
    unrelated = {m: {t: v for t, v in ts.items() if not related(m, t)} for m, ts in graph.items()}
    failing = sorted(sccs(unrelated), key=lambda c: sorted(map(name, c)))
    for comp in failing:
        inside = set(comp)
        print(f"cycle of {len(comp)} modules: " + ", ".join(sorted(map(name, comp))))
        for a in sorted(comp):
            for b, via in sorted(unrelated[a].items()):
                if b in inside:
                    print(f"      {name(a)} -> {name(b)}  (via {via})")
    for comp in sorted(sccs(graph), key=lambda c: sorted(map(name, c))):
        if not any(set(comp) >= set(f) for f in failing):
            print("  (parent/child only: " + ", ".join(sorted(map(name, comp))) + ")")
            if verbose:
                for a in sorted(comp):
                    for b, via in sorted(graph[a].items()):
                        if b in comp:
                            print(f"      {name(a)} -> {name(b)}  (via {via})")
    bad = len(failing)
    if not bad:
        print(f"no import cycles among {len(files)} modules")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
