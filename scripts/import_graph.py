"""The import graph of ``pneumo``, for the structure rule "imports one way, no cycles".

Prints the package-level arrows (``pneumo.data`` → ``pneumo.models`` ...), every cycle between
packages and between modules (strongly connected components of more than one node), and how many
internal imports sit inside functions. ``tests/test_import_graph.py`` asserts the same rules.

    python scripts/import_graph.py [SRC_DIR] [--json]
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import grimp

# The model registry's plugin pattern: `pneumo.models.registry` imports the architectures so they
# register, and they import the registry's decorator. The one cycle the structure rule allows.
ALLOWED_MODULE_CYCLES = [{"pneumo.models.registry", "pneumo.models.compact", "pneumo.models.ensemble",
                          "pneumo.models.scratch", "pneumo.models.backbones"}]


def strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm (iterative): the components with more than one node, i.e. the cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[set[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def analyse(src: Path | None = None) -> dict:
    """Module and package graphs of ``pneumo`` (from ``src`` when given, else the installed one)."""
    if src is not None:
        sys.path.insert(0, str(src))
    graph = grimp.build_graph("pneumo", exclude_type_checking_imports=True, cache_dir=None)
    modules = set(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules}
    pkg_edges: dict[str, set[str]] = {}
    for m, targets in edges.items():
        for t in targets:
            a, b = package_of(m), package_of(t)
            if a != b and a != "pneumo" and b != "pneumo":
                pkg_edges.setdefault(a, set()).add(b)
    packages = {package_of(m) for m in modules} - {"pneumo"}
    module_cycles = strongly_connected(modules, edges)
    allowed = [c for c in module_cycles if any(c <= a for a in ALLOWED_MODULE_CYCLES)]
    pkg_dir = src / "pneumo" if src is not None else _package_dir()
    inside, total = _function_level_imports(pkg_dir)
    return {
        "modules": len(modules),
        "module_imports": sum(len(v) for v in edges.values()),
        "package_edges": {k: sorted(v) for k, v in sorted(pkg_edges.items())},
        "package_cycles": [sorted(c) for c in strongly_connected(packages, pkg_edges)],
        "module_cycles": [sorted(c) for c in module_cycles if c not in allowed],
        "allowed_module_cycles": [sorted(c) for c in allowed],
        "internal_imports_inside_functions": inside,
        "internal_imports": total,
        "lines": sum(len(p.read_text().splitlines()) for p in pkg_dir.rglob("*.py")),
    }


def _package_dir() -> Path:
    import pneumo

    return Path(pneumo.__file__).parent


def _function_level_imports(pkg: Path) -> tuple[int, int]:
    """(internal imports inside a function body, all internal imports) over the package's files."""
    inside = total = 0
    for path in pkg.rglob("*.py"):
        tree = ast.parse(path.read_text())
        nested = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                  for n in ast.walk(f) if isinstance(n, ast.Import | ast.ImportFrom)}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            relative = isinstance(node, ast.ImportFrom) and node.level > 0
            internal = relative or any(n.startswith("pneumo") for n in names)
            if internal:
                total += 1
                inside += id(node) in nested
    return inside, total


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv and not argv[0].startswith("--") else None
    report = analyse(src)
    if "--json" in argv:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['modules']} modules, {report['module_imports']} internal module imports, {report['lines']} lines")
    inside, total = report["internal_imports_inside_functions"], report["internal_imports"]
    print(f"internal imports inside functions: {inside} of {total}")
    print("package arrows:")
    for a, bs in report["package_edges"].items():
        print(f"  {a} -> {', '.join(bs)}")
    print("package cycles:", report["package_cycles"] or "none")
    print("module cycles:", report["module_cycles"] or "none")
    print("allowed (registry plugin pattern):", report["allowed_module_cycles"] or "none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
