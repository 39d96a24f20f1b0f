"""Where the shipped ``config/`` files are: the source tree, else the share folder an install put them in.

Here rather than in a ROS or CLI module because every layer reads them (the nodes' parameter files, ``frameplan
train``'s default training configs, the benchmarks' Fast DDS profile) and the lower ones must not import the upper
ones. The share folder is named after the distribution that installed this package (setup.py's ``name``; its
``data_files`` go to ``<prefix>/share/<name>/config``), looked up in the installed metadata, so no layer names
another."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "config"


@functools.lru_cache(maxsize=1)
def distribution_name() -> str | None:
    """The installed distribution holding this package (the ament/share package name), None when not installed."""
    try:
        from importlib.metadata import packages_distributions

        names = packages_distributions().get(__package__ or __name__.partition(".")[0], [])
    except Exception:  # noqa: BLE001 -- broken metadata of some other package: treat as not installed
        return None
    return names[0] if names else None


def _install_prefixes() -> list[Path]:
    """Prefixes a non-editable install may have put ``share/<distribution>`` under (setup.py data_files): the one
    holding this package (``<prefix>/lib/python3.X/site-packages/<package>``: pip --prefix/--user, a venv, a colcon
    install space), then the interpreter's."""
    here = Path(__file__).resolve().parent
    out = []
    if len(here.parents) > 3 and here.parents[0].name in ("site-packages", "dist-packages"):
        out.append(here.parents[3])
    out += [Path(sys.prefix), Path(sys.base_prefix)]
    return list(dict.fromkeys(out))


def config_path(name: str) -> Path:
    """A file of config/ in the source tree, else in the installed share folder (colcon/ament, or the
    ``<prefix>/share/<distribution>/config`` a pip install writes); the source-tree path when neither has it."""
    p = CONFIG_DIR / name
    if p.is_file():
        return p
    dist = distribution_name()
    if dist is None:
        return p
    try:
        from ament_index_python.packages import get_package_share_directory

        found = Path(get_package_share_directory(dist)) / "config" / name
        if found.is_file():
            return found
    except Exception:  # noqa: BLE001 -- no ament index (plain pip install): look in the install prefixes below
        pass
    for prefix in _install_prefixes():
        found = prefix / "share" / dist / "config" / name
        if found.is_file():
            return found
    return p
