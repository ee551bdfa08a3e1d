"""Speed of the training loop: ours vs the official loop's way, and achieved FLOP/s.

Prints figures; asserts nothing (targets: ≥2× faster than the reference loop on CPU,
≥60 % of the machine's matmul FLOP/s while training a Pythia-70m-shaped model).

    .venv/bin/python benchmarks/trainer_speed.py            # both parts, ~10 min on 2 cores
    .venv/bin/python benchmarks/trainer_speed.py --quick    # smaller shapes, ~1 min
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_loop import reference_train  # noqa: E402


from anticip_lib import models, orders, trainer  # noqa: E402


def matmul_flops(n=2048, reps=10) -> float:
    """Best-of-`reps` fp32 GEMM throughput of this machine, FLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def docs(n_docs, context_len, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n_docs, context_len), generator=g)
    mask = torch.ones_like(ids)
    return ids, ids.clone(), mask


def step_flops(model, context_len) -> float:
    """≈ FLOPs of one training step: 6·N·C for the matmul weights + attention scores."""
    cfg = model.config
    n = sum(p.numel() for name, p in model.named_parameters()
            if p.ndim == 2 and "embed_in" not in name)
    attn = 12 * cfg.num_hidden_layers * cfg.hidden_size * context_len**2 / 2  # causal
    return 6 * n * context_len + attn


def compare(name, vocab, T, C, M, E, lr=1e-3):
    ids, labels, mask = docs(T, C, vocab)
    order = orders.cyclic(T, E)
    t = time.perf_counter()
    ref_eval, _ = reference_train(models.random_model(name, vocab), ids, labels, mask, order, M, lr)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    run = trainer.train(models.random_model(name, vocab), ids, labels, order, steps_per_doc=M, lr=lr,
                        attention_mask=mask, progress=False)
    t_ours = time.perf_counter() - t
    diff = np.abs(run.eval_loss - ref_eval).max()
    print(f"{name} (vocab {vocab}) T={T} C={C} M={M} E={E}: reference {t_ref:.1f} s, "
          f"ours {t_ours:.1f} s, speed-up {t_ref / t_ours:.2f}x, "
          f"max |Δ eval_loss| {diff:.1e} ({'agree' if diff < 1e-3 else 'DIFFER'})")


def train_throughput(name, vocab, C, steps, peak):
    model = models.random_model(name, vocab)
    ids, labels, mask = docs(1, C, vocab)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        loss = trainer.lm_loss(model, ids, labels, mask).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:  # warm-up excluded
            times.append(time.perf_counter() - t)
    dt = float(np.median(times))
    achieved = step_flops(model, C) / dt
    print(f"{name} training step, C={C}, vocab {vocab}: {dt:.3f} s/step, "
          f"{achieved / 1e9:.1f} GFLOP/s = {100 * achieved / peak:.0f} % of matmul peak")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak = matmul_flops()
    print(f"fp32 matmul (2048², best of 10): {peak / 1e9:.1f} GFLOP/s")
    if args.quick:
        compare("pythia-14m", 50304, T=5, C=64, M=2, E=2)
        train_throughput("pythia-14m", 50304, 64, 5, peak)
    else:
        compare("pythia-14m", 50304, T=10, C=128, M=5, E=2)
        compare("pythia-70m", 50304, T=10, C=128, M=3, E=1)
        train_throughput("pythia-70m", 50304, 256, 10, peak)
