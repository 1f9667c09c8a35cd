"""Parsing a Retry-After header (the client honours only the delay-seconds form)."""

from __future__ import annotations

import pytest

from client_demo.matchmake import retry_after_s


@pytest.mark.parametrize(("header", "seconds"), [
    (None, None), ("3", 3.0), (" 12 ", 12.0), ("0", 0.0), ("-1", None), ("1.5", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("", None)])
def test_retry_after_header_values(header: str | None, seconds: float | None) -> None:
    assert retry_after_s(header) == seconds
