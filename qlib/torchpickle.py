"""Read legacy PyTorch ``.pth`` weight files into numpy, without torch and without running code.

A ``.pth`` file is a pickle, and a plain ``pickle.load`` runs whatever callable the file names:
loading an untrusted one can execute code. This reader uses an unpickler that resolves only the
handful of names a weights file needs (an ``OrderedDict``, the tensor-rebuild function and the
storage types, all mapped to harmless stand-ins) and refuses everything else, like
``torch.load(weights_only=True)``. It supports the legacy (pre-zip, PyTorch < 1.6) format::

    magic number | protocol | sys info | pickled state dict (storages by persistent id)
    | pickled list of storage keys | for each key: int64 element count + raw little-endian data
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass

import numpy as np

__all__ = ["LEGACY_MAGIC", "load_legacy_state_dict"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass(frozen=True)
class _TensorRef:
    key: str
    offset: int
    shape: tuple
    stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a weights file needs; anything else is an error."""

    def __init__(self, file, storages: dict):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: a weights file should hold only tensors"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, size = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
        self._storages.setdefault(str(key), (storage_type.dtype, int(size)))
        return str(key)


def load_legacy_state_dict(data: bytes) -> dict[str, np.ndarray]:
    """Parse the bytes of a legacy ``.pth`` state dict into ``{name: numpy array}``.

    Parameters
    ----------
    data : bytes
        The file's contents (check its sha256 first; see :mod:`qlib.data`).

    Returns
    -------
    dict
        Parameter and buffer names to arrays (copies, C-contiguous).

    Raises
    ------
    ValueError
        If the file is not a legacy PyTorch pickle, is truncated, or names any global
        other than the tensor machinery (e.g. ``os.system``).

    Examples
    --------
    A file that tries to run code is refused before anything runs:

    >>> import pickle, os
    >>> class Evil:
    ...     def __reduce__(self):
    ...         return (os.system, ("echo pwned",))
    >>> bad = b"".join(pickle.dumps(o) for o in (LEGACY_MAGIC, 1001, {}, Evil()))
    >>> load_legacy_state_dict(bad)
    Traceback (most recent call last):
    ...
    ValueError: not a safe PyTorch weights file: refusing to load global posix.system: a weights file should hold only tensors
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    f = io.BytesIO(bytes(data))
    storages: dict = {}
    try:
        magic = _RestrictedUnpickler(f, storages).load()
        if magic != LEGACY_MAGIC:
            raise ValueError(
                "not a legacy PyTorch weights file (bad magic number); zip-format files need torch"
            )
        _protocol = _RestrictedUnpickler(f, storages).load()
        _sys_info = _RestrictedUnpickler(f, storages).load()
        state = _RestrictedUnpickler(f, storages).load()
        keys = _RestrictedUnpickler(f, storages).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, IndexError, TypeError) as exc:
        raise ValueError(f"not a safe PyTorch weights file: {exc}") from exc

    buffers = {}
    for key in keys:
        dtype, size = storages[str(key)]
        header = f.read(8)
        if len(header) != 8:
            raise ValueError(f"truncated weights file: storage {key} is missing")
        count = int(np.frombuffer(header, "<i8")[0])
        if count != size:
            raise ValueError(f"corrupted weights file: storage {key} holds {count} values, expected {size}")
        raw = f.read(count * np.dtype(dtype).itemsize)
        if len(raw) != count * np.dtype(dtype).itemsize:
            raise ValueError(f"truncated weights file: storage {key} is cut short")
        buffers[str(key)] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))

    if not isinstance(state, dict):
        raise ValueError(f"expected a state dict, found a {type(state).__name__}")
    out = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            continue
        buf = buffers[ref.key]
        item = buf.itemsize
        if any(d < 0 for d in ref.shape) or any(st < 0 for st in ref.stride):
            raise ValueError(f"corrupted weights file: tensor {name!r} has a negative size or stride")
        last = ref.offset + sum((d - 1) * st for d, st in zip(ref.shape, ref.stride))
        if 0 not in ref.shape and not 0 <= last < buf.size:
            raise ValueError(f"corrupted weights file: tensor {name!r} reaches past its storage")
        view = np.lib.stride_tricks.as_strided(
            buf[ref.offset:], shape=ref.shape, strides=tuple(s * item for s in ref.stride)
        )
        out[str(name)] = np.ascontiguousarray(view).astype(buf.dtype.newbyteorder("="))
    return out
