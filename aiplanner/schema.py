"""JSON Schemas for model output, derived from the :class:`~aiplanner.actions.ActionRegistry`.

Nothing here is written by hand per action: every view is built from the registry, so adding an
action changes the prompt docs, the schemas and the codec together.

Shapes (examples with the default registry):

* verbose (the baseline): ``{"steps":[{"act":"MoveTo","x":3,"y":4},{"act":"Reload"}]}``
* compact: ``{"plan":[["M",3,4],["A",91]]}``; in free mode with named places
  ``{"plan":[["M",2],["A",91]]}`` (place 2 of the prompt's list). The key (:data:`PLAN_KEY`) is
  not an action code: under the one-letter key ``"s"`` the 135M model wrote ``S`` (Scan) as the
  first code in 65 of 66 suite plans, repeating the letter it had just written.
* choice (guided mode): ``{"c":1}``
* packed (several agents): ``[{"id":12,"c":0},{"id":15,"c":2}]``

Arrays of fixed length use ``prefixItems`` with ``minItems``/``maxItems`` rather than
``"items": false``, which llama.cpp's schema-to-grammar converter rejects. Every object is closed
(``additionalProperties: false``) and requires all of its properties, so a grammar built from the
schema has exactly one key order and no optional parts for a small model to wander into.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from aiplanner.actions import ActionRegistry, ActionSpec, ArgKind, ArgSpec
from aiplanner.errors import ConfigError
from aiplanner.places import PLACE_STRIDE, slots

__all__ = [
    "LEGACY_PLAN_KEY",
    "PLAN_KEY",
    "choice_schema",
    "compact_plan_schema",
    "packed_schema",
    "verbose_plan_schema",
    "with_agent_id",
    "with_first_step",
]

Schema = dict[str, Any]

PLAN_KEY: Final = "plan"
"""The key of a compact plan's steps: ``{"plan":[...]}``. Not a letter any action code could be."""

LEGACY_PLAN_KEY: Final = "s"
"""The key compact plans had before :data:`PLAN_KEY`: still decoded, never asked for."""

_CELL_MAX = PLACE_STRIDE - 1
_PACKED_MAX = PLACE_STRIDE * PLACE_STRIDE - 1


def verbose_plan_schema(registry: ActionRegistry) -> Schema:
    """The verbose plan form, ``{"steps":[{"act":"MoveTo","x":3,"y":4}]}``: the token-hungry
    baseline that the compact form is measured against."""
    return _closed_object(
        {
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": registry.max_steps,
                "items": {"anyOf": [_verbose_step(spec) for spec in registry.actions]},
            }
        }
    )


def compact_plan_schema(
    registry: ActionRegistry,
    *,
    ids: Sequence[int] | None = None,
    enemy_ids: Sequence[int] | None = None,
    ally_ids: Sequence[int] | None = None,
    size: tuple[int, int] | None = None,
    places: int | None = None,
    cover_places: Sequence[int] = (),
) -> Schema:
    """The compact free-mode form, ``{"plan":[["M",3,4],["A",91]]}``: a one-letter code, then the
    integer arguments in declaration order.

    ``ids`` narrows every enemy and ally id argument to those ids; ``enemy_ids`` / ``ally_ids``
    narrow one kind each and take precedence over ``ids``. An action whose id argument has no
    allowed value is left out, so the grammar cannot name a target that is not there. ``size``
    (map width, height) narrows x and y arguments to the map.

    ``places`` (the number of named places, :mod:`aiplanner.places`) switches cells to place
    indices: an X,Y pair and a ``PLACE`` argument become one integer in ``0..places-1``
    (``{"plan":[["M",2]]}``), a ``COVER`` argument one of ``cover_places``; an action with a place
    and no place to name is left out. Without ``places`` each of them is written as ``x, y``.

    Raises :class:`ConfigError` when the narrowing leaves no action at all.
    """
    allowed: dict[ArgKind, tuple[int, ...] | None] = {
        ArgKind.ENEMY: _ids(enemy_ids if enemy_ids is not None else ids),
        ArgKind.ALLY: _ids(ally_ids if ally_ids is not None else ids),
    }
    bounds: dict[ArgKind, tuple[int, int]] = {}
    if size is not None:
        bounds = {ArgKind.X: (0, size[0] - 1), ArgKind.Y: (0, size[1] - 1)}
    place_ids = {
        "place": None if places is None else tuple(range(places)),
        "cover": None if places is None else _ids(i for i in cover_places if 0 <= i < places),
    }
    steps = [
        step
        for spec in registry.actions
        if (step := _compact_step(spec, allowed, bounds, place_ids)) is not None
    ]
    if not steps:
        raise ConfigError("no action of the registry is possible with the given ids and size")
    return _closed_object(
        {
            PLAN_KEY: {
                "type": "array",
                "minItems": 1,
                "maxItems": registry.max_steps,
                "items": {"anyOf": steps},
            }
        }
    )


