"""A restricted unpickler: only numpy arrays/dtypes/scalars and builtin containers can be reconstructed.

Raw RFS pickles are opened once, here (docs/design.md §4).  Anything else (``os.system``, ``subprocess``, arbitrary
classes) is refused with a :class:`DataError` naming the file, before it can run.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from ..errors import DataError

_ALLOWED: dict[str, set[str]] = {
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.numeric": {"_frombuffer"},
    "_codecs": {"encode"},  # protocol-2 pickles written by Python 3 encode bytes this way
    # object: the base copyreg._reconstructor names for a plain container (protocols 0 and 1)
    "builtins": {"list", "dict", "tuple", "set", "frozenset", "int", "float", "str", "bytes", "bytearray", "bool",
                 "complex", "slice", "object"},
    "__builtin__": {"list", "dict", "tuple", "set", "frozenset", "int", "float", "str", "bytes", "bool", "object"},
    "copy_reg": {"_reconstructor"},
    "copyreg": {"_reconstructor"},
    "collections": {"OrderedDict"},
}


class RefusedGlobal(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            if module in ("copy_reg", "copyreg"):
                # only allow reconstructing builtin containers through copyreg
                return _safe_reconstructor
            return super().find_class(module, name)
        raise RefusedGlobal(f"{module}.{name}")


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    if cls not in (list, dict, tuple, set, object) or base not in (object, list, dict, tuple):
        raise RefusedGlobal(f"copyreg._reconstructor({cls!r})")
    return base.__new__(cls) if state is None else cls(state)


def safe_load(path: str | Path, encoding: str = "latin1") -> Any:
    """Load a pickle admitting only numpy arrays, dtypes and builtin containers."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path}: file is empty")
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except RefusedGlobal as e:
        raise DataError(f"{path}: refused to unpickle {e} (only numpy arrays and builtin containers are allowed; "
                        f"the file may be malicious)") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
            UnicodeDecodeError, MemoryError) as e:
        raise DataError(f"{path}: corrupt or truncated pickle ({type(e).__name__}: {e})") from None
