"""Running the browser client's modules under Node for unit tests.

Skipped locally when Node or the generated gen/wire.js is missing; under CI=true that is a
failure, because the tests must run there (the README's set-up installs both).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

WEB = Path(__file__).resolve().parents[2] / "client_demo" / "web"


def node_or_skip() -> str:
    """The path of `node`, or skip (fail under CI) when it or gen/wire.js is missing."""
    node = shutil.which("node")
    if node and (WEB / "gen" / "wire.js").is_file():
        return node
    reason = "node is missing" if not node else "gen/wire.js is missing (run make install)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def run_script(path: Path, script: str, *args: str, timeout: float = 120) -> Any:
    """Write `script` (an ES module) to `path`, run it with `args`, and return the JSON it
    printed on stdout; its stderr is shown when it fails."""
    node = node_or_skip()
    path.write_text(script)
    done = subprocess.run([node, str(path), *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