def with_first_step(
    plan_schema: Mapping[str, Any], spec: ActionSpec, values: Sequence[int]
) -> Schema:
    """``plan_schema`` (a :func:`compact_plan_schema`) with its first step fixed to ``spec`` with
    ``values`` (as the compact form writes them: place indices for places); the steps after it
    are free as before, up to the same maximum.

    Raises :class:`ConfigError` when the schema has no step for ``spec`` or a value is not one
    its step allows: the fixed step is always one the schema itself accepts.
    """
    try:
        plan = plan_schema["properties"][PLAN_KEY]
        steps: Sequence[Mapping[str, Any]] = plan["items"]["anyOf"]
    except (KeyError, TypeError) as exc:
        raise ConfigError("with_first_step needs a compact plan schema") from exc
    for step in steps:
        head, *args = step["prefixItems"]
        if head.get("const") in (spec.code, spec.name):
            break
    else:
        raise ConfigError(f"the plan schema has no step for {spec.name}")
    if len(args) != len(values) or not all(map(_allows, args, values)):
        raise ConfigError(f"{spec.name} {list(values)} is not a step the plan schema allows")
    first = [{"const": head["const"]}, *({"const": v} for v in values)]
    fixed = {"type": "array", "prefixItems": first, "minItems": len(first), "maxItems": len(first)}
    return _closed_object(
        {
            PLAN_KEY: {
                "type": "array",
                "prefixItems": [fixed],
                "items": plan["items"],
                "minItems": 1,
                "maxItems": plan["maxItems"],
            }
        }
    )


def _allows(arg: Mapping[str, Any], value: int) -> bool:
    if "enum" in arg:
        return value in arg["enum"]
    return bool(arg.get("minimum", value) <= value <= arg.get("maximum", value))


def choice_schema(n: int) -> Schema:
    """Guided mode: ``{"c": i}`` with ``0 <= i < n``.

    Raises :class:`ConfigError` when ``n`` is not at least 1 (there is nothing to choose from).
    """
    if n < 1:
        raise ConfigError(f"a choice needs at least one candidate, got {n}")
    return _closed_object({"c": {"enum": list(range(n))}})


def with_agent_id(entity: int, element: Mapping[str, Any]) -> Schema:
    """``element`` (a closed object schema) with a leading ``"id": entity`` property.

    Raises :class:`ConfigError` when ``element`` is not an object schema with ``properties``, or
    already has an ``id`` property.
    """
    props = element.get("properties")
    if element.get("type") != "object" or not isinstance(props, Mapping):
        raise ConfigError("a packed element schema must be an object schema with properties")
    if "id" in props:
        raise ConfigError("a packed element schema already has an 'id' property")
    # "id" first: the grammar then makes the model name the agent before planning for it.
    return _closed_object({"id": {"const": entity}, **props})


