"""``@record`` behaves as the frozen, slotted dataclass it replaces, and compiles lazily."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import InitVar, field

import pytest

from qctl.record import _bind, _compile_init, record


@record
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()
    note: str = field(default="", compare=False, repr=False)


@record(kw_only=True)
class Named:
    name: str
    items: list[int] = field(default_factory=list)


@record
class Checked:
    value: int
    double: int = field(init=False)

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("negative")
        object.__setattr__(self, "double", self.value * 2)


@record
class Child(Point):
    z: int = 0


@record(order=True)
class Version:
    major: int
    minor: int = 0


@record(frozen=False)
class Counter:
    count: int = 0


def test_a_record_is_a_frozen_slotted_dataclass() -> None:
    p = Point(1, 2, ("a",), note="n")
    assert dataclasses.is_dataclass(p)
    assert [f.name for f in dataclasses.fields(p)] == ["x", "y", "tags", "note"]
    assert dataclasses.asdict(p) == {"x": 1, "y": 2, "tags": ("a",), "note": "n"}
    assert dataclasses.replace(p, y=5) == Point(1, 5, ("a",))
    assert not hasattr(p, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.x
    assert Point.__match_args__ == ("x", "y", "tags", "note")


def test_equality_hash_and_repr_follow_the_fields_that_take_part() -> None:
    assert Point(1) == Point(1, 0, (), note="ignored: compare=False")
    assert hash(Point(1)) == hash(Point(1, note="other"))
    assert Point(1) != Point(2)
    assert Point(1) != Child(1)  # another class is never equal, as with dataclasses
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=())"
    assert repr(Named(name="a")) == "Named(name='a', items=[])"
    assert len({Point(1), Point(1), Point(2)}) == 2


def test_init_takes_what_dataclasses_would() -> None:
    assert Named(name="a").items == []
    assert Named(name="a").items is not Named(name="b").items
    assert Named(name="a", items=[1]).items == [1]
    with pytest.raises(TypeError):
        Named("a")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    assert Checked(3).double == 6
    with pytest.raises(ValueError, match="negative"):
        Checked(-1)
    assert Child(1, 2, z=3) == Child(x=1, y=2, tags=(), z=3)
    assert Child(1, 2, (), "", 3).z == 3


def test_init_is_compiled_after_the_first_constructions() -> None:
    @record
    class Fresh:
        a: int

    shared = Fresh.__init__
    assert [Fresh(n).a for n in range(31)] == list(range(31))
    assert Fresh.__init__ is shared
    assert Fresh(31).a == 31  # the 32nd compiles
    assert Fresh.__init__ is not shared
    assert Fresh.__init__.__qualname__.endswith("Fresh.__init__")
    assert Fresh(32) == Fresh(a=32)


CALLS: list[tuple[type[object], tuple[object, ...], dict[str, object]]] = [
    (Point, (1,), {}),
    (Point, (1, 2, ("a",)), {"note": "n"}),
    (Point, (), {"x": 1, "y": 2}),
    (Point, (), {}),
    (Point, (1,), {"x": 1}),
    (Point, (1, 2, (), "", 5), {}),
    (Point, (1,), {"z": 1}),
    (Named, (), {"name": "a"}),
    (Named, ("a",), {}),
    (Named, (), {"name": "a", "items": [1]}),
    (Checked, (3,), {}),
    (Checked, (-1,), {}),
    (Checked, (1,), {"double": 2}),
    (Child, (1, 2), {"z": 3}),
    (Child, (1, 2, (), "", 3), {}),
    (Child, (), {"x": 1, "y": 2, "tags": (), "note": "", "z": 3, "w": 4}),
    (Version, (1,), {}),
    (Counter, (), {}),
    (Counter, (1, 2), {}),
]


def _outcome(cls: type[object], init: object) -> tuple[str, object]:
    made = object.__new__(cls)
    try:
        done = init(made)  # type: ignore[operator]
    except (TypeError, ValueError) as exc:
        return "raised", type(exc)
    return ("declined", None) if done is False else ("made", made)


@pytest.mark.parametrize(("cls", "args", "kwargs"), CALLS)
def test_the_shared_and_the_compiled_init_agree(
    cls: type[object], args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    every = dataclasses.fields(cls)  # type: ignore[arg-type]
    positional = tuple(f.name for f in every if f.init and not f.kw_only)
    post_init = hasattr(cls, "__post_init__")
    shared = _outcome(cls, lambda made: _bind(made, every, positional, post_init, args, kwargs))
    compiled = _outcome(cls, lambda made: _compile_init(cls)(made, *args, **kwargs))
    if shared[0] == "declined":
        assert compiled == ("raised", TypeError)  # the compiled one says what is wrong
    else:
        assert shared == compiled


def test_order_compares_fields_in_order() -> None:
    assert Version(1, 2) < Version(1, 10) <= Version(1, 10) < Version(2)
    ordered = [Version(1), Version(1, 5), Version(2)]
    assert sorted(reversed(ordered)) == ordered
    with pytest.raises(TypeError):
        _ = Version(1) < Point(1)  # type: ignore[operator]


def test_a_mutable_record_assigns_and_is_unhashable() -> None:
    c = Counter()
    c.count += 1
    assert c == Counter(1)
    with pytest.raises(TypeError):
        hash(c)


def test_frozen_records_pickle_and_copy() -> None:
    p = Child(1, 2, ("t",), "n", 4)
    for clone in (pickle.loads(pickle.dumps(p)), copy.copy(p), copy.deepcopy(p)):
        assert clone == p
        assert clone.note == "n"


def test_methods_the_class_defines_are_kept() -> None:
    @record
    class Shown:
        a: int

        def __repr__(self) -> str:
            return "shown"

    assert repr(Shown(1)) == "shown"

    @record
    class Equal:
        a: int

        def __eq__(self, other: object) -> bool:
            return True

    assert Equal(1) == Equal(2) and hash(Equal(1)) == hash(Equal(1))
    with pytest.raises(TypeError, match="defines __setattr__"):

        @record
        class Mutating:
            a: int

            def __setattr__(self, name: str, value: object) -> None:
                object.__setattr__(self, name, value)


def test_what_dataclasses_refuses_is_refused_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match="without a default follows"):

        @record
        class Late(Point):
            w: int  # type: ignore[misc]

    with pytest.raises(TypeError, match="non-frozen record"):

        @record(frozen=False)
        class Thawed(Point):  # type: ignore[misc]
            w: int = 0

    with pytest.raises(TypeError, match="InitVar"):

        @record
        class Scaled:
            a: int
            scale: InitVar[int] = 1

    with pytest.raises(TypeError, match="its own ordering"):

        @record(order=True)
        class Ordered:
            a: int

            def __lt__(self, other: object) -> bool:  # type: ignore[misc]
                return False


def test_field_names_the_compiled_init_uses_itself_are_free() -> None:
    @record
    class Odd:
        self: int
        _set: int = 0
        _NO_VALUE: int = 0

    odd = Odd(1, 2, 3)
    assert (odd.self, odd._set, odd._NO_VALUE) == (1, 2, 3)


def test_one_field_records_compare_as_dataclasses_do() -> None:
    @record
    class Reading:
        value: float

    nan = Reading(float("nan"))
    assert nan == nan  # a tuple compares the identical value as equal, as dataclasses do


def test_repr_of_a_record_that_contains_itself() -> None:
    @record(frozen=False)
    class Box:
        items: list[object] = field(default_factory=list)

    box = Box()
    box.items.append(box)
    assert repr(box).endswith("Box(items=[...])")


def test_a_call_that_does_not_bind_runs_no_factory() -> None:
    made: list[int] = []

    def factory() -> int:
        made.append(1)
        return len(made)

    @record(kw_only=True)
    class Counted:
        a: int = field(default_factory=factory)
        b: int

    with pytest.raises(TypeError):
        Counted()  # type: ignore[call-arg]
    assert made == []
    assert Counted(b=1).a == 1
