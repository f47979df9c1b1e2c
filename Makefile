# gmpsim: `make run` runs the default scenario; `make test` runs the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean mutate

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/gmpsim run $(SCENARIO)

# The rules that hold without anyone remembering them: ruff (pyproject [tool.ruff]) and the import
# contracts (pyproject [tool.importlinter]: the runtime is pure, coordinator and worker apart).
lint: $(STAMP)
	$(BIN)/ruff check coordinator worker protocol tests
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Mutation testing of the pure core (tests/MUTATION.md); not part of `make test`. mutmut 3 copies the
# tree into ./mutants and keeps its results there (a second run redoes only what changed).
# FILES="coordinator/runtime/runq.py coordinator/runtime/note.py" narrows it to some of the core's files.
MUTANTS = $(foreach f,$(FILES),$(subst /,.,$(basename $(f))).*)
mutate: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,mutate]'
	$(BIN)/mutmut run --max-children $(or $(JOBS),2) $(MUTANTS)
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis mutants
