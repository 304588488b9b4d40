# The two set-up commands in the README are `make demo` and `make test`.
# Both create .venv with the system python3 and install what they need.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
AIRFLOW_VENV := .venv-airflow
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test check check-nbs check-tests check-sync nbtest pytest browser-deps java-deps tutorials bench bench-spark lab clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: setup.py settings.ini | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev: setup.py settings.ini | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@ $(VENV)/.core

$(VENV)/.bench: setup.py settings.ini $(VENV)/.dev
	$(BIN)/python -m pip install -q -e ".[dev,bench]"
	touch $@

# Feast pins pandas<3, so it gets a venv of its own; features_bench.py runs its contenders with that python.
FEAST_VENV := .venv-feast
$(FEAST_VENV)/.ok:
	$(PYTHON) -m venv $(FEAST_VENV)
	$(FEAST_VENV)/bin/python -m pip install -q 'feast[duckdb]==0.67.0' psutil
	touch $@

## demo: the main job on the embedded default
demo: $(VENV)/.core
	$(BIN)/mlinfra demo

## test: every test (sync checks, notebooks, pytest, tutorials)
test: check-sync nbtest pytest tutorials

## check: the fast subset for the edit-test loop (no slow cells, no slow or browser tests); `make test` runs everything
# The notebooks and pytest run side by side, each one's output printed whole when it ends (quiet, 2 cores: 2m48s and
# 2m52s, where one after the other took about 4 minutes).
check: check-sync $(VENV)/.dev
	@$(MAKE) --no-print-directory -j2 --output-sync=target check-nbs check-tests

check-nbs: $(VENV)/.dev
	$(BIN)/nbdev_test

check-tests: $(VENV)/.dev
	$(BIN)/python -m pytest tests/ -q -n 2 --dist loadfile -m 'not slow and not browser'; rc=$$?; [ $$rc -eq 0 -o $$rc -eq 5 ]

check-sync: $(VENV)/.dev
	$(BIN)/python tools/check_sync.py

nbtest: $(VENV)/.dev java-deps $(AIRFLOW_VENV)/.k8s
	$(BIN)/nbdev_test --flags slow

# Airflow 3 (core, task SDK, standard provider) in a venv of its own: its pins (SQLAlchemy, pendulum...) stay out of .venv.
# tests/test_pipeline_airflow.py runs the generated DAG with it; the tasks call our CLI, as on a real Airflow worker.
# A machine where it cannot be installed still runs the other tests; the Airflow tests then skip, saying why.
$(AIRFLOW_VENV)/.ok:
	@$(PYTHON) -m venv $(AIRFLOW_VENV) && \
	$(AIRFLOW_VENV)/bin/python -m pip install -q 'apache-airflow-core==3.3.2' 'apache-airflow-task-sdk==1.3.2' 'apache-airflow-providers-standard==1.21.0' && \
	touch $@ || { echo "WARNING: could not install Airflow into $(AIRFLOW_VENV); tests/test_pipeline_airflow.py will skip" >&2; rm -rf $(AIRFLOW_VENV); }

# The KubernetesPodOperator variant (`mlinfra pipeline airflow --image`) needs Airflow's cncf.kubernetes provider: about 150 MB more
# (the kubernetes clients), no conflicts with the pins above. tests/test_pipeline_airflow.py loads that DAG and builds its pods with it.
$(AIRFLOW_VENV)/.k8s: $(AIRFLOW_VENV)/.ok
	@$(AIRFLOW_VENV)/bin/python -m pip install -q 'apache-airflow-providers-cncf-kubernetes==10.25.0' && touch $@ || \
	echo "WARNING: could not install the cncf.kubernetes provider into $(AIRFLOW_VENV); its DAG test will skip" >&2

# The browser tests (tests/test_browser.py, marker `browser`) drive JupyterLab in Debian's chromium with selenium.
# As root with apt-get, the two packages are installed when missing; otherwise the tests skip, and this says so loudly.
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver for the browser tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null || \
	  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; } || \
	  echo "!!!!! could not install chromium: the BROWSER TESTS WILL BE SKIPPED !!!!!"; \
	else echo "!!!!! chromium/chromedriver missing and not root: the BROWSER TESTS WILL BE SKIPPED (apt-get install -y chromium chromium-driver) !!!!!"; fi

