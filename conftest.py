"""Collection settings for the whole tree (the doctests of ``fastkl/`` included)."""

import importlib.util

# fastkl.dask needs the optional extra "dask": without it, its doctests are not collected
# (tests/test_dask.py skips itself).
collect_ignore = [] if importlib.util.find_spec("dask") else ["fastkl/dask.py"]
