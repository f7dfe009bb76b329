"""Nests of arrays <-> (flat dict of arrays, JSON structure), restored into a template.

A checkpoint must be readable without running code from it, so it never
names a class to import: the structure is plain JSON (dicts, lists, leaf
descriptions) and the arrays sit in an ``.npz`` read with
``allow_pickle=False``. Restoring walks a *template* (the state a freshly
built run starts from) alongside the stored structure, so the run's own
classes are reused and any mismatch (a changed model, another aggregator)
is reported with its path instead of loading silently.
"""
from __future__ import annotations

from typing import Any, Mapping

import attrs
import numpy as np


class StructureMismatchError(ValueError):
    """The stored state does not fit the run's state (path, what was stored, what the run has)."""


_PY_SCALARS = {bool: "bool", int: "int", float: "float"}


def flatten(tree: Any) -> tuple[dict[str, np.ndarray], Any]:
    """``(arrays, structure)``: every numeric leaf as an array keyed ``leaf_N``; the rest as JSON."""
    arrays: dict[str, np.ndarray] = {}

    def visit(node: Any) -> Any:
        if node is None:
            return {"kind": "none"}
        if isinstance(node, str):
            return {"kind": "str", "value": node}
        if attrs.has(type(node)):
            fields = [f.name for f in attrs.fields(type(node)) if f.init]
            return {"kind": "attrs", "class": type(node).__name__,
                    "fields": {name: visit(getattr(node, name)) for name in fields}}
        if isinstance(node, Mapping):
            _check_keys(node)
            return {"kind": "dict", "items": {key: visit(value) for key, value in node.items()}}
        if isinstance(node, (list, tuple)):
            return {"kind": type(node).__name__, "items": [visit(value) for value in node]}
        key = f"leaf_{len(arrays)}"
        if type(node) in _PY_SCALARS:
            arrays[key] = np.asarray(node)
            return {"kind": _PY_SCALARS[type(node)], "key": key}
        array = np.asarray(node)
        if array.dtype == object:
            raise TypeError(f"cannot checkpoint a leaf of type {type(node).__name__}: {node!r}")
        arrays[key] = array
        kind = "numpy_scalar" if isinstance(node, np.generic) else "array"
        return {"kind": kind, "key": key, "dtype": array.dtype.str, "shape": list(array.shape)}

    return arrays, visit(tree)


def restore(template: Any, structure: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """A tree shaped like ``template`` holding the stored values; raises ``StructureMismatchError``."""

    def fail(path: str, stored: str, expected: str) -> None:
        raise StructureMismatchError(f"at {path or '(root)'}: checkpoint has {stored}, the run has {expected}")

    def visit(node: Any, spec: Any, path: str) -> Any:
        kind = spec.get("kind") if isinstance(spec, dict) else None
        if node is None or isinstance(node, str):
            expected = {"kind": "none"} if node is None else {"kind": "str", "value": node}
            if spec != expected:
                fail(path, _describe(spec), _describe(expected))
            return node
        if attrs.has(type(node)):
            names = [f.name for f in attrs.fields(type(node)) if f.init]
            if kind != "attrs" or sorted(spec["fields"]) != sorted(names):
                fail(path, _describe(spec), f"{type(node).__name__} with fields {names}")
            values = {n: visit(getattr(node, n), spec["fields"][n], f"{path}.{n}".lstrip(".")) for n in names}
            return attrs.evolve(node, **values)
        if isinstance(node, Mapping):
            if kind != "dict" or sorted(spec["items"]) != sorted(node):
                fail(path, _describe(spec), f"a dict with keys {sorted(node)}")
            return type(node)(
                (k, visit(v, spec["items"][k], f"{path}.{k}".lstrip("."))) for k, v in node.items()
            )
        if isinstance(node, (list, tuple)):
            if kind != type(node).__name__ or len(spec["items"]) != len(node):
                fail(path, _describe(spec), f"a {type(node).__name__} of {len(node)}")
            return type(node)(visit(v, s, f"{path}[{i}]") for i, (v, s) in enumerate(zip(node, spec["items"])))
        return _restore_leaf(node, spec, arrays, path, fail)

    return visit(template, structure, "")


def _restore_leaf(node: Any, spec: Any, arrays: Mapping[str, np.ndarray], path: str, fail) -> Any:
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if type(node) in _PY_SCALARS:
        stored = arrays.get(spec.get("key")) if kind == _PY_SCALARS[type(node)] else None
        if stored is None or stored.shape != ():
            fail(path, _describe(spec), f"a Python {type(node).__name__}")
        return type(node)(stored.item())
    expected = np.asarray(node)
    value = arrays.get(spec.get("key")) if kind in ("array", "numpy_scalar") else None
    if value is None or value.dtype != expected.dtype or value.shape != expected.shape:
        fail(path, _describe(spec), f"{expected.dtype} array of shape {list(expected.shape)}")
    return value[()] if isinstance(node, np.generic) else value


def _describe(spec: Any) -> str:
    if not isinstance(spec, dict):
        return repr(spec)
    kind = spec.get("kind")
    if kind in ("array", "numpy_scalar"):
        return f"{np.dtype(spec['dtype'])} array of shape {spec['shape']}"
    if kind == "attrs":
        return f"{spec['class']} with fields {list(spec['fields'])}"
    if kind == "dict":
        return f"a dict with keys {sorted(spec['items'])}"
    if kind in ("list", "tuple"):
        return f"a {kind} of {len(spec['items'])}"
    if kind == "str":
        return f"the string {spec['value']!r}"
    return f"a {kind}"


def _check_keys(node: Mapping) -> None:
    for key in node:
        if not isinstance(key, str):
            raise TypeError(f"checkpointed dicts need string keys, got {key!r}")
