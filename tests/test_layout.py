"""The package's layout holds its design: no import cycles, the network apart from processes,
command-line modules that do not import each other, and files and functions of a readable size."""
import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "alexnet_mp")


def modules():
    """{dotted module name: path} of every module of the package."""
    found = {}
    for d, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = os.path.join(d, f)
    return found


def imports(path, name, known):
    """The package's modules that the module at `path` imports (anywhere in it, lazily too)."""
    tree = ast.parse(open(path).read())
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known}
    return out - {name}


def graph():
    known = modules()
    edges = {name: imports(path, name, known) for name, path in known.items()}
    # A package's face re-exporting its children is not a cycle: it imports them, they never need it.
    for name in known:
        edges[name] = {t for t in edges[name] if not (known[t].endswith("__init__.py") and name.startswith(t + "."))}
    return known, edges


def test_no_module_of_the_package_is_in_an_import_cycle():
    known, edges = graph()
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"
    for node in sorted(known):
        if node not in state:
            visit(node)
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path, monkeypatch):
    """The test above can fail: two modules that import each other are reported."""
    pkg = tmp_path / "alexnet_mp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from alexnet_mp.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from alexnet_mp import a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", str(pkg))
    with pytest.raises(AssertionError, match="alexnet_mp.a -> alexnet_mp.b -> alexnet_mp.a"):
        test_no_module_of_the_package_is_in_an_import_cycle()


def reachable(start, edges):
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += edges[node]
    return seen


def test_nothing_under_model_imports_torch_distributed_even_indirectly():
    """Processes are `alexnet_mp.distributed`'s business: the network and its table stay usable without them."""
    known, edges = graph()
    under_model = [n for n in known if n.startswith("alexnet_mp.model")]
    assert len(under_model) >= 4
    for name in under_model:
        for dep in reachable(name, edges):
            assert dep.split(".")[1] in ("model", "config", "errors"), (name, dep)
            tree = ast.parse(open(known[dep]).read())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            assert not [n for n in names if n.startswith("torch.distributed")], dep


def test_command_line_modules_do_not_import_each_other():
    known, edges = graph()
    for name in known:
        if name.startswith("alexnet_mp.cli."):
            assert not [t for t in edges[name] if t.startswith("alexnet_mp.cli.")], name
            assert not [n for n in known if n != name and name in edges[n] and not n.startswith("alexnet_mp.cli")]


def test_files_and_functions_stay_readable():
    """Under about 400 lines a file and 60 a function (docstrings included)."""
    for name, path in modules().items():
        text = open(path).read()
        assert text.count("\n") <= 400, (name, text.count("\n"))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= 60, (name, node.name)


def test_evaluation_and_everything_below_training_never_import_it():
    """Training validates with `eval`; `eval`, `data`, `distributed` and the shared modules must
    not need `train` back, or the layers would be one."""
    known, edges = graph()
    for name in known:
        if name.split(".")[1:2] and name.split(".")[1] in ("eval", "data", "distributed", "model", "caffe",
                                                            "checkpoint", "numerics", "files", "config"):
            assert not [t for t in edges[name] if t.startswith("alexnet_mp.train")], name
