"""Read a PyTorch ``.pth`` state dict into numpy arrays without torch.

A ``.pth`` is a pickle whose tensors refer to raw storages by persistent id: in the
zip format (torch ≥ 1.6) the storages are ``<archive>/data/<key>`` members; in the
legacy format they follow the pickle in the same stream, each prefixed by its
element count. The unpickler below allows exactly the few globals a state dict
needs (``OrderedDict``, ``torch._utils._rebuild_tensor_v2``, storage types) and
refuses every other one, so a malicious file cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

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
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class UnsafePickleError(pickle.UnpicklingError):
    """The file refers to a global a state dict never needs."""


class _Storage:
    def __init__(self, dtype: Any, key: str, numel: int | None):
        self.dtype, self.key, self.numel = np.dtype(dtype), key, numel
        self.data: np.ndarray | None = None


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise ValueError(f"storage {self.storage.key} has no data")
        if not self.size:
            return data[self.offset].copy()
        itemsize = data.itemsize
        return np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
        ).copy()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_unused):
    return _Tensor(storage, storage_offset, tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, handle: BinaryIO):
        super().__init__(handle)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise UnsafePickleError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        numel = pid[4] if len(pid) > 4 else None
        if storage_type not in _STORAGE_DTYPES:
            raise UnsafePickleError(f"unsupported storage type {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(_STORAGE_DTYPES[storage_type], key, numel)
        return self.storages[key]


def _tensors_to_numpy(obj: Any) -> Any:
    if isinstance(obj, _Tensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _tensors_to_numpy(v)) for k, v in obj.items())
    return obj


def load_state_dict(path_or_bytes: str | bytes) -> dict[str, np.ndarray]:
    """The state dict of a ``.pth`` file (path or bytes) as {name: numpy array}."""
    if isinstance(path_or_bytes, str):
        with open(path_or_bytes, "rb") as handle:
            data = handle.read()
    else:
        data = path_or_bytes
    if zipfile.is_zipfile(io.BytesIO(data)):
        return _load_zip(data)
    return _load_legacy(data)


def _load_zip(data: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        pickle_name = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pickle_name is None:
            raise ValueError("not a torch zip checkpoint: no data.pkl")
        prefix = pickle_name[: -len("data.pkl")]
        unpickler = _StateDictUnpickler(io.BytesIO(archive.read(pickle_name)))
        state = unpickler.load()
        for key, storage in unpickler.storages.items():
            storage.data = np.frombuffer(archive.read(f"{prefix}data/{key}"), storage.dtype)
    return _tensors_to_numpy(state)


def _load_legacy(data: bytes) -> dict[str, np.ndarray]:
    handle = io.BytesIO(data)
    safe = _StateDictUnpickler  # the header pickles hold plain values only
    if safe(handle).load() != _LEGACY_MAGIC:
        raise ValueError("not a torch checkpoint (bad magic number)")
    safe(handle).load()  # protocol version
    safe(handle).load()  # system info
    unpickler = _StateDictUnpickler(handle)
    state = unpickler.load()
    keys = safe(handle).load()
    for key in keys:
        storage = unpickler.storages[str(key)]
        (count,) = struct.unpack("<q", handle.read(8))
        storage.data = np.frombuffer(handle.read(count * storage.dtype.itemsize), storage.dtype)
    return _tensors_to_numpy(state)


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """torch conv weight (out, in, kh, kw) -> Keras Conv2D kernel (kh, kw, in, out)."""
    return np.transpose(weight, (2, 3, 1, 0))


def depthwise_kernel(weight: np.ndarray) -> np.ndarray:
    """torch depthwise weight (c, 1, kh, kw) -> Keras DepthwiseConv2D kernel (kh, kw, c, 1)."""
    return np.transpose(weight, (2, 3, 0, 1))


def bn_weights(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    """A torch BatchNorm's tensors in Keras' order: gamma, beta, moving mean, variance."""
    return [state[f"{prefix}.{name}"] for name in ("weight", "bias", "running_mean", "running_var")]
