"""One registry for every pluggable kind: losses, datasets, backbones, evaluation protocols.

A :class:`Registry` maps names to objects (usually builders), in registration order, each with
an optional metadata object (``info``). Code outside the package adds entries from its own
module, loaded with ``--plugin MODULE`` or an installed entry point (see :mod:`adasp.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from adasp.errors import UserInputError, did_you_mean
from adasp.plugins import current_plugin, load_entry_points

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one ``kind`` (``"loss"``, ``"dataset"``, ...), in registration order.

    Example: ``PROTOCOLS = Registry("protocol")``; ``@PROTOCOLS.register("single", info=...)``
    on a function; then ``PROTOCOLS.get("single")``, ``PROTOCOLS.info("single")``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, tuple[T, Any]] = {}
        self._origins: dict[str, str] = {}

    @overload
    def register(
        self, name: str, obj: None = None, *, info: Any = None, override: bool = False
    ) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, obj: T, *, info: Any = None, override: bool = False) -> T: ...
    def register(
        self, name: str, obj: T | None = None, *, info: Any = None, override: bool = False
    ) -> T | Callable[[T], T]:
        """Register ``obj`` as ``name`` with metadata ``info``, and return ``obj``; without
        ``obj``, return a decorator that registers what it decorates and returns it unchanged.

        Raises:
            UserInputError: ``name`` is not a non-empty string, or is taken and not ``override``.
        """
        if not isinstance(name, str) or not name:
            raise UserInputError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def add(target: T) -> T:
            if name in self._entries and not override:
                raise UserInputError(
                    f"{self.kind} {name!r} is already registered; choose another name "
                    "(or pass override=True to replace it)"
                )
            self._entries[name] = (target, info)
            origin = current_plugin()
            if origin is not None:
                self._origins[name] = origin
            return target

        return add if obj is None else add(obj)

    @property
    def _loaded(self) -> dict[str, tuple[T, Any]]:
        # Installed plugins register at the first look-up of any registry (a no-op later), so
        # library users get them without a call, as ``adasp`` users do.
        load_entry_points()
        return self._entries

    def unregister(self, name: str) -> None:
        """Remove ``name`` (an unknown name raises, as for :meth:`get`)."""
        self._check(name)
        del self._entries[name]
        self._origins.pop(name, None)

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            UserInputError: an unknown name; the message lists the allowed ones.
        """
        self._check(name)
        return self._entries[name][0]

    def info(self, name: str) -> Any:
        """The metadata registered with ``name`` (``None`` when none was given)."""
        self._check(name)
        return self._entries[name][1]

    def origin(self, name: str) -> str | None:
        """The ``--plugin`` that registered ``name`` (None: built in, or registered from
        Python or an installed entry point)."""
        return self._origins.get(name)

    def names(self) -> list[str]:
        """The registered names in registration order, as error messages list them."""
        return list(self._loaded)

    def _check(self, name: str) -> None:
        if not isinstance(name, str) or name not in self._loaded:
            raise UserInputError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; allowed: "
                f"{', '.join(self.names())}"
            )

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._loaded

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._loaded))

    def __len__(self) -> int:
        return len(self._loaded)
