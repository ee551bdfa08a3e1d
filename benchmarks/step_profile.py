"""Where one training step of the single-run path (`trainer.train`) spends its time.

For the pythia-14m and pythia-70m shapes (random init), with the byte tokenizer's
vocabulary (257, what the book's cpu presets use) and Pythia's (50,304), one training
step as `trainer.train` takes it (lm_loss, backward, optimizer step; batch 1, C
tokens) is profiled with torch.profiler and its time split into:

- matmul: mm / addmm / bmm (the useful work);
- log-softmax + CE: the full-vocabulary cross-entropy, forward and backward;
- attention: scaled_dot_product_attention, forward and backward;
- embedding grad: the backward of the input embedding (a dense (V, d) gradient);
- optimizer: Adam's (or SGD's) step and zero_grad; "of it on unused embedding rows"
  is its share proportional to the input-embedding rows the step does not touch
  (their gradient is zero);
- other ops: every other aten op (layer norms, GELU, adds, copies, …);
- outside ops: wall time minus the ops' own time (Python and HF module code, the
  autograd engine's bookkeeping, and the profiler's own cost).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_profile.py [--threads 1] [--steps 5]

Prints a table; asserts nothing. The figures are shares of one machine's time and
move with it (and with whatever else runs there).
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from anticip_lib import models, trainer

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
CE = ("aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss_forward",
      "aten::nll_loss_backward", "aten::nll_loss2d_forward", "aten::nll_loss2d_backward")


def profile_step(name, vocab, C, steps, optimizer):
    model = models.random_model(name, vocab)
    ids = torch.randint(0, vocab, (1, C), generator=torch.Generator().manual_seed(0))
    params = [p for p in model.parameters()]
    opt = (torch.optim.Adam(params, lr=1e-3) if optimizer == "adam"
           else torch.optim.SGD(params, lr=1e-3))
    model.train()

    def step():
        loss = trainer.lm_loss(model, ids, ids, None).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    wall_plain = (time.perf_counter() - t) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(steps):
            step()
        wall_prof = (time.perf_counter() - t) / steps
    ev = prof.key_averages()
    by = {e.key: e for e in ev}

    def self_ms(keys):
        return sum(by[k].self_cpu_time_total for k in keys if k in by) / 1e3 / steps

    def total_ms(pred):
        return sum(e.cpu_time_total for e in ev if pred(e.key)) / 1e3 / steps

    aten_self = sum(e.self_cpu_time_total for e in ev if e.key.startswith("aten::"))
    aten_self = aten_self / 1e3 / steps
    parts = {
        "matmul": self_ms(MATMUL),
        "log-softmax + CE": self_ms(CE),
        "attention": sum(e.self_cpu_time_total for e in ev
                         if "scaled_dot_product" in e.key) / 1e3 / steps,
        "embedding grad": total_ms(lambda k: k.endswith("EmbeddingBackward0")),
        "optimizer": total_ms(lambda k: k.startswith("Optimizer.step")
                              or k.startswith("Optimizer.zero_grad")),
    }
    # optimizer time is elementwise: its share on the embedding rows this step
    # does not touch (zero gradient) is proportional to their number
    emb = model.gpt_neox.embed_in.weight
    unused = emb.shape[0] - ids.unique().numel()
    share = unused * emb.shape[1] / sum(p.numel() for p in params)
    accounted = sum(parts.values())
    parts["other ops"] = max(0.0, aten_self - accounted)
    parts["outside ops"] = max(0.0, wall_prof * 1e3 - aten_self)
    return wall_plain, wall_prof, parts, parts["optimizer"] * share


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import os
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"loadavg {os.getloadavg()[0]:.2f} (1 min) at start; C={a.context}, "
          f"{a.optimizer}, batch 1, median of {a.steps} steps after 2 warm-up steps")
    cols = ["matmul", "log-softmax + CE", "attention", "embedding grad", "optimizer",
            "other ops", "outside ops"]
    print(f"{'shape':12} {'vocab':>6} {'ms/step':>8} | " + " | ".join(
        f"{c:>16}" for c in cols) + " | opt. on unused emb. rows")
    for name in ("pythia-14m", "pythia-70m"):
        for vocab in (257, 50304):
            wall, wall_prof, parts, unused = profile_step(name, vocab, a.context,
                                                          a.steps, a.optimizer)
            tot = sum(parts.values())
            cells = [f"{parts[c]:7.1f} ms {100 * parts[c] / tot:3.0f}%" for c in cols]
            print(f"{name:12} {vocab:6d} {wall * 1e3:8.1f} | " + " | ".join(
                f"{c:>16}" for c in cells)
                + f" | {unused:6.1f} ms {100 * unused / tot:3.0f}%")
    print(f"loadavg {os.getloadavg()[0]:.2f} (1 min) at the end. ms/step: without the "
          "profiler; the split: with it (its own cost lands in 'outside ops').")


if __name__ == "__main__":
    main()
