"""Read PyTorch ``torch.save`` state dicts without torch.

Since torch 1.6, ``torch.save`` writes a zip archive (stored, uncompressed) laid out as::

    <top>/data.pkl        the pickled object; tensors refer to storages by persistent id
    <top>/data/<key>      raw bytes of each storage (native byte order, see ``byteorder``)
    <top>/version         serialization format version
    <top>/byteorder       "little" or "big" (newer torch only; absent means little)
    <top>/.format_version, <top>/.storage_alignment, <top>/.data/serialization_id (newer torch)

The name of ``<top>`` is the file's stem at save time, so it varies.  Inside ``data.pkl`` a
tensor is ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
requires_grad, backward_hooks[, metadata])`` where ``storage`` is the persistent id
``('storage', torch.FloatStorage, '<key>', '<location>', numel)``.  Dtypes without a typed
storage class (uint16/32/64) use ``_rebuild_tensor_v3`` with an untyped (byte) storage and
an explicit ``torch.<dtype>`` global.

This module re-implements just enough of that to turn a state dict into NumPy arrays.  The
unpickler only resolves the handful of globals a state dict needs; anything else (for
example ``os.system``) is refused, so reading an untrusted file cannot run code.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TorchPickleError", "read_torch_state_dict"]


class TorchPickleError(ValueError):
    """A torch checkpoint could not be read; the message names the file and the problem."""


@dataclass(frozen=True)
class _ElementType:
    """A torch element type as NumPy sees it.

    ``np_dtype`` is the little-endian on-disk dtype.  bfloat16 has no NumPy dtype: it is read
    as uint16 bit patterns (``bfloat16=True``) and widened exactly to float32.
    """

    torch_name: str
    np_dtype: np.dtype
    bfloat16: bool = False

    @property
    def itemsize(self) -> int:
        return self.np_dtype.itemsize


def _etype(name: str, dtype: str, bfloat16: bool = False) -> _ElementType:
    return _ElementType(name, np.dtype(dtype).newbyteorder("<"), bfloat16)


# Typed storage classes (pickled as the global ``torch.<Name>Storage``).
_STORAGE_TYPES: dict[str, _ElementType] = {
    "DoubleStorage": _etype("float64", "f8"),
    "FloatStorage": _etype("float32", "f4"),
    "HalfStorage": _etype("float16", "f2"),
    "BFloat16Storage": _etype("bfloat16", "u2", bfloat16=True),
    "LongStorage": _etype("int64", "i8"),
    "IntStorage": _etype("int32", "i4"),
    "ShortStorage": _etype("int16", "i2"),
    "CharStorage": _etype("int8", "i1"),
    "ByteStorage": _etype("uint8", "u1"),
    "BoolStorage": _etype("bool", "?"),
    "ComplexFloatStorage": _etype("complex64", "c8"),
    "ComplexDoubleStorage": _etype("complex128", "c16"),
}
# The untyped (byte) storage that ``_rebuild_tensor_v3`` tensors sit on.
_UNTYPED = _etype("uint8", "u1")

# ``torch.<dtype>`` globals (only ``_rebuild_tensor_v3`` uses them), canonical names and aliases.
_TORCH_DTYPES: dict[str, _ElementType] = {
    "float64": _etype("float64", "f8"), "double": _etype("float64", "f8"),
    "float32": _etype("float32", "f4"), "float": _etype("float32", "f4"),
    "float16": _etype("float16", "f2"), "half": _etype("float16", "f2"),
    "bfloat16": _etype("bfloat16", "u2", bfloat16=True),
    "int64": _etype("int64", "i8"), "long": _etype("int64", "i8"),
    "int32": _etype("int32", "i4"), "int": _etype("int32", "i4"),
    "int16": _etype("int16", "i2"), "short": _etype("int16", "i2"),
    "int8": _etype("int8", "i1"),
    "uint8": _etype("uint8", "u1"),
    "uint16": _etype("uint16", "u2"),
    "uint32": _etype("uint32", "u4"),
    "uint64": _etype("uint64", "u8"),
    "bool": _etype("bool", "?"),
    "complex64": _etype("complex64", "c8"), "cfloat": _etype("complex64", "c8"),
    "complex128": _etype("complex128", "c16"), "cdouble": _etype("complex128", "c16"),
}

# Legacy (torch < 1.6, or _use_new_zipfile_serialization=False) files start with a pickled
# protocol-2 long holding this magic number.
_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.*Storage`` class in the pickle (never callable)."""

    name: str
    element: _ElementType


@dataclass(frozen=True)
class _DType:
    """Stand-in for a ``torch.<dtype>`` global."""

    name: str
    element: _ElementType


@dataclass(frozen=True)
class _Storage:
    """One loaded storage: its archive key, element type and raw bytes."""

    key: str
    element: _ElementType
    data: bytes


