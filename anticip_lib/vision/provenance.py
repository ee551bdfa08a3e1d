"""Where a vision result came from: the checksum of its file, and results'
provenance (the commit this process runs, versions, date) with the image libraries'."""

import hashlib
from datetime import datetime, timezone
from pathlib import Path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def provenance() -> dict:
    """results' provenance (the commit this process runs, versions, date), with the
    image libraries' versions."""
    import torchvision

    from ..results import git_commit, versions

    v = versions() | {"torchvision": torchvision.__version__}
    try:
        import timm

        v["timm"] = timm.__version__
    except ImportError:
        pass
    return {"git_commit": git_commit(), "versions": v,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
