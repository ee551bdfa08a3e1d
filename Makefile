# Two entry points (README): `make book` builds the book, `make test` runs the tests.
# Both create the virtual environment first; nothing needs to be installed by hand.
PY      := .venv/bin/python
PIP     := $(PY) -m pip
STAMP   := .venv/.installed

.PHONY: book test venv vendor chromium clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-assets.txt
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[book,test]"
	$(PIP) install -q --no-deps -r requirements-assets.txt
	touch $(STAMP)

vendor: _vendor/.vendored

_vendor/.vendored: tools/vendor_js.sh tools/widgets_compat.js
	bash tools/vendor_js.sh _vendor

# The browser check (tests/test_browser.py) opens every page in the Debian
# `chromium`. Installed here where it is missing and the system allows it (root, or
# sudo without a password, with apt-get: as on CI); elsewhere the check is reported
# SKIPPED with the reason, never passed.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make: no chromium and no apt-get: tests/test_browser.py will be skipped"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	  || echo "make: apt-get could not install chromium: tests/test_browser.py will be skipped"; \
	elif sudo -n true 2>/dev/null; then \
	  sudo -n apt-get update -q && sudo -n env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q chromium \
	  || echo "make: apt-get could not install chromium: tests/test_browser.py will be skipped"; \
	else \
	  echo "make: chromium is missing and installing it needs root (apt-get install chromium):"; \
	  echo "      tests/test_browser.py will be skipped"; \
	fi

book: venv vendor
	.venv/bin/jupyter-book build . -W -n --keep-going

test: venv vendor chromium
	$(PY) -m pytest

clean:
	rm -rf _build
