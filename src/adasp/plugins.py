"""Plugins: your own datasets, backbones and losses, registered from your own module.

A plugin is any importable module that adds entries to the registries when imported::

    # mypkg/reid.py
    from adasp.models import BACKBONES

    @BACKBONES.register("my_net")
    def my_net(*, last_stride: int = 1) -> nn.Module: ...

Load it with ``adasp train --plugin mypkg.reid ... model.backbone=my_net`` (``--plugin`` is
accepted before or after the command, and repeatable), with :func:`load_plugins` from Python,
or, for an installed package, with an entry point in the group ``adasp.plugins``, which is
loaded automatically, once, at the first registry look-up::

    # pyproject.toml of mypkg
    [project.entry-points."adasp.plugins"]
    mypkg = "mypkg.reid"            # a module, imported; or "mypkg.reid:setup", called
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from adasp.errors import UserInputError

#: The entry-point group of installed plugins.
ENTRY_POINT_GROUP = "adasp.plugins"

_entry_points_loaded = False
_loaded: list[str] = []


def _reason(error: BaseException) -> str:
    if isinstance(error, ModuleNotFoundError):
        return f"{error} (is it installed, or is its folder on PYTHONPATH?)"
    return f"{type(error).__name__}: {error}"


def load_plugins(modules: Sequence[str] = ()) -> None:
    """Import the installed entry-point plugins (once), then each module of ``modules``.

    Importing a module twice is a no-op, so loading the same plugin again is harmless.

    Raises:
        UserInputError: a module that cannot be imported (or fails while importing), naming
            the module and the reason.
    """
    load_entry_points()
    for module in modules:
        if module.endswith(".py") or "/" in module or "\\" in module:
            raise UserInputError(
                f"plugin {module!r}: give a module name (e.g. mypkg.reid), not a file path; "
                "put the folder that holds it on PYTHONPATH"
            )
        try:
            importlib.import_module(module)
        except Exception as error:
            raise UserInputError(f"cannot import plugin {module!r}: {_reason(error)}") from error
        if module not in _loaded:
            _loaded.append(module)


def load_entry_points() -> None:
    """Load every installed ``adasp.plugins`` entry point, the first time only.

    An entry point names a module (imported) or a callable (``"module:function"``, called
    with no arguments).

    Raises:
        UserInputError: an entry point that fails to load, naming it and its package.
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    from importlib.metadata import entry_points  # here: ``adasp --help`` stays fast

    # Set first: a plugin that looks a name up while it loads must not load plugins again.
    _entry_points_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = point.load()
            if callable(target):
                target()
        except Exception as error:
            package = point.dist.name if point.dist is not None else "unknown package"
            raise UserInputError(
                f"installed adasp plugin {point.name!r} ({point.value}, from {package}) failed "
                f"to load: {_reason(error)}; fix or uninstall that package"
            ) from error


def loaded_plugins() -> list[str]:
    """The modules loaded by :func:`load_plugins`, in order (to pass ``--plugin`` on to
    sub-processes such as a sweep's runs)."""
    return list(_loaded)
