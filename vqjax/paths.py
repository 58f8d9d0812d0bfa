"""Paths given by users: `~` expanded and relative paths made absolute, once, at the entry point.

Orbax (and TensorStore under it) rejects relative checkpoint paths, and a relative path means
something else after a `chdir`; every workdir, data_dir and output path therefore goes through
`resolve` before the library uses it. Remote paths (`gs://...`, any `scheme://`) pass unchanged.
"""

from __future__ import annotations

import os


def is_remote(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def resolve(path: str | os.PathLike | None) -> str | None:
    """`path` with `~` expanded and made absolute (remote paths and None unchanged)."""
    if path is None:
        return None
    path = os.fspath(path)
    if not path or is_remote(path):
        return path
    return os.path.abspath(os.path.expanduser(path))
