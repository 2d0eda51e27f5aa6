"""``inspect`` for PID 1: the standard module only once something needs more than
``dataclasses`` does.

``dataclasses`` imports ``inspect`` at its top, and with it ``ast``, ``dis`` and
``opcode``, for one call per class: ``inspect.get_annotations(cls)``.  Under emulation
(the board's shell, this image) ``import dataclasses`` took 0.55 s; under qemu-user, half
of that import is ``inspect``'s.  :func:`install` puts a stand-in module in
``sys.modules`` first.  It answers that call for a class as the standard function does:
the class's own ``__annotations__``, copied, none inherited, nothing evaluated.  Every
other name, and ``get_annotations`` with any other argument, imports the standard
``inspect``, which then takes the stand-in's place in ``sys.modules``; code holding the
stand-in reaches the standard module through it.  A dataclass without a docstring is one
such use: ``dataclasses`` calls ``inspect.signature`` to write one.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

NAME = "inspect"


class _Inspect(types.ModuleType):
    """The stand-in: ``get_annotations`` for classes, everything else from ``inspect``."""

    def get_annotations(self, obj: object, *, globals: dict[str, Any] | None = None,
                        locals: dict[str, Any] | None = None,
                        eval_str: bool = False) -> dict[str, Any]:
        if not isinstance(obj, type) or eval_str or globals is not None or locals is not None:
            answer: dict[str, Any] = real().get_annotations(
                obj, globals=globals, locals=locals, eval_str=eval_str)
            return answer
        ann = getattr(obj, "__dict__", {}).get("__annotations__")
        if isinstance(ann, types.GetSetDescriptorType):
            ann = None
        if ann is None:
            return {}
        if not isinstance(ann, dict):
            raise ValueError(f"{obj!r}.__annotations__ is neither a dict nor None")
        return dict(ann)

    def __getattr__(self, name: str) -> Any:
        return getattr(real(), name)


def install() -> bool:
    """Register the stand-in; False if ``inspect`` is imported already."""
    if NAME in sys.modules:
        return False
    sys.modules[NAME] = _Inspect(NAME, "inspect, imported on first use (appliance.boot)")
    return True


def real() -> types.ModuleType:
    """The standard ``inspect``, imported now if only the stand-in is there."""
    module = sys.modules.get(NAME)
    if module is None or isinstance(module, _Inspect):
        sys.modules.pop(NAME, None)
        module = importlib.import_module(NAME)
    return module


def standing_in() -> bool:
    """Whether nothing has needed the standard ``inspect`` yet."""
    return isinstance(sys.modules.get(NAME), _Inspect)
