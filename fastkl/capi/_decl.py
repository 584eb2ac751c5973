"""The C API's declarations: ``fastkl.cdef`` and the divergence registry.

``fastkl.cdef`` holds the status codes, the forms and the functions that are not divergences;
its ``@divergences`` line becomes one pair of prototypes (float32, float64) per divergence the
registry exports (``fastkl.divergences``: ``Divergence.in_capi``), all of one signature.
Everything else derives from that text: the public header ``include/fastkl.h`` (the file with
an include guard and C++ linkage around it), the status codes and forms the cfuncs return and
check, ``fastkl_strerror``'s messages, and the list of exported functions the library builder
wraps. Only ``#define NAME <int> /* comment */`` lines and one-line prototypes are parsed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .._math import LOG_PROBS, LOGITS, PROBS
from ..divergences import REGISTRY

CDEF_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fastkl.cdef")

_DEFINE = re.compile(r"^#define\s+(FASTKL_\w+)\s+(-?\d+)\s*(?:/\*\s*(.*?)\s*\*/)?\s*$")
_PROTO = re.compile(r"^([\w ]+?[\s*]+)(fastkl_\w+)\((.*)\);\s*$")


@dataclass(frozen=True)
class Param:
    ctype: str  # "const double *", "int64_t", "int"
    name: str


@dataclass(frozen=True)
class Function:
    name: str
    restype: str
    params: tuple[Param, ...]

    @property
    def is_divergence(self) -> bool:
        """A row-wise divergence backed by a numba cfunc (the others are plain C)."""
        return self.name.endswith(("_f32", "_f64"))

    def prototype(self, name: str | None = None) -> str:
        args = ", ".join(_join(p.ctype, p.name) for p in self.params) or "void"
        return f"{_join(self.restype, name or self.name)}({args})"


def _join(ctype: str, name: str) -> str:
    return f"{ctype}{name}" if ctype.endswith("*") else f"{ctype} {name}"


def _parse_param(text: str) -> Param:
    m = re.fullmatch(r"\s*(.*?[\s*])(\w+)\s*", text)
    if m is None:
        raise ValueError(f"fastkl.cdef: cannot parse parameter {text!r}")
    ctype = re.sub(r"\s+", " ", m.group(1)).strip()
    ctype = re.sub(r"\s*\*", " *", ctype)
    return Param(ctype, m.group(2))


def _parse(text: str) -> tuple[dict[str, tuple[int, str]], tuple[Function, ...]]:
    defines: dict[str, tuple[int, str]] = {}
    functions = []
    for line in text.splitlines():
        m = _DEFINE.match(line)
        if m:
            defines[m.group(1)] = (int(m.group(2)), m.group(3) or "")
            continue
        m = _PROTO.match(line)
        if m:
            restype = re.sub(r"\s*\*", " *", m.group(1).strip())
            args = m.group(3).strip()
            params = () if args == "void" else tuple(_parse_param(a) for a in args.split(","))
            functions.append(Function(m.group(2), restype, params))
    return defines, tuple(functions)


_MARKER = re.compile(r"^/\* @divergences\b.*\*/\n", re.M)


def _divergence_prototypes() -> str:
    """The prototypes of the exported divergences, from the registry."""
    blocks = []
    for spec in REGISTRY:
        if spec.c_name is None:
            continue
        lines = [f"/* {spec.summary}. */"]
        for ctype, suffix in (("float", "f32"), ("double", "f64")):
            if spec.reads_q:
                sides = f"const {ctype} *p, const {ctype} *q, int64_t n, int64_t k, "
                sides += "int64_t ldp, int64_t ldq, int p_form, int q_form"
            else:
                sides = f"const {ctype} *p, int64_t n, int64_t k, int64_t ldp, int p_form"
            lines.append(f"int {spec.c_name}_{suffix}({sides}, {ctype} *out);")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


with open(CDEF_PATH, encoding="utf-8") as _f:
    CDEF = _MARKER.sub(lambda m: _divergence_prototypes(), _f.read(), count=1)

_DEFINES, FUNCTIONS = _parse(CDEF)

#: the functions backed by cfuncs, in the order the library's table holds them
DIVERGENCE_FUNCTIONS = tuple(f for f in FUNCTIONS if f.is_divergence)

#: status name -> (code, message), in the order of the declarations
STATUS = {
    name: entry
    for name, entry in _DEFINES.items()
    if name.startswith(("FASTKL_OK", "FASTKL_ERR_"))
}
FORM_CODES = {name: code for name, (code, _) in _DEFINES.items() if name not in STATUS}

OK = STATUS["FASTKL_OK"][0]
ERR_NULL = STATUS["FASTKL_ERR_NULL"][0]
ERR_N = STATUS["FASTKL_ERR_N"][0]
ERR_K = STATUS["FASTKL_ERR_K"][0]
ERR_STRIDE = STATUS["FASTKL_ERR_STRIDE"][0]
ERR_OVERFLOW = STATUS["FASTKL_ERR_OVERFLOW"][0]
ERR_FORM = STATUS["FASTKL_ERR_FORM"][0]
ERR_THREADS = STATUS["FASTKL_ERR_THREADS"][0]
ERR_INIT = STATUS["FASTKL_ERR_INIT"][0]

# The C forms are the kernels' own codes: a mismatch would score every call in the wrong form.
if FORM_CODES != {"FASTKL_PROBS": PROBS, "FASTKL_LOG_PROBS": LOG_PROBS, "FASTKL_LOGITS": LOGITS}:
    raise ImportError(f"fastkl.cdef: forms {FORM_CODES} differ from fastkl._math's codes")


def strerror(status: int) -> str:
    """The message ``fastkl_strerror`` returns for ``status``."""
    for code, message in STATUS.values():
        if code == status:
            return message
    return "unknown fastkl status code"


def header() -> str:
    """The text of ``include/fastkl.h``: the declarations, self-contained C99 and C++-ready."""
    body = CDEF.strip("\n")
    return (
        "/* fastkl.h: the fastkl C API. Generated from fastkl/capi/fastkl.cdef and the\n"
        " * divergence registry (fastkl/divergences.py) by\n"
        " * `fastkl build-capi --header-only --outdir .`: edit those files, not this one. */\n"
        "#ifndef FASTKL_H\n"
        "#define FASTKL_H\n"
        "\n"
        "#include <stdint.h>\n"
        "\n"
        "#ifdef __cplusplus\n"
        'extern "C" {\n'
        "#endif\n"
        "\n"
        f"{body}\n"
        "\n"
        "#ifdef __cplusplus\n"
        "}\n"
        "#endif\n"
        "\n"
        "#endif /* FASTKL_H */\n"
    )
