"""Lobby: seat a joining player in the first room with space, find seats by token, reap."""

from __future__ import annotations

import pytest

from server.lobby import EMPTY_ROOM_TTL_S, Lobby, LobbyFullError
from sim.params import load_params


def lobby(max_players: int = 2, max_rooms: int = 2) -> Lobby:
    params = load_params().with_changes({"npc.count": 0, "room.max_players": max_players})
    return Lobby(params, max_rooms=max_rooms)


def test_players_fill_the_first_room_then_a_new_one_then_the_lobby_is_full():
    lob = lobby()
    created = []
    lob.on_new_room = created.append
    rooms = []
    for _ in range(4):
        room, _new = lob.room_with_free_seat(0.0)
        room.join(lob.next_player_id(), "p", 0.0)
        rooms.append(room.room_id)
    assert rooms == ["r1", "r1", "r2", "r2"] and [r.room_id for r in created] == ["r1", "r2"]
    with pytest.raises(LobbyFullError):
        lob.room_with_free_seat(0.0)
    assert lob.player_count == 4


def test_a_resume_token_finds_its_seat_and_a_wrong_one_finds_nothing():
    lob = lobby()
    room, _ = lob.room_with_free_seat(0.0)
    seat = room.join(lob.next_player_id(), "p", 0.0)
    assert lob.find_by_token(seat.resume_token) == (room, seat)
    forged = seat.resume_token[:4] + bytes(len(seat.resume_token) - 4)
    assert lob.find_by_token(forged) is None
    assert lob.find_by_token(b"\x00\x00\x00\x63" + b"x" * 16) is None  # no such player
    assert lob.find_by_token(b"ab") is None


def test_an_empty_room_is_reaped_after_its_ttl_and_not_before():
    lob = lobby()
    room, _ = lob.room_with_free_seat(0.0)
    pid = lob.next_player_id()
    room.join(pid, "p", 0.0)
    assert lob.reap(100.0) == []
    room.leave(pid)
    assert lob.reap(100.0) == []  # empty since now
    assert lob.reap(100.0 + EMPTY_ROOM_TTL_S - 0.01) == []
    assert lob.reap(100.0 + EMPTY_ROOM_TTL_S) == [room] and lob.rooms == {}
