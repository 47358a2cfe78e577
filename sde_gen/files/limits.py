"""What a model file can make :func:`~sde_gen.load_model` spend, bounded before anything is built.

A model file is a safetensors header (each tensor's name, dtype, shape and byte span), the tensors,
and a JSON recipe naming allow-listed classes and their arguments. Before allocating anything:

- the header is read alone (at most :data:`MAX_HEADER` bytes), and its byte spans must tile the
  data that follows it exactly, so the file's size bounds the elements it holds;
- every argument of the recipe is a JSON number (at most :data:`MAX_INT` in size), a bool, null,
  a short string or a short flat list of them (:func:`check_arguments`);
- the network is built on the ``meta`` device (no memory), and the build stops as soon as it
  registers far more tensors than the file holds (:func:`build_on_meta`), so a recipe asking for a
  billion layers costs what a few layers cost;
- every name, shape and dtype of the network is compared with the header (:func:`check_fits`): a
  network needing more elements than the file holds is refused before it is built for real.
"""

from __future__ import annotations

import json
import math
import reprlib
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.modules import module as nn_module
from torch.overrides import TorchFunctionMode

from .checkpoint import CheckpointError

__all__ = ["MAX_HEADER", "MAX_INT", "MAX_LIST", "MAX_STR", "Header", "read_header", "check_arguments"]
__all__ += ["build_on_meta", "check_fits", "short_repr"]

#: Bytes of safetensors header accepted (names, shapes and the recipe): a 1,000-tensor U-Net's is
#: about 100 kB; parsing the worst 4 MiB of JSON costs about 90 MB of Python objects.
MAX_HEADER = 4 << 20
MAX_INT = 2**62  # the largest int a recipe argument may hold (shapes are int64)
MAX_LIST = 64  # entries of a list argument (channel_mult, attn_resolutions)
MAX_STR = 256  # characters of a string argument
MAX_DIMS = 16  # dimensions of a tensor in the header

#: The safetensors dtypes a model file may hold.
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxdict = 8
_REPR.maxlevel = 2


def short_repr(value) -> str:
    """``repr(value)``, cut short: a hostile file's values never make a huge error message."""
    return _REPR.repr(value)


@dataclass(frozen=True)
class Header:
    """A safetensors header: ``tensors`` maps each name to ``(dtype, shape)``; ``metadata`` is its
    string-to-string metadata; ``data_bytes`` what follows the header (all of it tensor data)."""

    tensors: dict[str, tuple[torch.dtype, tuple[int, ...]]]
    metadata: dict[str, str]
    data_bytes: int

    @property
    def elements(self) -> int:
        return sum(math.prod(shape) for _, shape in self.tensors.values())


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_INT


def _entries(header, data_bytes: int) -> Header:
    """The checked contents of a parsed header; ``ValueError`` saying what is wrong otherwise."""
    if not isinstance(header, dict):
        raise ValueError(f"its header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("its __metadata__ is not a map of strings")
    tensors, spans = {}, []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"tensor {short_repr(name)}: its entry must hold dtype, shape and data_offsets")
        dtype = DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise ValueError(
                f"tensor {short_repr(name)}: dtype {short_repr(info['dtype'])} is not one of {list(DTYPES)}"
            )
        shape, span = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(map(_is_count, shape)):
            raise ValueError(f"tensor {short_repr(name)}: shape {short_repr(shape)} is not a list of sizes")
        if not isinstance(span, list) or len(span) != 2 or not all(map(_is_count, span)):
            raise ValueError(
                f"tensor {short_repr(name)}: data_offsets {short_repr(span)} is not [begin, end]"
            )
        need = math.prod(shape) * dtype.itemsize
        if span[1] - span[0] != need:
            raise ValueError(
                f"tensor {short_repr(name)} of shape {shape} in {info['dtype']} needs {need} bytes, its "
                f"data_offsets {span} hold {span[1] - span[0]}"
            )
        tensors[name] = (dtype, tuple(shape))
        spans.append(span)
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise ValueError(f"the tensors' data_offsets leave a gap or overlap at byte {end}")
        end = stop
    if end != data_bytes:
        raise ValueError(f"its tensors hold {end} bytes, but {data_bytes} bytes follow its header")
    return Header(tensors, metadata, data_bytes)


