"""Read a PyTorch `.pt` file (torch.save's zip archive) without running any code it names.

A `.pt` file is a zip archive holding `<root>/data.pkl` (a pickle stream) and one raw record per
tensor storage, `<root>/data/<key>`. Unpickling normally imports every module the stream names and
calls whatever it asks for, which is how a malicious checkpoint runs code. This reader instead:

- answers every class reference with an inert stand-in (`Stub`): a plain object that records the
  dotted name, the arguments it was "called" with and the state it was given, and never imports or
  calls the named class, so `ultralytics.nn.tasks.DetectionModel` or `models.yolo.Detect` become
  inspectable trees of attributes;
- rebuilds only tensors (typed storages from the zip records, `torch._utils._rebuild_tensor_v2`,
  `_rebuild_parameter`), `collections.OrderedDict`, `set` and `frozenset` with functions of its own;
- refuses, before anything runs, a stream that names a callable outside the model-structure modules
  (e.g. `os.system`, `builtins.exec`, `subprocess.Popen`), with a message naming it.

This is the one module of the package allowed to use `pickle.` (the repository's checks grep for it):
the unpickler subclass below is what makes foreign checkpoints readable without trusting them.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from accelyolo.core.errors import AccelyoloError

__all__ = ["PtReadError", "Stub", "read_pt", "stub_state_dict"]

# Storage class names of torch.save -> the dtype of their elements.
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

# Modules whose classes may appear as inert stand-ins: the model code of the YOLO repositories and
# the libraries their checkpoints reference. A name outside them is refused, since a pickle only
# names a function such as os.system to call it.
_STUB_PREFIXES = (
    "ultralytics.",
    "models.",
    "utils.",
    "torch.",
    "torchvision.",
    "numpy.",
    "pathlib.",
    "argparse.",
    "datetime.",
    "types.SimpleNamespace",
    "__main__.",
)


class PtReadError(AccelyoloError, ValueError):
    """A `.pt` file that cannot be read safely: not a zip checkpoint, damaged, or naming a callable we refuse."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


class Stub:
    """The inert stand-in for one object of a class the stream names; nothing of that class runs.

    Attributes:
        stub_name: the dotted class name from the file, e.g. "ultralytics.nn.modules.conv.Conv".
        stub_args: positional arguments of a reduce call (`cls(*args)` in the file's view).
        stub_state: what the stream handed to `__setstate__` (a module's `__dict__`), or None.
        stub_items: list items and dict entries the stream appended, for list/dict subclasses.
    """

    stub_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        # Both a reduce call `cls(*args)` and NEWOBJ `cls.__new__(cls, *args)` land here.
        self = super().__new__(cls)
        self.stub_args, self.stub_kwargs = args, kwargs
        self.stub_state, self.stub_items = None, []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.stub_state = state

    # list / dict subclasses are filled with APPENDS / SETITEMS after construction
    def append(self, item: Any) -> None:
        self.stub_items.append(item)

    def extend(self, items: Any) -> None:
        self.stub_items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.stub_items.append((key, value))

    def attr(self, name: str, default: Any = None) -> Any:
        """An attribute the object had when it was saved (from its pickled `__dict__`)."""
        state = self.stub_state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (state, slots)
            state = {**(state[0] or {}), **state[1]}
        return state.get(name, default) if isinstance(state, dict) else default

    def __repr__(self) -> str:
        return f"Stub({self.stub_name})"


_STUB_CLASSES: dict[str, type[Stub]] = {}


def _stub_class(name: str) -> type[Stub]:
    """One stand-in class per dotted name, so identical names share a type."""
    if name not in _STUB_CLASSES:
        _STUB_CLASSES[name] = type(name.rsplit(".", 1)[-1], (Stub,), {"stub_name": name})
    return _STUB_CLASSES[name]


