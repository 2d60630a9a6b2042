# Two commands a newcomer needs:  make demo  |  make test
# Each creates .venv and installs what it needs; a second run skips the install.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= out/tep
CORA_OUT ?= out/cora
FRAUD_OUT ?= out/fraud

.PHONY: demo demo-cora demo-fraud test lint typecheck unit clean help mosquitto brokers proto docs

help:
	@echo "make demo       - TEP plant: train the adaptive-graph GNN, export an INT8 bundle,"
	@echo "                  serve it with edge-node over MQTT, stream faults, write a report"
	@echo "make demo-cora  - train, export and run the Cora GNN bundles end to end"
	@echo "make demo-fraud - fraud detection on a SYNTHETIC transaction stream: GNNs vs a"
	@echo "                  baseline, an INT8 bundle, edge-node scoring over MQTT, a report"
	@echo "make test       - lint, type-check and run the whole test suite"
	@echo "make docs       - run the support matrix and write its table into docs/graph-export.md"
	@echo "make clean      - remove .venv and demo output"

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[export,onnxruntime,openvino,openvino-export,tflite-export,samples,mqtt,serve,broker,dev]"
	@touch $(STAMP)

# The node tests run against a real MQTT broker: install Debian's mosquitto once
# when it is missing (sudo when not root). The package starts no service here;
# the test fixtures run their own broker on a free port.
mosquitto:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
	  echo "installing mosquitto (MQTT broker for the edge-node tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; \
	fi

# The compatibility suite (tests/fleet/compat/) also runs ejabberd and RabbitMQ: install
# what is missing of the three brokers' Debian packages (one apt-get update). The fixtures
# run each broker as a child process on free ports with its own config, data and epmd; a
# service the packages start (epmd on 4369, rabbitmq-server, ejabberd) is neither used
# nor disturbed.
brokers:
	@missing=""; \
	{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } || missing=" mosquitto mosquitto-clients"; \
	ls /usr/lib/*/ejabberd-*/ebin/ejabberd.app >/dev/null 2>&1 || missing="$$missing ejabberd"; \
	[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing="$$missing rabbitmq-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (MQTT brokers for the compatibility suite)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# mosquitto is installed when missing; without it (no apt, no sudo) the demo
# says so and skips the MQTT part.
demo: $(STAMP)
	@$(MAKE) --no-print-directory mosquitto || echo "mosquitto could not be installed: the demo skips its MQTT part"
	$(BIN)/python samples/tep/tep.py --out $(DEMO_OUT)

demo-cora: $(STAMP)
	$(BIN)/python samples/cora/cora.py --out $(CORA_OUT)

# An extra sample beside the two set-up commands; like demo it installs mosquitto
# when missing, and serves in process (saying so) when no broker can run.
demo-fraud: $(STAMP)
	@$(MAKE) --no-print-directory mosquitto || echo "mosquitto could not be installed: the demo serves in process instead of over MQTT"
	$(BIN)/python samples/fraud/fraud.py --out $(FRAUD_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy edge_sdk runtimes exporters

# Two workers: the broker, socket and subprocess tests mostly wait, and overlap with the
# CPU-bound exports; tests are grouped per file (tests/conftest.py). 25 slowest printed.
unit: $(STAMP) brokers
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=25

test: lint typecheck unit

# The support matrix (tests/exporters/test_support_matrix.py, a few minutes): the table in
# docs/graph-export.md is rewritten only when every cell's outcome is the one it declares.
docs: $(STAMP)
	$(BIN)/python tests/exporters/support_matrix_docs.py

# Regenerate the Sparkplug B protobuf module (committed; only needed after editing the .proto).
# grpcio-tools 1.75.1 writes code for protobuf >= 6.31.1 (it runs on 7.x too), but itself
# pins protobuf < 7: it gets its own venv so the project's protobuf is left alone.
SPB := edge_sdk/mqtt/sparkplug
proto:
	@test -x .venv-proto/bin/python || $(PYTHON) -m venv .venv-proto
	.venv-proto/bin/python -m pip install --quiet "grpcio-tools==1.75.1"
	cd $(SPB) && ../../../.venv-proto/bin/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. sparkplug_b.proto

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(CORA_OUT) $(FRAUD_OUT)