def packed_schema(element_schema_by_id: Mapping[int, Mapping[str, Any]]) -> Schema:
    """One JSON array with one element per agent, in the mapping's order; each element is that
    agent's schema with its id added (``[{"id":12,"c":0},{"id":15,"c":2}]``).

    Raises :class:`ConfigError` for an empty mapping or an element that is not an object schema.
    """
    if not element_schema_by_id:
        raise ConfigError("a packed schema needs at least one agent")
    items = [with_agent_id(ent, schema) for ent, schema in element_schema_by_id.items()]
    return {
        "type": "array",
        "prefixItems": items,
        "minItems": len(items),
        "maxItems": len(items),
    }


def _closed_object(props: Mapping[str, Any]) -> Schema:
    return {
        "type": "object",
        "properties": dict(props),
        "required": list(props),
        "additionalProperties": False,
    }


def _allowed_ids(
    arg: ArgSpec, allowed: Mapping[ArgKind, tuple[int, ...] | None]
) -> tuple[int, ...] | None:
    ids = allowed.get(arg.kind)
    if ids is None:
        return None
    # The declared bounds hold here too: the codec rejects ids outside them.
    return tuple(i for i in ids if arg.lo <= i <= arg.hi)


def _range(arg: ArgSpec, bounds: Mapping[ArgKind, tuple[int, int]]) -> tuple[int, int] | None:
    lo, hi = bounds.get(arg.kind, (arg.lo, arg.hi))
    lo, hi = max(lo, arg.lo), min(hi, arg.hi)
    return (lo, hi) if lo <= hi else None


def _int_arg(
    arg: ArgSpec,
    allowed: Mapping[ArgKind, tuple[int, ...] | None],
    bounds: Mapping[ArgKind, tuple[int, int]],
) -> Schema:
    ids = _allowed_ids(arg, allowed)
    if ids is not None:
        return {"enum": list(ids)}
    lo, hi = _range(arg, bounds) or (arg.lo, arg.hi)
    return {"type": "integer", "minimum": lo, "maximum": hi}


def _verbose_step(spec: ActionSpec) -> Schema:
    props: dict[str, Any] = {"act": {"const": spec.name}}
    for a in spec.args:
        if a.kind in (ArgKind.PLACE, ArgKind.COVER):  # a packed cell: lo/hi do not apply
            props[a.name] = {"type": "integer", "minimum": 0, "maximum": _PACKED_MAX}
        else:
            props[a.name] = _int_arg(a, {}, {})
    return _closed_object(props)


def _compact_step(
    spec: ActionSpec,
    allowed: Mapping[ArgKind, tuple[int, ...] | None],
    bounds: Mapping[ArgKind, tuple[int, int]],
    place_ids: Mapping[str, tuple[int, ...] | None],
) -> Schema | None:
    """One action's step schema, or None when some argument has no allowed value."""
    items: list[Schema] = [{"const": spec.code}]
    for slot in slots(spec):
        if slot.kind == "plain":
            arg = spec.args[slot.args[0]]
            if _allowed_ids(arg, allowed) == () or _range(arg, bounds) is None:
                return None
            items.append(_int_arg(arg, allowed, bounds))
            continue
        indices = place_ids[slot.kind]
        if indices is not None:
            if not indices:
                return None
            items.append({"enum": list(indices)})
            continue
        if len(slot.args) == 2:  # an X,Y pair, written as itself
            pair = (spec.args[i] for i in slot.args)
            if any(_range(a, bounds) is None for a in pair):
                return None
            items += [_int_arg(spec.args[i], allowed, bounds) for i in slot.args]
            continue
        # A PLACE or COVER argument written as a cell: x then y, within the map if known.
        for kind in (ArgKind.X, ArgKind.Y):
            lo, hi = bounds.get(kind, (0, _CELL_MAX))
            items.append({"type": "integer", "minimum": lo, "maximum": hi})
    return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}


def _ids(ids: Iterable[int] | None) -> tuple[int, ...] | None:
    # Sorted and deduplicated: one set of ids, one schema (and one grammar cache entry).
    return None if ids is None else tuple(sorted(set(ids)))
