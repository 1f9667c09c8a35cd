"""The WebSocket frame parser: wire frames in, one at a time, every limit at the header;
anything else is our own ProtocolError (fuzzed)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.errors import ProtocolError
from server.framing import (
    HARD_FRAME_FACTOR,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_FRAGMENT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameLimits,
    FrameParser,
    accept_key,
    close_frame,
    unmask_int,
    ws_frame,
    ws_header,
)
from tests.wsframes import client_frame


def frames_of(parser: FrameParser, data: bytes) -> list[tuple[int, bytes]]:
    parser.feed(data)
    out = []
    while (frame := parser.next_frame()) is not None:
        out.append(frame)
    return out


def refusal(data: bytes, limits: FrameLimits | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        frames_of(FrameParser(limits), data)
    return info.value


def test_a_masked_binary_frame_is_unmasked_and_returned_whole():
    assert frames_of(FrameParser(), client_frame(b"hello")) == [(OP_BINARY, b"hello")]


def test_frames_split_anywhere_across_reads_come_out_the_same():
    data = client_frame(b"a" * 300) + client_frame(b"pp", OP_PING) + client_frame(b"")
    for cut in range(len(data) + 1):
        parser = FrameParser()
        got = frames_of(parser, data[:cut]) + frames_of(parser, data[cut:])
        assert got == [(OP_BINARY, b"a" * 300), (OP_PING, b"pp"), (OP_BINARY, b"")]
        assert parser.buffered == 0


def test_every_wire_frame_of_a_fragmented_message_is_returned_with_its_wire_size():
    parser = FrameParser()
    parser.feed(client_frame(b"ab", fin=False))
    assert parser.next_frame() == (OP_FRAGMENT, b"")
    assert parser.wire_bytes == 2 + 4 + 2
    parser.feed(client_frame(b"x", OP_PONG))  # control frames may come between fragments
    assert parser.next_frame() == (OP_PONG, b"x")
    parser.feed(client_frame(b"", OP_CONT, fin=False))
    assert parser.next_frame() == (OP_FRAGMENT, b"")
    parser.feed(client_frame(b"cd", OP_CONT))
    assert parser.next_frame() == (OP_BINARY, b"abcd")


def test_unmasked_client_frames_are_refused_with_1002():
    err = refusal(client_frame(b"hi", masked=False))
    assert (err.code, err.label) == (1002, "unmasked")
    assert "masked" in err.reason


@pytest.mark.parametrize("data, reason", [
    (client_frame(b"x", rsv=0x40), "reserved bits"),
    (client_frame(b"x", opcode=0x3), "unknown opcode"),
    (client_frame(b"x", OP_PING, fin=False), "fragmented control"),
    (client_frame(b"x" * 126, OP_PING), "control frame longer"),
    (client_frame(b"x", OP_CONT), "continuation frame without"),
    (client_frame(b"x", fin=False) + client_frame(b"y"), "new message before"),
])
def test_protocol_violations_are_refused_with_1002(data: bytes, reason: str):
    err = refusal(data)
    assert err.code == 1002 and reason in err.reason, err.reason


def test_a_frame_over_the_fragment_limit_is_refused_from_its_header_alone():
    limits = FrameLimits(max_message_bytes=1000, max_fragment_bytes=100)
    header_only = client_frame(b"", length=101)[:8]  # no payload sent at all
    err = refusal(header_only, limits)
    assert (err.code, err.label) == (1009, "too_big") and "frame too big" in err.reason


def test_a_frame_far_over_the_limit_is_counted_apart():
    limits = FrameLimits(max_fragment_bytes=100)
    err = refusal(client_frame(b"", length=100 * HARD_FRAME_FACTOR + 1)[:14], limits)
    assert (err.code, err.label) == (1009, "protocol_error")


def test_a_message_over_the_message_limit_is_refused_even_in_small_fragments():
    limits = FrameLimits(max_message_bytes=10, max_fragment_bytes=8, max_fragments=100)
    data = client_frame(b"12345678", fin=False) + client_frame(b"abc", OP_CONT)
    err = refusal(data, limits)
    assert (err.code, err.label) == (1009, "too_big") and "message too big" in err.reason


def test_too_many_fragments_in_one_message_is_a_policy_close():
    limits = FrameLimits(max_fragments=3)
    data = client_frame(b"", fin=False) + client_frame(b"", OP_CONT, fin=False) * 2
    parser = FrameParser(limits)
    assert len(frames_of(parser, data)) == 3
    with pytest.raises(ProtocolError) as info:
        frames_of(parser, client_frame(b"", OP_CONT, fin=False))
    assert (info.value.code, info.value.label) == (1008, "fragments")


def test_a_text_message_is_returned_as_text_for_the_protocol_to_refuse():
    assert frames_of(FrameParser(), client_frame(b"hi", OP_TEXT)) == [(OP_TEXT, b"hi")]


def test_server_frames_are_unmasked_with_the_shortest_length_encoding():
    assert ws_header(OP_BINARY, 5) == b"\x82\x05"
    assert ws_header(OP_BINARY, 200) == b"\x82\x7e\x00\xc8"
    assert ws_header(OP_BINARY, 70000)[:2] == b"\x82\x7f"
    assert ws_frame(OP_PONG, b"x") == b"\x8a\x01x"


def test_a_close_frame_fits_a_control_frame_and_never_cuts_utf8():
    frame = close_frame(1008, "é" * 200)
    assert frame[0] == 0x88 and frame[1] <= 125
    assert struct.unpack("!H", frame[2:4])[0] == 1008
    frame[4:].decode()  # whole characters only


def test_the_accept_key_is_the_one_from_rfc_6455():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_any_bytes_are_parsed_or_refused_with_our_own_error(chunks: list[bytes]):
    parser = FrameParser(FrameLimits(max_message_bytes=64, max_fragment_bytes=32,
                                     max_fragments=4))
    try:
        for chunk in chunks:
            for opcode, payload in frames_of(parser, chunk):
                assert opcode in (OP_BINARY, OP_TEXT, OP_FRAGMENT, OP_PING, OP_PONG,
                                  OP_CLOSE)
                assert len(payload) <= 125 or opcode in (OP_BINARY, OP_TEXT)
                assert len(payload) <= 64
    except ProtocolError as err:
        assert err.code in (1002, 1008, 1009) and err.label and err.reason


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=30), st.sampled_from([OP_BINARY, OP_PING,
                                                                   OP_PONG])),
                max_size=10),
       st.integers(min_value=1, max_value=17))
def test_well_formed_frames_survive_any_split(frames: list[tuple[bytes, int]], step: int):
    data = b"".join(client_frame(p, op) for p, op in frames)
    parser = FrameParser()
    got = []
    for i in range(0, len(data), step):
        got += frames_of(parser, data[i:i + step])
    assert got == [(op, p) for p, op in frames]


@settings(max_examples=300)
@given(payload=st.binary(max_size=200), opcode=st.sampled_from([0x1, 0x2, 0x9]),
       fin=st.booleans(), masked=st.booleans(), extra=st.binary(max_size=3),
       cut=st.integers(0, 3), small_limit=st.sampled_from([16, 4096]))
def test_whole_binary_is_exactly_one_small_binary_frame_and_changes_nothing(
        payload: bytes, opcode: int, fin: bool, masked: bool, extra: bytes, cut: int,
        small_limit: int) -> None:
    """`whole_binary(data)` returns a payload only where feeding `data` to a fresh parser
    yields that one binary frame and nothing after it; it never changes the parser."""
    data = client_frame(payload, opcode, fin=fin, masked=masked) + extra
    data = data[:len(data) - cut] if cut < len(data) else data
    limits = FrameLimits(max_message_bytes=small_limit, max_fragment_bytes=small_limit)
    quick = FrameParser(limits).whole_binary(data)
    reference = FrameParser(limits)
    reference.feed(data)
    try:
        frames = [reference.next_frame(), reference.next_frame()]
    except ProtocolError:
        frames = None
    if quick is not None:
        assert frames == [(OP_BINARY, payload), None] and reference.buffered == 0
    else:
        assert not (opcode == OP_BINARY and fin and masked and not extra and not cut
                    and len(payload) < 126 and len(payload) <= small_limit)


def test_whole_binary_defers_to_the_parser_while_it_holds_bytes() -> None:
    frame = client_frame(b"\x12\x00")
    parser = FrameParser()
    assert parser.whole_binary(frame) == b"\x12\x00"
    parser.feed(frame[:3])  # a partial frame is buffered: the next read continues it
    assert parser.next_frame() is None
    assert parser.whole_binary(frame) is None
    parser = FrameParser()
    parser.feed(client_frame(b"\x12", fin=False))  # a fragmented message in progress
    parser.next_frame()
    assert parser.whole_binary(frame) is None


@settings(max_examples=300)
@given(payload=st.binary(max_size=300), mask=st.binary(min_size=4, max_size=4),
       as_bytearray=st.booleans())
def test_the_compiled_unmask_equals_the_big_int_xor_on_any_payload(
        payload: bytes, mask: bytes, as_bytearray: bool) -> None:
    """The parser unmasks with aiohttp's compiled mask when it imports; the big-int XOR
    is the fallback. Both give the RFC 6455 §5.3 answer, for reads given as bytearray too
    (the compiled one takes bytes only)."""
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert unmask_int(masked, mask) == payload
    parser = FrameParser(FrameLimits(max_message_bytes=512, max_fragment_bytes=512))
    frame = client_frame(payload, OP_BINARY, mask=mask)
    assert frame.endswith(masked)
    assert frames_of(parser, bytearray(frame) if as_bytearray else frame) == [
        (OP_BINARY, payload)]
