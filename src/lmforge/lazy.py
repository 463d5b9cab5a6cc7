"""Package faces that cost nothing to import (PEP 562 module `__getattr__`).

A capability's `__init__.py` declares its public names once, as ordinary imports under
`if TYPE_CHECKING:` (what editors and type checkers read), plus the `__all__` list. At run time those
imports never execute: `lazy_exports` reads the same import statements from the package's source the
first time a name is asked for, imports only the module that defines it, and caches the value on the
package. So `import lmforge.data` loads no submodule (and no torch), `from lmforge.data import load_data`
loads one, and the type checker and the runtime cannot disagree about where a name lives.
(scientific-python's lazy_loader.attach_stub does the same from a .pyi stub.)

    from typing import TYPE_CHECKING
    from lmforge.lazy import lazy_exports

    if TYPE_CHECKING:
        from lmforge.data.load import LoadResult, load_data

    __all__ = ["LoadResult", "load_data"]
    __getattr__, __dir__ = lazy_exports(__name__)

A public name must not equal a submodule's name (`prune` in a package with prune.py): importing that
submodule would bind the module to the name on the package and hide the function. tests/test_public_api.py
checks this, and that `__all__` equals the TYPE_CHECKING imports, for every face.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def type_checking_imports(package: str) -> dict[str, tuple[str, str]]:
    """Public name -> (module, name in that module), from the `from X import Y [as Z]` statements under
    `if TYPE_CHECKING:` in the package's `__init__.py`."""
    source = Path(sys.modules[package].__file__ or "").read_text(encoding="utf-8")
    origins: dict[str, tuple[str, str]] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.If) and _is_type_checking(node.test)):
            continue
        for statement in node.body:
            if isinstance(statement, ast.ImportFrom) and statement.module and statement.level == 0:
                for alias in statement.names:
                    origins[alias.asname or alias.name] = (statement.module, alias.name)
    return origins


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def lazy_exports(package: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of a package whose public names are its TYPE_CHECKING imports."""
    origins: dict[str, tuple[str, str]] = {}

    def known() -> dict[str, tuple[str, str]]:
        if not origins:
            origins.update(type_checking_imports(package))
        return origins

    def __getattr__(name: str) -> Any:
        origin = known().get(name)
        if origin is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(origin[0]), origin[1])
        setattr(sys.modules[package], name, value)  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(known()))

    return __getattr__, __dir__
