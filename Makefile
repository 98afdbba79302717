# The README's two commands:
#   make demo   install (CPU torch where no GPU) and run the main job on the embedded digits data
#   make test   install and run the test suite (.ci/run calls this)
VENV ?= .venv
STAMP := $(VENV)/.landscape-installed
RUN ?= runs/demo

.PHONY: demo test setup clean-venv

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	@touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/landscape train --model small-mnistfc --dataset digits --optimizer entropy-sgd --epochs 5 --seed 0 --out $(RUN)

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean-venv:
	rm -rf $(VENV)
