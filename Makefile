# Two commands set everything up on a fresh machine: `make reproduce` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PRESET ?= default
SEED   ?= 0
SEEDS  ?= 3

.PHONY: reproduce smoke study mechanisms calibrate ablation test test-fast lab lint bench gpu-check venv clean

venv: $(VENV)/.installed

# The stamp reinstalls when pyproject.toml changes. The kernelspec `python3` is installed into
# the venv itself. `make reproduce` runs a kernel built from the venv's interpreter whatever
# else is installed; `make lab` puts the venv's kernelspecs first on JUPYTER_PATH, which
# otherwise wins over them.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (wsda)" >/dev/null
	touch $@

reproduce: venv  ## run the notebook series headless and rewrite figures/
	$(PY) -m wsda_lib.cli reproduce --preset $(PRESET) --seed $(SEED) --seeds $(SEEDS)

smoke: venv  ## the series in the smoke preset; figures go to build/smoke/, not figures/
	$(PY) -m wsda_lib.cli reproduce --preset smoke --seed $(SEED) --seeds $(SEEDS) --out build/smoke

# The weak-label study behind the default UDA recipe (seed 0, chosen on target val); about
# an hour on two cores, not part of `make reproduce`. Writes figures/study.json; then the
# mechanisms' record below (another hour).
study: venv
	$(PY) -m wsda_lib.cli study --preset $(PRESET)
	$(PY) -m wsda_lib.cli mechanisms --preset $(PRESET)

# Each adversarial term over a range of strengths and the self-training candidates, against
# their controls (seed 0, chosen on target val; a chosen strength confirmed over seeds 0-2;
# AdaBN and output-space alignment judged over seeds 0-2, which it trains); about an hour on
# two cores when the series' seed-0 runs are cached (the sum of its runs' times here,
# 2026-12-07). Writes
# figures/mechanisms.json. Also the second half of `make study`.
mechanisms: venv
	$(PY) -m wsda_lib.cli mechanisms --preset $(PRESET)

# The embedded benchmark's calibration to the real shift (seed 0, source-only and oracle on
# target val only; docs/method.md §14): one source-only model, two oracles and each variant's
# images, 65 minutes on two cores shared with other work. Writes
# figures/benchmark_calibration.json.
calibrate: venv
	$(PY) -m wsda_lib.cli calibrate --preset $(PRESET)

# The controls behind the series' claims (docs/method.md §15), over seeds 0..SEEDS-1, judged
# on target test; reads the series' cached stages from runs/. Writes figures/ablation.json.
ablation: venv
	$(PY) -m wsda_lib.cli ablation --preset $(PRESET) --seeds $(SEEDS)

test: venv
	$(PY) -m pytest

# The contributors' loop: every test but those that execute notebooks, start torchrun, train in
# a subprocess or build a wheel (pytest markers `notebook` and `slow`); under 2 minutes here.
test-fast: venv
	$(PY) -m pytest -m "not notebook and not slow"

# Jupyter refuses to start as root (common in containers) unless told it may.
lab: venv
	JUPYTER_PATH="$(CURDIR)/$(VENV)/share/jupyter$${JUPYTER_PATH:+:$$JUPYTER_PATH}" \
	JUPYTER_PREFER_ENV_PATH=1 $(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	$(PY) -m wsda_lib.experiments.bench

# The paper-scale path on a GPU: ResNet-101 adaptation steps with every term on, fp32 and bf16,
# and the 2048x1024 evaluation; steps/s and peak GPU memory to bench/gpu.json. Needs CUDA;
# `.venv/bin/wsda gpu-check --tiny` runs the same code path on the CPU in seconds.
gpu-check: venv
	$(PY) -m wsda_lib.cli gpu-check

clean:
	rm -rf build runs
