# Two commands do all the set-up on a fresh Debian machine (root):
#   make lab   - boots a local 3+2 lab cluster of systemd-nspawn machines (the lab's node image
#                is built on first use, a few minutes, then cached), prints its timeline,
#                tears it down; `make lab LAB_ARGS="--control 3 --workers 100"` (no --machines)
#                runs the nodes as processes instead
#   make test  - lint, type checks and the three test tiers (unit, integration, lab)
# make unit runs the first tier alone: no root, no daemons, seconds.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# etcd-server/etcd-client: Debian 13's are etcd 3.5.16, the lab's etcd (kubeadm 1.32 runs 3.5.16);
# Debian 12's are 3.4.23, kept only for the 3.4 comparison (docs/lab.md, "etcd"). See `etcd`.
# prometheus: for promtool only (tests check metrics and alert rules with it).
SYSTEM_PACKAGES := etcd-server etcd-client haproxy keepalived iproute2 procps golang-go shellcheck vagrant vagrant-libvirt debootstrap systemd-container prometheus libfaketime
# Debian's real kubectl (a Go binary) of two minors, for the lab's tests and the operator:
# $(KUBECTL_DIR)/<minor>/usr/bin/kubectl, unpacked from trixie (1.32) and sid (1.36) by
# scripts/fetch-deb.sh without touching the host's apt sources. A kubectl on the host's PATH
# (another vendor's, another version) is never used.
KUBECTL_DIR ?= /opt/ek8s/kubectl
KUBECTL_VERSIONS := 1.32:trixie 1.36:sid
# Machines by default: the overlay's units under systemd, real reboots (docs/lab.md).
LAB_ARGS ?= --control 3 --workers 2 --machines

.PHONY: lab test lint typecheck unit integration labtests deps system-deps etcd venv kubectl bench clean

deps: system-deps etcd venv kubectl
# The lab's etcd 3.5 (etcd, etcdctl, etcdutl) in ETCD_DIR/usr/bin, where lab/emulation.py
# looks: the host's own on Debian 13 (etcd-server/etcd-client 3.5.16, linked), Debian 13's
# packages unpacked by scripts/fetch-deb.sh on Debian 12 (whose own etcd is 3.4.23); the
# host's apt sources are never changed. Checked: etcd must say 3.5.x.
ETCD_DIR ?= /opt/ek8s-lab/etcd-3.5
etcd: system-deps
	@if ! $(ETCD_DIR)/usr/bin/etcd --version 2>/dev/null | grep -q '^etcd Version: 3\.5\.' \
		|| [ ! -x $(ETCD_DIR)/usr/bin/etcdctl ] || [ ! -x $(ETCD_DIR)/usr/bin/etcdutl ]; then \
		rm -rf $(ETCD_DIR) && mkdir -p $(ETCD_DIR)/usr/bin; \
		if /usr/bin/etcd --version 2>/dev/null | grep -q '^etcd Version: 3\.5\.' && [ -x /usr/bin/etcdutl ]; then \
			ln -s /usr/bin/etcd /usr/bin/etcdctl /usr/bin/etcdutl $(ETCD_DIR)/usr/bin/; \
		else \
			bash scripts/fetch-deb.sh trixie $(ETCD_DIR) etcd-server etcd-client; \
		fi; \
	fi
	@$(ETCD_DIR)/usr/bin/etcd --version | grep -q '^etcd Version: 3\.5\.' \
		|| { echo "$(ETCD_DIR)/usr/bin/etcd is not etcd 3.5"; exit 1; }

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# Debian may start the packaged daemons; the project runs its own (prometheus is
	@# installed for promtool only: tests check metrics and alert rules with it).
	@for s in etcd haproxy keepalived prometheus; do (systemctl stop $$s 2>/dev/null || service $$s stop 2>/dev/null) >/dev/null || true; done

kubectl: $(foreach v,$(KUBECTL_VERSIONS),$(KUBECTL_DIR)/$(firstword $(subst :, ,$(v)))/usr/bin/kubectl)

# Under a lock (sessions share the directory), unpacked beside, checked (the suite still ships
# that minor: sid moves on), then moved in place.
$(KUBECTL_DIR)/%/usr/bin/kubectl:
	@mkdir -p $(KUBECTL_DIR); exec 9>$(KUBECTL_DIR)/.lock; flock 9; [ -x $@ ] && exit 0; \
	suite=""; for v in $(KUBECTL_VERSIONS); do [ "$${v%%:*}" = "$*" ] && suite=$${v#*:}; done; \
	[ -n "$$suite" ] || { echo "kubectl $*: not in KUBECTL_VERSIONS ($(KUBECTL_VERSIONS))" >&2; exit 2; }; \
	tmp=$(KUBECTL_DIR)/.$*.new; rm -rf $$tmp; \
	scripts/fetch-deb.sh $$suite $$tmp kubectl || exit 1; \
	got=$$($$tmp/usr/bin/kubectl version --client -o json | sed -n 's/.*"minor": *"\([0-9]*\).*/1.\1/p' | head -1); \
	if [ "$$got" != "$*" ]; then \
		echo "kubectl from $$suite is $$got, not $*: update KUBECTL_VERSIONS in the Makefile" >&2; rm -rf $$tmp; exit 1; \
	fi; \
	rm -rf $(KUBECTL_DIR)/$* && mv $$tmp $(KUBECTL_DIR)/$*

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

lab: deps
	@$(BIN)/ek8s lab down >/dev/null 2>&1 || true
	@rc=0; $(BIN)/ek8s lab up $(LAB_ARGS) --json lab-report.json || rc=$$?; \
	if [ $$rc -eq 0 ]; then echo; echo "== ek8s lab status"; $(BIN)/ek8s lab status || rc=$$?; fi; \
	echo; $(BIN)/ek8s lab down; \
	if [ $$rc -eq 0 ]; then echo "report: lab-report.json"; fi; exit $$rc

PACKAGES := core leader phylactery manager lab

lint: venv
	$(BIN)/ruff check $(PACKAGES) tests scripts setup.py
	$(BIN)/ruff format --check $(PACKAGES) tests scripts setup.py

typecheck: venv
	$(BIN)/mypy $(PACKAGES)

# The unit and integration tiers run on two pytest-xdist workers, each test file on one worker
# (--dist loadfile: a file's tests share fixtures and loopback ports); the lab tier runs alone,
# one lab at a time (its tests hold the lab lock and measure the machine).
PARALLEL ?= -n 2 --dist loadfile

unit: venv
	$(BIN)/pytest -q -ra $(PARALLEL) tests/unit

integration: deps
	$(BIN)/pytest -q -ra $(PARALLEL) tests/integration

labtests: deps
	$(BIN)/pytest -q -ra tests/lab

# Both runs happen whatever the first's result; make test fails when either failed.
test: deps lint typecheck
	@rc=0; set -x; \
	$(BIN)/pytest -q -ra --durations=15 $(PARALLEL) tests/unit tests/integration || rc=$$?; \
	$(BIN)/pytest -q -ra --durations=40 tests/lab || rc=$$?; \
	exit $$rc

bench: deps
	$(BIN)/python scripts/bench_lab.py --runs 5

clean:
	-$(BIN)/ek8s lab down
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
