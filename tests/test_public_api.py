"""The public names: ``asyncsession.__all__`` is complete, importable, documented, and
each name shows as ``asyncsession.X`` (not its private module) in tracebacks and reprs."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
import traceback
from pathlib import Path
from types import ModuleType

import pytest

import asyncsession

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = [name for name in asyncsession.__all__ if not name.startswith("__")]


def test_all_lists_every_public_name() -> None:
    # dir(), not vars(): some names are imported on first use (see LAZY_MODULES below).
    defined = {
        name
        for name in dir(asyncsession)
        if not name.startswith("_") and not isinstance(getattr(asyncsession, name), ModuleType)
    }
    assert defined == set(PUBLIC)
    assert len(set(asyncsession.__all__)) == len(asyncsession.__all__)


@pytest.mark.parametrize("name", asyncsession.__all__)
def test_importable(name: str) -> None:
    exec(f"from asyncsession import {name}", {})


@pytest.mark.parametrize("name", PUBLIC)
def test_documented(name: str) -> None:
    obj = getattr(asyncsession, name)
    assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"`{name}`" in readme, f"README.md does not mention `{name}`"


@pytest.mark.parametrize("name", PUBLIC)
def test_shown_as_asyncsession_name(name: str) -> None:
    assert getattr(asyncsession, name).__module__ == "asyncsession"


def test_traceback_names_the_public_module() -> None:
    try:
        raise asyncsession.ConfigurationError("bad option")
    except asyncsession.ConfigurationError as e:
        text = "".join(traceback.format_exception_only(type(e), e))
    # (connector 5.x puts its errno placeholder before the message)
    assert text.startswith("asyncsession.ConfigurationError: ")
    assert "bad option" in text


def test_exceptions_pickle_through_the_public_module() -> None:
    error = asyncsession.ConfigurationError("bad option")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is asyncsession.ConfigurationError
    assert str(again) == str(error)


#: Modules ``import asyncsession`` must not add to what ``import snowflake.connector``
#: loads (issue #12: import time): each is imported where it is first needed.
LAZY_MODULES = (
    "asyncio",  # only under a running loop (4.x connectors do not import it)
    "difflib",  # only for a "did you mean" suggestion
    "tomllib",  # only when a connections.toml / config.toml is read
    "pandas",
    "pyarrow",
    "snowflake.connector.aio",
    "snowflake.connector.pandas_tools",
    # Our modules of public names imported on first use (``asyncsession.__getattr__``):
    "asyncsession._job",  # AsyncJob
    "asyncsession._lease",  # Lease, PoolCreation
    "asyncsession._pool",  # SessionPool (and _detached, _pool_logins with it)
    "asyncsession._detached",
    "asyncsession._pool_logins",
    "asyncsession._query",  # SqlQuery, ResultStream: on a session's first sql()
    "asyncsession._row",  # Row
    # ... and of optional parts
    "asyncsession.fastapi",
    "asyncsession.testing",
    "asyncsession._local",
)
#: anyio's own submodules: anyio >= 4.16 loads them on first use (older ones at once).
ANYIO_LAZY_MODULES = ("sniffio", "anyio._core", "anyio.abc", "anyio.lowlevel")


def test_import_leaves_heavy_modules_unloaded() -> None:
    code = (
        "import sys, snowflake.connector; before = set(sys.modules); import asyncsession; "
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    added = proc.stdout.split()
    assert "asyncsession" in added
    names: tuple[str, ...] = LAZY_MODULES
    if importlib.util.find_spec("anyio._lazyimport") is not None:
        names += ANYIO_LAZY_MODULES
    lazy = [m for m in added if any(m == n or m.startswith(n + ".") for n in names)]
    assert lazy == []


def test_lazy_names_load_on_first_use() -> None:
    code = (
        "import sys, asyncsession\n"
        "assert 'asyncsession._pool' not in sys.modules\n"
        "from asyncsession import *\n"
        "assert 'asyncsession._pool' in sys.modules\n"
        "public = [n for n in asyncsession.__all__ if not n.startswith('__')]\n"
        "print(' '.join(getattr(asyncsession, n).__module__ for n in public))\n"
        "try:\n"
        "    asyncsession.NotAName\n"
        "except AttributeError as e:\n"
        "    print(e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    modules, error = proc.stdout.splitlines()
    assert set(modules.split()) == {"asyncsession"}
    assert error == "module 'asyncsession' has no attribute 'NotAName'"
