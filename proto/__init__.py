"""The wire: tickwire.proto (generated tickwire_pb2 by `make install`) and the snapshot codec."""

from proto.tickwire_pb2 import PROTOCOL_VERSION_CURRENT

# The one definition is the ProtocolVersion enum in tickwire.proto.
PROTOCOL_VERSION: int = PROTOCOL_VERSION_CURRENT
