"""Plugins: your own datasets, backbones and losses, registered from your own module.

A plugin is any importable module that adds entries to the registries when imported::

    # mypkg/reid.py
    from adasp.models import BACKBONES

    @BACKBONES.register("my_net")
    def my_net(*, last_stride: int = 1) -> nn.Module: ...

Load it with ``adasp train --plugin mypkg.reid ... model.backbone=my_net`` or with the file's
path, ``--plugin ./reid.py`` (``--plugin`` is accepted before or after the command, and
repeatable), with :func:`load_plugins` from Python,
or, for an installed package, with an entry point in the group ``adasp.plugins``, which is
loaded automatically, once, at the first registry look-up::

    # pyproject.toml of mypkg
    [project.entry-points."adasp.plugins"]
    mypkg = "mypkg.reid"            # a module, imported; or "mypkg.reid:setup", called

Each registry remembers which ``--plugin`` registered each name (:func:`current_plugin`), so
a training run records, in its model file, the plugins its backbone, losses and datasets came
from, and a later command that lacks them says which ``--plugin`` to add.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from adasp.errors import UserInputError

#: The entry-point group of installed plugins.
ENTRY_POINT_GROUP = "adasp.plugins"

_entry_points_loaded = False
_loaded: list[str] = []
_loading: list[str] = []  # the plugin being imported (a stack: a plugin may load another)


def current_plugin() -> str | None:
    """The ``--plugin`` being imported right now (as :func:`loaded_plugins` names it), or
    None; registries record it as the origin of what they register meanwhile."""
    return _loading[-1] if _loading else None


def _is_path(module: str) -> bool:
    return module.endswith(".py") or "/" in module or "\\" in module


def _import_file(spec_text: str) -> str:
    """Import a plugin given as a ``.py`` file path; returns its absolute path (the name it is
    recorded by, so that runs in other folders find it too)."""
    path = Path(spec_text).expanduser().resolve()
    if not path.is_file():
        raise UserInputError(f"plugin file not found: {path} (from --plugin {spec_text})")
    name = f"adasp_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UserInputError(f"plugin {spec_text!r}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return str(path)


def _reason(error: BaseException) -> str:
    if isinstance(error, ModuleNotFoundError):
        return f"{error} (is it installed, or is its folder on PYTHONPATH?)"
    return f"{type(error).__name__}: {error}"


def load_plugins(modules: Sequence[str] = ()) -> None:
    """Import the installed entry-point plugins (once), then each of ``modules``: a module
    name (``mypkg.reid``) or a ``.py`` file path (``./reid.py``).

    Importing a module twice is a no-op, so loading the same plugin again is harmless.

    Raises:
        UserInputError: a module that cannot be imported (or fails while importing), naming
            the module and the reason.
    """
    load_entry_points()
    for module in modules:
        name = str(Path(module).expanduser().resolve()) if _is_path(module) else module
        _loading.append(name)
        try:
            if _is_path(module):
                _import_file(module)
            else:
                importlib.import_module(module)
        except UserInputError:
            raise
        except Exception as error:
            raise UserInputError(f"cannot import plugin {module!r}: {_reason(error)}") from error
        finally:
            _loading.pop()
        if name not in _loaded:
            _loaded.append(name)


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
