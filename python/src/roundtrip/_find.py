"""Where the `roundtrip` engine binary is.

The wheel installs the binary as a script (maturin's `bindings = "bin"`), so it lands in
the scripts directory of whatever scheme pip installed into: the environment's, the
user's (`--user`), a `--prefix`, or `<target>/bin` for `--target`. This module looks in
each of those, in that order, after the `ROUNDTRIP_BIN` override.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path
from typing import Iterator, List, Optional

from roundtrip.errors import EngineError

__all__ = ["BinaryNotFound", "find_roundtrip_bin"]

_EXE = "roundtrip" + (sysconfig.get_config_var("EXE") or "")


class BinaryNotFound(EngineError, FileNotFoundError):
    """The engine binary is in none of the places an installed package puts it."""


def _user_scheme() -> str:
    if sys.version_info >= (3, 10):
        return sysconfig.get_preferred_scheme("user")
    return "nt_user" if os.name == "nt" else "posix_user"


def _candidates() -> Iterator[Optional[str]]:
    # The running interpreter's scripts directory: a venv, or a system install.
    yield sysconfig.get_path("scripts")
    # The base interpreter's, for a venv created with --system-site-packages.
    yield sysconfig.get_path("scripts", vars={"base": sys.base_prefix})
    package = Path(__file__).resolve().parent
    site = package.parent
    # `pip install --prefix P`: P/lib/pythonX.Y/site-packages/roundtrip -> P/bin.
    if site.name == "site-packages":
        up = site.parent.parent if site.parent.name.startswith("python") else site.parent
        yield str(up.parent / ("Scripts" if os.name == "nt" else "bin"))
    # `pip install --target T`: T/roundtrip -> T/bin.
    yield str(site / "bin")
    # `pip install --user`: ~/.local/bin and the like.
    try:
        yield sysconfig.get_path("scripts", scheme=_user_scheme())
    except KeyError:
        yield None


def _searched() -> List[str]:
    seen: List[str] = []
    for directory in _candidates():
        if directory and directory not in seen:
            seen.append(directory)
    return seen


def find_roundtrip_bin() -> str:
    """The path of the `roundtrip` engine binary.

    `ROUNDTRIP_BIN`, when set, names it (a development build, say
    `target/debug/roundtrip`); otherwise the installed package's own binary is used.
    Raises `BinaryNotFound` naming every place it looked.
    """
    override = os.environ.get("ROUNDTRIP_BIN")
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            # Absolute: the engine is started in pytest's root directory, not here.
            return os.path.abspath(override)
        raise BinaryNotFound(
            f"ROUNDTRIP_BIN is {override!r}, which is not an executable file: point it at "
            "a roundtrip binary (e.g. target/debug/roundtrip) or unset it to use the "
            "installed package's"
        )
    searched = _searched()
    for directory in searched:
        path = os.path.join(directory, _EXE)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    places = "\n".join(f"  {d}" for d in searched)
    raise BinaryNotFound(
        f"the roundtrip engine binary ({_EXE}) is in none of the places the package "
        f"installs it:\n{places}\nreinstall the package (`pip install ./python` from a "
        "checkout) or set ROUNDTRIP_BIN to a roundtrip binary"
    )
