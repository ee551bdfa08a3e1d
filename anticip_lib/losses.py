"""Losses and evaluation of one model on T documents (paper §2: mean next-token NLL)."""

import torch
import torch.nn.functional as F


def lm_loss(model, input_ids, labels, attention_mask=None) -> torch.Tensor:
    """Per-document mean next-token NLL, shape (n,): HF's causal-LM loss for batch 1.

    Labels are shifted inside, and −100 positions (padding) do not count.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (n, C, V)
    # next-token targets, −100 at the last position: no sliced copy of the logits
    target = F.pad(labels[:, 1:], (0, 1), value=-100)
    nll = F.cross_entropy(
        logits.flatten(0, 1).float(), target.flatten(), ignore_index=-100, reduction="none"
    ).view(target.shape)
    n_tokens = (target != -100).sum(dim=1).clamp(min=1)
    return nll.sum(dim=1) / n_tokens


def auto_eval_batch(model, inputs, budget_bytes: int = 2**29) -> int:
    """Documents per evaluation forward pass, keeping the fp32 logits under the budget."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if not vocab or inputs.ndim != 2:
        return 1
    per_doc = 2 * inputs.shape[1] * vocab * 4  # logits + their log-softmax
    return max(1, min(inputs.shape[0], budget_bytes // per_doc))


@torch.inference_mode()
def evaluate(model, inputs, labels, attention_mask=None, *, loss_fn=lm_loss, eval_batch=None):
    """Loss on every document, shape (T,), in chunks of `eval_batch` documents."""
    was_training = model.training
    model.eval()
    eval_batch = eval_batch or auto_eval_batch(model, inputs)
    out = []
    for i in range(0, inputs.shape[0], eval_batch):
        mask = None if attention_mask is None else attention_mask[i : i + eval_batch]
        out.append(loss_fn(model, inputs[i : i + eval_batch], labels[i : i + eval_batch], mask))
    model.train(was_training)
    return torch.cat(out).double().cpu().numpy()
