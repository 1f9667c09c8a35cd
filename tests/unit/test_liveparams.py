"""server.liveparams: the file is the one source of truth. Driven without sockets: a real
Gateway that is never started, a parameters file in tmp_path, and a `stat` the test
controls (so a change the watcher would miss by its signature is still read back)."""

from __future__ import annotations

import asyncio
import os

import pytest

from server.gateway import Gateway, GatewayConfig
from server.liveparams import LiveParams, ParamsFeed
from server.session import SessionLimits
from sim.params import ParamsError, load_params

TEXT = "[player]\nmax_speed = 220.0  # units/s\n\n[npc]\ncount = 0  # restart\nspeed = 50.0\n"


def make(tmp_path, text: str | None = TEXT):
    path = None
    if text is not None:
        path = tmp_path / "p.toml"
        path.write_text(text)
    params = load_params(path)
    gw = Gateway(GatewayConfig(params=params, limits=SessionLimits.for_tick_rate(30),
                               params_path=path))
    return gw, LiveParams(gw, path)


async def test_admin_change_is_written_then_applied_by_reading_the_file(tmp_path):
    gw, live = make(tmp_path)
    q = live.feed.subscribe()
    out = await live.change({"player.max_speed": 260})
    assert out["version"] == 2 and out["persisted"] is True
    assert gw.params.player_max_speed == 260.0
    assert (tmp_path / "p.toml").read_text() == TEXT.replace("220.0", "260.0")
    event = q.get_nowait()
    assert event["event"] == "applied" and event["source"] == "admin"
    assert event["changed"] == {"player.max_speed": 260.0}
    assert event["state"]["version"] == 2


async def test_two_admin_changes_at_once_both_reach_the_file(tmp_path):
    """The file's write runs in a thread, so a second change can start while the first is
    writing; each reads the file the other wrote, so neither is lost."""
    gw, live = make(tmp_path)
    first, second = await asyncio.gather(live.change({"player.max_speed": 260}),
                                         live.change({"npc.speed": 70}))
    text = (tmp_path / "p.toml").read_text()
    assert text == TEXT.replace("220.0", "260.0").replace("speed = 50.0", "speed = 70.0")
    assert (gw.params.player_max_speed, gw.params.npc_speed) == (260.0, 70.0)
    assert first["changed"] == {"player.max_speed": 260.0}
    assert second["changed"] == {"npc.speed": 70.0}
    assert (first["version"], second["version"]) == (2, 3)


async def test_a_change_is_read_back_even_when_the_signature_looks_unchanged(tmp_path):
    gw, live = make(tmp_path)
    frozen = os.stat(tmp_path / "p.toml")
    live._stat = lambda path: frozen  # same mtime, size and inode as before the write
    await live.change({"player.max_speed": 230})
    assert gw.params.player_max_speed == 230.0 and gw.params_version == 2


async def test_restart_only_keys_are_refused_and_the_file_is_untouched(tmp_path):
    gw, live = make(tmp_path)
    with pytest.raises(ParamsError, match=r"npc\.count only apply when the server starts; "
                                          r"change them in the parameters file"):
        await live.change({"npc": {"count": 5}})
    assert (tmp_path / "p.toml").read_text() == TEXT and gw.params_version == 1


async def test_a_cross_field_error_against_the_running_capacity_leaves_the_file_alone(tmp_path):
    gw, live = make(tmp_path)
    with pytest.raises(ParamsError, match=r"world\.capacity"):
        await live.change({"projectile.max": 8192})
    assert (tmp_path / "p.toml").read_text() == TEXT and gw.params_version == 1


def save(path, text: str, n: int) -> None:
    """Write ``text`` with an mtime of its own (1000 + n s), as a distinct save."""
    path.write_text(text)
    os.utime(path, (1000.0 + n, 1000.0 + n))


async def test_file_saves_are_polled_and_a_broken_save_is_published(tmp_path):
    gw, live = make(tmp_path)
    q = live.feed.subscribe()
    f = tmp_path / "p.toml"
    save(f, TEXT.replace("speed = 50.0", "speed = 0.5e9"), 1)
    live.poll()
    ev = q.get_nowait()
    assert ev["event"] == "file_error" and "npc.speed = 500000000.0 is out of range" in ev["error"]
    assert live.state()["file_error"] == ev["error"] and gw.params_version == 1
    with pytest.raises(ParamsError, match="fix the file first"):
        await live.change({"player.max_speed": 300})
    save(f, TEXT.replace("count = 0", "count = 9"), 2)
    live.poll()
    ev = q.get_nowait()
    assert ev["event"] == "applied" and ev["state"]["file_error"] is None
    assert ev["state"]["pending_restart"] == {"npc.count": 9}
    assert gw.params.npc_count == 0


async def test_without_a_file_changes_apply_in_memory_and_say_so(tmp_path):
    gw, live = make(tmp_path, text=None)
    out = await live.change({"player_max_speed": 300})
    assert out["persisted"] is False and out["version"] == 2
    assert gw.params.player_max_speed == 300.0
    live.poll()  # nothing to poll, nothing happens
    assert gw.params_version == 2
    with pytest.raises(ParamsError, match=r"start the server with --params FILE"):
        await live.change({"world.seed": 3})


def test_feed_is_bounded_and_drops_a_reader_that_falls_behind():
    async def run() -> None:
        feed = ParamsFeed(max_subscribers=2, queue_size=3)
        slow, fast = feed.subscribe(), feed.subscribe()
        assert feed.subscribe() is None  # full
        for i in range(3):
            feed.publish({"n": i})
            assert (await fast.get())["n"] == i
        feed.publish({"n": 3})  # slow holds 3 already: it is ended
        assert [slow.get_nowait() for _ in range(4)] == [{"n": 0}, {"n": 1}, {"n": 2}, None]
        assert len(feed) == 1
        feed.close()
        assert await fast.get() == {"n": 3} and await fast.get() is None
        assert feed.subscribe() is None

    asyncio.run(run())
