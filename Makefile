# flatminima: install, test, benchmark.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test system-test slurm-test gpu-check lint bench faults clean demo tables real-graphs real-graph-protocols real-correlation real-flatness \
	real-heartbeats real-heartbeats-attention real-heartbeats-interpatient real-text real-images real-finetune $(addprefix image-,$(OPTIMIZERS)) \
	$(addprefix graph-,$(OPTIMIZERS)) graph-cv $(addprefix text-,$(OPTIMIZERS)) \
	$(addprefix ecg-,$(OPTIMIZERS)) ecg-rho-sweep

# `make image-<optimizer>`: train with the paper's config, then measure the run.
# DATA=<data set> picks the data set, ARGS="key=value ..." passes any other overrides.
OPTIMIZERS := sgd sam asam ssamf ssamd wsam nso gsam looksam fsam rwp arwp
DATA ?=
ARGS ?=
DATA_ARG = $(if $(DATA),data.name=$(DATA))
# the paper setting each optimizer's image target uses
IMAGE_CONFIG_sgd   := image_exps/configs/cifar10_wrn16_8.yaml
IMAGE_CONFIG_sam   := image_exps/configs/cifar10_wrn16_8.yaml
IMAGE_CONFIG_asam  := image_exps/configs/cifar10_wrn16_8.yaml
IMAGE_CONFIG_ssamf := image_exps/configs/cifar10_resnet18_ssam.yaml
IMAGE_CONFIG_ssamd := image_exps/configs/cifar10_resnet18_ssam.yaml
IMAGE_CONFIG_wsam  := image_exps/configs/cifar10_wrn16_8.yaml
IMAGE_CONFIG_nso   := image_exps/configs/nso_finetune.yaml
IMAGE_CONFIG_gsam  := image_exps/configs/cifar10_wrn16_8.yaml
IMAGE_CONFIG_looksam := image_exps/configs/cifar10_wrn16_8.yaml
IMAGE_CONFIG_fsam  := image_exps/configs/cifar10_wrn16_8.yaml
IMAGE_CONFIG_rwp   := image_exps/configs/cifar10_wrn16_8.yaml
IMAGE_CONFIG_arwp  := image_exps/configs/cifar10_wrn16_8.yaml

install: $(STAMP)

# Re-install only when the package metadata changes; a second `make install` costs nothing.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev,bench]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

# The system tests make test leaves out (CI runs them after it): two torchrun "nodes" on
# localhost (about a minute), then SLURM for real (below).
system-test: $(STAMP)
	$(PY) -m pytest -q -m system tests/test_multinode.py
	$(PY) -m pytest -q -m heavy tests
	$(MAKE) slurm-test

# SLURM for real: a one-node cluster on this machine (scripts/slurm/local-cluster.sh: root,
# Debian/Ubuntu; apt-get installs slurm-wlm and munge the first time), scripts/sweep.sh --slurm
# submitted to it (tests/test_slurm.py, about 2 minutes on 2 cores), then the cluster stopped
# whether the tests passed or not.
slurm-test: $(STAMP)
	scripts/slurm/local-cluster.sh start || { scripts/slurm/local-cluster.sh stop; exit 1; }
	FLATMINIMA_SLURM=1 $(PY) -m pytest -q -m system tests/test_slurm.py; rc=$$?; \
		scripts/slurm/local-cluster.sh stop || rc=1; exit $$rc

# Every CUDA path once on the GPU at hand (one table; exit 1 on a failure; without CUDA one
# line, exit 0). ARGS="--device cpu" rehearses it on the CPU.
gpu-check: $(STAMP)
	$(PY) -m scripts.gpu_check $(ARGS)

# The fault-injection tests with many seeds (make test runs two): kills at random moments
# and at every write, corrupted files, concurrent commands.
FAULT_SEEDS ?= $(shell seq 0 19)
faults: $(STAMP)
	FLATMINIMA_FAULT_SEEDS="$(FAULT_SEEDS)" $(PY) -m pytest -q tests/test_faults.py

bench: $(STAMP)
	$(PY) -m benchmarks.optim_step
	$(PY) -m benchmarks.hessian
	$(PY) -m benchmarks.text_step
	$(PY) -m benchmarks.landscape
	$(PY) -m benchmarks.flatness

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

$(addprefix image-,$(OPTIMIZERS)): image-%: $(STAMP)
	$(PY) -m image_exps.train --measure --config $(IMAGE_CONFIG_$*) optimizer.name=$* $(DATA_ARG) $(ARGS)

# `make graph-<optimizer> [DATA=MUTAG]`: GCN with the NSO paper's graph setting (fold 0),
# then measure; without DATA the synthetic sbm set. `make graph-cv DATA=MUTAG OPT=nso`:
# all 10 folds, mean and std of the test accuracy.
OPT ?= nso
GRAPH_CONFIG = graph_exps/configs/$(if $(DATA),$(shell echo $(DATA) | tr A-Z a-z),sbm).yaml
$(addprefix graph-,$(OPTIMIZERS)): graph-%: $(STAMP)
	$(PY) -m graph_exps.train --measure --config $(GRAPH_CONFIG) optimizer.name=$* $(ARGS)

graph-cv: $(STAMP)
	$(PY) -m graph_exps.cv --config $(GRAPH_CONFIG) optimizer.name=$(OPT) $(ARGS)

