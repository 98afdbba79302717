# The README's two commands:
#   make demo   install (CPU torch where no GPU) and run the main job on the embedded digits data:
#               train -> spectrum -> flatness -> reports/quick/index.html
#   make test   install (plus Debian's chromium and dataset-fashion-mnist, where apt can) and run the test suite
#               (.ci/run calls this)
VENV ?= .venv
STAMP := $(VENV)/.landscape-installed
REPORT ?= reports/quick

.PHONY: demo test setup clean-venv

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	@touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/landscape reproduce all --scale quick --out $(REPORT)

test: $(STAMP)
	bash scripts/system-packages.sh
	$(VENV)/bin/ruff check landscape cli
	$(VENV)/bin/python -m pytest

clean-venv:
	rm -rf $(VENV)
