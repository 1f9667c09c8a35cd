"""The wire: tickwire.proto (generated tickwire_pb2 by `make install`) and the snapshot codec."""

PROTOCOL_VERSION = 1