class _Tensor:
    """A rebuilt tensor (wraps the array so a crafted BUILD opcode cannot reach ndarray)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array

    def __setstate__(self, state):
        raise pickle.UnpicklingError("a BUILD opcode targets a tensor")


def _index_tuple(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise ValueError(f"{what} is {type(value).__name__}, expected a tuple of ints")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise ValueError(f"{what} holds {item!r}, expected ints")
        if item < 0:
            raise ValueError(f"{what} holds the negative value {item}")
        out.append(item)
    return tuple(out)


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler for ``data.pkl`` that resolves only state-dict globals."""

    def __init__(self, file, *, path: Path, archive: zipfile.ZipFile, top: str,
                 big_endian: bool):
        super().__init__(file)
        self._path = path
        self._archive = archive
        self._top = top
        self._big_endian = big_endian
        self._raw: dict[str, bytes] = {}  # storage key -> bytes, shared between tensors
        self._members = set(archive.namelist())

    def _error(self, message: str) -> TorchPickleError:
        return TorchPickleError(f"{self._path}: {message}")

    # ---- globals ---------------------------------------------------------------------
    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils":
            if name == "_rebuild_tensor_v2":
                return self._rebuild_tensor_v2
            if name == "_rebuild_tensor_v3":
                return self._rebuild_tensor_v3
            if name == "_rebuild_parameter":
                return self._rebuild_parameter
            if name == "_rebuild_parameter_with_state":
                return self._rebuild_parameter_with_state
        if module == "torch":
            if name in _STORAGE_TYPES:
                return _StorageType(name, _STORAGE_TYPES[name])
            if name == "UntypedStorage":
                return _StorageType(name, _UNTYPED)
            if name in _TORCH_DTYPES:
                return _DType(name, _TORCH_DTYPES[name])
        if module == "torch.storage" and name == "UntypedStorage":
            return _StorageType(name, _UNTYPED)
        raise self._error(
            f"refusing the global {module}.{name} in data.pkl: only the globals a plain "
            f"state dict of tensors needs are allowed (collections.OrderedDict, "
            f"torch._utils._rebuild_tensor_v2/_v3, torch._utils._rebuild_parameter, "
            f"torch.*Storage and numpy-representable torch dtypes)")

    # ---- storages --------------------------------------------------------------------
    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"):
            raise self._error(f"unsupported persistent id {pid!r} in data.pkl "
                              f"(expected ('storage', type, key, location, numel))")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise self._error(f"persistent id {pid!r} does not name a torch storage type")
        if not isinstance(key, str) or not isinstance(location, str):
            raise self._error(f"persistent id {pid!r} has a malformed key or location")
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise self._error(f"persistent id {pid!r} has a malformed element count")
        # ``location`` ('cpu', 'cuda:0', 'mps', ...) is ignored: everything lands on the CPU.
        data = self._raw.get(key)
        if data is None:
            member = f"{self._top}/data/{key}"
            if member not in self._members:
                raise self._error(f"the storage member {member!r} referenced by data.pkl is "
                                  f"missing from the archive")
            try:
                data = self._archive.read(member)
            except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as err:
                raise self._error(f"cannot read the storage member {member!r} (corrupt "
                                  f"archive?): {err}") from None
            self._raw[key] = data
        element = storage_type.element
        if len(data) < numel * element.itemsize:
            raise self._error(
                f"the storage member {self._top}/data/{key} holds {len(data)} bytes, but "
                f"data.pkl declares {numel} elements of {element.torch_name} "
                f"({numel * element.itemsize} bytes)")
        return _Storage(key, element, data)

    # ---- tensors ---------------------------------------------------------------------
    def _make_tensor(self, storage, storage_offset, size, stride, element: _ElementType,
                     what: str) -> _Tensor:
        if not isinstance(storage, _Storage):
            raise self._error(f"{what}: expected a storage, got {type(storage).__name__}")
        try:
            shape = _index_tuple(size, "size")
            strides = _index_tuple(stride, "stride")
            (offset,) = _index_tuple(storage_offset, "storage offset")
        except ValueError as err:
            raise self._error(f"{what} (storage {storage.key}): {err}") from None
        if len(shape) != len(strides):
            raise self._error(f"{what} (storage {storage.key}): size {shape} and stride "
                              f"{strides} have different lengths")
        dtype = element.np_dtype
        if self._big_endian:
            dtype = dtype.newbyteorder(">")
        available = len(storage.data) // dtype.itemsize
        numel = math.prod(shape)
        if numel == 0:
            array = np.empty(shape, dtype=dtype.newbyteorder("="))
        else:
            extent = offset + sum((n - 1) * s for n, s in zip(shape, strides)) + 1
            if extent > available:
                raise self._error(
                    f"{what}: storage {self._top}/data/{storage.key} holds {available} "
                    f"elements of {element.torch_name}, but a tensor of size {shape}, stride "
                    f"{strides} at offset {offset} needs {extent}")
            base = np.frombuffer(storage.data, dtype=dtype, count=available)
            view = np.lib.stride_tricks.as_strided(
                base[offset:], shape=shape,
                strides=tuple(s * dtype.itemsize for s in strides), writeable=False)
            array = np.array(view, dtype=dtype.newbyteorder("="), order="C", copy=True)
        if element.bfloat16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return _Tensor(array)

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None):
        element = storage.element if isinstance(storage, _Storage) else _UNTYPED
        return self._make_tensor(storage, storage_offset, size, stride, element,
                                 "_rebuild_tensor_v2")

    def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad,
                           backward_hooks, dtype, metadata=None):
        if not isinstance(dtype, _DType):
            raise self._error(f"_rebuild_tensor_v3: expected a torch dtype, got {dtype!r}")
        return self._make_tensor(storage, storage_offset, size, stride, dtype.element,
                                 "_rebuild_tensor_v3")

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None):
        if not isinstance(data, _Tensor):
            raise self._error(f"_rebuild_parameter: expected a tensor, got "
                              f"{type(data).__name__}")
        return data

    def _rebuild_parameter_with_state(self, data, requires_grad=False, backward_hooks=None,
                                      state=None):
        return self._rebuild_parameter(data, requires_grad, backward_hooks)