# The Spark tests (tests/test_*_spark.py, chapters 24 and 55) run the pip-installed PySpark on Java 17+.
# As root with apt-get, Debian's headless JRE is installed when java is missing; otherwise they skip, and this says so loudly.
java-deps:
	@if command -v java >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing openjdk-17-jre-headless for the Spark tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >/dev/null || \
	  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >/dev/null; } || \
	  echo "!!!!! could not install Java: the SPARK TESTS WILL BE SKIPPED !!!!!"; \
	else echo "!!!!! java missing and not root: the SPARK TESTS WILL BE SKIPPED (apt-get install -y openjdk-17-jre-headless) !!!!!"; fi

# pytest exits 5 when it collects no tests; that is not a failure here. Two xdist workers, one test module each
# at a time (module fixtures such as servers stay shared); the 15 slowest tests are listed at the end.
# The Spark modules run afterwards in worker processes of their own: once, a worker that had run other modules (gRPC
# servers among them) could not start Spark's JVM ("Java gateway process exited", after a gRPC "Bad file descriptor").
# Both runs always run, so a failure in the first still leaves the Spark results to read.
SPARK_TESTS := $(wildcard tests/test_*_spark.py)
pytest: $(VENV)/.dev browser-deps java-deps $(AIRFLOW_VENV)/.k8s
	@ok() { [ $$1 -eq 0 -o $$1 -eq 5 ]; }; \
	$(BIN)/python -m pytest tests/ -q -n 2 --dist loadfile --durations=15 $(addprefix --ignore=,$(SPARK_TESTS)); rest=$$?; \
	$(BIN)/python -m pytest $(SPARK_TESTS) -q -n 2 --dist loadfile --durations=5; spark=$$?; \
	ok $$rest && ok $$spark

tutorials: $(VENV)/.dev
	@if [ -d nbs/tutorials ]; then \
	  $(BIN)/python -m pytest --nbval-lax -q nbs/tutorials/; rc=$$?; [ $$rc -eq 0 -o $$rc -eq 5 ]; \
	else echo "no tutorials yet"; fi

# Evidently 0.7 brings plotly, litestar, nltk, statsmodels...; a venv of its own keeps them (and pandas<3) out of .venv.
EVIDENTLY_VENV := .venv-evidently
$(EVIDENTLY_VENV)/.ok:
	$(PYTHON) -m venv $(EVIDENTLY_VENV)
	$(EVIDENTLY_VENV)/bin/python -m pip install -q 'evidently==0.7.23' 'pandas<3' psutil
	touch $@

## bench: every benchmark in bench/ (peers from the bench extra and their own venvs)
bench: $(VENV)/.bench $(FEAST_VENV)/.ok $(EVIDENTLY_VENV)/.ok
	@shopt -s nullglob; for f in bench/*_bench.py; do echo "== $$f"; FEAST_PYTHON=$(FEAST_VENV)/bin/python EVIDENTLY_PYTHON=$(EVIDENTLY_VENV)/bin/python $(BIN)/python $$f || exit 1; done

# Feast's Spark offline store (feast[spark]) in a venv of its own, for the Spark contenders of features_bench.py.
FEAST_SPARK_VENV := .venv-feast-spark
$(FEAST_SPARK_VENV)/.ok:
	$(PYTHON) -m venv $(FEAST_SPARK_VENV)
	$(FEAST_SPARK_VENV)/bin/python -m pip install -q 'feast[spark]==0.67.0' psutil
	touch $@

## bench-spark: the Spark contenders (local[2] and a 2-worker cluster on 127.0.0.1) of the features and drift benchmarks
bench-spark: $(VENV)/.bench $(FEAST_SPARK_VENV)/.ok java-deps
	$(BIN)/python bench/features_bench.py --spark --feast-python $(FEAST_SPARK_VENV)/bin/python
	$(BIN)/python bench/drift_bench.py --spark

## lab: JupyterLab on 127.0.0.1 (as root too, as in containers and CI-like machines)
lab: $(VENV)/.dev
	$(BIN)/jupyter lab --ip=127.0.0.1 --no-browser --notebook-dir=nbs $$([ "$$(id -u)" = 0 ] && echo --allow-root)

clean:
	rm -rf $(VENV) $(FEAST_VENV) $(FEAST_SPARK_VENV) $(EVIDENTLY_VENV) $(AIRFLOW_VENV) .mlinfra _docs _proc build dist *.egg-info .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
