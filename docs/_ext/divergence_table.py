"""Sphinx extension: the table of divergences, written from fastkl's registry.

``fastkl.divergences.REGISTRY`` holds one frozen spec per divergence: its public, C and CLI
names and aliases, summary, formula, range (``bounds``), whether it reads q, whether its
inputs are measures, whether it takes ``base``, its post step. At the start of each build
this writes ``_generated/divergences.rst`` (two list-tables) from it, which
``divergences.rst`` includes, so the docs list exactly what the code registers. The file is
rewritten only when its text changes, so an unchanged registry rebuilds nothing.
"""

from __future__ import annotations

import os
import re
from typing import Any

#: What a spec's ``post`` step does to a row's value.
POST = {"none": "none", "clamp": "clamped at 0", "sqrt": "square root (of the value clamped at 0)"}


def _text(value: str) -> str:
    """Plain text in a table cell, with reStructuredText's markup characters escaped."""
    return re.sub(r"([\\`*_|<>\[\]])", r"\\\1", value)


def _literal(value: str) -> str:
    return f"``{value}``"


def _cell(lines: list[str], first: bool, text: str) -> None:
    lines.append(f"   {'* -' if first else '  -'} {text}")


def render(registry: Any) -> str:
    """The reStructuredText of the two tables for the specs in ``registry``."""
    lines = [
        ".. This file is written by docs/_ext/divergence_table.py from",
        "   fastkl.divergences.REGISTRY at each build. Do not edit it.",
        "",
        ".. list-table:: The row-wise divergences",
        "   :header-rows: 1",
        "   :widths: 16 30 32 10 12",
        "",
    ]
    headers = ("function", "what", "per distribution", "range", "post step")
    for i, header in enumerate(headers):
        _cell(lines, i == 0, header)
    for spec in registry:
        summary = spec.summary if spec.summary.endswith(".") else spec.summary + "."
        inputs = "" if spec.reads_q else " Reads p only."
        if not spec.uses_base:
            inputs += " No ``base`` keyword."
        if spec.measures:
            inputs += " Inputs need not sum to 1."
        _cell(lines, True, f":func:`fastkl.{spec.name}`")
        _cell(lines, False, _text(summary) + inputs)
        _cell(lines, False, f":math:`{spec.formula}`")
        _cell(lines, False, _text(spec.bounds))
        _cell(lines, False, POST.get(spec.post, _text(spec.post)))
    lines += [
        "",
        ".. list-table:: Their names in the C API and the command line",
        "   :header-rows: 1",
        "   :widths: 18 34 26 22",
        "",
    ]
    headers = ("Python", "C API (``fastkl.h``)", "``fastkl score --divergence``", "aliases")
    for i, header in enumerate(headers):
        _cell(lines, i == 0, header)
    for spec in registry:
        c_api = (
            f"{_literal(spec.c_name + '_f32')}, {_literal(spec.c_name + '_f64')}"
            if spec.c_name
            else "not in the C API"
        )
        cli = _literal(spec.cli_name) if spec.cli_name else "not in the CLI"
        aliases = ", ".join(_literal(a) for a in spec.aliases) or "none"
        _cell(lines, True, f"``fastkl.{spec.name}``")
        _cell(lines, False, c_api)
        _cell(lines, False, cli)
        _cell(lines, False, aliases)
    return "\n".join(lines) + "\n"


def write_table(app: Any) -> None:
    from fastkl.divergences import REGISTRY

    path = os.path.join(app.srcdir, "_generated", "divergences.rst")
    text = render(REGISTRY)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", write_table)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
