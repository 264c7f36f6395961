"""From what the user typed to a configured Host: load the APP, apply ``--only`` and ``--pool``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from consumer_host.errors import ConfigError
from consumer_host.host import Host

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # consumer_host itself, not cli/


class AppImportError(Exception):
    """The user's module raised while being imported: their traceback is what they need.

    Not for a :class:`ConfigError` (``pool=0``, ``prefetch=-1``): that is an option mistake the
    message already explains, so it becomes one line naming the app and the line of the call.
    """

    def __init__(self, spec: str, cause: BaseException) -> None:
        super().__init__(f"importing {spec!r} failed: {type(cause).__name__}: {cause}")
        self.cause = cause


def load_app(spec: str) -> Host:
    """Load ``pkg.module:attr``, ``pkg.module`` (attr ``host``) or ``path/app.py[:attr]``.

    A host with nothing registered is a :class:`ConfigError` too: running it would do nothing,
    silently (usually the module that registers the workers is never imported).
    """
    if not spec or not isinstance(spec, str):
        raise ConfigError("APP is missing: give package.module:host or path/to/app.py")
    target, _, attr = spec.partition(":")
    attr = attr or "host"
    if not target:
        raise ConfigError(f"APP {spec!r} names no module before ':'")
    _refuse_unloadable(spec, target)
    if target.endswith(".py") or os.sep in target:
        module = _load_file(spec, Path(target))
    else:
        module = _load_module(spec, target)
    host = module
    for part in attr.split("."):
        if not hasattr(host, part):
            raise ConfigError(f"APP {spec!r}: module {target!r} has no attribute {attr!r}")
        host = getattr(host, part)
    if callable(host) and not isinstance(host, Host):
        # A factory function returning the host, as in ``app:create_host``.
        try:
            host = host()
        except ConfigError as exc:
            raise _option_mistake(spec, exc) from None
        except Exception as exc:
            raise AppImportError(spec, exc) from exc
    if not isinstance(host, Host):
        raise ConfigError(
            f"APP {spec!r}: {attr!r} is a {type(host).__name__}, not a consumer_host.Host"
        )
    if not host.registry.registrations:
        raise ConfigError(
            f"APP {spec!r} registered no workers: decorate a function with "
            "@host.consumer(...) or @host.worker(...) (and import the module that does)"
        )
    return host


def _refuse_unloadable(spec: str, target: str) -> None:
    """``run .`` and ``run .app``: one line saying what to give instead of an import error
    (``run ./app.py`` and ``run pkg:host`` with ``pkg/`` here are fine)."""
    is_path = target.endswith(".py") or os.sep in target
    is_package = (Path(target) / "__init__.py").is_file() and not is_path
    if Path(target).is_dir() and not target.endswith(".py") and not is_package:
        raise ConfigError(
            f"APP {spec!r} is a directory: name the app's file (path/to/app.py) or its module "
            "(package.module:host)"
        )
    if target.startswith(".") and not is_path:
        raise ConfigError(
            f"APP {spec!r}: a relative module name cannot be imported; name it from the "
            "project's root (package.module:host) or give the file (path/to/app.py)"
        )


def _option_mistake(spec: str, exc: ConfigError) -> ConfigError:
    """``APP 'app.py' (app.py line 12): pool must be ...``: the user's line, not our frames."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not Path(frame.filename).resolve().is_relative_to(_PACKAGE_DIR)
        and not frame.filename.startswith("<frozen ")
    ]
    where = ""
    if frames:
        where = f" ({_shown_path(frames[-1].filename)} line {frames[-1].lineno})"
    return ConfigError(f"APP {spec!r}{where}: {exc}")


def _shown_path(filename: str) -> str:
    try:
        return os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        return filename


def _load_module(spec: str, name: str) -> ModuleType:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError(f"APP {spec!r}: no module named {exc.name!r}") from None
        raise AppImportError(spec, exc) from exc
    except ConfigError as exc:
        raise _option_mistake(spec, exc) from None
    except Exception as exc:
        raise AppImportError(spec, exc) from exc


def _load_file(spec: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"APP {spec!r}: no such file {str(path)!r}")
    name = f"consumer_host_app_{path.stem}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"APP {spec!r}: cannot load {str(path)!r} as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    # Let the app import its neighbours, as `python path/app.py` would.
    sys.path.insert(0, str(path.resolve().parent))
    try:
        loader_spec.loader.exec_module(module)
    except ConfigError as exc:
        raise _option_mistake(spec, exc) from None
    except Exception as exc:
        raise AppImportError(spec, exc) from exc
    return module


def parse_pool_overrides(values: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``("orders=3",)`` -> ``{"orders": 3}``."""
    pools = {}
    for value in values:
        name, sep, size = value.partition("=")
        if not sep or not name:
            raise ConfigError(f"--pool expects NAME=N, got {value!r}")
        try:
            pools[name] = int(size)
        except ValueError:
            raise ConfigError(f"--pool {value!r}: N must be a whole number") from None
        if pools[name] < 1:
            raise ConfigError(f"--pool {value!r}: N must be at least 1")
    return pools


def apply_overrides(host: Host, *, only: list[str], pools: dict[str, int]) -> None:
    if only:
        host.registry.restrict_to(only)
    for name, size in pools.items():
        host.registry.set_pool(name, size)
