"""``@record``: qctl's value classes — slotted dataclasses whose methods cost nothing at import.

``dataclasses.dataclass`` writes each class's ``__init__``, ``__repr__``, ``__eq__``,
``__hash__``, ``__setattr__`` and ``__delattr__`` as source text and compiles it with ``exec``
when the class is defined: six compilations a frozen class, about 0.6 ms on Python 3.11 here.
qctl has some 80 such classes and every CLI command imports most of them, so that was a third
of a command's start-up, paid for classes the command never builds.

A record is still a real dataclass — ``dataclasses.fields``, ``replace``, ``asdict`` and
``is_dataclass`` work, and type checkers read it as one (``dataclass_transform``) — but:

- ``__init__`` is compiled on the first construction of the class, from the same fields
  dataclasses would use (defaults, ``default_factory``, ``init=False``, ``kw_only``,
  ``__post_init__``), so a class never built is never compiled;
- equality, hashing, ordering and ``repr`` are shared functions over the fields that take
  part (``compare``, ``hash``, ``repr``), with no compilation at all;
- a frozen record refuses assignment and deletion (``FrozenInstanceError``) as a frozen
  dataclass does, and pickles and copies as one.

Standard library only; imports nothing from qctl.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = ["record"]

_T = TypeVar("_T")

_NO_VALUE = object()
"""The default that stands for "call the field's default_factory" in a compiled __init__."""


@overload
def record(cls: type[_T], /) -> type[_T]: ...


@overload
def record(
    *, frozen: bool = True, kw_only: bool = False, order: bool = False
) -> Callable[[type[_T]], type[_T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
def record(
    cls: type[_T] | None = None,
    /,
    *,
    frozen: bool = True,
    kw_only: bool = False,
    order: bool = False,
) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """Make ``cls`` a slotted dataclass with value equality; frozen unless ``frozen=False``,
    keyword-only fields with ``kw_only=True``, ordered by its fields with ``order=True``."""

    def make(cls: type[_T]) -> type[_T]:
        made: type[_T] = dataclasses.dataclass(
            cls, init=False, repr=False, eq=False, kw_only=kw_only, slots=True
        )
        _add_methods(made, frozen=frozen, order=order)
        return made

    return make if cls is None else make(cls)


def _add_methods(cls: type[Any], *, frozen: bool, order: bool) -> None:
    """Give the dataclass ``cls`` the methods ``dataclasses.dataclass`` would have written."""
    every = dataclasses.fields(cls)
    compared = _key([f.name for f in every if f.compare])
    hashed = _key([f.name for f in every if (f.compare if f.hash is None else f.hash)])
    shown = tuple(f.name for f in every if f.repr)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        compiled = _compile_init(cls)
        setattr(cls, "__init__", compiled)  # noqa: B010 (mypy refuses assigning a method)
        compiled(self, *args, **kwargs)

    def __repr__(self: Any) -> str:
        parts = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{type(self).__qualname__}({parts})"

    def __eq__(self: Any, other: object) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return compared(self) == compared(other)

    def __hash__(self: Any) -> int:
        return hash(hashed(self))

    def __getstate__(self: Any) -> list[Any]:
        return [getattr(self, f.name) for f in every]

    def __setstate__(self: Any, state: list[Any]) -> None:
        for f, value in zip(every, state, strict=True):
            object.__setattr__(self, f.name, value)

    methods: dict[str, Any] = {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__}
    if order:
        methods |= _order(compared)
    if frozen:
        methods |= {
            "__hash__": __hash__,
            "__setattr__": _refuse_setattr,
            "__delattr__": _refuse_delattr,
            "__getstate__": __getstate__,
            "__setstate__": __setstate__,
        }
    else:
        methods["__hash__"] = None  # mutable and compared by value: unhashable, as dataclasses
    own = {name for name in methods if name in cls.__dict__}
    if cls.__dict__.get("__hash__", 0) is None and "__eq__" in cls.__dict__:
        own.discard("__hash__")  # Python's implicit None beside an __eq__, not the class's own
    if frozen and own & {"__setattr__", "__delattr__"}:
        raise TypeError(f"frozen record {cls.__qualname__} defines __setattr__ or __delattr__")
    for name, method in methods.items():
        if name not in own:  # what the class body defines stays, as with dataclasses
            setattr(cls, name, method)


def _key(names: list[str]) -> Callable[[Any], Any]:
    """A fast getter of the values of ``names`` (a tuple of them; the value alone for one)."""
    if not names:
        return lambda _self: ()
    return attrgetter(*names)


def _order(key: Callable[[Any], Any]) -> dict[str, Callable[[Any, object], Any]]:
    """``<``, ``<=``, ``>``, ``>=`` over the compared fields, between records of one class."""

    def method(test: Callable[[Any, Any], bool]) -> Callable[[Any, object], Any]:
        def compare(self: Any, other: object) -> Any:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return test(key(self), key(other))

        return compare

    return {
        "__lt__": method(lambda a, b: a < b),
        "__le__": method(lambda a, b: a <= b),
        "__gt__": method(lambda a, b: a > b),
        "__ge__": method(lambda a, b: a >= b),
    }


def _refuse_setattr(self: object, name: str, value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_delattr(self: object, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _compile_init(cls: type[Any]) -> Callable[..., None]:
    """The ``__init__`` of ``cls``: its init fields as parameters (keyword-only ones after
    ``*``), each stored with ``object.__setattr__``; factories called when no value is
    given; fields outside ``__init__`` set from their default; then ``__post_init__``."""
    scope: dict[str, Any] = {"_set": object.__setattr__, "_NO_VALUE": _NO_VALUE}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):
        has_factory = f.default_factory is not dataclasses.MISSING
        if has_factory:
            scope[f"_factory_{f.name}"] = f.default_factory
        if f.default is not dataclasses.MISSING:
            scope[f"_default_{f.name}"] = f.default
        if not f.init:
            if has_factory:
                body.append(f"_set(self, {f.name!r}, _factory_{f.name}())")
            elif f.default is not dataclasses.MISSING:
                body.append(f"_set(self, {f.name!r}, _default_{f.name})")
            continue
        if has_factory:
            parameter = f"{f.name}=_NO_VALUE"
            value = f"_factory_{f.name}() if {f.name} is _NO_VALUE else {f.name}"
        else:
            has_default = f.default is not dataclasses.MISSING
            parameter = f"{f.name}=_default_{f.name}" if has_default else f.name
            value = f.name
        (keyword if f.kw_only else positional).append(parameter)
        body.append(f"_set(self, {f.name!r}, {value})")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    parameters = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    lines = "\n".join(f"    {line}" for line in body or ["pass"])
    namespace: dict[str, Any] = {}
    exec(f"def __init__({parameters}):\n{lines}\n", scope, namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init
