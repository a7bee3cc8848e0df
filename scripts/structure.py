#!/usr/bin/env python3
"""Structure measures of the Rust sources, for reviews of the code's shape.

Prints, for the library and binary sources (`crates/*/src`, `examples/*/src`):

- the files that name more than one `ChannelSpec` variant outside their tests, with how
  many distinct ones;
- the cycles between files: file A depends on file B when A's `use` items or qualified
  paths (`crate::`, `super::`, `self::`, `roundtrip_core::`) resolve into B. `pub use`
  re-exports and `mod` declarations are a module's facade, not a dependency, and are not
  counted; `#[cfg(test)] mod tests` blocks are left out;
- the longest functions outside tests, in lines (comments left out).

Usage: scripts/structure.py [--longest N]. It reads text only; it approximates Rust's
name resolution by the longest module prefix of each path, which is enough for a review.
"""

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATE_NAMES = {"core": "roundtrip_core", "roundtrip": "roundtrip", "cli": "roundtrip_cli"}


def source_files():
    for pattern in ("crates/*/src/**/*.rs", "examples/*/src/**/*.rs"):
        yield from sorted(ROOT.glob(pattern))


def module_of(path):
    """(crate dir, module segments) of a source file."""
    rel = path.relative_to(ROOT).parts
    crate = rel[1]
    parts = list(rel[3:])
    last = parts.pop()
    if last not in ("mod.rs", "lib.rs", "main.rs"):
        parts.append(last[:-3])
    return crate, tuple(parts)


def strip_tests(text):
    """The text without its `#[cfg(test)] mod … { … }` blocks and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        return [tree]
    head, rest = tree.split("{", 1)
    inner = rest[: rest.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        if p:
            out.extend(head + e for e in expand_use(p))
    return out


def referenced_paths(text):
    paths = []
    for m in re.finditer(r"(?<![\w:])(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
        if m.group(1) and m.group(1).strip() == "pub":
            continue  # a re-export: the facade
        paths.extend(expand_use(m.group(2)))
    body = re.sub(r"(?<![\w:])(pub(\([^)]*\))?\s+)?use\s+[^;]+;", "", text)
    paths.extend(re.findall(r"(?<![\w:])((?:crate|super|self|roundtrip_core)(?:::\w+)+)", body))
    return paths


def resolve(path, crate, module, modules):
    segs = [s for s in path.split("::") if s]
    base = list(module)
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] == "roundtrip_core":
        crate, base, segs = "core", [], segs[1:]
    elif segs[0] in ("super", "self"):
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    else:
        return None
    segs = [s.split(" as ")[0] for s in segs if s not in ("*", "self")]
    best = tuple(base)
    for n in range(len(segs) + 1):
        cand = tuple(base) + tuple(segs[:n])
        if (crate, cand) in modules:
            best = cand
    return modules.get((crate, best))


def channel_variants(files):
    rows = []
    for f in files:
        text = strip_tests(f.read_text())
        names = set(re.findall(r"ChannelSpec::([A-Z]\w*)", text))
        if len(names) > 1:
            rows.append((len(names), f.relative_to(ROOT)))
    return sorted(rows, reverse=True)


def cycles(files):
    modules = {module_of(f): f for f in files}
    graph = {f: set() for f in files}
    for f in files:
        crate, module = module_of(f)
        for p in referenced_paths(strip_tests(f.read_text())):
            target = resolve(p, crate, module, modules)
            if target is not None and target != f:
                graph[f].add(target)
    # Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
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
            if len(comp) > 1:
                sccs.append(sorted(c.relative_to(ROOT) for c in comp))

    for v in graph:
        if v not in index:
            visit(v)
    return sccs, graph


def longest_functions(files, n):
    rows = []
    for f in files:
        lines = strip_tests(f.read_text()).splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)", lines[i])
            if not m:
                i += 1
                continue
            depth, j, opened = 0, i, False
            while j < len(lines):
                code = re.sub(r"//.*", "", lines[j])
                code = re.sub(r'"(\\.|[^"\\])*"', '""', code)
                code = re.sub(r"'(\\.|[^'\\])'", "''", code)
                for ch in code:
                    if ch == "{":
                        depth += 1
                        opened = True
                    elif ch == "}":
                        depth -= 1
                if opened and depth <= 0:
                    break
                if not opened and code.rstrip().endswith(";"):
                    break
                j += 1
            if opened:
                rows.append((j - i + 1, f"{f.relative_to(ROOT)}:{i + 1}", m.group(6)))
            i += 1
    return sorted(rows, reverse=True)[:n]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--longest", type=int, default=10)
    args = ap.parse_args()
    files = list(source_files())
    print("## Files that match on more than one ChannelSpec variant")
    for count, f in channel_variants(files):
        print(f"{count:3}  {f}")
    sccs, _ = cycles(files)
    print(f"\n## Cycles between files: {len(sccs)}")
    for comp in sccs:
        print("  " + " <-> ".join(str(c) for c in comp))
    print(f"\n## The {args.longest} longest functions")
    for length, where, name in longest_functions(files, args.longest):
        print(f"{length:4}  {name}  {where}")


if __name__ == "__main__":
    main()