# `make text-<optimizer> DATA=mrpc`: BERT on a GLUE task with HF run_glue.py's setting
# (5 epochs for MRPC and WNLI, as its README), then measure; without DATA, RTE.
TEXT_DATA = $(if $(DATA),$(shell echo $(DATA) | tr A-Z a-z | tr -d -- '-_'),rte)
TEXT_EPOCHS = $(if $(filter mrpc wnli,$(TEXT_DATA)),train.epochs=5)
$(addprefix text-,$(OPTIMIZERS)): text-%: $(STAMP)
	$(PY) -m text_exps.train --measure --config text_exps/configs/glue.yaml optimizer.name=$* \
		data.name=$(TEXT_DATA) $(TEXT_EPOCHS) $(ARGS)

# `make ecg-<optimizer> [DATA=mitbih|mitdb]`: the SAM course project's attention model on the
# Kaggle MIT-BIH beats (default), or inter-patient DS1 -> DS2 on the PhysioNet records;
# then measure (Hessian with its spectral density, noise stability, 2-D landscape).
ECG_CONFIG = ecg_exps/configs/$(if $(filter mitdb,$(DATA)),mitdb_interpatient,mitbih_attention).yaml
$(addprefix ecg-,$(OPTIMIZERS)): ecg-%: $(STAMP)
	$(PY) -m ecg_exps.train --measure --config $(ECG_CONFIG) optimizer.name=$* \
		hessian.esd=true $(ARGS)

# the course project's SAM rho sweep on MIT-BIH: SGD, then SAM at each rho
RHOS ?= 0.01 0.02 0.05 0.1 0.2 0.5 1.0
ecg-rho-sweep: $(STAMP)
	$(MAKE) ecg-sgd ARGS="run_dir=runs/ecg/rho-sweep/sgd $(ARGS)"
	for rho in $(RHOS); do \
		$(MAKE) ecg-sam ARGS="optimizer.rho=$$rho run_dir=runs/ecg/rho-sweep/sam-rho$$rho $(ARGS)" \
		|| exit 1; done

# A base optimizer, SAM and NSO on real data shipped with the package: rho and sigma chosen
# on validation data, then 3 seeds, measured and compared (within 5 minutes on 2 cores).
demo: $(STAMP)
	$(PY) -m scripts.demo $(ARGS)

# The README's real-data tables (scripts/real/), each runs its matrix then its tables;
# JOBS=N cells at once (default 2).
JOBS ?= 2
real-graphs: $(STAMP)
	PYTHON=$(PY) scripts/real/graphs.sh --jobs $(JOBS) $(ARGS)
real-graph-protocols: $(STAMP)
	PYTHON=$(PY) scripts/real/graph_protocols.sh --jobs $(JOBS) $(ARGS)
real-heartbeats: $(STAMP)
	PYTHON=$(PY) scripts/real/heartbeats.sh --jobs $(JOBS) $(ARGS)
# the course project's attention model on the same beats: 10 epochs at its LR 0.01, a
# two-point grid, measured on 250 test beats (about 2 h 40 min on 2 shared CPU cores)
ATTENTION = train.epochs=10 hessian.n_probes=20 hessian.n_examples=250 \
	noise_stability.n_examples=250 landscape.n_examples=250 landscape.steps=7
real-heartbeats-attention: $(STAMP)
	MODELS=attention RHOS=0.02,0.05 SIGMAS=0.01,0.03 PYTHON=$(PY) scripts/real/heartbeats.sh \
		--jobs $(JOBS) -- $(ATTENTION) $(ARGS)
# MITDB_ROOT=DIR: DIR/mitdb/ holds the whole database
real-heartbeats-interpatient: $(STAMP)
	PYTHON=$(PY) scripts/real/heartbeats_interpatient.sh --jobs $(JOBS) $(ARGS)
# where the data are not shipped: GLUE_ROOT=DIR MODEL=DIR (text), IMAGES=DIR (images)
real-text: $(STAMP)
	PYTHON=$(PY) scripts/real/text.sh --jobs 1 $(ARGS)
real-images: $(STAMP)
	PYTHON=$(PY) scripts/real/images.sh --jobs $(JOBS) $(ARGS)
# IMAGES=DIR WEIGHTS=FILE: the target set and the pretrained checkpoint
real-finetune: $(STAMP)
	PYTHON=$(PY) scripts/real/finetune.sh --jobs $(JOBS) $(ARGS)
# The newer flatness measures on the real runs of the graphs and the CNN on heartbeats
# (about 45 minutes on 2 cores): adaptive sharpness and PAC-Bayes flatness of every run
FLATNESS ?= adaptive_sharpness,pac_bayes
real-flatness: $(STAMP)
	PYTHON=$(PY) scripts/real/measure_runs.sh graph runs/real/graph $(FLATNESS) --jobs $(JOBS)
	PYTHON=$(PY) scripts/real/measure_runs.sh ecg runs/real/ecg/cnn1d $(FLATNESS) --jobs $(JOBS)
	PYTHON=$(PY) scripts/real/measure_runs.sh ecg runs/real/ecg_interpatient $(FLATNESS) \
		--jobs $(JOBS)

# How well each flatness measure ranks the real runs' generalization (after the above):
# one table and figure per family, in results/real/correlation/<set>/
REAL_SETS ?= graph ecg ecg_interpatient image finetune text
real-correlation: $(STAMP)
	for set in $(REAL_SETS); do \
		[ ! -d runs/real/$$set ] || $(PY) -m common.correlation runs/real/$$set \
			--out results/real/correlation/$$set $(ARGS) || exit 1; \
	done

# Tables from every finished run under runs/.
tables: $(STAMP)
	$(PY) -m common.tables runs --out results/tables