class _StorageType:
    """Stands for `torch.<X>Storage` in a persistent id: only its element dtype matters."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    """`torch._utils._rebuild_tensor_v2`: a view of a storage (1-D tensor) with this size/stride/offset."""
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError(f"_rebuild_tensor_v2 got a {type(storage).__name__} instead of a storage")
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, *_: Any) -> torch.Tensor:
    """`torch._utils._rebuild_parameter(_with_state)`: the tensor itself (parameters load as tensors)."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"_rebuild_parameter got a {type(data).__name__} instead of a tensor")
    return data


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    """`copyreg._reconstructor` (protocol 0/1 objects): an empty stand-in of `cls`."""
    if isinstance(cls, type) and issubclass(cls, Stub):
        return cls()
    raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls!r} refused")


# Callables the stream may name that are rebuilt by this module's own functions.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("builtins", "object"): _stub_class("builtins.object"),
}


class _InertUnpickler(pickle.Unpickler):
    """Unpickler whose globals are stand-ins or our own rebuild functions, and whose storages come from the zip."""

    def __init__(self, file: Any, archive: zipfile.ZipFile, root: str, path: Path) -> None:
        super().__init__(file)
        self.archive, self.root, self.path = archive, root, path
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)  # protocol 2 names
        dotted = f"{module}.{name}"
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if any(dotted.startswith(prefix) for prefix in _STUB_PREFIXES):
            return _stub_class(dotted)
        raise pickle.UnpicklingError(
            f"the file names {dotted!r}, which is not part of a model; refused without importing or calling it"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        # ('storage', storage type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"storage {key!r} has an unknown storage type {storage_type!r}")
        if key not in self.storages:
            record = f"{self.root}/data/{key}"
            try:
                raw = bytearray(self.archive.read(record))
            except KeyError:
                raise pickle.UnpicklingError(f"the archive has no record {record!r}") from None
            itemsize = torch.empty((), dtype=storage_type.dtype).element_size()
            if len(raw) != int(numel) * itemsize:
                raise pickle.UnpicklingError(
                    f"record {record!r} holds {len(raw)} bytes, its storage needs {int(numel) * itemsize}"
                )
            data = torch.frombuffer(raw, dtype=storage_type.dtype) if raw else torch.empty(0, dtype=storage_type.dtype)
            self.storages[key] = data
        return self.storages[key]


def read_pt(path: str | os.PathLike[str]) -> Any:
    """The object a `.pt` file holds, classes replaced by `Stub`s and tensors rebuilt; no code of the file runs.

    Raises:
        PtReadError: not a torch.save zip archive (the legacy pre-1.6 format included), damaged, big-endian,
            or a stream that names a callable outside the model classes (nothing named is imported or called).
    """
    path = Path(path)
    if not path.is_file():
        raise PtReadError(path, "no such file")
    if not zipfile.is_zipfile(path):
        raise PtReadError(
            path,
            "not a torch.save zip archive (the legacy pre-1.6 format or another file); re-save it with a current "
            "torch (torch.save uses the zip format since 1.6) in an environment you trust",
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise PtReadError(path, f"expected one <root>/data.pkl in the archive, found {len(pickles)}")
        root = pickles[0].split("/", 1)[0]
        byteorder = f"{root}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise PtReadError(path, "saved on a big-endian machine; only little-endian files are supported")
        with archive.open(pickles[0]) as stream:
            try:
                return _InertUnpickler(stream, archive, root, path).load()
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
                raise PtReadError(path, f"cannot be read safely: {error}") from None


def _named_children(module: Stub) -> Iterator[tuple[str, Stub]]:
    for name, child in (module.attr("_modules") or {}).items():
        if isinstance(child, Stub):
            yield name, child


def stub_state_dict(module: Stub, prefix: str = "") -> OrderedDict[str, torch.Tensor]:
    """The `state_dict()` the stand-in of an `nn.Module` had: parameters and persistent buffers, dotted names."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    non_persistent = module.attr("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, tensor in (module.attr(kind) or {}).items():
            if isinstance(tensor, torch.Tensor) and not (kind == "_buffers" and name in non_persistent):
                out[prefix + name] = tensor
    for name, child in _named_children(module):
        out.update(stub_state_dict(child, f"{prefix}{name}."))
    return out