def read_header(path: Path) -> Header:
    """The header of the safetensors file ``path``, read and checked without reading a tensor."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < n <= size - 8:
                raise ValueError(f"header length {n} does not fit a file of {size} bytes")
            if n > MAX_HEADER:
                raise ValueError(f"header length {n} is over the {MAX_HEADER} bytes a model file may have")
            header = json.loads(f.read(n))
        return _entries(header, size - 8 - n)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(
            f"model file {path} cannot be read ({type(e).__name__}: {e}): it is truncated, corrupt or "
            "not a model exported by sde_gen"
        ) from e


def check_arguments(kwargs: dict, what: str, target: str, path: Path) -> None:
    """Refuse a recipe argument that is not a JSON scalar of bounded size or a short flat list."""
    for key, value in kwargs.items():
        items = value if isinstance(value, list) else [value]
        ok = len(items) <= MAX_LIST and all(
            v is None
            or isinstance(v, (bool, float))
            or (isinstance(v, int) and abs(v) <= MAX_INT)
            or (isinstance(v, str) and len(v) <= MAX_STR)
            for v in items
        )
        if not ok:
            raise CheckpointError(
                f"model file {path}: its {what} {target} argument {short_repr(key)}={short_repr(value)} is "
                f"refused: an argument must be a number (at most {MAX_INT} in size), a bool, null, a "
                f"string of at most {MAX_STR} characters, or a flat list of at most {MAX_LIST} of them"
            )


class _SkipInit(TorchFunctionMode):
    """Initialisation is skipped in a meta build (``torch.nn.init``'s functions and the tensor
    methods they call): a meta tensor holds no values to fill, and some of torch's meta kernels
    (``normal_``) cost seconds the first time they run (they import ``torch._dynamo``)."""

    FILLS = frozenset({torch.Tensor.uniform_, torch.Tensor.normal_, torch.Tensor.zero_, torch.Tensor.fill_})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by name
        fills = func in self.FILLS or getattr(func, "__module__", None) == "torch.nn.init"
        if fills and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


class _OverBudget(Exception):
    """Raised inside a meta build that registers more tensors or modules than allowed."""


@contextmanager
def _registration_budget(tensors: int, modules: int):
    """Count the parameters, buffers and submodules this thread registers; stop past the budget."""
    me, counts = threading.get_ident(), {"tensors": 0, "modules": 0}

    def counter(kind: str, limit: int):
        def hook(*_):
            if threading.get_ident() == me:
                counts[kind] += 1
                if counts[kind] > limit:
                    raise _OverBudget(f"it registers more than {limit} {kind}")

        return hook

    handles = [
        nn_module.register_module_parameter_registration_hook(counter("tensors", tensors)),
        nn_module.register_module_buffer_registration_hook(counter("tensors", tensors)),
        nn_module.register_module_module_registration_hook(counter("modules", modules)),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def build_on_meta(cls, kwargs: dict, what: str, target: str, header: Header, path: Path):
    """``cls(**kwargs)`` on the ``meta`` device, initialisation skipped, stopped once it registers
    more than ``2 n + 64`` tensors or ``4 n + 64`` modules for a file of ``n`` tensors (buffers that
    are not saved need some slack); any failure is a ``CheckpointError``."""
    n = len(header.tensors)
    try:
        with _registration_budget(2 * n + 64, 4 * n + 64), torch.device("meta"), _SkipInit():
            return cls(**kwargs)
    except _OverBudget as e:
        raise CheckpointError(
            f"model file {path}: its tensors do not fit the network it names: its {what} {target}"
            f"({short_repr(kwargs)}) needs far more tensors than the {n} the file holds ({e}); refused "
            "before building it"
        ) from None
    except Exception as e:  # noqa: BLE001 - any failure of a constructor fed a hostile recipe is a refusal
        raise CheckpointError(
            f"model file {path}: its {what} {target}({short_repr(kwargs)}) is refused: {type(e).__name__}: "
            f"{short_repr(str(e))}"
        ) from e


def check_fits(net: torch.nn.Module, header: Header, target: str, path: Path) -> None:
    """Every tensor of the (meta) ``net`` is in ``header`` with its shape and a compatible dtype,
    and nothing else is: the elements it needs are exactly those the file holds."""
    state = net.state_dict()
    need = sum(t.numel() for t in state.values())
    need_bytes = sum(t.numel() * t.element_size() for t in state.values())
    prefix = f"model file {path}: its tensors do not fit the network it names"
    if need > header.elements:
        raise CheckpointError(
            f"{prefix}: {target} needs {need:,} elements ({need_bytes:,} bytes), more than the "
            f"{header.elements:,} elements the file holds ({header.data_bytes:,} bytes of tensors); "
            "refused before building it"
        )
    extra, missing = sorted(set(header.tensors) - set(state)), sorted(set(state) - set(header.tensors))
    if extra or missing:
        raise CheckpointError(
            f"{prefix}: {(missing + extra)[:5]}{' ...' if len(missing + extra) > 5 else ''} (missing "
            f"from the file: {short_repr(missing)}; not in the network: {short_repr(extra)})"
        )
    for name, t in state.items():
        dtype, shape = header.tensors[name]
        if tuple(t.shape) != shape:
            raise CheckpointError(
                f"{prefix}: {name!r} has shape {list(shape)} in the file, the network's is {list(t.shape)}"
            )
        if dtype != t.dtype and not (dtype.is_floating_point and t.is_floating_point()):
            raise CheckpointError(f"{prefix}: {name!r} is {dtype} in the file, the network's is {t.dtype}")
