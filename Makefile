# Two commands do all the set-up: `make run` and `make test`.
# CPU installs pin the CPU wheel of torch; on a CUDA machine with torch already installed use
#   make run TORCH_SPEC= DEVICE=cuda     (keeps your CUDA torch; see README "GPU machines")
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= cpu
DEVICE ?= cpu
WORKLOADS ?= mlp,transformer
BACKENDS ?= torch-eager,torch-compile
MODES ?= infer,train

.PHONY: run test install bench lint clean gpu gpu-plan gpu-suite

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_SPEC),$(PY) -m pip install -q "$(TORCH_SPEC)")
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/lab run --workload $(WORKLOADS) --backend $(BACKENDS) --mode $(MODES) --device $(DEVICE)

test: install
	$(PY) -m pytest -q tests

# The GPU campaign (bench/gpu_campaign.py): on a GPU machine whose python already has torch,
# triton and jax, with no install step; runs land under GPU_OUT/<machine-id>/.
GPU_OUT ?= profiles
gpu:
	PYTHONPATH=. TRITON_INTERPRET=0 $(PYTHON) bench/gpu_campaign.py run --out $(GPU_OUT)

gpu-plan:
	PYTHONPATH=. $(PYTHON) bench/gpu_campaign.py plan

# the HF model suite on the GPU, resumed across leases until complete (bench/gpu_suite.py)
gpu-suite:
	PYTHONPATH=. $(PYTHON) bench/gpu_suite.py --out $(GPU_OUT)

bench: install
	$(PY) -m pytest bench --benchmark-autosave

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
