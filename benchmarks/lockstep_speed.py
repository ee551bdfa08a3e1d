"""Speed of K runs in lockstep (anticip_lib.lockstep.train_many) against K sequential
`trainer.train` calls, of one run against the official-style reference loop, and what
bf16 autocast changes. Prints every figure side by side from one invocation; asserts
nothing (issue #9's targets are printed next to the measured ratios).

    .venv/bin/python benchmarks/lockstep_speed.py              # ~12 min on 2 cores
    .venv/bin/python benchmarks/lockstep_speed.py --quick      # tiny shapes, ~2 min
    .venv/bin/python benchmarks/lockstep_speed.py --threads 1  # one core

Sections:
1. CPU: K=5 runs of the pythia-14m shape (random init, T=10, C=128, M=5, E=2,
   Adam-reset 1e-3), byte vocabulary (257, the book's cpu presets): train_many vs 5
   sequential `train` calls. Then the same with Pythia's vocabulary (50,304) at E=1,
   with and without `lockstep.tune_cpu_malloc()`. Each lockstep figure also without
   `overlap_eval` (its default on a CPU with ≥ 2 threads), to show what that part adds.
2. CPU: one run (pythia-14m shape, vocab 257 and 50,304, T=10, C=128, M=5, E=1, SGD
   1e-3, the reference loop's protocol): tests/reference_loop.py vs `train` vs
   train_many(K=1), with and without `overlap_eval`.
3. CPU: bf16 autocast vs fp32 on the same 5 runs of real documents (pythia-14m shape,
   byte tokenizer, cnn-embedded pilot documents, T=10, C=128, M=5, E=3,
   Adam-reset 1e-3): time, max |Δ eval_loss| and RS(2) per run.
4. CUDA, only when available: K=16 runs of the pythia-70m shape vs 16 sequential runs
   (timed on 2 of them, per-run throughput compared); the Pythia-1B shape at the default
   protocol (T=25, C=256, M=10, E=5, SGD 1e-3), one run via train_many, fp32 and bf16.

Every measurement runs in a fresh child process (same threads, same environment), so
no allocator or thread-pool state carries over from one to the next; times cover
training only (not imports or building the models). Children run with
OMP_WAIT_POLICY=PASSIVE unless --wait-policy says otherwise: on a machine whose cores
are busy with other work, spinning OpenMP threads wait for descheduled siblings, and
2-thread runs measured that way were 10× slower than 1-thread runs (both kinds, not
equally), which says nothing about lockstep.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ---- children ----------------------------------------------------------------------


def _docs(K, T, C, vocab, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (K, T, C), generator=g)
    return ids, ids.clone(), torch.ones_like(ids)


def _orders(K, T, E):
    from anticip_lib import orders

    return np.stack([orders.cyclic(T, E) if r == 0 else orders.shuffled(T, E, seed=r)
                     for r in range(K)])


def child(spec: dict, out: str) -> dict:
    import torch

    from anticip_lib import lockstep, models, trainer

    torch.set_num_threads(spec["threads"])
    if spec.get("malloc"):
        lockstep.tune_cpu_malloc()
    device = spec.get("device", "cpu")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    kind = spec["kind"]
    res = {}
    if kind in ("seq", "lockstep", "reference", "single"):
        K, T, C, M, E = (spec[k] for k in "KTCME")
        name, vocab = spec["model"], spec["vocab"]
        ids, labels, mask = _docs(K, T, C, vocab)
        ords = _orders(K, T, E)
        n_timed = spec.get("n_timed", K)
        ms = [models.random_model(name, vocab, seed=r) for r in range(n_timed if kind != "lockstep" else K)]
        kw = dict(steps_per_doc=M, optimizer=spec["optimizer"], lr=spec["lr"],
                  progress=False)
        sync()
        t, c = time.perf_counter(), time.process_time()
        if kind == "lockstep":
            runs = lockstep.train_many(ms, ids.to(device), labels.to(device), ords,
                                       attention_mask=mask.to(device), device=device,
                                       precision=spec.get("precision", "fp32"),
                                       overlap_eval=spec.get("overlap"), **kw)
            ev = np.stack([r.eval_loss for r in runs])
        elif kind == "reference":
            sys.path.insert(0, str(ROOT / "tests"))
            from reference_loop import reference_train

            ev = np.stack([reference_train(ms[r], ids[r], labels[r], mask[r], ords[r],
                                           M, spec["lr"])[0] for r in range(n_timed)])
        else:  # seq / single: trainer.train, one run after another
            ev = np.stack([trainer.train(ms[r], ids[r], labels[r], ords[r],
                                         attention_mask=mask[r], device=device,
                                         **kw).eval_loss for r in range(n_timed)])
        sync()
        res = dict(wall=time.perf_counter() - t, cpu=time.process_time() - c,
                   runs=len(ev))
        np.save(out, ev)
    elif kind == "configs":  # real documents through RunConfigs
        from anticip_lib.config import RunConfig

        alone = spec["precision"] == "train_run"  # fp32, one run after another
        cfgs = [RunConfig(**spec["config"], seed=s,
                          precision="fp32" if alone else spec["precision"])
                for s in spec["seeds"]]
        if alone:
            runs = [trainer.train_run(c, device, progress=False) for c in cfgs]
            wall = sum(r.meta["wall_s"] for r in runs)
        else:
            runs = lockstep.train_configs(cfgs, device, progress=False)
            wall = runs[0].meta["lockstep_wall_s"]
        res = dict(wall=wall, runs=len(runs))
        np.save(out, np.stack([r.eval_loss for r in runs]))
        np.save(out + ".orders.npy", np.stack([r.order for r in runs]))
    if device.startswith("cuda"):
        res["gpu"] = torch.cuda.get_device_name(0)
        res["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return res


# ---- parent ------------------------------------------------------------------------


class Bench:
    def __init__(self, threads, wait_policy, tmp):
        self.threads, self.tmp, self.n = threads, Path(tmp), 0
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                        MKL_NUM_THREADS=str(threads))
        if wait_policy:
            self.env["OMP_WAIT_POLICY"] = wait_policy

    def __call__(self, **spec):
        spec.setdefault("threads", self.threads)
        self.n += 1
        out = str(self.tmp / f"m{self.n}.npy")
        p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec),
                            "--out", out], env=self.env, cwd=ROOT,
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"child {spec} failed:\n{p.stderr[-3000:]}")
        res = json.loads(p.stdout.strip().splitlines()[-1])
        res["eval_loss"] = np.load(out)
        if Path(out + ".orders.npy").exists():
            res["orders"] = np.load(out + ".orders.npy")
        return res

    def alternate(self, specs: list[dict], reps: int) -> list[dict]:
        """Each spec `reps` times, in turn (A B A B …): the best wall and CPU time of
        each, so a burst of other work on the machine does not land on one side."""
        out = [None] * len(specs)
        for _ in range(reps):
            for i, spec in enumerate(specs):
                r = self(**spec)
                if out[i] is None:
                    out[i] = r
                else:
                    out[i]["wall"] = min(out[i]["wall"], r["wall"])
                    out[i]["cpu"] = min(out[i]["cpu"], r["cpu"])
        return out


def _load():
    return f"{os.getloadavg()[0]:.2f}"


def _machine():
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.platform()}"


def section_cpu_many(b, quick):
    K, T, C, M, E = (3, 4, 32, 2, 2) if quick else (5, 10, 128, 5, 2)
    name = "pythia-14m"
    print(f"\n1. CPU, {b.threads} thread(s): K={K} runs of the {name} shape, random init, "
          f"T={T} C={C} M={M} E={E}, Adam-reset 1e-3 (loadavg {_load()} at start)")
    rows = []
    for vocab, e, variants, reps in ((257, E, (False,), 2), (50304, 1, (False, True), 1)):
        for malloc in variants:
            base = dict(K=K, T=T, C=C, M=M, E=e, model=name, vocab=vocab,
                        optimizer="adam_reset", lr=1e-3, malloc=malloc)
            seq, lock, plain = b.alternate([dict(kind="seq", **base),
                                            dict(kind="lockstep", **base),
                                            dict(kind="lockstep", overlap=False, **base)],
                                           reps)
            diff = np.abs(seq["eval_loss"] - lock["eval_loss"]).max()
            ratio = seq["wall"] / lock["wall"]
            tag = (f"vocab {vocab:5d}, E={e}" + (", tune_cpu_malloc" if malloc else "")
                   + (f", best of {reps}" if reps > 1 else ""))
            rows.append((tag, seq, lock, ratio, diff))
            print(f"   {tag:38} {K} × train: {seq['wall']:7.1f} s | train_many: "
                  f"{lock['wall']:7.1f} s | throughput ratio {ratio:4.2f}× "
                  f"(CPU-time ratio {seq['cpu'] / lock['cpu']:4.2f}×) | "
                  f"max |Δ eval_loss| {diff:.1e}   [loadavg {_load()}]")
            print(f"   {'':38} without overlap_eval: {plain['wall']:7.1f} s, "
                  f"{seq['wall'] / plain['wall']:4.2f}×")
    print("   target (issue #9): ≥ 2× at K=5, 2 threads")
    return rows


def section_single(b, quick):
    T, C, M, E = (4, 32, 2, 1) if quick else (10, 128, 5, 1)
    name = "pythia-14m"
    for part, (vocab, reps) in zip("ab", ((257, 2), (50304, 1))):
        print(f"\n2{part}. CPU, {b.threads} thread(s): one run, {name} shape, vocab {vocab}, "
              f"T={T} C={C} M={M} E={E}, SGD 1e-3"
              + (f", best of {reps} in turn" if reps > 1 else "")
              + f" (loadavg {_load()} at start)")
        base = dict(K=1, T=T, C=C, M=M, E=E, model=name, vocab=vocab, optimizer="sgd",
                    lr=1e-3)
        labels = ["tests/reference_loop.py", "trainer.train", "train_many, K=1",
                  "train_many, K=1, no overlap_eval", "train_many, K=1, tune_cpu_malloc"]
        got = b.alternate([dict(kind="reference", **base), dict(kind="single", **base),
                           dict(kind="lockstep", **base),
                           dict(kind="lockstep", overlap=False, **base),
                           dict(kind="lockstep", malloc=True, **base)], reps)
        ref = got[0]
        for label, r in zip(labels, got):
            diff = np.abs(r["eval_loss"] - ref["eval_loss"]).max()
            print(f"   {label:34} {r['wall']:7.1f} s | {ref['wall'] / r['wall']:4.2f}× the "
                  f"reference (CPU time {ref['cpu'] / r['cpu']:4.2f}×) | max |Δ eval_loss| "
                  f"vs reference {diff:.1e}")
        print(f"   target (issue #9): ≥ 1.5× the reference loop   [loadavg {_load()}]")


def section_bf16(b, quick, device="cpu"):
    from anticip_lib import metrics

    cfg = dict(model="pythia-14m", init="pythia", tokenizer="tiny-gpt",
               corpus="cnn-embedded", n_docs=10, context_len=128, steps_per_doc=5,
               n_epochs=3, optimizer="adam_reset", lr=1e-3, doc_split="pilot")
    if quick:
        cfg.update(model="tiny-gpt", n_docs=4, context_len=32, steps_per_doc=2)
    seeds = list(range(5))
    print(f"\n3. {device.upper()}: bf16 autocast vs fp32, the same {len(seeds)} runs "
          f"(seeds {seeds[0]}–{seeds[-1]}) in lockstep: {cfg['model']} shape, byte "
          f"tokenizer, {cfg['corpus']} {cfg['doc_split']} documents, T={cfg['n_docs']} "
          f"C={cfg['context_len']} M={cfg['steps_per_doc']} E={cfg['n_epochs']}, "
          f"Adam-reset 1e-3 (loadavg {_load()} at start)")
    res = {p: b(kind="configs", config=cfg, seeds=seeds, precision=p, device=device)
           for p in ("fp32", "bf16", "train_run")}
    a, z, s = (res[p]["eval_loss"] for p in ("fp32", "bf16", "train_run"))
    T, E = cfg["n_docs"], cfg["n_epochs"]
    o = res["fp32"]["orders"]

    def rs(x):
        return [metrics.recovery_score(x[r], T, E - 1, o[r]) for r in range(len(seeds))]

    rs_a, rs_z, rs_s = rs(a), rs(z), rs(s)
    print(f"   time: lockstep fp32 {res['fp32']['wall']:.1f} s, lockstep bf16 "
          f"{res['bf16']['wall']:.1f} s ({res['fp32']['wall'] / res['bf16']['wall']:.2f}× "
          f"the fp32 speed); {len(seeds)} × train_run (fp32) {res['train_run']['wall']:.1f} s")
    print(f"   eval_loss, bf16 vs fp32: max |Δ| {np.abs(a - z).max():.3f}, mean |Δ| "
          f"{np.abs(a - z).mean():.4f} (losses ~{a.mean():.2f}); fp32 lockstep vs "
          f"fp32 train_run (rounding only): max |Δ| {np.abs(a - s).max():.1e}")
    print(f"   RS({E - 1}) per run, fp32 → bf16: "
          + ", ".join(f"{x:.3f}→{y:.3f}" for x, y in zip(rs_a, rs_z))
          + f"; max |ΔRS| {max(abs(x - y) for x, y in zip(rs_a, rs_z)):.3f} (fp32 "
          f"lockstep vs train_run: {max(abs(x - y) for x, y in zip(rs_a, rs_s)):.1e})"
          f"   [loadavg {_load()}]")


def section_cuda(b, quick):
    import torch

    if not torch.cuda.is_available():
        print("\n4. CUDA: not available on this machine; skipped")
        return
    K, T, C, M, E = (4, 4, 64, 2, 1) if quick else (16, 10, 128, 5, 2)
    print(f"\n4. CUDA ({torch.cuda.get_device_name(0)}): K={K} runs of the pythia-70m "
          f"shape, vocab 50304, T={T} C={C} M={M} E={E}, Adam-reset 1e-3")
    base = dict(K=K, T=T, C=C, M=M, E=E, model="pythia-70m", vocab=50304,
                optimizer="adam_reset", lr=1e-3, device="cuda")
    n_seq = 2
    seq = b(kind="seq", n_timed=n_seq, **base)
    per_run_seq = seq["wall"] / n_seq
    for prec in ("fp32", "bf16"):
        lock = b(kind="lockstep", precision=prec, **base)
        per_run = lock["wall"] / K
        diff = (np.abs(seq["eval_loss"] - lock["eval_loss"][:n_seq]).max()
                if prec == "fp32" else float("nan"))
        print(f"   {prec}: train_many {lock['wall']:.1f} s for {K} runs "
              f"({per_run:.2f} s/run) vs train {per_run_seq:.2f} s/run (timed on "
              f"{n_seq} runs): throughput ratio {per_run_seq / per_run:.1f}× | peak "
              f"{lock['peak_mem_gb']:.1f} GiB | max |Δ eval_loss| (fp32, 2 runs) "
              f"{diff:.1e}")
    print("   target (issue #9): ≥ 8× at K=16")
    T, C, M, E = (5, 64, 2, 1) if quick else (25, 256, 10, 5)
    print(f"   Pythia-1B shape (random init, vocab 50304), T={T} C={C} M={M} E={E}, "
          "SGD 1e-3, one run:")
    for prec in ("fp32", "bf16"):
        r = b(kind="lockstep", K=1, T=T, C=C, M=M, E=E, model="pythia-1b",
              vocab=50304, optimizer="sgd", lr=1e-3, device="cuda", precision=prec)
        print(f"     train_many(K=1), {prec}: {r['wall'] / 60:.1f} min | peak "
              f"{r['peak_mem_gb']:.1f} GiB   (target: < 5 min)")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny shapes (checks the script)")
    ap.add_argument("--wait-policy", default="PASSIVE",
                    help="OMP_WAIT_POLICY of the children ('' = leave as is)")
    ap.add_argument("--sections", default="1234", help="which sections to run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child), a.out)))
        return
    import torch

    print(f"lockstep benchmark: {_machine()}")
    print(f"torch {torch.__version__}, {a.threads} thread(s) per measurement, "
          f"OMP_WAIT_POLICY={a.wait_policy or 'default'}, each measurement in a fresh "
          f"process; loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(1/5/15 min) at start")
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(a.threads, a.wait_policy, tmp)
        if "1" in a.sections:
            section_cpu_many(b, a.quick)
        if "2" in a.sections:
            section_single(b, a.quick)
        if "3" in a.sections:
            section_bf16(b, a.quick)
        if "4" in a.sections:
            section_cuda(b, a.quick)
    print(f"\ndone in {(time.time() - t0) / 60:.1f} min; loadavg "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min) at the end")


if __name__ == "__main__":
    main()
