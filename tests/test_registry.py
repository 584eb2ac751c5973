"""The divergence registry is what every consumer reads; the package around it has no cycles."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import fastkl
from fastkl import _config, api, capi, divergences
from fastkl.divergences import REGISTRY, lookup

PACKAGE = os.path.dirname(os.path.abspath(fastkl.__file__))


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda s: s.name)
def test_every_spec_is_a_public_function_with_its_keywords(spec):
    fn = getattr(fastkl, spec.name)
    assert spec.name in fastkl.__all__
    assert fn.spec is spec
    params = inspect.signature(fn).parameters
    positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == (["p", "q"] if spec.reads_q else ["p"])
    assert ("q_form" in params) == spec.reads_q
    assert ("base" in params) == spec.uses_base
    assert list(params)[len(positional) :] == api.keywords(spec)
    assert spec.formula in fn.__doc__ and ">>>" in fn.__doc__  # its formula and an example
    assert "%(" not in fn.__doc__


def test_a_divergence_without_a_base_refuses_one():
    for spec in REGISTRY:
        if not spec.uses_base:
            with pytest.raises(TypeError, match="base"):
                getattr(fastkl, spec.name)([0.5, 0.5], [0.5, 0.5], base=2)


def test_names_and_aliases():
    assert [s.name for s in REGISTRY] == list(dict.fromkeys(s.name for s in REGISTRY))
    assert lookup("kl").name == "kl_div" and lookup("js").name == "js_div"
    assert lookup("sym").name == "sym_kl"
    assert lookup("js_distance").terms is lookup("js_div").terms
    with pytest.raises(ValueError, match="divergence: expected one of 'kl_div'"):
        lookup("kl_divergence")
    with pytest.raises(ValueError):
        lookup(None)


def test_the_c_api_exports_what_the_registry_says():
    exported = {f.name for f in capi.FUNCTIONS if f.is_divergence}
    expected = {f"{s.c_name}_{t}" for s in REGISTRY if s.in_capi for t in ("f32", "f64")}
    assert exported == expected
    for f in capi.FUNCTIONS:
        if f.is_divergence:
            spec = lookup(f.name[len("fastkl_") : -4])
            assert ("q" in [p.name for p in f.params]) == spec.reads_q


def test_the_command_line_and_dask_take_every_two_sided_divergence():
    from fastkl import cli

    two_sided = [s.name for s in REGISTRY if s.reads_q]
    assert list(cli._SCORED) == two_sided
    for spec in REGISTRY:
        for name in (spec.name, *spec.aliases):
            if spec.reads_q:
                assert cli._divergence(name) == spec.name
    dask = pytest.importorskip("fastkl.dask")
    assert {s.name for s in REGISTRY} <= set(dask.__all__)


def test_post_steps_match_the_values():
    p, q = np.array([0.1, 0.9]), np.array([0.4, 0.6])
    for spec in REGISTRY:
        if spec.post == "sqrt":
            base = [s for s in REGISTRY if s.terms is spec.terms and s.post != "sqrt"]
            if not base:  # a distance without a public square (hellinger)
                continue
            root = np.sqrt(getattr(fastkl, base[0].name)(p, q))
            assert getattr(fastkl, spec.name)(p, q) == root


def test_an_unbound_placeholder_raises():
    placeholder = _config.Unbound("a test's flag")
    namespace = {"FLAG": placeholder}
    exec("def template(x):\n    return x if FLAG else -x\n", namespace)
    with pytest.raises(TypeError, match=r"leaves \['FLAG'\] unbound"):
        _config.specialize(namespace["template"], "t", {})
    assert _config.specialize(namespace["template"], "t", {"FLAG": True})(3) == 3
    with pytest.raises(TypeError, match="unbound template placeholder"):
        namespace["template"](3)  # the template itself never computes with a stand-in


def _module_imports(path: str) -> set[str]:
    """The package modules ``path`` imports when it is imported (module level only)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = os.path.relpath(os.path.dirname(path), os.path.dirname(PACKAGE)).replace("/", ".")
    found = set()
    for node in tree.body:
        nodes = [node]
        if isinstance(node, ast.If) and not (
            isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        ):
            nodes = node.body + node.orelse
        if isinstance(node, ast.Try):
            nodes = node.body
        for n in nodes:
            if isinstance(n, ast.ImportFrom) and n.level:
                base = package.rsplit(".", n.level - 1)[0] if n.level > 1 else package
                module = f"{base}.{n.module}" if n.module else base
                if n.module:
                    found.add(module)
                else:
                    found.update(f"{module}.{alias.name}" for alias in n.names)
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace("/", ".")
                graph[rel.removesuffix(".__init__")] = _module_imports(path)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import cycle of ``graph`` (module -> the package modules it imports), or None."""
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt in graph and state.get(nxt) == 1:
                return [*stack, node, nxt]
            if nxt in graph and nxt not in state:
                found = visit(nxt, [*stack, node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_no_import_cycle_in_the_package():
    graph = _graph()
    assert "fastkl._prepare" in graph["fastkl._driver"]  # the graph sees relative imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_check_can_fail():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    graph = _graph()
    graph["fastkl._prepare"] = graph["fastkl._prepare"] | {"fastkl._driver"}  # the old layout
    assert _cycle(graph) is not None


def test_backends_do_not_import_the_driver_and_the_driver_imports_no_backend():
    graph = _graph()
    for backend in ("fastkl._backend_cpu", "fastkl._cuda_driver", "fastkl._cuda"):
        assert "fastkl._driver" not in graph[backend], backend
    code = (
        "import sys, fastkl._driver\n"
        "loaded = [m for m in ('fastkl._backend_cpu', 'fastkl._cuda_driver', 'fastkl._cpu',"
        " 'fastkl._cpu_family', 'numba.cuda') if m in sys.modules]\n"
        "print(loaded)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_the_docs_table_reads_the_registry():
    # every field the documentation's table prints exists on every spec
    for spec in divergences.REGISTRY:
        assert spec.summary and spec.formula and spec.post in ("none", "clamp", "sqrt")
        assert spec.c_name is None or spec.c_name == f"fastkl_{spec.name}"
