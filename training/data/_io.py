"""Safe file loading and validation helpers shared by the dataset loaders.

Dataset files from the field are pickles more often than not (``torch.save``
of a dict, ``np.save`` of a dict). Unpickling runs arbitrary code, so every
loader here goes through one of two gates:

* :func:`load_torch_file` (the stream layer's, :mod:`neuroimagen.stream.readers`)
  calls ``torch.load(weights_only=True)``, whose unpickler only rebuilds
  tensors and plain containers (dict, list, tuple, str, int, float, bool,
  None); a pickled class or function is refused.
* :func:`load_npy` reads ``.npy`` files; a plain numeric array is read with
  ``allow_pickle=False``. An object array (``np.save`` of a dict, the format
  of Things-EEG2's preprocessed files) is read by a restricted unpickler that
  rebuilds numpy arrays, dtypes and plain containers only, never
  ``np.load(allow_pickle=True)``, which would run whatever the file asks.

Every failure is a :class:`DatasetFileError` that names the file and, where
there is one, the key.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neuroimagen.stream.readers import DataFileError, load_torch_file, require_keys

__all__ = [
    "DatasetFileError",
    "collate_samples",
    "load_npy",
    "load_torch_file",
    "require_file",
    "require_keys",
]


#: The one error type of every file reader (``stream.readers.DataFileError``).
DatasetFileError = DataFileError


def require_file(path: str | Path, what: str = "dataset file") -> Path:
    """``path`` as a Path, or :class:`DatasetFileError` if it is not an existing file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetFileError(f"{what} not found: {p}")
    return p


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- numpy


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals an ``np.save``'d dict of arrays needs, under numpy 1.x and 2.x names."""
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays/dtypes/scalars and builtin containers only."""

    def __init__(self, file: Any, source: Path) -> None:
        super().__init__(file)
        self._source = source
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise DatasetFileError(
            f"{self._source}: refused to load: it pickles {module}.{name}; only numpy arrays "
            f"and plain containers (dict, list, str, numbers) are accepted"
        )


def load_npy(path: str | Path, mmap_mode: str | None = None) -> Any:
    """Read a ``.npy`` file safely.

    Parameters
    ----------
    path : path
    mmap_mode : {None, "r"}
        Memory-map a plain numeric array (large fMRI betas).

    Returns
    -------
    ndarray | object
        A numeric array as is; for an object array (``np.save`` of a dict or
        list) the unpickled object, rebuilt by a restricted unpickler (numpy
        arrays and plain containers only). A 0-d object array is unwrapped, as
        ``np.load(...).item()`` would.

    Raises
    ------
    DatasetFileError
        Missing, truncated or non-``.npy`` file, or a pickle of anything else.
    """
    p = require_file(path)
    fmt = np.lib.format
    with open(p, "rb") as fh:
        try:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except ValueError as exc:
            raise DatasetFileError(f"{p}: not a .npy file: {_first_line(exc)}") from None
        if not dtype.hasobject:
            fh.seek(0)
            try:
                return np.load(fh if mmap_mode is None else p, allow_pickle=False, mmap_mode=mmap_mode)
            except (ValueError, OSError, EOFError) as exc:
                raise DatasetFileError(
                    f"{p}: truncated or corrupt .npy file: {_first_line(exc)}"
                ) from None
        # unpickle straight from the file: no second in-memory copy of a multi-GB payload
        try:
            obj = _ArrayOnlyUnpickler(fh, p).load()
        except DatasetFileError:
            raise
        except Exception as exc:  # any unpickling failure of a malformed stream
            raise DatasetFileError(
                f"{p}: truncated or corrupt pickled .npy payload: {_first_line(exc)}"
            ) from None
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.ndim == 0:
        return obj.item()
    if isinstance(obj, np.ndarray) and obj.shape != tuple(shape):
        raise DatasetFileError(f"{p}: header says shape {shape}, payload has {obj.shape}")
    return obj


# --------------------------------------------------------------------------- batching


def collate_samples(batch: list[Mapping[str, Any]]) -> dict[str, Any]:
    """``DataLoader`` collate for the loaders' dict samples.

    Tensors are stacked, numbers become tensors, everything else (str, None)
    is kept as a list, so samples with ``image_path=None`` batch cleanly
    (``torch``'s default collate refuses None).
    """
    import torch

    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        first = values[0]
        if isinstance(first, torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(first, bool | int | float) and all(
            isinstance(v, bool | int | float) for v in values
        ):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out
