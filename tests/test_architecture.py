"""The package's import graph: dependencies point one way (DESIGN §1) and there is no cycle.

Every import counts, also the ones inside functions (a lazy import is still a dependency). Each module
belongs to one layer; a module may import its own layer or a lower one. A new module must be given a
layer here, so its place in the design is a decision, not an accident.
"""
from __future__ import annotations

import ast
from pathlib import Path

import report_gen

PACKAGE = Path(report_gen.__file__).parent

# lowest first; the first matching prefix decides
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("report_gen.core", "report_gen.numeric", "report_gen.vocab", "report_gen.reportfile",
              "report_gen.runtime", "report_gen.parallel", "report_gen.safe_open")),
    ("readers", ("report_gen.readers", "report_gen.storage")),  # storage: URLs staged so the readers read local files
    ("facts", ("report_gen.facts", "report_gen.probe", "report_gen.hfprobe", "report_gen.monitor")),
    ("rules", ("report_gen.rules",)),
    ("engine", ("report_gen.config", "report_gen.selection", "report_gen.evidence", "report_gen.baseline",
                "report_gen.engine")),
    ("render", ("report_gen.render",)),
    ("entry", ("report_gen.cli", "report_gen.__main__", "report_gen.api", "report_gen.sweep",
               "report_gen.integrations", "report_gen")),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} has no layer in tests/test_architecture.py: decide where it belongs")


def imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("report_gen"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("report_gen"):
                continue
            out.add(target)
            for alias in node.names:  # `from report_gen import rules` imports the module report_gen.rules
                if (PACKAGE.parent / (target.replace(".", "/") + "/" + alias.name)).is_dir() or \
                        (PACKAGE.parent / (target.replace(".", "/") + "/" + alias.name + ".py")).is_file():
                    out.add(f"{target}.{alias.name}")
    out.discard(module)
    return out


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {t for t in imports(p, m) if t in modules} for m, p in modules.items()}


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_layers():
    upward = []
    for module, targets in graph().items():
        for target in targets:
            if target == "report_gen":  # the package itself only re-exports (its __version__)
                continue
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) -> {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports against the data flow:\n" + "\n".join(sorted(upward))


def test_the_import_graph_has_no_cycle():
    g = graph()
    # a package's __init__ importing its own submodules is how packages are built, not a cycle
    edges = {m: {t for t in ts if not (t.startswith(m + ".") and (PACKAGE.parent / m.replace(".", "/")).is_dir())}
             for m, ts in g.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_lazy_imports():
    # the engine imports evidence inside a function; the graph must still have that edge
    assert "report_gen.evidence" in graph()["report_gen.engine"]


def test_diagnosing_a_run_of_logs_only_never_imports_torch(tmp_path):
    """torch costs seconds to import (3.5 s of a 6 s diagnosis of 1M scalars when the HF self-probe and the
    attention facts imported it at module level): a run without checkpoints must not pay for it."""
    import subprocess
    import sys

    from builders.event_builders import make_scalar_event, make_version_event, write_records

    write_records(tmp_path / "run" / "events.out.tfevents.1",
                  [make_version_event()] + [make_scalar_event("train/loss", i, 1.0 / (i + 1)) for i in range(50)])
    code = ("import sys\nfrom report_gen.engine import Options, diagnose\n"
            f"diagnose([{str(tmp_path / 'run')!r}], Options())\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-800:]
    assert done.stdout.strip().splitlines()[-1] == "False"
