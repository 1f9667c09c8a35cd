"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, and a real
`tickwire serve` subprocess on a free loopback port.

Chromium: /usr/bin/chromium (Playwright's own browser downloads are not used). When it
is missing, scripts/install_chromium.sh is tried once; if it is still missing the tests
are skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from server.nodeproc import TICKWIRE, ServerProcess, free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_CHROMIUM = REPO / "scripts" / "install_chromium.sh"
INSTALL_WEB = REPO / "scripts" / "install_web.sh"
WEB = REPO / "client_demo" / "web"
ARTIFACTS = REPO / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _unavailable(reason: str) -> None:
    """Skip locally; fail under CI=true, where the browser tests must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists() and INSTALL_CHROMIUM.exists():
        subprocess.run(["bash", str(INSTALL_CHROMIUM)], check=False, timeout=600)
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing and scripts/install_chromium.sh could not "
                     "install it (needs root and apt-get)")
    return CHROMIUM


@pytest.fixture(scope="session")
def web_built() -> None:
    """The client's npm packages and gen/tickwire.json (scripts/install_web.sh)."""
    needed = [WEB / "gen" / "tickwire.json", WEB / "gen" / "wire.js",
              WEB / "node_modules" / "protobufjs" / "dist" / "light" / "protobuf.min.js"]
    if not all(p.exists() for p in needed):
        result = subprocess.run(["bash", str(INSTALL_WEB)], check=False, timeout=600,
                                capture_output=True, text=True)
        if result.returncode != 0 or not all(p.exists() for p in needed):
            _unavailable("the web client is not built and scripts/install_web.sh failed:\n"
                         + result.stderr[-2000:])


@contextmanager
def running_server(tmp_path_factory: pytest.TempPathFactory, name: str, *args: str,
                   params: str | None = None) -> Iterator[ServerProcess]:
    """A real `tickwire serve` on a free port of 127.0.0.1 for a module's tests, stopped
    after; `params` is a TOML text passed as --params, `args` more command-line flags."""
    if not TICKWIRE.exists():
        _unavailable(f"{TICKWIRE} is missing (run make install)")
    tmp = tmp_path_factory.mktemp(name)
    extra = list(args)
    if params is not None:
        (tmp / "params.toml").write_text(params)
        extra += ["--params", str(tmp / "params.toml")]
    srv = ServerProcess(port=free_port(), log_path=tmp / "tickwire.log", extra_args=extra)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, web_built: None) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory, "server") as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS,
                              timeout=30_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def new_page(browser, server: ServerProcess):
    """A factory of pages in fresh contexts, each with console errors collected on
    `page.errors`; all are closed after the test."""
    contexts = []

    def make(name: str | None = None, *, width: int = 1280, height: int = 720):
        url = server.base_url + "/" + (f"?name={name}" if name else "")
        return open_page(browser, contexts, url, width=width, height=height)

    yield make
    for ctx in contexts:
        ctx.close()


def open_page(browser, contexts: list, url: str, *, width: int = 1280, height: int = 720):
    """`url` in a fresh context (appended to `contexts`, for the caller to close), with
    console errors collected on `page.errors`."""
    ctx = browser.new_context(viewport={"width": width, "height": height})
    contexts.append(ctx)
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: page.errors.append(msg.text)
            if msg.type == "error" else None)
    page.goto(url, wait_until="load")
    return page


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# -- the admin page: a second server with --admin-token ---------------------------------------

ADMIN_TOKEN = "browser-test-admin-token"


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory,
                 web_built: None) -> Iterator[ServerProcess]:
    """Like `server`, but started with `--admin-token ADMIN_TOKEN` (so /admin exists)."""
    with running_server(tmp_path_factory, "admin-server", "--admin-token", ADMIN_TOKEN) as srv:
        yield srv


@pytest.fixture
def admin_new_page(browser, admin_server: ServerProcess):
    """A factory of pages on `admin_server` in fresh contexts: `make("/admin")` or
    `make("/", name="bob")`. Console errors and uncaught exceptions go to `page.errors`;
    uncaught exceptions alone also to `page.exceptions`. All are closed after the test."""
    contexts = []

    def make(path: str = "/", name: str | None = None, *, width: int = 1280,
             height: int = 720):
        ctx = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page.errors = []
        page.exceptions = []

        def on_exception(exc) -> None:
            page.errors.append(str(exc))
            page.exceptions.append(str(exc))

        page.on("pageerror", on_exception)
        page.on("console", lambda msg: page.errors.append(msg.text)
                if msg.type == "error" else None)
        url = admin_server.base_url + path + (f"?name={name}" if name else "")
        page.goto(url, wait_until="load")
        return page

    yield make
    for ctx in contexts:
        ctx.close()
