"""One generic registry for models and tasks.

Built-ins register lazily as ``"module:attribute"`` references (and by the decorators when
their module is imported); third-party packages add entries through the entry-point groups
``ctbench.adapters`` and ``ctbench.tasks``. Listing names imports nothing.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

from .errors import CTBenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, with lazy references, duplicate detection and "did you mean"."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.group = entry_point_group
        self._refs: dict[str, str] = {}  # name -> "module:attr", not yet imported
        self._objs: dict[str, T] = {}
        self._scanned = False

    def add_lazy(self, name: str, ref: str) -> None:
        """Register ``name`` as a reference imported only when first used."""
        if name in self._refs or name in self._objs:
            raise CTBenchError(f"{self.kind} {name!r} is registered twice ({ref})")
        self._refs[name] = ref

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering an object under ``name``; a second, different object raises."""

        def deco(obj: T) -> T:
            ref = f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}"
            if name in self._objs and self._objs[name] is not obj:
                raise CTBenchError(f"{self.kind} {name!r} is registered twice ({ref})")
            if name in self._refs and self._refs[name] != ref:
                raise CTBenchError(
                    f"{self.kind} {name!r} is registered twice ({self._refs[name]} and {ref})"
                )
            self._refs.pop(name, None)
            self._objs[name] = obj
            return obj

        return deco

    def _scan_entry_points(self) -> None:
        if self._scanned or self.group is None:
            return
        self._scanned = True
        for ep in entry_points(group=self.group):
            if ep.name in self._refs or ep.name in self._objs:
                raise CTBenchError(
                    f"{self.kind} {ep.name!r} from package entry point {ep.value} clashes with an "
                    f"existing {self.kind}; rename it in that package's entry points"
                )
            self._refs[ep.name] = ep.value

    def names(self) -> list[str]:
        """Sorted names of every registered entry, without importing any of them."""
        self._scan_entry_points()
        return sorted({*self._refs, *self._objs})

    def get(self, name: str) -> T:
        """The object registered as ``name`` (importing it if needed), or a clear error."""
        self._scan_entry_points()
        if name in self._objs:
            return self._objs[name]
        if name not in self._refs:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise CTBenchError(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names()) or 'none'}"
            )
        ref = self._refs[name]
        module_name, _, attr = ref.partition(":")
        try:
            obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise CTBenchError(f"{self.kind} {name!r} could not be loaded from {ref}: {e}") from None
        self._refs.pop(name, None)
        self._objs[name] = obj  # type: ignore[assignment]
        return obj  # type: ignore[return-value]

    def __contains__(self, name: str) -> bool:
        return name in self.names()


MODELS: Registry = Registry("model", "ctbench.adapters")
TASKS: Registry = Registry("task category", "ctbench.tasks")

register_model = MODELS.register
register_task = TASKS.register


def _load_builtins() -> None:
    from ctbench.adapters import BUILTIN_MODELS
    from ctbench.tasks import BUILTIN_TASKS

    for name, ref in BUILTIN_MODELS.items():
        MODELS.add_lazy(name, ref)
    for name, ref in BUILTIN_TASKS.items():
        TASKS.add_lazy(name, ref)


_load_builtins()
