"""bench.arena's own /rooms reads: the room figures over the bots' window when the bots'
bounded reads got no answer from a busy server."""

from __future__ import annotations

from bench.arena import RoomsPoller


def _rooms(*rooms: tuple[int, int, int]) -> list[dict]:
    return [{"id": i, "players": p, "tick": t, "tick_rate": 30} for i, p, t in rooms]


def test_room_figures_come_from_the_first_and_last_reads_inside_the_window() -> None:
    poller = RoomsPoller("http://127.0.0.1:9/rooms")  # never started: samples by hand
    poller.samples = [
        (9.0, _rooms((1, 200, 0))),  # before the window: ignored
        (10.0, _rooms((1, 200, 30), (2, 50, 0))),
        (12.0, _rooms((1, 200, 90), (2, 50, 40))),
        (14.0, _rooms((1, 200, 150), (2, 50, 100), (3, 1, 7))),  # room 3 opened meanwhile
        (20.0, _rooms((1, 0, 300))),  # after the window: ignored
    ]
    got = poller.over(10.0, 15.0)
    assert got == {"rooms": 3, "clients_per_room": [200, 50, 1],
                   "tick_rate_per_room": [30.0, 25.0, None]}


def test_without_two_reads_inside_the_window_there_are_no_figures() -> None:
    poller = RoomsPoller("http://127.0.0.1:9/rooms")
    poller.samples = [(5.0, _rooms((1, 3, 0))), (11.0, _rooms((1, 3, 30)))]
    assert poller.over(10.0, 15.0) is None
    poller.samples = []
    assert poller.over(10.0, 15.0) is None
