"""aiplanner.queries: esper's queries, cached until esper's next change, from its tables."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import esper
import pytest

from aiplanner import queries
from aiplanner.components import Agent, Health, Position, Team


@dataclass
class Tag:
    name: str = ""


@pytest.fixture(params=["tables", "public"])
def tables(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both ways of building: from esper's tables, and through its public queries (an esper
    that keeps its tables otherwise)."""
    if request.param == "public":
        monkeypatch.setattr(queries, "_tables", lambda: None)
    yield request.param


def _pairs(found: list[tuple[int, object]]) -> list[tuple[int, int]]:
    return [(e, id(c)) for e, c in found]


def _rows(found: list[tuple[int, tuple[object, ...]]]) -> set[tuple[int, tuple[int, ...]]]:
    return {(e, tuple(id(c) for c in comps)) for e, comps in found}


def _same_as_esper() -> None:
    for t in (Agent, Position, Health, Team, Tag):
        ids, found = queries.column(t)
        assert _pairs(list(zip(ids, found, strict=True))) == _pairs(esper.get_component(t))
        assert queries.entities(t) == {e for e, _ in esper.get_component(t)}
    for types in [(Agent, Position), (Position, Agent, Health), (Agent, Position, Health, Team)]:
        assert _rows(queries.components(*types)) == _rows(esper.get_components(*types))
        first = [e for e, _ in esper.get_component(types[0])]
        assert [e for e, _ in queries.components(*types)] == [
            e for e in first if e in {e for e, _ in esper.get_components(*types)}
        ]  # in the first type's order


def test_results_equal_esper_s_and_follow_every_kind_of_change(world: str, tables: str) -> None:
    ents = [
        esper.create_entity(Agent(), Position(float(i), 0.0), Health(10 * i), Team(i % 2))
        for i in range(6)
    ]
    esper.create_entity(Agent(), Position(9.0, 9.0))  # no health, no team
    esper.create_entity(Tag("map"))
    _same_as_esper()
    changes = [
        lambda: esper.add_component(ents[0], Tag("new")),  # a component comes
        lambda: esper.remove_component(ents[1], Team),  # ...goes
        lambda: esper.add_component(ents[2], Position(5.0, 5.0)),  # ...is replaced
        lambda: esper.delete_entity(ents[3], immediate=True),  # an entity goes
        lambda: esper.create_entity(Agent(), Position(1.0, 1.0), Health(1), Team(0)),  # ...comes
    ]
    for change in changes:
        before = queries.components(Agent, Position, Health, Team)
        change()
        assert queries.components(Agent, Position, Health, Team) is not before
        _same_as_esper()
    esper.delete_entity(ents[4])  # deferred, as esper does: gone after the next process()
    esper.process()
    _same_as_esper()
    assert ents[4] not in queries.entities(Agent)


def test_kept_while_nothing_changes(world: str, tables: str) -> None:
    esper.create_entity(Agent(), Position(0.0, 0.0))
    one = queries.column(Agent)
    many = queries.components(Agent, Position)
    stamp = queries.generation()
    esper.component_for_entity(one[0][0], Position).x = 3.0  # a field changes: no new query
    esper.process()
    assert queries.column(Agent) is one and queries.components(Agent, Position) is many
    assert queries.generation() is stamp
    assert many[0][1][1].x == 3.0  # the rows hold the components themselves


def test_types_no_entity_holds_give_empty_results(world: str, tables: str) -> None:
    esper.create_entity(Agent())
    assert queries.column(Tag) == ([], []) and queries.entities(Tag) == set()
    assert queries.components(Agent, Tag) == [] and queries.components(Tag, Agent) == []
    assert queries.components() == []


def test_each_world_its_own_results(world: str, tables: str) -> None:
    mine = esper.create_entity(Agent())
    rows = queries.column(Agent)
    esper.switch_world(world + "-other")
    try:
        assert queries.column(Agent) == ([], [])
        theirs = esper.create_entity(Agent())
        assert queries.column(Agent)[0] == [theirs]
    finally:
        esper.switch_world(world)
        esper.delete_world(world + "-other")
    again = queries.column(Agent)
    assert again[0] == [mine] and again is not rows  # rebuilt after the switch


def test_entity_table_is_esper_s_own_or_none(world: str, tables: str) -> None:
    ent = esper.create_entity(Agent(), Tag("x"))
    table = queries.entity_table()
    if tables == "public":
        assert table is None
    else:
        assert table is not None and table[ent] == {
            Agent: esper.component_for_entity(ent, Agent),
            Tag: esper.component_for_entity(ent, Tag),
        }


class _Freed:
    """Something whose freeing a weak reference sees."""


def test_replaced_results_are_freed_by_release_not_before(world: str) -> None:
    queries.release()
    esper.create_entity(Agent())
    queries.column(Agent)
    kept = _Freed()
    ref = weakref.ref(kept)
    queries.retire(kept)
    del kept
    assert ref() is not None  # kept until release()
    retired = len(queries._retired)
    esper.create_entity(Agent())  # a change: the results of before are retired, not freed
    queries.generation()
    assert len(queries._retired) == retired + 1
    queries.release()
    assert ref() is None and queries._retired == []


def test_at_most_a_few_retired_results_wait(world: str) -> None:
    queries.release()
    refs = []
    for _ in range(queries.RETIRED_KEPT + 1):
        obj = _Freed()
        refs.append(weakref.ref(obj))
        queries.retire(obj)
        del obj
    assert refs[0]() is None  # the oldest was freed at once
    assert all(r() is not None for r in refs[1:])
    queries.release()


def test_nothing_waits_in_a_program_that_never_releases(
    world: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries.release()
    monkeypatch.setattr(queries, "_kept", False)  # as before any call of release()
    obj = _Freed()
    ref = weakref.ref(obj)
    queries.retire(obj)
    del obj
    assert ref() is None and queries._retired == []
