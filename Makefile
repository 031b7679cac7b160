# Two commands do all set-up on a fresh machine:
#   make demo   -- the main job on the embedded default models (SmolLM2, MiniLM)
#   make test   -- the test suite (CI runs this through .ci/run)
PYTHON ?= python3
# The CPU build of torch (this pin is served from local disk here; an unpinned torch pulls a multi-GB CUDA build).
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
MODELS := .models
STAMP := $(VENV)/.installed
# The Node.js client's packages, from its lockfile (npm writes this file on every install).
NODE_STAMP := clients/node/node_modules/.package-lock.json

# Debian's chromium for the chat page's browser test (Playwright drives it; its own browser downloads are not reachable).
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test soak models install node browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[export,quantize,serve,batch,ray,bench,test]"
	touch $(STAMP)

install: $(STAMP)

# onnxruntime-node's install script would fetch CUDA binaries from NuGet: clients/node/.npmrc skips it,
# so everything comes from the npm registry.
$(NODE_STAMP): clients/node/package.json clients/node/package-lock.json
	cd clients/node && npm ci --no-audit --no-fund --loglevel=error

node: $(NODE_STAMP)

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium > /dev/null

browser: $(CHROMIUM)

models: $(STAMP)
	$(BIN)/python scripts/fetch_models.py $(MODELS)

demo: models
	$(BIN)/python scripts/pipeline.py --models $(MODELS) --out out

test: models node browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The long soak (about 15 minutes; not part of CI): 2,000 generate calls and a 4,000-token generation on
# SmolLM2 INT8, resident memory watched; its figures are quoted in docs/reliability.md.
soak: models
	$(BIN)/python scripts/soak.py --models $(MODELS) --out out --write-docs

clean:
	rm -rf $(VENV) $(MODELS) out clients/node/node_modules
