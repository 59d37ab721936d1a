"""Weights between the book's GPT and Hugging Face's GPT2LMHeadModel: a key-by-key copy.

HF GPT-2 keeps its projections in `Conv1D` modules whose weight is (in, out); the book uses
`nn.Linear`, whose weight is (out, in). Those four weights are transposed; everything else copies.
"""
from __future__ import annotations

import torch

from . import config
from .model import GPT, GPTConfig

# weights stored transposed in HF's Conv1D
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def to_hf_config(config: GPTConfig, **extra):
    """GPTConfig -> transformers.GPT2Config (tanh GELU, same sizes, same dropout)."""
    from transformers import GPT2Config
    if not config.bias:
        raise ValueError("HF GPT-2 always has biases; convert a GPTConfig with bias=True")
    extra.setdefault("bos_token_id", config.vocab_size - 1)
    extra.setdefault("eos_token_id", config.vocab_size - 1)
    return GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size,
                      n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
                      resid_pdrop=config.dropout, embd_pdrop=config.dropout,
                      attn_pdrop=config.dropout, layer_norm_epsilon=config.layer_norm_epsilon,
                      activation_function="gelu_new", **extra)


def from_hf_config(hf_config) -> GPTConfig:
    """transformers.GPT2Config -> GPTConfig."""
    act = getattr(hf_config, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"the book's GPT uses tanh GELU; this GPT2Config uses {act!r}")
    return GPTConfig(vocab_size=hf_config.vocab_size, block_size=hf_config.n_positions,
                     n_layer=hf_config.n_layer, n_head=hf_config.n_head, n_embd=hf_config.n_embd,
                     dropout=hf_config.resid_pdrop, layer_norm_epsilon=hf_config.layer_norm_epsilon)


def _copy(src: dict, dst: dict, what: str):
    for k, v in src.items():
        if k not in dst:
            continue
        w = v.t() if k.endswith(TRANSPOSED) else v
        if w.shape != dst[k].shape:
            raise ValueError(f"{what}: shape mismatch at {k}: {tuple(w.shape)} vs {tuple(dst[k].shape)}")
        with torch.no_grad():
            dst[k].copy_(w)


def _check_keys(ours: set, theirs: set, what: str):
    missing = ours - theirs
    if missing:
        raise ValueError(f"{what}: keys with no counterpart: {sorted(missing)[:5]} ...")


def to_hf(gpt: GPT, cls=None, **config_extra):
    """The book's GPT -> a new transformers GPT2LMHeadModel (or `cls`, e.g. GPT2Model) with its weights.
    config_extra goes to the GPT2Config, e.g. `cls=GPT2ForSequenceClassification, num_labels=3,
    pad_token_id=1`; heads the book's GPT lacks (`score`) keep HF's fresh initialisation."""
    from transformers import GPT2LMHeadModel
    cls = cls or GPT2LMHeadModel
    hf = cls(to_hf_config(gpt.config, **config_extra)).eval()
    sd = {k: v for k, v in gpt.state_dict().items() if k != "lm_head.weight"}
    hf_sd = hf.state_dict()
    if not any(k.startswith("transformer.") for k in hf_sd):   # a bare GPT2Model
        sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    _check_keys(set(sd), set(hf_sd), "to_hf")
    _copy(sd, hf_sd, "to_hf")
    if hasattr(hf, "tie_weights"):
        hf.tie_weights()
    return hf


def from_hf(hf_model) -> GPT:
    """A transformers GPT2LMHeadModel (or GPT2Model) -> the book's GPT with the same weights."""
    gpt = GPT(from_hf_config(hf_model.config)).eval()
    hf_sd = hf_model.state_dict()
    if not any(k.startswith("transformer.") for k in hf_sd):
        hf_sd = {"transformer." + k: v for k, v in hf_sd.items()}
    sd = gpt.state_dict()
    ours = {k for k in sd if k != "lm_head.weight"}
    _check_keys(ours, set(hf_sd), "from_hf")
    _copy({k: v for k, v in hf_sd.items() if k in ours}, sd, "from_hf")
    return gpt


# OpenAI's released sizes (all share one tokenizer: gptbook.tokenizer.gpt2_bpe)
GPT2_SIZES = config.GPT2_SIZES


def load_gpt2(weights: str) -> GPT:
    """OpenAI's GPT-2 as the book's GPT: `weights` is a hub name in GPT2_SIZES (downloaded once by
    transformers; needs the internet) or a local folder holding a Hugging Face GPT-2 checkpoint
    (`save_pretrained`). The embedding gets one extra row, for the `<|pad|>` id that gpt2_bpe() adds
    (the mean of the other rows; padded positions are masked, so it only has to exist).
    Offline, or with no such model, raises data.SetupError naming the cause and the two ways out."""
    from pathlib import Path

    from .data import SetupError
    folder = Path(weights).expanduser()
    if weights not in GPT2_SIZES and not folder.is_dir():
        raise ValueError(f"weights={weights!r}: use 'book' (the book's own model), one of {list(GPT2_SIZES)}, "
                         f"or a folder holding a Hugging Face GPT-2 checkpoint")
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()    # no "Loading weights" bar in every chapter that loads them
    try:
        hf = GPT2LMHeadModel.from_pretrained(str(folder) if folder.is_dir() else weights).eval()
    except (OSError, ValueError) as e:   # hub unreachable / offline, or a folder without a checkpoint
        cause = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SetupError(f"cannot load GPT-2 weights {weights!r}: {cause}. Either run offline on the book's own "
                         f"model (weights='book'), or load {weights!r} once on a machine with the internet, "
                         f"save it with GPT2LMHeadModel.from_pretrained({weights!r}).save_pretrained(FOLDER) "
                         f"and pass weights=FOLDER") from None
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
    gpt = from_hf(hf)
    V = gpt.config.vocab_size
    grown = GPT(gpt.config.replace(vocab_size=V + 1)).eval()
    sd = gpt.state_dict()
    wte = sd["transformer.wte.weight"]
    sd["transformer.wte.weight"] = torch.cat([wte, wte.mean(0, keepdim=True)])
    sd["lm_head.weight"] = sd["transformer.wte.weight"]                 # tied, as in GPT-2
    grown.load_state_dict(sd)
    return grown
