"""The static allow-list: everything the client pages reference is served, and nothing
of the npm project is."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from server.static import CLIENT_FILES, MOUNTS, WEB_ROOT

_HTML_REF = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
_JS_IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.{1,2}/[^"']+)["']""")


def served(url_path: str) -> bool:
    path = url_path.lstrip("/")
    if path in CLIENT_FILES:
        return True
    return any(url_path.startswith(prefix + "/") for prefix in MOUNTS)


def references() -> set[str]:
    """Every local URL reachable from the pages through src/href and ES imports."""
    todo = ["/index.html", "/admin.html"]
    seen: set[str] = set()
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        if not url.endswith((".html", ".js")) or url.startswith(tuple(MOUNTS)):
            continue
        text = (WEB_ROOT / url.lstrip("/")).read_text()
        for ref in _HTML_REF.findall(text) if url.endswith(".html") else []:
            if ref.startswith("/") and not ref.startswith("//"):
                todo.append(ref.split("?")[0])
        for ref in _JS_IMPORT.findall(text) if url.endswith(".js") else []:
            joined = PurePosixPath(url).parent / ref
            todo.append("/" + "/".join(p for p in joined.parts if p != "/"))
    return seen


def test_every_file_the_pages_reference_is_on_the_allow_list_and_exists():
    refs = references()
    assert "/main.js" in refs and "/codec.js" in refs  # the walk does reach the modules
    missing = sorted(r for r in refs if not served(r))
    assert not missing, f"referenced by the client but not served: {missing}"
    for name in CLIENT_FILES:
        assert (WEB_ROOT / name).is_file(), name


def test_the_npm_project_and_tools_are_not_served():
    for path in ("/package.json", "/package-lock.json", "/node_modules/x", "/tools/x"):
        assert not served(path)
