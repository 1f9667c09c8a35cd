"""The installed distribution's version (pyproject.toml), for `--version` and
`tickwire_build_info`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("tickwire")
except PackageNotFoundError:  # running from a checkout that was never installed
    VERSION = "0+unknown"