def _not_a_zip_message(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        head = b""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return (f"{path}: truncated or corrupt zip archive (a torch.save file whose end, "
                f"with the zip central directory, is missing or damaged)")
    if _LEGACY_MAGIC in head:
        return (f"{path}: this is the legacy non-zip torch.save format (torch < 1.6 or "
                f"_use_new_zipfile_serialization=False); only the zip format of "
                f"torch >= 1.6 is supported: re-save it with a current torch")
    return (f"{path}: not a zip archive; only the zip-based torch.save format of "
            f"torch >= 1.6 is supported")


def _find_top(path: Path, names: list[str]) -> str:
    tops = sorted({name[: -len("/data.pkl")] for name in names
                   if name.endswith("/data.pkl") and name.count("/") == 1})
    if not tops:
        raise TorchPickleError(f"{path}: no '<top>/data.pkl' member in the zip archive; not a "
                               f"torch.save checkpoint (members: {names[:8]})")
    if len(tops) > 1:
        raise TorchPickleError(f"{path}: several data.pkl members ({tops}); not a single "
                               f"torch.save checkpoint")
    return tops[0]


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a state dict saved by ``torch.save(model.state_dict(), path)`` without torch.

    Supports the zip format that ``torch.save`` writes since torch 1.6.  Tensors saved from
    any device (``cuda:0`` ...) are loaded onto the CPU as NumPy arrays: C-contiguous,
    writable copies honouring each tensor's storage offset, size and stride (tensors that
    shared a storage come back as independent arrays).  Dtypes map one to one (float32,
    float64, float16, int8/16/32/64, uint8/16/32/64, bool, complex64/128), except bfloat16,
    which NumPy lacks: it is widened exactly to float32.  Parameters are returned as plain
    arrays, and the ``_metadata`` attribute of a state dict is ignored.

    Only the globals a state dict needs are resolved while unpickling, so a malicious file
    cannot run code; anything else is refused with an error.

    Args:
      path: the ``.pt``/``.pth`` file.
    Returns:
      A plain ``dict`` mapping each state-dict key to a NumPy array, in the file's order.
    Raises:
      FileNotFoundError: the file does not exist.
      TorchPickleError: (a ``ValueError``) naming the file and what is wrong: not a zip
        (e.g. the legacy pre-1.6 format), a truncated or corrupt archive, a missing
        ``data.pkl`` or storage member, a storage too short for a tensor, a forbidden
        global, or a pickle that is not a dict of tensors.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"torch checkpoint {path} does not exist")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise TorchPickleError(_not_a_zip_message(path)) from None
    with archive:
        names = archive.namelist()
        top = _find_top(path, names)
        try:
            pickled = archive.read(f"{top}/data.pkl")
            byteorder = (archive.read(f"{top}/byteorder").decode("ascii", "replace").strip()
                         if f"{top}/byteorder" in names else "little")
        except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as err:
            raise TorchPickleError(f"{path}: truncated or corrupt zip archive: {err}") from None
        if byteorder not in ("little", "big"):
            raise TorchPickleError(f"{path}: unknown byte order {byteorder!r} in "
                                   f"{top}/byteorder")
        unpickler = _StateDictUnpickler(io.BytesIO(pickled), path=path, archive=archive,
                                        top=top, big_endian=byteorder == "big")
        try:
            obj = unpickler.load()
        except TorchPickleError:
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
                IndexError, KeyError, RecursionError, UnicodeDecodeError) as err:
            raise TorchPickleError(f"{path}: cannot unpickle {top}/data.pkl: "
                                   f"{type(err).__name__}: {err}") from None

    if not isinstance(obj, dict):
        raise TorchPickleError(f"{path}: the pickle holds a {type(obj).__name__}, not a dict "
                               f"of tensors (a state dict)")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise TorchPickleError(f"{path}: state dict key {key!r} is not a string")
        if not isinstance(value, _Tensor):
            raise TorchPickleError(f"{path}: the value of {key!r} is a {type(value).__name__}, "
                                   f"not a tensor; only a flat dict of tensors (a state "
                                   f"dict) is supported")
        out[key] = value.array
    return out
