"""Wire constants have one source: the enums of proto/tickwire.proto.

Python reads them from the generated tickwire_pb2; the browser from gen/wire.js, which
``npm run build`` (scripts/install_web.sh) generates from the same .proto. ``sim`` keeps
literal copies because it imports nothing from ``proto`` (the dependency rule); these tests
fail the moment any copy differs from the enum.

The Node part is skipped when ``node`` or the built client is missing, except under
CI=true, where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import client_demo.bots as bots
import proto
import sim
import sim.world as world
from proto import tickwire_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "client_demo" / "web"


def _kinds() -> dict[str, int]:
    return {name.removeprefix("ENTITY_KIND_"): value for name, value in pb.EntityKind.items()}


def test_sim_entity_kinds_equal_the_proto_enum():
    kinds = _kinds()
    assert set(kinds) == {"EMPTY", "PLAYER", "NPC", "PROJECTILE"}
    for name, value in kinds.items():
        assert getattr(world, f"KIND_{name}") == value, name
        assert getattr(sim, f"KIND_{name}") == value, name


def test_sim_entity_flags_equal_the_proto_enum():
    assert world.FLAG_DEAD == pb.ENTITY_FLAG_DEAD
    assert world.FLAG_FIRED == pb.ENTITY_FLAG_FIRED


def test_protocol_version_comes_from_the_proto_enum():
    assert proto.PROTOCOL_VERSION == pb.PROTOCOL_VERSION_CURRENT
    assert proto.PROTOCOL_VERSION >= 1


def test_bots_use_the_proto_enum():
    assert bots.KIND_PLAYER == pb.ENTITY_KIND_PLAYER
    assert bots.KIND_NPC == pb.ENTITY_KIND_NPC


def _node_or_skip() -> str:
    node = shutil.which("node")
    built = (WEB / "gen" / "wire.js").is_file()
    if node and built:
        return node
    reason = "node is missing" if not node else "gen/wire.js is missing (run make install)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def test_browser_constants_are_generated_from_the_proto(tmp_path):
    node = _node_or_skip()
    # What the browser imports: codec.js and net.js re-export the generated module.
    script = tmp_path / "probe.mjs"
    script.write_text(
        f'const c = await import("{(WEB / "codec.js").as_uri()}");\n'
        f'const n = await import("{(WEB / "net.js").as_uri()}");\n'
        "process.stdout.write(JSON.stringify({PROTOCOL_VERSION: n.PROTOCOL_VERSION,\n"
        "  KIND_EMPTY: c.KIND_EMPTY, KIND_PLAYER: c.KIND_PLAYER, KIND_NPC: c.KIND_NPC,\n"
        "  KIND_PROJECTILE: c.KIND_PROJECTILE, EFLAG_DEAD: c.EFLAG_DEAD,\n"
        "  EFLAG_FIRED: c.EFLAG_FIRED}));\n")
    out = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60,
                         check=True)
    got = json.loads(out.stdout)
    want = {"PROTOCOL_VERSION": pb.PROTOCOL_VERSION_CURRENT,
            **{f"KIND_{k}": v for k, v in _kinds().items()},
            "EFLAG_DEAD": pb.ENTITY_FLAG_DEAD, "EFLAG_FIRED": pb.ENTITY_FLAG_FIRED}
    assert got == want


def test_generated_module_is_current_with_the_descriptor(tmp_path):
    """gen/wire.js is what tools/genwire.mjs makes of the current gen/tickwire.json."""
    node = _node_or_skip()
    fresh = tmp_path / "wire.js"
    subprocess.run([node, str(WEB / "tools" / "genwire.mjs"), str(WEB / "gen" / "tickwire.json"),
                    str(fresh)], check=True, timeout=60, capture_output=True)
    assert fresh.read_text() == (WEB / "gen" / "wire.js").read_text()


def test_generator_refuses_a_descriptor_without_the_enums(tmp_path):
    node = _node_or_skip()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nested": {"tickwire": {"nested": {}}}}))
    result = subprocess.run([node, str(WEB / "tools" / "genwire.mjs"), str(bad),
                             str(tmp_path / "out.js")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "enum tickwire.ProtocolVersion is missing" in result.stderr
