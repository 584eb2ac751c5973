"""Sphinx configuration for fastkl's documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (what CI runs).
The API reference is autodoc over the installed package (imports only: no kernel compiles);
the table of divergences is written from ``fastkl.divergences.REGISTRY`` at each build
(``_ext/divergence_table.py``).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

# fastkl's package __init__ loads its public names lazily: this imports no numba.
from fastkl import __version__

project = "fastkl"
author = "the fastkl authors"
copyright = "fastkl authors, BSD-3-Clause"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "divergence_table",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
# _generated holds pages written by the build (the divergence table), included by others.
exclude_patterns = ["_build", "_generated"]
templates_path: list[str] = []

# autodoc: signatures as written; numpydoc renders the docstrings' sections.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autosummary_generate = False  # summary tables only; the pages hold the autodoc entries
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

default_role = "code"  # `x` in the guides reads as code, as in the README

html_theme = "alabaster"
html_title = f"fastkl {release}"
html_theme_options = {
    "description": "KL divergence and its family, row by row, at the speed of memory",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
