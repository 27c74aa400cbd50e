"""``@record``: qctl's value classes — slotted dataclasses whose methods cost nothing at import.

``dataclasses.dataclass`` writes each class's ``__init__``, ``__repr__``, ``__eq__``,
``__hash__``, ``__setattr__`` and ``__delattr__`` as source text and compiles it with ``exec``
when the class is defined: six compilations a frozen class, about 0.6 ms on Python 3.11 here.
qctl has some 80 such classes and every CLI command imports most of them, so that was a third
of a command's start-up, paid for classes the command never builds.

A record is still a real dataclass — ``dataclasses.fields``, ``replace``, ``asdict`` and
``is_dataclass`` work, and type checkers read it as one (``dataclass_transform``) — but:

- ``__init__`` is shared: it binds the arguments with a loop over the fields (defaults,
  ``default_factory``, ``init=False``, ``kw_only``, ``__post_init__``, as dataclasses
  would) for the first constructions of a class, then compiles the class's own from the
  same fields, so a class a command builds a few times is never compiled;
- equality, hashing, ordering and ``repr`` are shared functions over the fields that take
  part (``compare``, ``hash``, ``repr``), with no compilation at all;
- a frozen record refuses assignment and deletion (``FrozenInstanceError``) as a frozen
  dataclass does, and pickles and copies as one.

Standard library only; imports nothing from qctl.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = ["record"]

_T = TypeVar("_T")

_NO_VALUE = object()
"""The default that stands for "call the field's default_factory" in a compiled __init__."""

_COMPILE_AFTER = 32
"""How many constructions of a record class the shared ``__init__`` binds (a loop over the
fields, slower per call) before the class's own is compiled (about 0.1 ms once): a command
that builds a class a few times never pays for compiling it."""

_FROZEN_MARK = "__record_frozen__"
"""The class attribute that says whether a record is frozen. Its ``__dataclass_params__``
says ``frozen=False`` (records ask dataclasses for no method at all), so a plain
``@dataclass(frozen=True)`` cannot subclass a record: make the subclass a record."""


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
        _check_bases(cls, frozen=frozen)
        made: type[_T] = dataclasses.dataclass(
            cls, init=False, repr=False, eq=False, kw_only=kw_only, slots=True
        )
        _check_fields(made)
        _add_methods(made, frozen=frozen, order=order)
        setattr(made, _FROZEN_MARK, frozen)
        return made

    return make if cls is None else make(cls)


def _check_bases(cls: type[Any], *, frozen: bool) -> None:
    """Refuse what dataclasses refuses: a frozen record under a mutable one, or the reverse."""
    for base in cls.__mro__[1:]:
        based = base.__dict__.get(_FROZEN_MARK)
        if based is not None and based != frozen:
            kind = ("frozen", "non-frozen") if frozen else ("non-frozen", "frozen")
            raise TypeError(
                f"cannot inherit {kind[0]} record {cls.__qualname__} from a {kind[1]} one"
            )


def _check_fields(cls: type[Any]) -> None:
    """Refuse at decoration what the compiled ``__init__`` would trip on later: a field
    without a default after one with a default, and ``InitVar`` pseudo-fields."""
    every = {f.name for f in dataclasses.fields(cls)}
    pseudo = [name for name in cls.__dataclass_fields__ if name not in every]
    if any("InitVar" in str(cls.__dataclass_fields__[name].type) for name in pseudo):
        raise TypeError(f"record {cls.__qualname__}: InitVar fields are not supported")
    defaulted = ""
    for f in dataclasses.fields(cls):
        if not f.init or f.kw_only:
            continue
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            defaulted = f.name
        elif defaulted:
            raise TypeError(
                f"record {cls.__qualname__}: field {f.name!r} without a default follows "
                f"{defaulted!r}, which has one"
            )


def _add_methods(cls: type[Any], *, frozen: bool, order: bool) -> None:
    """Give the dataclass ``cls`` the methods ``dataclasses.dataclass`` would have written."""
    every = dataclasses.fields(cls)
    compared = _key([f.name for f in every if f.compare])
    hashed = _key([f.name for f in every if (f.compare if f.hash is None else f.hash)])
    shown = tuple(f.name for f in every if f.repr)

    positional = tuple(f.name for f in every if f.init and not f.kw_only)
    post_init = hasattr(cls, "__post_init__")  # decided once, as dataclasses does
    calls = 0

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls < _COMPILE_AFTER and _bind(self, every, positional, post_init, args, kwargs):
            return
        compiled = _compile_init(cls)
        setattr(cls, "__init__", compiled)  # noqa: B010 (mypy refuses assigning a method)
        compiled(self, *args, **kwargs)

    @reprlib.recursive_repr()
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
    if order and own & {"__lt__", "__le__", "__gt__", "__ge__"}:
        raise TypeError(f"record {cls.__qualname__} has order=True and defines its own ordering")
    if cls.__dict__.get("__hash__", 0) is None and "__eq__" in cls.__dict__:
        own.discard("__hash__")  # Python's implicit None beside an __eq__, not the class's own
    if frozen and own & {"__setattr__", "__delattr__"}:
        raise TypeError(f"frozen record {cls.__qualname__} defines __setattr__ or __delattr__")
    for name, method in methods.items():
        if name not in own:  # what the class body defines stays, as with dataclasses
            setattr(cls, name, method)


def _bind(
    self: Any,
    every: tuple[dataclasses.Field[Any], ...],
    positional: tuple[str, ...],
    post_init: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> bool:
    """Store the fields of a well-formed call of a record's ``__init__``, then call
    ``__post_init__`` when the record has one; False, having run nothing, for a call it
    does not bind — too many positional arguments, a missing, unknown or repeated one —
    so that the compiled ``__init__`` raises the exact ``TypeError``."""
    if len(args) > len(positional):
        return False
    given = dict(zip(positional, args, strict=False))
    if not given.keys().isdisjoint(kwargs):
        return False
    taken = 0
    for f in every:
        if f.name in given or not f.init:
            continue
        if f.name in kwargs:
            taken += 1
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            return False  # a required argument is missing
    if taken != len(kwargs):
        return False  # a keyword names no field of __init__
    for f in every:  # the call is well-formed: now defaults and factories, in field order
        if f.name in given:
            value = given[f.name]
        elif f.init and f.name in kwargs:
            value = kwargs[f.name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue  # outside __init__, without a default: left for __post_init__
        object.__setattr__(self, f.name, value)
    if post_init:
        self.__post_init__()
    return True


def _key(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """A fast getter of the tuple of the values of ``names`` (a tuple even for one name, so
    that comparing two records checks identity first, as a dataclass's tuples do)."""
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        [name] = names
        return lambda self: (getattr(self, name),)
    return lambda _self: ()


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
    given; fields outside ``__init__`` set from their default; then ``__post_init__``.
    Its own names are dunder names no field can be given, ``self`` included."""
    scope: dict[str, Any] = {"__record_set__": object.__setattr__, "__record_none__": _NO_VALUE}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):
        has_factory = f.default_factory is not dataclasses.MISSING
        factory, default = f"__record_factory_{f.name}__", f"__record_default_{f.name}__"
        if has_factory:
            scope[factory] = f.default_factory
        if f.default is not dataclasses.MISSING:
            scope[default] = f.default
        if not f.init:
            if has_factory:
                body.append(f"__record_set__(__record_self__, {f.name!r}, {factory}())")
            elif f.default is not dataclasses.MISSING:
                body.append(f"__record_set__(__record_self__, {f.name!r}, {default})")
            continue
        if has_factory:
            parameter = f"{f.name}=__record_none__"
            value = f"{factory}() if {f.name} is __record_none__ else {f.name}"
        else:
            has_default = f.default is not dataclasses.MISSING
            parameter = f"{f.name}={default}" if has_default else f.name
            value = f.name
        (keyword if f.kw_only else positional).append(parameter)
        body.append(f"__record_set__(__record_self__, {f.name!r}, {value})")
    if hasattr(cls, "__post_init__"):
        body.append("__record_self__.__post_init__()")
    parameters = ", ".join(["__record_self__", *positional, *(["*", *keyword] if keyword else [])])
    lines = "\n".join(f"    {line}" for line in body or ["pass"])
    namespace: dict[str, Any] = {}
    exec(f"def __init__({parameters}):\n{lines}\n", scope, namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init
