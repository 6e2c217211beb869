#!/usr/bin/env python3
"""Checks that import_cycles.py sees each kind of path: every case below is a
two-module cycle written one way, which the script must report (exit 1), and a
tree with the same shapes but no cycle, which it must pass (exit 0).

Usage: python3 otlp-collector/scripts/import_cycles_test.py
"""
import os
import subprocess
import sys
import tempfile

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "import_cycles.py")

# a.rs always uses b; each case makes b (or a module it re-exports) use a.
BASE = {"lib.rs": "pub mod a;\npub mod b;\n", "a.rs": "use crate::b::Thing;\npub struct A;\n"}
CASES = {
    "plain use": {"b.rs": "use crate::a::A;\npub struct Thing;\n"},
    "nested group": {"b.rs": "use crate::{x::{y::Z}, a::{A}};\npub struct Thing;\n"},
    "inline path": {"b.rs": "pub struct Thing;\nfn f() { let _ = crate::a::A; }\n"},
    "super path": {"b.rs": "pub struct Thing;\nfn f() -> super::a::A { todo!() }\n"},
    "through an imported module name": {"b.rs": "use crate::a;\npub struct Thing;\nfn f() -> a::A { a::A }\n"},
    "through a crate-root re-export": {
        "lib.rs": "pub mod a;\npub mod b;\npub use a::A;\n",
        "b.rs": "use crate::A;\npub struct Thing;\n",
    },
    "re-exported by a parent (mod.rs)": {
        "lib.rs": "pub mod a;\npub mod b;\n",
        "b/mod.rs": "mod inner;\npub use inner::Thing;\n",
        "b/inner.rs": "pub struct Thing(crate::a::A);\n",
    },
    "after a test module in the middle": {
        "b.rs": "#[cfg(test)]\nmod tests {\n    fn t() {}\n}\npub struct Thing;\nuse crate::a::A as Renamed;\n",
    },
    "glob re-export": {
        "lib.rs": "pub mod a;\npub mod b;\n",
        "b/mod.rs": "mod inner;\npub use inner::*;\n",
        "b/inner.rs": "pub struct Thing;\nfn f() { crate::a::A; }\n",
    },
}
NO_CYCLE = {
    "b.rs": (
        "// crate::a::A in a comment\n"
        'const S: &str = "crate::a::A in a string";\n'
        "pub struct Thing;\n"
        "#[cfg(test)]\nuse crate::a::A;\n"
        "#[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n"
        "#[cfg(test)]\nmod more_tests;\n"
        "fn g() { let c = '{'; }\n"
    ),
    "b/more_tests.rs": "use crate::a::A;\n",
}


def run(files):
    with tempfile.TemporaryDirectory() as d:
        for name, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(d, name)), exist_ok=True)
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        r = subprocess.run([sys.executable, SCRIPT, "--src", d], capture_output=True, text=True)
        return r.returncode, r.stdout


def main():
    failed = 0
    for case, files in CASES.items():
        tree = dict(BASE)
        tree.update(files)
        if "b/mod.rs" in tree:
            tree.pop("b.rs", None)
        code, out = run(tree)
        ok = code == 1 and "a, b" in out.replace("b::inner", "b")
        print(("ok    " if ok else "FAIL  ") + "cycle found: " + case)
        failed += not ok
    tree = dict(BASE)
    tree.update(NO_CYCLE)
    code, out = run(tree)
    ok = code == 0
    print(("ok    " if ok else "FAIL  ") + "no cycle: comments, strings, char literals, test-only code and files")
    if not ok:
        print(out)
    failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
