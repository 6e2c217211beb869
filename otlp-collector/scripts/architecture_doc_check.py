#!/usr/bin/env python3
"""Checks that docs/architecture.md's module maps match the tree.

SDK: every top-level module of sdk/src/lib.rs is named (in backticks) in the
"Modules, one concern each" paragraph of the SDK section, and every name
there is a module.

Collector:
Every `*.rs` name in the module map (the fenced block under "### Module map")
must be a file under otlp-collector/src/, and every file there must be named
in the map. A name resolves against the folder entry it sits under (a line
whose first word ends in `/`, nested by indentation); a folder entry's own
description resolves against that folder; continuation lines (description
column only) resolve like the entry above them. Exit status 1 on any
mismatch, with the lists printed.

Also: no production file of either crate (sdk/src, otlp-collector/src) is
over 800 lines unless one of its first 10 lines says why ("Over ~800 lines").

Run from anywhere: python3 otlp-collector/scripts/architecture_doc_check.py
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SRC = os.path.join(ROOT, "otlp-collector", "src")
SDK_LIB = os.path.join(ROOT, "sdk", "src", "lib.rs")
MAX_LINES = 800
REASON = "Over ~800 lines"
DOC = os.path.join(ROOT, "docs", "architecture.md")
# Where the description column starts in the map.
DESC_COL = 21


def map_lines(text):
    start = text.index("### Module map")
    fence = text.index("```", start)
    body_start = text.index("\n", fence) + 1
    end = text.index("```", body_start)
    return text[body_start:end].split("\n")


def resolve(lines):
    named = {}
    stack = []  # (indent, folder path relative to src)
    base = ""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent < DESC_COL:
            head = line.strip().split()[0]
            while stack and stack[-1][0] >= indent:
                stack.pop()
            parent = stack[-1][1] if stack else ""
            if head.endswith("/"):
                folder = os.path.join(parent, head.rstrip("/"))
                stack.append((indent, folder))
                base = folder
            else:
                base = parent
        for token in re.findall(r"[A-Za-z0-9_/]+\.rs\b", line):
            path = os.path.normpath(os.path.join(base, token))
            named.setdefault(path, n)
    return named


def sdk_mismatches(text):
    """The SDK paragraph's backticked module names against lib.rs's modules."""
    start = text.index("Modules, one concern each:")
    para = text[start : text.index("\n\n", start)]
    # Backticked words that open a "name (what it is)" item.
    named = set(re.findall(r"`([a-z_]+)` \(", para))
    lib = open(SDK_LIB, encoding="utf-8").read()
    modules = set(re.findall(r"^(?:pub(?:\([a-z]+\))? )?mod ([a-z_]+);", lib, re.M))
    out = []
    for m in sorted(named - modules):
        out.append(f"docs/architecture.md names SDK module `{m}`, which sdk/src/lib.rs does not declare")
    for m in sorted(modules - named):
        out.append(f"SDK module `{m}` (sdk/src/lib.rs) is not in docs/architecture.md's SDK section")
    return out


def long_files():
    """Production files over MAX_LINES lines with no reason at their top."""
    out = []
    for crate in ("sdk", "otlp-collector"):
        for d, _, fs in os.walk(os.path.join(ROOT, crate, "src")):
            for f in fs:
                if not f.endswith(".rs"):
                    continue
                path = os.path.join(d, f)
                lines = open(path, encoding="utf-8").read().splitlines()
                if len(lines) > MAX_LINES and not any(REASON in l for l in lines[:10]):
                    rel = os.path.relpath(path, ROOT)
                    out.append(f"{rel} has {len(lines)} lines and no '{REASON}' reason at its top")
    return out


def main():
    text = open(DOC, encoding="utf-8").read()
    long = long_files()
    for line in long:
        print(line)
    sdk = sdk_mismatches(text)
    for line in sdk:
        print(line)
    named = resolve(map_lines(text))
    files = set()
    for d, _, fs in os.walk(SRC):
        for f in fs:
            if f.endswith(".rs"):
                files.add(os.path.relpath(os.path.join(d, f), SRC))
    missing = sorted(p for p in named if p not in files)
    unlisted = sorted(files - set(named))
    for p in missing:
        print(f"docs/architecture.md names {p} (map line {named[p]}), which does not exist")
    for p in unlisted:
        print(f"otlp-collector/src/{p} is not in docs/architecture.md's module map")
    if missing or unlisted or sdk or long:
        return 1
    print(
        f"module maps match the tree: {len(files)} collector files, the SDK's top-level "
        f"modules; no file over {MAX_LINES} lines without a reason"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
