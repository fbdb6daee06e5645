# Two commands do all set-up: `make pretrain` and `make test`. Both create .venv with the pinned
# dependencies (constraints.txt) on first use.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: pretrain finetune finetune-ner finetune-seq2seq test bench clean kernels

$(STAMP): setup.cfg pyproject.toml constraints.txt
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	$(PY) -m pip install -q --no-deps bert4keras==0.11.5
	touch $(STAMP)

# The fused CPU attention kernel, built once per source change (roformer_jax/kernels/cpu_attention.py),
# so that parallel test workers and the first train step find it ready. A no-op where it is built.
kernels: $(STAMP)
	$(PY) -m roformer_jax.kernels.cpu_attention

pretrain: $(STAMP) kernels
	$(PY) -m pretrain.train --config pretrain/configs/tiny_cpu.py --workdir workdir/tiny_cpu

# After `make pretrain`: PET few-shot (K = 200) on the embedded reviews and the [CLS] classifier on the same
# labels, both from workdir/tiny_cpu; one JSON line at the end (finetune/pet_compare.py).
finetune: $(STAMP) kernels
	$(PY) -m finetune.pet_compare --config finetune/configs/pet.py --workdir workdir/pet_k200 \
	    --config.init=workdir/tiny_cpu --config.k=200

# GlobalPointer NER on People's Daily from workdir/tiny_cpu (after `make pretrain`), then the same setup
# from scratch; the last line is one JSON object (test_f1, test_precision, test_recall, scratch_test_f1).
finetune-ner: $(STAMP) kernels
	$(PY) -m finetune.ner_compare --config finetune/configs/ner.py --workdir workdir/ner --config.init=workdir/tiny_cpu

# After `make pretrain`: pinyin -> characters over People's Daily (UniLM, TeaForN N = 2) from workdir/tiny_cpu,
# against the most-frequent-character baseline; one JSON line at the end (finetune/seq2seq.py).
finetune-seq2seq: $(STAMP) kernels
	$(PY) -m finetune.run --config finetune/configs/pinyin.py --workdir workdir/pinyin_n2 \
	    --config.init=workdir/tiny_cpu --config.teaforn.n=2

# JAX_PLATFORMS=cpu: with libtpu installed, every JAX process would otherwise take libtpu's
# single-process lock and block the ahead-of-time TPU compilation tests. USE_TF=0 keeps
# transformers from importing TensorFlow. --dist loadfile keeps each file on one worker.
test: $(STAMP) kernels
	JAX_PLATFORMS=cpu USE_TF=0 $(PY) -m pytest -q -n 2 --dist loadfile --durations=20 tests

bench: $(STAMP)
	$(PY) -m roformer_jax.bench forward --preset roformer_v2_small --seq 128,512

clean:
	rm -rf .venv workdir .pytest_cache
