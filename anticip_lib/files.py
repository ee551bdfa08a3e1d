"""Files that must survive kills, full disks and a second process: one place for each.

- `atomic_write(path, write)`: write to a temporary name unique to this process and
  call, fsync, then rename over `path` (a kill mid-write leaves the old file intact;
  two writers never share a temporary); a full or failing disk raises OSError naming
  `path` and the free space there.
- `clear_temporaries(path)`: the temporaries a killed writer of `path` left behind.
- `lock(path, what, wait=True)`: an exclusive POSIX `flock` on `path` for a block.
- `ensure_writable(folder, what, hint, need_bytes)`: make a folder and prove, before
  any work, that a file (of `need_bytes`) can be written there.
- `set_aside(path, why)`: rename a damaged file out of the way, keeping it for a look.
Standard library only (reading committed results costs no torch).
"""

import contextlib
import errno
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _tmp_name(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}")


def free_bytes(folder) -> int | None:
    """Free bytes on the file system holding `folder` (None when it cannot be read)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def write_error(path: Path, err: BaseException, what: str = "file") -> OSError:
    """An OSError naming `path`, the cause, and the free space there."""
    text = getattr(err, "strerror", None) or str(err).strip().splitlines()[0][:200]
    no_space = (getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
                or "enforce fail" in str(err) or "No space" in str(err))
    why = ("the file system holding it is full" if no_space else
           f"{type(err).__name__}: {text}")
    out = OSError(f"could not write {what} {path}: {why} ({_size(free_bytes(path.parent))} "
                  f"free in {path.parent}). Free some space there, or point "
                  "ANTICIP_CACHE / ANTICIP_RESULTS at another disk.")
    return out


def atomic_write(path, write, suffix: str = "", what: str = "file") -> None:
    """`write(f)` into a unique temporary next to `path` (binary), fsync, rename.

    Any failure (a full disk included: torch reports it as "enforce fail") raises
    OSError naming `path`; the temporary is removed either way.
    """
    path = Path(path)
    tmp = _tmp_name(path, suffix)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        raise write_error(path, err, what) from err
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_text(path, text: str, what: str = "file") -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), what=what)


def clear_temporaries(path) -> None:
    """Remove the temporaries of `path` that killed writers left (`.name.*.tmp*`)."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):
        with contextlib.suppress(OSError):
            stale.unlink()


def set_aside(path, why: str = "damaged") -> Path:
    """Rename `path` to `<name>.<why>-<UTC time>` next to it; returns the new name."""
    path = Path(path)
    new = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    os.replace(path, new)
    return new


@contextlib.contextmanager
def lock(path, what: str = "", wait: bool = True):
    """Hold an exclusive lock on `path` (POSIX flock) for the block; yields True.

    wait=True: while another process holds it, say so (naming `what` and the lock)
    and wait. wait=False: yield False at once instead (the block then runs unlocked
    and should do nothing that needs the lock). Without fcntl (Windows): no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield True
        return
    path = Path(path)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            print(f"{what}: another process is computing this run (lock {path}); "
                  "waiting for it to finish", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_writable(folder, what: str, hint: str = "", need_bytes: int = 0) -> Path:
    """Create `folder` if needed and prove that a file can be written there.

    need_bytes: the space the work will write there; less free space raises too. A
    probe of min(need_bytes, 1 MB) is written and fsynced, so a quota or a full disk
    shows here, before any work. Raises OSError naming the folder and `what` it is for.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        try:
            os.write(fd, b"\0" * max(1, min(int(need_bytes), 2**20)))
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise OSError(f"{what} {folder} is not writable ({type(err).__name__}: "
                      f"{err.strerror or err}). {hint}".rstrip()) from err
    free = free_bytes(folder)
    if need_bytes and free is not None and free < need_bytes:
        raise OSError(f"{what} {folder} has {_size(free)} free, and this "
                      f"work needs about {_size(need_bytes)} there. {hint}".rstrip())
    return folder
