# Two commands do all set-up: `make pretrain` and `make test`. Both create .venv with the pinned
# dependencies (constraints.txt) on first use.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: pretrain test bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

pretrain: $(STAMP)
	$(PY) -m pretrain.train --config pretrain/configs/tiny_cpu.py --workdir workdir/tiny_cpu

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15 tests

bench: $(STAMP)
	$(PY) -m roformer_jax.bench forward --preset roformer_v2_small --seq 128,512

clean:
	rm -rf .venv workdir .pytest_cache
