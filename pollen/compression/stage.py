"""Codec stages: the base class, their parameters and the `STAGES` registry.

A stage is configured by a spec fragment ``name:arg:arg`` (positional, or ``key=value``) or a
mapping ``{"name": ..., key: value}``. Its parameters are declared once (`Param`) so parsing,
validation, the canonical spec and the wire record all come from the same table.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from pollen.compression.batch import Batch
from pollen.errors import ConfigError
from pollen.registry import Registry


class Kind(IntEnum):
    """Stage kinds, in the only order they may appear in a codec."""

    SPARSIFY = 1
    QUANTIZE = 2
    LOSSLESS = 3

    @property
    def noun(self) -> str:
        return {1: "sparsifier", 2: "quantizer", 3: "lossless coder"}[self.value]


_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One stage parameter: type, default (none = required), range or choices."""

    name: str
    type: type
    default: Any = _REQUIRED
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[str, ...] = ()

    def convert(self, stage: str, raw: Any) -> Any:
        where = f"codec stage {stage!r} parameter {self.name!r}"
        try:
            if self.type is float:
                val: Any = float(raw)
                if not math.isfinite(val):
                    raise ValueError
            elif self.type is int:
                if isinstance(raw, float) and not raw.is_integer():
                    raise ValueError
                val = int(raw)
            else:
                val = str(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {raw!r} is not a valid {self.type.__name__}") from None
        if self.choices and val not in self.choices:
            raise ConfigError(f"{where}: {val!r} is not one of {', '.join(self.choices)}")
        if self.lo is not None and (val < self.lo or (self.lo_open and val == self.lo)):
            raise ConfigError(f"{where}: {val} must be {'>' if self.lo_open else '>='} {self.lo}")
        if self.hi is not None and val > self.hi:
            raise ConfigError(f"{where}: {val} must be <= {self.hi}")
        return val


def _fmt(val: Any) -> str:
    if isinstance(val, float):
        text = repr(val)
        return text.removesuffix(".0")
    return str(val)


class Stage:
    """Base of every stage. Subclasses set `name`, `kind`, `params` and override the hooks."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self.params):
            raise ConfigError(
                f"codec stage {self.name!r} takes at most {len(self.params)} arguments "
                f"({', '.join(p.name for p in self.params) or 'none'}), got {len(args)}"
            )
        given = dict(zip((p.name for p in self.params), args, strict=False))
        for key, val in kwargs.items():
            if key not in {p.name for p in self.params}:
                raise ConfigError(f"codec stage {self.name!r} has no parameter {key!r}")
            if key in given:
                raise ConfigError(f"codec stage {self.name!r}: {key!r} given twice")
            given[key] = val
        for p in self.params:
            if p.name in given:
                setattr(self, p.name, p.convert(self.name, given[p.name]))
            elif p.default is _REQUIRED:
                raise ConfigError(f"codec stage {self.name!r} needs parameter {p.name!r}")
            else:
                setattr(self, p.name, p.default)

    # ---- spec ------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, text: str) -> Stage:
        """Build from ``name:arg:key=value`` (the name part already matched to this class)."""
        pos: list[str] = []
        kw: dict[str, str] = {}
        for part in (s.strip() for s in text.split(":")[1:]):
            if "=" in part:
                key, val = part.split("=", 1)
                kw[key.strip()] = val.strip()
            elif kw:
                raise ConfigError(f"codec stage {text!r}: positional arguments must come first")
            else:
                pos.append(part)
        return cls(*pos, **kw)

    def args(self) -> list[str]:
        """Canonical positional arguments, trailing defaults omitted."""
        vals = [getattr(self, p.name) for p in self.params]
        while vals and self.params[len(vals) - 1].default is not _REQUIRED and (
            vals[-1] == self.params[len(vals) - 1].default
        ):
            vals.pop()
        return [_fmt(v) for v in vals]

    def spec(self) -> str:
        return ":".join([self.name, *self.args()])

    def __repr__(self) -> str:
        return f"<stage {self.spec()}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stage) and other.spec() == self.spec()

    def __hash__(self) -> int:
        return hash(self.spec())

    # ---- hooks -----------------------------------------------------------------------------
    def encode(self, batch: Batch) -> None:
        """Transform every tensor of one update in place (all at once: fast, and global scopes)."""
        raise NotImplementedError

    def decode(self, batch: Batch) -> None:
        """Undo `encode` on a received update in place; raise WireError on invalid content.

        The wire layer has already unpacked and range-checked positions and codes.
        """

    # Lossless stages only: whole-message byte compression.
    def compress(self, body: bytes) -> bytes:
        raise NotImplementedError

    def decompress(self, data: bytes, size: int) -> bytes:
        """Inverse of `compress`; must never produce more than `size` bytes (bomb guard)."""
        raise NotImplementedError


class WireError(ValueError):
    """Invalid received content; the wire layer re-raises it as a PayloadError for `field`
    (of tensor number `tensor` when given, e.g. ``tensors[name].codebook``)."""

    def __init__(self, message: str, field: str, tensor: int | None = None) -> None:
        super().__init__(message)
        self.field, self.tensor = field, tensor


STAGES: Registry[type[Stage]] = Registry("codec stage")


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available by its `name`."""
    STAGES.add(cls.name, cls)
    return cls


def build_stage(item: str | Mapping[str, Any]) -> Stage:
    """One stage from ``"name:arg"`` or ``{"name": ..., param: value}``."""
    if isinstance(item, str):
        name = item.split(":", 1)[0].strip()
        return STAGES.get(name).from_spec(item)
    if isinstance(item, Mapping):
        params = dict(item)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"codec stage table {dict(item)!r} needs a string 'name'")
        return STAGES.get(name)(**params)
    raise ConfigError(f"codec stage must be a string or a table, got {type(item).__name__}")


def build_stages(spec: str | Sequence[str | Mapping[str, Any]] | None) -> list[Stage]:
    """Parse a whole spec: ``"a:1 > b > c"``, ``""``/``"none"``, a list, or ``{"stages": [...]}``."""
    if spec is None:
        return []
    if isinstance(spec, Mapping):
        if set(spec) != {"stages"}:
            raise ConfigError("a codec table must have exactly one key, 'stages'")
        spec = spec["stages"]
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() in ("", "none"):
            return []
        items: Sequence[str | Mapping[str, Any]] = [s.strip() for s in text.split(">")]
        if any(not s for s in items):
            raise ConfigError(f"codec {spec!r}: empty stage between '>' separators")
    elif isinstance(spec, Sequence):
        items = spec
    else:
        raise ConfigError(f"codec must be a string or a list of stages, got {type(spec).__name__}")
    return [build_stage(s) for s in items]


def check_composition(stages: Sequence[Stage], what: str) -> None:
    """Stages must be: [sparsifier] [quantizer] [lossless], each at most once, in that order."""
    for prev, cur in itertools.pairwise(stages):
        if cur.kind == prev.kind:
            raise ConfigError(
                f"{what}: two {cur.kind.noun}s ({prev.spec()!r}, {cur.spec()!r}); "
                "use at most one stage of each kind"
            )
        if cur.kind < prev.kind:
            raise ConfigError(
                f"{what}: {cur.kind.noun} {cur.spec()!r} cannot follow {prev.kind.noun} "
                f"{prev.spec()!r}; the order is sparsifier > quantizer > lossless"
            )
