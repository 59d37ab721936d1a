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


def _heads_of(model: nn.Module, layer: int, heads) -> nn.Module:
    attn = model.transformer.h[layer].attn
    if not all(0 <= h < attn.n_head for h in heads):
        raise ValueError(f"layer {layer} has heads 0..{attn.n_head - 1}; got {list(heads)}")
    return attn


def mask_heads(model: nn.Module, heads: dict) -> nn.Module:
    """A copy of `model` with attention heads switched off, heads = {layer: [head, ...]}: each head's
    slice of its layer's output projection (c_proj's input columns) is zeroed, so the head adds nothing
    (how Michel, Levy & Neubig 2019 measure what a head is worth). The tensors keep their shapes."""
    import torch
    masked = copy.deepcopy(model).eval()
    for layer, hs in heads.items():
        attn = _heads_of(masked, layer, hs)
        size = attn.head_size
        with torch.no_grad():
            for h in hs:
                attn.c_proj.weight[:, h * size:(h + 1) * size] = 0
    return masked


def drop_heads(model: nn.Module, heads: dict) -> nn.Module:
    """A copy of `model` WITHOUT the attention heads heads = {layer: [head, ...]}: their rows of the
    q, k, v projection and their columns of the output projection are cut out, so the layer computes
    what mask_heads computes with smaller matrices (fewer bytes, less work). Each layer keeps its own
    head count (CausalSelfAttention.n_head); the configuration still names the original one, so such a
    model is for measuring and serving here, not for saving as a GPT checkpoint or mapping to GPT-2."""
    import torch
    small = copy.deepcopy(model).eval()
    for layer, gone in heads.items():
        attn = _heads_of(small, layer, gone)
        keep = [h for h in range(attn.n_head) if h not in set(gone)]
        if not keep:
            raise ValueError(f"layer {layer} must keep at least one head")
        hs, width = attn.head_size, attn.n_head * attn.head_size
        cols = torch.cat([torch.arange(h * hs, (h + 1) * hs) for h in keep])     # the kept heads' channels
        rows = torch.cat([cols + i * width for i in range(3)])                    # ... in q, in k and in v
        c_attn = nn.Linear(attn.n_embd, len(rows), bias=attn.c_attn.bias is not None)
        c_proj = nn.Linear(len(cols), attn.n_embd, bias=attn.c_proj.bias is not None)
        with torch.no_grad():
            c_attn.weight.copy_(attn.c_attn.weight[rows])
            c_proj.weight.copy_(attn.c_proj.weight[:, cols])
            if c_attn.bias is not None:
                c_attn.bias.copy_(attn.c_attn.bias[rows])
            if c_proj.bias is not None:
                c_proj.bias.copy_(attn.c_proj.bias)
        attn.c_attn, attn.c_proj, attn.n_head = c_attn, c_proj, len(keep)
    return small


def head_params(config) -> int:
    """Weights one attention head owns: its rows of q, k and v (3 x head width x n_embd, + biases) and
    its columns of the output projection (n_embd x head width)."""
    size = config.n_embd // config.n_head
    return 3 * size * config.n_embd + (3 * size if config.bias else 0) + config.n_embd * size
