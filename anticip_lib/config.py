"""Run configuration: one frozen dataclass with the paper's defaults (paper §2; SPEC §2.4).

Everything that can change the numbers is a field (and part of the results key);
everything that cannot (device, threads, chunk sizes, progress bars) is a function
argument elsewhere. `validate()` runs before any compute and names the bad field.
"""

import hashlib
import math
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from pathlib import Path

OPTIMIZERS = ("sgd", "adam", "adam_reset")  # adam_reset: fresh Adam per episode (Fig. 6)
ORDERS = ("cyclic", "shuffled", "partial")
INITS = ("pretrained", "pythia", "normal")  # normal: isotropic N(0, 0.02²) (Fig. 15)
LR_SCHEDULES = ("constant", "cosine")
DOC_SPLITS = ("all", "pilot", "main")  # pilot: ~1/4 of a corpus, disjoint from main
# min_context: only documents with at least C tokens (no padding; the cpu presets);
# any: any document, short ones right-padded to C (the paper, SPEC §2.1–2.2)
DOC_FILTERS = ("min_context", "any")
# fp32, or bf16 autocast for forward and backward (weights and optimizer state fp32)
PRECISIONS = ("fp32", "bf16")

# Fields added after the first committed results. They enter a run's cache key only
# when they differ from these defaults, so every committed result keeps its key.
LATER_FIELDS = {"doc_split": "all", "doc_filter": "min_context", "width": 0, "depth": 0,
                "heads": 0, "precision": "fp32"}


NAMED_CORPORA = ("cnn_dailymail", "cnn-embedded", "abc-news-embedded",
                 "speeches-embedded")  # data.CORPORA (a test keeps them equal)
_FOLDER_SHA: dict = {}  # (folder, its files' names, sizes and mtimes) -> content hash


def folder_contents(folder) -> str | None:
    """sha256 over the names and bytes of a corpus folder's *.jsonl and *.txt files
    (what `data.load_texts` reads), or None when `folder` is not a folder.

    Contents, not modification times: the same files give the same key on every
    machine and after a fresh clone; any changed, added, removed or renamed file gives
    another. Read once per process while the files' names, sizes and mtimes stay.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir()
                   if p.suffix in (".jsonl", ".txt") and p.is_file())
    sig = (str(folder.resolve()),
           tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in found))
    if sig not in _FOLDER_SHA:
        h = hashlib.sha256()
        for p in found:
            h.update(p.name.encode("utf-8", "surrogateescape") + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
        _FOLDER_SHA[sig] = h.hexdigest()[:16]
    return _FOLDER_SHA[sig]


@dataclass(frozen=True)
class RunConfig:
    model: str = "pythia-1b"  # registry name, hub id or local checkpoint folder
    revision: str = "main"  # hub revision; "main" = 143K steps, "step0" = Pythia init
    init: str = "pretrained"  # "pretrained" | "pythia" | "normal" (random init recipes)
    tokenizer: str = "auto"  # "auto" = the model's own; or a registry name / folder
    corpus: str = "cnn_dailymail"  # "cnn_dailymail" (datasets) | "cnn-embedded" | folder
    n_docs: int = 25  # T
    context_len: int = 256  # C; documents truncated (and padded) to C tokens
    steps_per_doc: int = 10  # M; gradient steps per episode, batch size 1
    n_epochs: int = 5  # E
    optimizer: str = "sgd"  # "sgd" | "adam" (kept across episodes) | "adam_reset"
    lr: float = 1e-3  # paper: GD 1e-3; Adam 1e-5 in App. A.1, 1e-4 in the scripts
    lr_schedule: str = "constant"  # "constant" | "cosine" (to 0 over the run, Fig. 17)
    order: str = "cyclic"  # "cyclic" | "shuffled" (x_1 first) | "partial" (Fig. 12)
    n_shuffled: int = 0  # N of Fig. 12, for order="partial"
    seed: int = 0  # picks the documents, the shuffles and any random init
    doc_split: str = "all"  # "all" | "pilot" | "main": which part of the corpus
    doc_filter: str = "min_context"  # "min_context" (≥ C tokens) | "any" (paper: padded)
    # Architecture of a random-init shape (Figs. 3, 14): 0 = the named shape's own
    # width d, depth L (blocks) or number of attention heads
    width: int = 0
    depth: int = 0
    heads: int = 0
    # "bf16": forward and backward under bf16 autocast, fp32 weights and optimizer
    # state; in the key (another run than fp32's), never the book's default
    precision: str = "fp32"

    def __post_init__(self):  # numpy scalars from sweeps → plain Python; one key per value
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Integral) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v) if f.name == "lr" else int(v))
            elif isinstance(v, Real) and not isinstance(v, (bool, int)):
                object.__setattr__(self, f.name, float(v))

    def validate(self) -> "RunConfig":
        """Raise ValueError naming the first bad field; return self when all is well."""
        ints = {"n_docs": 2, "context_len": 2, "steps_per_doc": 1, "n_epochs": 1}
        for name, low in ints.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        for name in ("width", "depth", "heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0: the model's own), "
                                 f"got {v!r}")
        if (self.width or self.depth or self.heads) and self.init == "pretrained":
            raise ValueError("width, depth and heads change a random-init shape; "
                             f"init={self.init!r} loads fixed weights: use init='pythia' "
                             "or 'normal'")
        choices = {
            "optimizer": OPTIMIZERS,
            "order": ORDERS,
            "init": INITS,
            "lr_schedule": LR_SCHEDULES,
            "doc_split": DOC_SPLITS,
            "doc_filter": DOC_FILTERS,
            "precision": PRECISIONS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        if not isinstance(self.lr, float) or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not isinstance(self.n_shuffled, int) or isinstance(self.n_shuffled, bool):
            raise ValueError(f"n_shuffled must be an integer, got {self.n_shuffled!r}")
        if self.order == "partial" and not 1 <= self.n_shuffled <= self.n_docs:
            raise ValueError(
                f"n_shuffled must be in 1..n_docs={self.n_docs} for order='partial', "
                f"got {self.n_shuffled}"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        return self

    def arch(self) -> dict:
        """The architecture overrides that are set, as `load_model` keywords."""
        return {k: getattr(self, k) for k in ("width", "depth", "heads") if getattr(self, k)}

    def to_dict(self) -> dict:
        return asdict(self)

    def key_dict(self) -> dict:
        """The fields that identify the run's numbers: `to_dict()` minus later-added
        fields at their defaults (see LATER_FIELDS), plus, for a corpus folder, a hash
        of its files (`folder_contents`: changed files give a new key)."""
        d = self.to_dict()
        for name, default in LATER_FIELDS.items():
            if d.get(name) == default:
                del d[name]
        if self.corpus not in NAMED_CORPORA:  # a folder: its contents are in the key
            contents = folder_contents(self.corpus)
            if contents is not None:
                d["corpus_contents"] = contents
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown RunConfig fields: {sorted(unknown)}")
        return cls(**d)  # later-added fields missing from old files take defaults
