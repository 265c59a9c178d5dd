"""The package's modules import each other without cycles, and the typed config stays
below the layers it configures (read from the source: every import, deferred ones too)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "brain_tf"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the brain_tf modules it imports (``from pkg import name`` counts as the
    module ``pkg.name`` when there is one, else as ``pkg``)."""
    modules = _modules()

    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                if base.split(".")[0] == "brain_tf":
                    deps |= {known(f"{base}.{a.name}") if f"{base}.{a.name}" in modules
                             else known(base) for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {known(a.name) for a in node.names
                         if a.name.split(".")[0] == "brain_tf"}
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycles_are_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = import_graph()
    assert "brain_tf.data.shards" in graph and "brain_tf.preprocess.loader" in graph
    assert cycles(graph) == []


def test_typed_config_imports_no_pipeline_training_or_models():
    graph = import_graph()
    seen, todo = set(), ["brain_tf.schema"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    assert "brain_tf.augment_presets" in seen
    assert not [m for m in seen if m.split(".")[1] in ("pipeline", "training", "models")]


def test_every_module_imports_first():
    """Each module imports on its own as the first brain_tf import of a process (a
    package __init__ that imports a module which needs that package half-initialised
    fails only then). Third-party modules stay loaded between tries, so this is quick."""
    import subprocess
    import sys

    probe = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        f"for name in {sorted(_modules())!r}:\n"
        "    for key in [k for k in sys.modules if k == 'brain_tf' or k.startswith('brain_tf.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {exc!r}')\n"
        "print('\\n'.join(failed))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""
