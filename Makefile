# Two commands do all the set-up: `make run` and `make test`.
# CPU installs pin the CPU wheel of torch with pip; the extras' ~200 other packages install
# with uv, which keeps that torch and takes minutes less than pip (docs/notes.md, "Install
# time"). On a CUDA machine with torch already installed use
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

.PHONY: run test test-long install bench lint clean gpu gpu-plan gpu-suite gpu-rehearse gpu-unpack gpu-docs

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_SPEC),$(PY) -m pip install -q "$(TORCH_SPEC)")
	$(PY) -m pip install -q "uv==0.13.8"
	$(VENV)/bin/uv pip install -q --python $(PY) -e ".[$(EXTRAS)]"
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps "keras-hub==0.32.0"  # the keras extra (pyproject.toml)
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/lab run --workload $(WORKLOADS) --backend $(BACKENDS) --mode $(MODES) --device $(DEVICE)

# the long end-to-end tests (marker `long`, a minute or more each) run apart: `make test-long`.
# The tests run on TEST_WORKERS pytest-xdist workers, one test file per worker at a time
# (tests/conftest.py); TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not long" tests

test-long: install
	$(PY) -m pytest -q -m long tests

# The GPU campaign (bench/gpu_campaign.py, lab/campaign/): on a GPU machine whose python
# already has torch, triton and jax, with no install step. Each lease runs what GPU_OUT/<kind>/
# does not hold yet, into one campaign run per GPU kind; GPU_PACK: a folder the lease's files
# are packed into (at most 8) to bring home with `make gpu-unpack FILES="..."`. The
# data-parallel cells run only where the machine has 2 GPUs or more; `make gpu-plan
# GPU_KIND=nvidia-h100-x2` shows the plan of such a kind.
GPU_OUT ?= profiles
GPU_KIND ?=
GPU_LIMIT_S ?= 720
GPU_PACK ?=
REHEARSE_OUT ?= .rehearsal
gpu:
	PYTHONPATH=. TRITON_INTERPRET=0 $(PYTHON) bench/gpu_campaign.py run --out $(GPU_OUT) --limit-s $(GPU_LIMIT_S) $(if $(GPU_PACK),--pack $(GPU_PACK))

gpu-plan:
	PYTHONPATH=. $(PYTHON) bench/gpu_campaign.py plan --out $(GPU_OUT) $(if $(GPU_KIND),--kind $(GPU_KIND))

# the same campaign on the CPU, tiny: a first lease whose suite step stops at a 1 s budget,
# then a second lease that runs only what the first left missing
gpu-rehearse:
	rm -rf $(REHEARSE_OUT)
	PYTHONPATH=. $(PYTHON) bench/gpu_campaign.py rehearse --out $(REHEARSE_OUT) --budget suite=1
	PYTHONPATH=. $(PYTHON) bench/gpu_campaign.py rehearse --out $(REHEARSE_OUT)

gpu-unpack:
	PYTHONPATH=. $(PYTHON) bench/gpu_campaign.py unpack --out $(GPU_OUT) $(FILES)

gpu-docs:
	PYTHONPATH=. $(PYTHON) bench/gpu_campaign.py docs --out $(GPU_OUT)

# the HF model suite on the GPU, resumed across leases until complete (bench/gpu_suite.py)
gpu-suite:
	PYTHONPATH=. $(PYTHON) bench/gpu_suite.py --out $(GPU_OUT)

bench: install
	$(PY) -m pytest bench --benchmark-autosave

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
