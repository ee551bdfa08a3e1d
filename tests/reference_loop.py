"""A plain re-statement of the official training loop (`train_interleave.py`, SPEC §2.4).

Used by tests/test_trainer.py (equality) and benchmarks/trainer_speed.py (speed). It
is written the way the official code does it: HF's own loss from `labels`, training
batches padded to C with −100 labels, and every document evaluated on its own in a
batch-1 forward pass without padding.
"""

import numpy as np
import torch


def reference_train(model, input_ids, labels, attention_mask, order, steps_per_doc, lr):
    """Returns (eval_loss (E·T+1, T), train_loss (E·T·M,)) for SGD at a constant lr."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    n_docs = input_ids.shape[0]
    lengths = attention_mask.sum(dim=1)

    def evaluate():
        model.eval()
        row = []
        with torch.no_grad():
            for j in range(n_docs):  # batch size 1, no padding
                ids = input_ids[j : j + 1, : lengths[j]]
                row.append(model(input_ids=ids, labels=ids).loss.item())
        return row

    eval_loss, train_loss = [evaluate()], []
    for d in order:
        model.train()
        for _ in range(steps_per_doc):
            out = model(
                input_ids=input_ids[d : d + 1],
                attention_mask=attention_mask[d : d + 1],
                labels=labels[d : d + 1],
            )
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            train_loss.append(out.loss.item())
        eval_loss.append(evaluate())
    return np.array(eval_loss), np.array(train_loss)
