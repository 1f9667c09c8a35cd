# The README's two commands are `make run` and `make test`; both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
PROTO_OUT := proto/tickwire_pb2.py

.PHONY: install run test test-unit lint bench proto clean

install: $(STAMP) $(PROTO_OUT)
	bash scripts/install_web.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(PROTO_OUT): proto/tickwire.proto $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto proto/tickwire.proto
	touch $(PROTO_OUT)

proto: $(PROTO_OUT)

run: install
	$(BIN)/tickwire serve

test: install
	bash scripts/test.sh

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/pytest bench --benchmark-enable --benchmark-only -p no:randomly

clean:
	rm -rf $(VENV) proto/*_pb2.py proto/*_pb2.pyi
