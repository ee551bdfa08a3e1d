"""The sweep runner (`python -m anticip_lib.sweep`): arguments, plan and shards, dry run,
the local engine (with a Ctrl-C and a resume) and the Ray engine on a real local cluster
and on an existing one (`--address`), on the chapter-1 smoke preset (4 tiny-gpt runs).

The slow tests start subprocesses (and Ray clusters of 2 CPUs); run them alone with
OMP_NUM_THREADS=1: `pytest tests/test_sweep.py -m slow`.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from anticip_lib import presets, results, sweep
from anticip_lib.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
SMOKE = presets.configs("01_phenomenon", "smoke")
SMOKE_EXP = "smoke/01_phenomenon"
SWEEP = [sys.executable, "-m", "anticip_lib.sweep", "01_phenomenon", "--preset", "smoke"]


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _stem(c):
    from anticip_lib import results
    return results.run_stem(c)


def _fake_run(c):
    """A saved result for config `c` with the right shapes (nothing trained)."""
    from anticip_lib import results
    from anticip_lib.trainer import Run

    n_ep = c.n_epochs * c.n_docs
    run = Run(c, np.full((n_ep + 1, c.n_docs), 1.0), np.ones(n_ep * c.steps_per_doc),
              np.arange(n_ep) % c.n_docs, {"wall_s": 0.0})
    results.save_run(run, SMOKE_EXP)


# ---- arguments ------------------------------------------------------------------

@pytest.mark.parametrize("argv, names", [
    (["--shard", "2/2"], "--shard"),
    (["--shard", "0/0"], "--shard"),
    (["--shard", "half"], "--shard"),
    (["--group", "nope"], "--group"),
    (["--address", "127.0.0.1:6379"], "--address"),  # without --engine ray
    (["--engine", "ray", "--workers", "0"], "--workers"),
    (["--threads", "0"], "--threads"),
    (["--engine", "ray", "--lockstep", "2"], "--lockstep"),
])
def test_bad_arguments_exit_non_zero_naming_the_parameter(argv, names, capsys):
    with pytest.raises(SystemExit) as e:
        sweep.parse_args(["01_phenomenon", "--preset", "smoke", *argv])
    assert e.value.code == 2
    assert names in capsys.readouterr().err


def test_bad_argument_from_the_command_line(tmp_path):
    r = subprocess.run([*SWEEP, "--workers", "0"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "--workers must be >= 1" in r.stderr


def test_group_must_belong_to_the_preset(capsys):
    # "pilot" exists in the cpu preset, not in smoke (whose only group is "main")
    with pytest.raises(SystemExit):
        sweep.parse_args(["01_phenomenon", "--preset", "smoke", "--group", "pilot"])
    assert "--group must be one of main" in capsys.readouterr().err
    assert sweep.parse_args(["01_phenomenon", "--preset", "cpu", "--group", "pilot"]).group \
        == ["pilot"]


# ---- plan and shards ----------------------------------------------------------------

def test_smoke_preset_order_is_what_the_plan_tests_assume():
    assert [(c.order, c.seed) for c in SMOKE] == [
        ("cyclic", 0), ("cyclic", 1), ("shuffled", 0), ("shuffled", 1)]


def test_shards_split_the_missing_runs_and_keep_the_done_ones(dirs):
    c0, c1, c2, c3 = SMOKE
    _fake_run(c1)  # done: missing runs are c0, c2, c3 (in preset order)

    def plan(shard):
        return [(c, done) for _, c, done in sweep.plan("01_phenomenon", "smoke",
                                                       shard=shard)]

    assert plan((0, 1)) == [(c0, False), (c1, True), (c2, False), (c3, False)]
    # a missing run is in the shard of its stem's hash, whatever else is missing
    for n in (2, 3, 4):
        for i in range(n):
            mine = [c for c in (c0, c2, c3)
                    if sweep.shard_of(results.run_stem(c), n) == i]
            assert plan((i, n)) == [(c, c is c1) for c in SMOKE if c is c1 or c in mine]
    for n in (1, 2, 3, 4, 5):
        todo = [c for i in range(n) for c, done in plan((i, n)) if not done]
        assert sorted(todo, key=SMOKE.index) == [c0, c2, c3] and len(set(todo)) == 3


def test_group_filter_in_plan(dirs):
    assert [c for _, c, _ in sweep.plan("01_phenomenon", "smoke", ["main"])] == SMOKE
    assert sweep.plan("01_phenomenon", "smoke", ["other"]) == []


def test_dry_run_lists_the_runs_and_trains_nothing(dirs, monkeypatch, capsys):
    from anticip_lib import trainer

    def boom(*a, **k):
        raise AssertionError("--dry-run trained")

    monkeypatch.setattr(trainer, "train_run", boom)
    monkeypatch.setattr(trainer, "train", boom)
    _fake_run(SMOKE[1])
    before = sorted(p.relative_to(dirs) for p in dirs.rglob("*"))
    assert sweep.main(["01_phenomenon", "--preset", "smoke", "--engine", "ray",
                       "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "01_phenomenon --preset smoke: 4 runs in this shard, 1 done, 3 to compute"
    assert out[1] == f"results in {(dirs / 'results' / SMOKE_EXP).resolve()}"
    assert out[2:] == [f"  {'done ' if i == 1 else 'to do'}  {SMOKE_EXP}/{_stem(c)}"
                       for i, c in enumerate(SMOKE)]
    assert sorted(p.relative_to(dirs) for p in dirs.rglob("*")) == before


def test_summary_names_the_folder_and_short_run_times(dirs, capsys):
    for c in SMOKE[:2]:
        _fake_run(c)
    items = sweep.plan("01_phenomenon", "smoke")
    sweep.summary(items, [])
    out = capsys.readouterr().out
    folder = (dirs / "results" / SMOKE_EXP).resolve()
    assert f"{SMOKE_EXP}: results in {folder}; checkpoints of unfinished runs in" in out
    assert sweep._fmt_time(2.4) == "2 s" and sweep._fmt_time(90) == "1.5 min"
    assert sweep._fmt_time(7200) == "2.0 h"


def test_tidy_locks_removes_only_finished_and_unheld_locks(dirs):
    import fcntl

    c_done, c_held, c_missing = SMOKE[0], SMOKE[1], SMOKE[2]
    for c in (c_done, c_held):
        _fake_run(c)
    res, ckpt = sweep.folders([(SMOKE_EXP, c_done, True)])[SMOKE_EXP]
    (res / ".locks").mkdir(parents=True)
    ckpt.mkdir(parents=True)
    done_locks = [ckpt / f"{_stem(c_done)}.lock", res / ".locks" / f"{_stem(c_done)}.lock"]
    held = ckpt / f"{_stem(c_held)}.lock"
    missing = ckpt / f"{_stem(c_missing)}.lock"
    for p in (*done_locks, held, missing):
        p.touch()
    items = sweep.plan("01_phenomenon", "smoke")
    with open(held) as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # another process computing: keep its lock
        assert sweep.tidy_locks(items) == 2
    assert not any(p.exists() for p in done_locks) and held.exists() and missing.exists()
    assert not (res / ".locks").exists()  # emptied, removed


# ---- the Ray engine without a cluster -------------------------------------------------

@pytest.mark.parametrize("model, share", [
    ("tiny-gpt", 0.25), ("pythia-14m", 0.25), ("pythia-160m", 0.25),
    ("smollm2-135m", 0.25), ("EleutherAI/pythia-70m", 0.25),
    ("pythia-410m", 0.5), ("gemma3-270m", 0.5),
    ("pythia-1b", 1.0), ("pythia-2.8b", 1.0), ("EleutherAI/pythia-1.4b", 1.0),
    ("/models/my-checkpoint", 1.0), ("org/some-model", 1.0),
])
def test_gpu_fraction_from_the_model_size(model, share):
    from anticip_lib.sweep_ray import gpu_fraction
    assert gpu_fraction(RunConfig(model=model)) == share


def test_ray_engine_with_nothing_to_compute_starts_no_ray(dirs, monkeypatch):
    from anticip_lib.sweep_ray import run_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` would now fail
    assert run_ray([(SMOKE_EXP, c, True) for c in SMOKE], workers=2) == []


def test_ray_engine_refuses_an_unwritable_results_folder_before_ray(tmp_path, monkeypatch):
    from anticip_lib.sweep_ray import run_ray

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ANTICIP_RESULTS", str(tmp_path / "file"))  # a file, not a folder
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(SystemExit, match="results folder .*file/smoke/01_phenomenon is not "
                                         "writable"):
        run_ray([(SMOKE_EXP, SMOKE[0], False)], workers=2)


def test_error_text_of_a_task_is_the_cause():
    from anticip_lib.sweep_ray import _error_text

    class TaskError(Exception):  # what Ray raises: the task's exception as .cause
        cause = ValueError("corpus must be one of a, b\nsecond line")

    assert _error_text(TaskError("ray noise")) == "ValueError: corpus must be one of a, b"
    assert _error_text(RuntimeError("plain")) == "RuntimeError: plain"


# ---- slow: real sweeps in subprocesses ------------------------------------------------

def _env(root: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_DISABLE_USAGE_STATS="1",
               ANTICIP_RESULTS=str(root / "results"), ANTICIP_CACHE=str(root / "cache"))
    env.pop("RAY_ADDRESS", None)
    return env


def _sweep(root: Path, *args, timeout=300):
    r = subprocess.run([*SWEEP, *args], env=_env(root), cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def _files(root: Path) -> dict:
    """{name: mtime_ns} of the result files under root/results/smoke/01_phenomenon
    (not the runs' lock files, in .locks/)."""
    folder = root / "results" / SMOKE_EXP
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()
            if p.name != ".locks"} if folder.is_dir() else {}


