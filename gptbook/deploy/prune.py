"""Global magnitude (L1) pruning with torch.nn.utils.prune, and how sparse a model is."""
import copy

import torch.nn as nn
import torch.nn.utils.prune as prune


def prunable(model: nn.Module) -> list:
    """(module, "weight") for every Linear inside the transformer blocks.

    The embedding and the LM head (tied to it) are left dense: pruning one would prune both."""
    return [(m, "weight") for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and ".h." in f".{name}"]


def global_magnitude_prune(model: nn.Module, amount: float) -> nn.Module:
    """A copy of `model` with the fraction `amount` of block weights (smallest |w| over ALL
    blocks together) set to zero; the masks are then made permanent (prune.remove)."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount is the fraction of weights to zero, in [0, 1); got {amount}")
    pruned = copy.deepcopy(model).eval()
    params = prunable(pruned)
    if not params:
        raise ValueError("no Linear layers inside transformer blocks (`.h.`) to prune")
    if amount > 0:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
        for module, name in params:
            prune.remove(module, name)   # weight = weight_orig * mask, stored as a plain tensor again
    return pruned


def sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros among the prunable weights."""
    params = [getattr(m, n) for m, n in prunable(model)]
    zeros = sum(int((p == 0).sum()) for p in params)
    return zeros / sum(p.numel() for p in params)


# ---------------------------------------------------------------- structured: whole blocks

def drop_blocks(model: nn.Module, keep) -> nn.Module:
    """A smaller GPT made of the blocks `keep` of `model` (indices into model.transformer.h, kept in
    that order), with the same embeddings, final LayerNorm and head.

    This is structured shrinking: the result has fewer tensors, so its file is smaller and its
    forward pass does less work on any hardware, unlike zeros inside dense matrices."""
    from ..model import GPT
    n = model.config.n_layer
    keep = list(keep)
    if not keep or len(set(keep)) != len(keep) or not all(0 <= i < n for i in keep):
        raise ValueError(f"keep must list distinct block indices in 0..{n - 1}; got {keep}")
    small = GPT(model.config.replace(n_layer=len(keep)))
    state = {}
    for name, t in model.state_dict().items():
        if name.startswith("transformer.h."):
            i, rest = name[len("transformer.h."):].split(".", 1)
            if int(i) not in keep:
                continue
            name = f"transformer.h.{keep.index(int(i))}.{rest}"     # renumber the kept blocks 0..k-1
        state[name] = t.clone()
    small.load_state_dict(state)
    return small.eval()
