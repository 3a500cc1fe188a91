"""What ``fluster submit module:function`` sends: the function and what it needs to run on a worker.

With ``--workspace DIR`` the directory travels as the job's workspace and the function is imported from it
there. Without one, the module travels by value, with every module it imported from its own directory
(siblings such as a ``helperlib.py`` beside it), so a script directory works without installing anything.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

from fluster.cli.failures import UsageError


def load_function(target: str, workspace: Path | None) -> tuple[Callable[..., Any], ModuleType]:
    """Import ``module:function`` from ``workspace`` (or the working directory) and return the function.

    Raises:
        UsageError: the target is malformed, the module cannot be imported or has no such function.
    """
    module_name, colon, func_name = target.partition(":")
    if not colon or not module_name or not func_name:
        raise UsageError(f"target must look like module:function (e.g. train:main), got {target!r}")
    base = (workspace or Path.cwd()).resolve()
    sys.path.insert(0, str(base))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name.split(".")[0]):
            raise UsageError(
                f"no module {module_name!r} in {base} (run from the directory that holds it, or pass --workspace)"
            ) from None
        raise UsageError(f"module {module_name!r} cannot be imported: {exc}") from None
    except Exception as exc:  # the user's module raised while importing: say so in one line
        raise UsageError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    fn: Any = module
    for part in func_name.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise UsageError(f"module {module_name!r} has no function {func_name!r}")
    if not callable(fn):
        raise UsageError(f"{target} is not callable (it is a {type(fn).__name__})")
    if workspace is not None:
        origin = Path(module.__file__ or "").resolve()
        if base not in origin.parents:
            raise UsageError(f"module {module_name!r} ({origin}) is not inside the workspace {base}")
    return fn, module


def ship_by_value(module: ModuleType, base: Path) -> list[str]:
    """Pickle ``module`` and every loaded module from its directory by value, when it comes from ``base``
    (an installed module goes by reference: the workers have it too); return the names shipped."""
    directory = Path(module.__file__ or "").resolve().parent
    base = base.resolve()
    if directory != base and base not in directory.parents:
        return []
    names: list[str] = []
    for name, loaded in list(sys.modules.items()):
        path = getattr(loaded, "__file__", None)
        if not path or name == "__main__":
            continue
        resolved = Path(path).resolve()
        if resolved.parent == directory or directory in resolved.parents and _top_in(directory, resolved):
            if "." in name and name.rsplit(".", 1)[0] in names:
                continue  # a submodule of a package already shipped goes with it
            cloudpickle.register_pickle_by_value(loaded)
            names.append(name)
    return names


def parse_args(values: list[str], as_json: bool) -> list[Any]:
    """The function's positional arguments: strings, or JSON values with ``--json-args``.

    Raises:
        UsageError: an argument is not valid JSON.
    """
    if not as_json:
        return list(values)
    parsed = []
    for value in values:
        try:
            parsed.append(json.loads(value))
        except ValueError as exc:
            raise UsageError(f"argument {value!r} is not JSON ({exc}); quote strings as '\"text\"'") from None
    return parsed


def _top_in(directory: Path, path: Path) -> bool:
    """Whether ``path`` belongs to a package that sits directly in ``directory``."""
    relative = path.relative_to(directory)
    return (directory / relative.parts[0] / "__init__.py").exists()