def _expected() -> set:
    return {_stem(c) + ext for c in SMOKE for ext in (".npz", ".json")}


def _arrays(root: Path) -> dict:
    out = {}
    for c in SMOKE:
        with np.load(root / "results" / SMOKE_EXP / f"{_stem(c)}.npz") as z:
            out[_stem(c)] = {k: z[k] for k in ("eval_loss", "train_loss", "order")}
    return out


def _same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[s][k], b[s][k]) for s in a for k in a[s])


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The smoke sweep computed once by the local engine: (root, exit status, output)."""
    root = tmp_path_factory.mktemp("local")
    rc, out = _sweep(root)
    return root, rc, out


@pytest.mark.slow
def test_local_engine_computes_each_run_once(local_sweep):
    root, rc, out = local_sweep
    assert rc == 0, out
    assert "4 runs in this shard, 0 done, 4 to compute" in out
    assert "[3/4 done, 1 running, 0 left" in out
    assert set(_files(root)) == _expected()
    # the summary says where the results went, and short runs do not read as 0.0
    folder = (root / "results" / SMOKE_EXP).resolve()
    assert f"{SMOKE_EXP}: results in {folder}" in out, out
    assert " 0.0" not in out.split("run time")[-1], out
    # no lock file is left behind, in the results or in the cache
    assert not [p for p in root.rglob("*.lock")], sorted(root.rglob("*.lock"))
    before = _files(root)
    rc, out = _sweep(root)
    assert rc == 0 and "4 runs in this shard, 4 done, 0 to compute" in out, out
    assert _files(root) == before  # nothing trained, nothing rewritten


@pytest.mark.slow
def test_local_engine_interrupted_then_resumed(local_sweep, tmp_path):
    ref_root, ref_rc, _ = local_sweep
    assert ref_rc == 0
    folder = tmp_path / "results" / SMOKE_EXP
    proc = subprocess.Popen(  # SIGINT as Ctrl-C even when pytest runs with it ignored
        SWEEP, env=_env(tmp_path), cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t_end = time.time() + 180
    while not (folder.is_dir() and any(folder.glob("*.json"))):
        assert proc.poll() is None and time.time() < t_end, "no result appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0 and "interrupted: finished runs are saved" in out, out
    saved = _files(tmp_path)
    n = len([f for f in saved if f.endswith(".json")])
    assert 1 <= n < 4 and len(saved) == 2 * n  # whole runs only: .npz with its .json
    rc, out = _sweep(tmp_path)
    assert rc == 0, out
    assert f"4 runs in this shard, {n} done, {4 - n} to compute" in out
    after = _files(tmp_path)
    assert set(after) == _expected()
    assert {f: after[f] for f in saved} == saved  # runs saved before the stop: kept
    assert _same_arrays(_arrays(tmp_path), _arrays(ref_root))


class _Killed(Exception):
    pass


def _interrupted_checkpoint(config, cache: Path) -> Path:
    """Train `config` in this process and stop it in episode 5 of 9: the checkpoint
    written at the end of epoch 1 (T = 3 episodes) is left where a sweep looks."""
    from anticip_lib import results, trainer

    ckpt = cache / "checkpoints" / SMOKE_EXP / f"{results.run_stem(config)}.pt"
    ckpt.parent.mkdir(parents=True)

    def kill_at_5(k, model):
        if k == 5:
            raise _Killed

    with pytest.raises(_Killed):
        trainer.train_run(config, checkpoint=ckpt, on_episode_end=kill_at_5,
                          progress=False)
    assert ckpt.is_file()
    return ckpt


@pytest.mark.slow
def test_ray_engine_two_workers_local_cluster(local_sweep, tmp_path, monkeypatch):
    ref_root, ref_rc, _ = local_sweep
    assert ref_rc == 0
    monkeypatch.setenv("ANTICIP_CACHE", str(tmp_path / "cache"))
    ckpt = _interrupted_checkpoint(SMOKE[2], tmp_path / "cache")
    proc = subprocess.Popen([*SWEEP, "--engine", "ray", "--workers", "2"],
                            env=_env(tmp_path), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert "a local Ray cluster: 2 runs at once, 1 thread(s) each, device cpu" in out
    assert "[4/4 done, 0 running, 0 left]" in out
    assert set(_files(tmp_path)) == _expected()
    # same numbers as the local engine; trained in Ray workers, saved by the driver
    assert _same_arrays(_arrays(tmp_path), _arrays(ref_root))
    for i, c in enumerate(SMOKE):
        meta = json.loads((tmp_path / "results" / SMOKE_EXP / f"{_stem(c)}.json")
                          .read_text())
        assert meta["worker"]["engine"] == "ray" and meta["worker"]["pid"] != proc.pid
        assert meta["worker"]["torch_threads"] == 1
        # the interrupted run went on from its checkpoint (end of epoch 1), the rest
        # started at episode 0
        assert meta["resumed_at"] == (3 if i == 2 else 0), (i, meta["resumed_at"])
    assert not ckpt.exists()  # checkpoints are dropped once the results are saved
    assert list((tmp_path / "cache").rglob("*.pt")) == []
    before = _files(tmp_path)
    rc, out = _sweep(tmp_path, "--engine", "ray", "--workers", "2")
    assert rc == 0 and "4 done, 0 to compute" in out, out
    assert "Ray cluster" not in out  # nothing missing: no cluster started
    assert _files(tmp_path) == before


@pytest.mark.slow
def test_ray_engine_killed_cancels_the_tasks_and_stops_the_cluster(tmp_path):
    """`kill` (SIGTERM) takes the path of Ctrl-C (a KeyboardInterrupt): tasks cancelled,
    Ray shut down, finished runs kept. Without the engine's handler Ray's own aborts."""
    psutil = pytest.importorskip("psutil")
    proc = subprocess.Popen(
        [*SWEEP, "--engine", "ray", "--workers", "2"], env=_env(tmp_path), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = tmp_path / "cache" / "checkpoints" / SMOKE_EXP  # made by the first task
    t_end = time.time() + 240
    while not started.is_dir():
        assert proc.poll() is None and time.time() < t_end, "no task started"
        time.sleep(0.05)
    ray_procs = psutil.Process(proc.pid).children(recursive=True)  # GCS, raylet, workers
    assert len(ray_procs) >= 3
    proc.terminate()
    out = proc.communicate(timeout=120)[0]
    # an uncaught KeyboardInterrupt ends Python by SIGINT: -2, not Ray's abort (134)
    assert proc.returncode == -signal.SIGINT, (proc.returncode, out)
    assert "interrupted: finished runs are saved" in out, out
    gone, alive = psutil.wait_procs(ray_procs, timeout=60)
    assert alive == [], [p.cmdline()[:2] for p in alive]
    n = len([f for f in _files(tmp_path) if f.endswith(".json")])
    assert len(_files(tmp_path)) == 2 * n < 8  # whole runs only, and not all of them


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_engine_existing_cluster_reports_a_failed_run_and_saves_the_others(
        local_sweep, tmp_path, monkeypatch):
    """`--address`: a cluster started apart (`ray start --head`) with its own folders:
    results come back to the driver's folder, checkpoints stay in the workers' cache,
    and a run that fails is reported while the others are saved."""
    ref_root, ref_rc, _ = local_sweep
    assert ref_rc == 0
    from anticip_lib.sweep_ray import run_ray

    token, port = secrets.token_hex(32), _free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    head_env = dict(_env(tmp_path / "worker"), **auth)
    head_log = tmp_path / "head.log"
    with open(head_log, "w") as log:
        head = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
             "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
             "--include-dashboard", "false", "--disable-usage-stats"],
            env=head_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        t_end = time.time() + 180
        while "Ray runtime started" not in head_log.read_text():
            assert head.poll() is None and time.time() < t_end, head_log.read_text()
            time.sleep(0.2)
        for k, v in {**_env(tmp_path / "driver"), **auth}.items():
            monkeypatch.setenv(k, v)
        good, done = SMOKE[0], SMOKE[1]
        bad = RunConfig(**{**good.to_dict(), "corpus": str(tmp_path / "no-corpus"),
                           "seed": 7})
        lines = []
        failed = run_ray([(SMOKE_EXP, good, False), (SMOKE_EXP, bad, False),
                          (SMOKE_EXP, done, True)],
                         address=f"127.0.0.1:{port}", workers=2, threads=1,
                         log=lines.append)
    finally:
        head.terminate()  # `ray start --block` stops its cluster on SIGTERM
        head.wait(timeout=60)
        current = Path("/tmp/ray/ray_current_cluster")  # left behind: names our cluster
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()
    import ray
    assert not ray.is_initialized()  # run_ray disconnected
    assert [c for c, _ in failed] == [bad]
    assert failed[0][1].startswith("ValueError: corpus must be one of"), failed
    assert lines[0] == f"Ray cluster 127.0.0.1:{port}: 2 runs at once, 1 thread(s) " \
                       "each, device cpu"
    assert any(_stem(bad) in ln and "FAILED: ValueError" in ln for ln in lines), lines
    driver = tmp_path / "driver"
    assert set(_files(driver)) == {_stem(good) + ".npz", _stem(good) + ".json"}
    with np.load(driver / "results" / SMOKE_EXP / f"{_stem(good)}.npz") as z:
        assert np.array_equal(z["eval_loss"], _arrays(ref_root)[_stem(good)]["eval_loss"])
    # no shared file system: the workers wrote no results, and checkpointed in their
    # own cache (the run folder is made by the task), never in the driver's
    assert not (tmp_path / "worker" / "results").exists()
    worker_ckpts = tmp_path / "worker" / "cache" / "checkpoints" / SMOKE_EXP
    assert worker_ckpts.is_dir() and not (driver / "cache").exists()
    assert list(worker_ckpts.glob("*.pt")) == []  # dropped there after the save


# ---- chapter 5 (VisionConfigs) through the same runner --------------------------------

@pytest.mark.slow  # trains chapter 5's smoke runs (vision models)
def test_vision_chapter_through_the_local_engine(dirs, capsys):
    """`sweep 05_vision --preset smoke`: the dry run lists the notebook's runs, the local
    engine computes them through vision.run_cached (two shards split them), and a second
    call finds them done; lockstep and Ray are refused before any work, and the
    paper preset says what it needs."""
    from anticip_lib import vision

    argv = ["05_vision", "--preset", "smoke"]
    cfgs = vision.chapter_plan("smoke").all_configs()
    assert sweep.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"05_vision --preset smoke: {len(cfgs)} runs in this shard, 0 done, "
                      f"{len(cfgs)} to compute")
    assert out[1] == f"results in {(dirs / 'results' / 'smoke' / '05_vision').resolve()}"
    assert out[2:] == [f"  to do  smoke/05_vision/{c.stem()}" for c in cfgs]
    shards = [sweep.plan("05_vision", "smoke", ["classify"], (i, 2)) for i in range(2)]
    assert sorted((c.stem() for s in shards for _, c, _ in s), key=str) == sorted(
        (c.stem() for c in cfgs if c.task == "classify"), key=str)  # disjoint, complete
    assert sweep.main([*argv, "--group", "classify"]) == 0
    capsys.readouterr()
    done = [c for c in cfgs if c.task == "classify"]
    for c in done:
        run = vision.load_run(c, "smoke/05_vision")
        assert run is not None and run.eval_loss.shape == (c.n_docs * c.n_epochs + 1,
                                                           c.n_docs)
    assert sweep.main([*argv, "--dry-run"]) == 0
    assert f"{len(done)} done" in capsys.readouterr().out.splitlines()[0]
    for extra, needle in ((["--lockstep", "2"], "local engine"),
                          (["--engine", "ray"], "local engine")):
        with pytest.raises(SystemExit) as e:
            sweep.main([*argv, *extra])
        assert e.value.code == 2 and needle in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.main(["05_vision", "--preset", "paper", "--dry-run"])
    assert "needs the ImageNet and CIFAR-10" in capsys.readouterr().err


# Kept last in this file: run before the existing-cluster test above, it made that test
# fail to connect (a cause not found yet; each passes alone; see the session's note).
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_sigkilled_ray_driver_leaves_no_agents():
    pytest.importorskip("ray")
    from test_faults import _alive, _descendants
    code = ("import time\nfrom anticip_lib import sweep_ray\n"
            "sweep_ray.start_local_cluster(num_cpus=1, include_dashboard=False)\n"
            "print('up', flush=True)\ntime.sleep(600)\n")
    env = dict(os.environ, RAY_DISABLE_USAGE_STATS="1")
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert driver.stdout.readline().strip() == "up"
        time.sleep(2)
        ray_procs = _descendants(driver.pid)
        assert ray_procs  # the cluster's processes (and the reaper)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in ray_procs):
            time.sleep(0.5)
        left = [p for p in ray_procs if _alive(p)]
        assert not left, f"still running 30 s after the driver was killed: {left}"
    finally:
        for p in _descendants(driver.pid) | {driver.pid}:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
