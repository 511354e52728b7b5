#!/usr/bin/python3
"""circles.py - no circle of files in a folder, no use of a forbidden layer.

Reads the symbols of every object of a build directory (BUILD/obj/src/<folder>/*.o)
with `nm` and draws, for each folder, the graph of its files: a.c -> b.c when
a.o has an undefined symbol that b.o defines.  It fails (exit 1) naming:

  - every circle of files inside a folder (a.c -> b.c -> a.c, with the symbol
    each step uses), and
  - every use of a symbol defined in a folder the layer rules (LAYERS below)
    do not allow.

  scripts/circles.py [BUILD] [--only api,cli]    (BUILD defaults to "build")

`make circles` runs it on $(B) after `make all`; `make check` runs that.
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The folders each folder may use (besides itself).  A folder missing here is
# an error: a new folder decides its layer when it is created.
LAYERS = {
    "common": set(),
    "runtime": {"common"},
    "init": {"runtime", "common"},
    "ssh": {"runtime", "common"},
    "node": {"runtime", "common"},
    "api": {"common"},
    "cli": {"common"},
}

# nm's types of a global definition (lower case ones are local, except the
# weak ones, which nm writes in lower case when undefined).
DEFINED = set("ABCDGIRSTVW")


def read_symbols(paths):
    """{path: (defined, undefined)} global symbol names of objects (one nm)."""
    out = subprocess.run(["nm", "-A", "-P", *paths], check=True, capture_output=True,
                         text=True).stdout
    syms = {p: (set(), set()) for p in paths}
    for line in out.splitlines():
        # "path: name type [value size]"
        path, _, rest = line.partition(": ")
        fields = rest.split()
        if path not in syms or len(fields) < 2:
            continue
        defined, undefined = syms[path]
        if fields[1] == "U":
            undefined.add(fields[0])
        elif fields[1] in DEFINED:
            defined.add(fields[0])
    return syms


def load(build):
    """{(folder, file): (defined, undefined)} for every object under BUILD/obj/src."""
    root = os.path.join(build, "obj", "src")
    if not os.path.isdir(root):
        sys.exit(f"circles: no objects under {root}: build first (make all)")
    keys = {}
    for folder in sorted(os.listdir(root)):
        fdir = os.path.join(root, folder)
        if not os.path.isdir(fdir):
            continue
        for name in sorted(os.listdir(fdir)):
            source = os.path.join(ROOT, "src", folder, name[:-2] + ".c")
            # An object whose source is gone (a file removed since that build)
            # is no part of any binary any more.
            if name.endswith(".o") and os.path.exists(source):
                keys[os.path.join(fdir, name)] = (folder, name[:-2] + ".c")
    syms = read_symbols(sorted(keys)) if keys else {}
    return {keys[p]: syms[p] for p in keys}


def definers(objs):
    """{symbol: [(folder, file), ...]}"""
    where = {}
    for key, (defined, _) in objs.items():
        for sym in defined:
            where.setdefault(sym, []).append(key)
    return where


def resolve(key, sym, where):
    """The objects one undefined symbol of `key` links to: its own folder's
    definition first (as the binary's own objects come first on the link line),
    then those of the folders it may use, then any other (a violation)."""
    found = [d for d in where.get(sym, []) if d != key]
    for pick in (lambda d: d[0] == key[0],
                 lambda d: d[0] in LAYERS.get(key[0], set()),
                 lambda d: True):
        chosen = [d for d in found if pick(d)]
        if chosen:
            return chosen
    return []


def edges_of(objs, where):
    """{(folder, file): {(folder, file): sorted symbols}}"""
    edges = {}
    for key, (_, undefined) in objs.items():
        out = edges.setdefault(key, {})
        for sym in undefined:
            for d in resolve(key, sym, where):
                out.setdefault(d, set()).add(sym)
    return edges


def components(nodes, succ):
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(succ[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(succ[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    result.append(sorted(comp))
    return result


def one_cycle(comp, succ):
    """A shortest circle through the component's first file (breadth first)."""
    members = set(comp)
    start = comp[0]
    prev = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(succ[node]):
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    return [start]


def check_folder(folder, objs, edges):
    """The problems of one folder, as lines."""
    problems = []
    if folder not in LAYERS:
        problems.append(f"src/{folder}: no layer rule: add it to LAYERS in {sys.argv[0]}")
    files = sorted(k for k in objs if k[0] == folder)
    succ = {k: {d for d in edges[k] if d[0] == folder} for k in files}
    for comp in components(files, succ):
        path = one_cycle(comp, succ)
        steps = []
        for a, b in zip(path, path[1:]):
            syms = sorted(edges[a][b])
            more = f" +{len(syms) - 2}" if len(syms) > 2 else ""
            steps.append(f"{a[1]} -> {b[1]} ({', '.join(syms[:2])}{more})")
        problems.append(f"src/{folder}: circle of {len(comp)} files "
                        f"({' '.join(k[1] for k in comp)}):\n    " + "\n    ".join(steps))
    allowed = LAYERS.get(folder, set())
    for k in files:
        for d, syms in sorted(edges[k].items()):
            if d[0] != folder and d[0] not in allowed:
                problems.append(f"src/{folder}/{k[1]} uses src/{d[0]}/{d[1]} "
                                f"({', '.join(sorted(syms))}): src/{folder} may use only "
                                f"{', '.join('src/' + a for a in sorted(allowed)) or 'itself'}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default="build", help="build directory (build)")
    ap.add_argument("--only", help="check only these folders (comma separated: api,cli)")
    args = ap.parse_args()
    objs = load(args.build)
    edges = edges_of(objs, definers(objs))
    folders = sorted({k[0] for k in objs})
    if args.only:
        wanted = [f for f in args.only.split(",") if f]
        unknown = [f for f in wanted if f not in folders]
        if unknown:
            sys.exit(f"circles: no objects of src/{', src/'.join(unknown)} in {args.build}")
        folders = wanted
    problems = []
    for folder in folders:
        problems += check_folder(folder, objs, edges)
    for p in problems:
        print(p)
    if problems:
        print(f"circles: {len(problems)} problem(s) in {args.build}")
        return 1
    print(f"circles: no circle, no layer crossed in src/{{{','.join(folders)}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
