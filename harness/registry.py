"""One generic registry for models and tasks.

Built-ins register lazily as ``"module:attribute"`` references (and by the decorators when
their module is imported); third-party packages add entries through the entry-point groups
``ctbench.adapters`` and ``ctbench.tasks``. Listing names imports nothing.

Plugins are isolated: an entry point whose import fails, or (models) whose ``card`` is not a
valid ``ModelCard`` named like the entry point, is *broken*: asking for it raises one
:class:`CTBenchError` naming the entry point, its package and the problem, while every other
entry keeps working. An entry point clashing with an existing name is left out and listed in
:attr:`Registry.problems`.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Generic, Optional, TypeVar

from .errors import CTBenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, with lazy references, duplicate detection and "did you mean"."""

    def __init__(self, kind: str, entry_point_group: str | None = None,
                 validate: Optional[Callable[[str, Any], None]] = None) -> None:
        self.kind = kind
        self.group = entry_point_group
        self.validate = validate  # (name, object) -> None, raises CTBenchError; run on plugins
        self._refs: dict[str, str] = {}  # name -> "module:attr", not yet imported
        self._objs: dict[str, T] = {}
        self._plugins: dict[str, EntryPoint] = {}  # names that came from entry points
        self._broken: dict[str, str] = {}  # plugin name -> why it cannot be used
        self.problems: list[str] = []  # entry points left out entirely (name clashes)
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
            if ep.name in self._plugins and self._plugins[ep.name].value == ep.value:
                continue  # the same package seen twice on the path
            if ep.name in self._refs or ep.name in self._objs:
                self.problems.append(
                    f"{self.kind} {ep.name!r} from {_origin(ep)} clashes with an existing {self.kind} "
                    f"of that name and is ignored; rename it in that package's entry points"
                )
                continue
            self._refs[ep.name] = ep.value
            self._plugins[ep.name] = ep

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
        if name in self._broken:
            raise CTBenchError(self._broken[name])
        ref = self._refs[name]
        if name in self._plugins:
            obj = self._load_plugin(name, self._plugins[name])
        else:
            obj = import_ref(ref, f"{self.kind} {name!r}")
        self._refs.pop(name, None)
        self._objs[name] = obj  # type: ignore[assignment]
        return obj  # type: ignore[return-value]

    def _load_plugin(self, name: str, ep: EntryPoint) -> Any:
        """Import and validate an entry point; any failure marks it broken (and raises)."""
        try:
            obj = ep.load()
            if self.validate is not None:
                self.validate(name, obj)
            return obj
        except Exception as e:  # third-party code: whatever it raises, only this entry breaks
            problem = str(e) if isinstance(e, CTBenchError) else f"{type(e).__name__}: {_one_line(e)}"
            dist = _dist_name(ep)
            fix = f"fix or uninstall that package (pip uninstall {dist})" if dist else "fix or remove that entry point"
            self._broken[name] = f"{self.kind} {name!r} from {_origin(ep)} is broken: {problem}; {fix}"
            raise CTBenchError(self._broken[name]) from None

    def entry_point(self, name: str) -> EntryPoint | None:
        """The entry point ``name`` came from (its ``dist`` is the installed package), or None
        for built-ins and names registered in code: what a result records of its adapter."""
        self._scan_entry_points()
        return self._plugins.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self.names()


def import_ref(ref: str, what: str) -> Any:
    """The object at ``package.module:Attr.path``; ``what`` names it in the error if that fails."""
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise CTBenchError(f"{what} could not be loaded from {ref}: {e}") from None
    return obj


def _one_line(e: BaseException, width: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _dist_name(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    try:
        return dist.metadata["Name"] if dist is not None else None
    except Exception:  # malformed metadata: the entry point alone names the plugin
        return None


def _origin(ep: EntryPoint) -> str:
    """``entry point 'mini = mini_adapter:Mini' (package mini-adapter 0.1)``."""
    dist = _dist_name(ep)
    version = getattr(getattr(ep, "dist", None), "version", None)
    package = f" (package {dist}{' ' + version if version else ''})" if dist else ""
    return f"entry point '{ep.name} = {ep.value}'{package}"


def check_model_card(name: str, obj: Any) -> None:
    """A model plugin must carry a ``card`` (a :class:`ctbench.card.ModelCard`) named ``name``."""
    from .card import ModelCard

    card = getattr(obj, "card", None)
    if not isinstance(card, ModelCard):
        raise CTBenchError(f"its `card` is {type(card).__name__}, not a ctbench.card.ModelCard")
    if card.name != name:
        raise CTBenchError(f"its card is named {card.name!r} but its entry point {name!r}; make the two "
                           f"names equal")


def check_task_class(name: str, obj: Any) -> None:
    """A task plugin must be a concrete :class:`ctbench.task.Task` subclass whose ``category``
    is its entry-point name."""
    import inspect

    from .task import Task

    if not (isinstance(obj, type) and issubclass(obj, Task)):
        raise CTBenchError(f"it is {obj!r}, not a subclass of ctbench.task.ProbeTask or EvalTask")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise CTBenchError(f"it does not implement {missing} of the task contract (see docs/adding-a-task.md)")
    if obj.category != name:
        raise CTBenchError(f"its category is {obj.category!r} but its entry point {name!r}; make the two "
                           f"names equal")


MODELS: Registry = Registry("model", "ctbench.adapters", validate=check_model_card)
TASKS: Registry = Registry("task category", "ctbench.tasks", validate=check_task_class)

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
