"""The bottom floor: the GPT's sizes (GPTConfig), profiles (quick = CPU minutes, full = GPU real size),
device choice, seeding and the chapter list. Imports nothing of gptbook."""
from __future__ import annotations

import os
import platform
import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

import torch

# the book's chapters, by number (notebooks chapters/<name>.ipynb, exercises exercises/<name>/)
CHAPTERS = {"01": "01_architecture", "02": "02_math", "03": "03_finetuning",
            "04": "04_applications", "05": "05_deployment"}

# the pre-trained models a chapter can start from (Profile.weights); gptbook.train.pretrained loads them
SHIPPED = "book-broad"                       # the book's model shipped in gptbook/weights (train.shipped_model)
BOOK_WEIGHTS = ("book", SHIPPED)             # the book's own: trained live / shipped
GPT2_SIZES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")   # OpenAI's, from the Hugging Face hub


def needs_hub(weights: Optional[str]) -> bool:
    """Whether `weights` must come from the Hugging Face hub: only OpenAI's GPT-2 names do; the book's
    weights and a local folder load offline (so a run may set HF_HUB_OFFLINE=1 for them)."""
    return weights in GPT2_SIZES


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024      # context length (HF: n_positions)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True           # GPT-2 has biases in Linear layers and LayerNorms
    layer_norm_epsilon: float = 1e-5
    flash: bool = True          # True: F.scaled_dot_product_attention; False: the manual path

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                             f"each head gets n_embd // n_head dimensions")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def replace(self, **changes) -> "GPTConfig":
        """A copy with some fields changed; unknown field names raise."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s) {sorted(unknown)}; valid: {sorted(known)}")
        return replace(self, **changes)


@dataclass(frozen=True)
class Profile:
    name: str
    device: str = "auto"          # "auto" = cuda when present, else cpu
    seed: int = 1337
    dtype: str = "float32"        # autocast dtype for training: "float32" | "bfloat16" | "float16"
    # the book's GPT (chapter 03 pre-trains it; 04 and 05 load it)
    vocab_size: int = 4096        # byte-level BPE trained on the book's corpus
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    # pre-training
    batch_size: int = 16
    max_steps: int = 600
    learning_rate: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 100
    eval_iters: int = 10
    corpus_chars: Optional[int] = 2_000_000   # None = the whole corpus
    # fine-tuning and the application chapters
    finetune_steps: int = 150
    finetune_batch_size: int = 16
    max_examples: Optional[int] = 3000       # cap per dataset split; None = all
    finetune_lr: float = 1e-3                # peak learning rate for fine-tuning (ch03)
    hf_train_steps: int = 20                 # steps of the HF Trainer continued pre-training (ch03)
    apps_queries: Optional[int] = 200        # ch04: cap on test queries / stream items per measurement
    arith_steps: int = 2000                  # ch04: steps of the tiny arithmetic GPT (prompting section)
    threads: Optional[int] = 2               # torch threads on CPU (fixed, so runs repeat exactly)
    serve_requests: int = 200                # ch05 HTTP load test: requests sent
    serve_concurrency: int = 8               # ch05 HTTP load test: client threads at once
    toy_steps: int = 300                     # ch02: steps of the causal-LM vs masked-LM toy training
    lora_rank: int = 8                       # ch03 §5: LoRA rank r
    peft_steps: int = 30                     # ch03 §5: steps of full fine-tuning and of LoRA
    sft_steps: int = 60                      # ch03 §6: instruction-tuning steps (30 gave "I am not not not")
    sft_lr: float = 3e-3                     # ch03 §6: peak learning rate of instruction tuning
    dpo_steps: int = 30                      # ch03 §6: DPO steps
    dpo_lr: float = 5e-5                     # ch03 §6: DPO's peak learning rate; at 1e-3 the chosen answers lost so
                                             #   much log-probability that replies came out empty, at 1e-4 some
                                             #   replies looped ("not not not"); 5e-5 did neither on four seeds
    dpo_beta: float = 0.1                    # ch03 §6: DPO's beta, how strongly the policy is held near the SFT model
    sweep_steps: int = 20                    # ch03 §7: steps per learning-rate sweep run
    overfit_steps: int = 48                  # ch03 §7: steps of each over-fitting run
    overfit_examples: int = 16               # ch03 §7: size of the small training subset
    distill_steps: int = 50                  # ch05 §5.2: steps of the half-depth student (distilled and plain)
    # which pre-trained model chapters 02-05 start from: "book" (trained live by chapter 03, offline),
    # "book-broad" (shipped), a GPT2_SIZES name (needs the hub once) or a folder with a Hugging Face
    # GPT-2 checkpoint.
    weights: str = "book"
    # the weights a chapter's claims were measured on (its default `weights`): claim() asserts them
    # with these weights and reports them with any other
    claims_on: str = "book"

    def __post_init__(self):
        w = self.weights
        if not isinstance(w, str) or not (w in BOOK_WEIGHTS + GPT2_SIZES or os.path.isdir(os.path.expanduser(w))):
            raise ValueError(f"weights={w!r} is neither one of {list(BOOK_WEIGHTS + GPT2_SIZES)} nor a folder; "
                             f"use 'book' (offline, the default), a GPT-2 size (needs the Hugging Face hub once), "
                             f"or a folder saved with GPT2LMHeadModel.save_pretrained")
        if self.claims_on not in BOOK_WEIGHTS:
            raise ValueError(f"claims_on={self.claims_on!r}: a chapter's claims are measured on one of "
                             f"{list(BOOK_WEIGHTS)}")

    def model_config(self, **changes) -> GPTConfig:
        """The GPTConfig of the book's model in this profile."""
        return GPTConfig(vocab_size=self.vocab_size, block_size=self.block_size,
                         n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                         dropout=self.dropout).replace(**changes)

    @property
    def torch_device(self) -> torch.device:
        return pick_device(self.device)

    def _repr_markdown_(self):
        rows = "\n".join(f"| `{k}` | {v} |" for k, v in asdict(self).items())
        return f"| setting | value |\n|---|---|\n{rows}\n| device used | {self.torch_device} |"


PROFILES = {
    "quick": Profile(name="quick"),
    "full": Profile(
        name="full", dtype="bfloat16", vocab_size=8192, block_size=256, n_layer=6, n_head=6,
        n_embd=384, dropout=0.2, batch_size=64, max_steps=5000, learning_rate=1e-3, min_lr=1e-4,
        warmup_steps=200, eval_interval=250, eval_iters=50, corpus_chars=None,
        finetune_steps=1000, finetune_batch_size=32, max_examples=None, threads=None,
        finetune_lr=3e-4, hf_train_steps=500, serve_requests=2000, serve_concurrency=16, toy_steps=1000,
        apps_queries=None, arith_steps=4000,
        lora_rank=16, peft_steps=1000, sft_steps=1000, sft_lr=1e-3, dpo_steps=300, dpo_lr=1e-5,
        sweep_steps=300,
        overfit_steps=1000, overfit_examples=64, distill_steps=1000),
}


def get_profile(name: str = "quick", **overrides) -> Profile:
    """The named profile with overrides applied; None overrides are ignored (papermill defaults)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {sorted(PROFILES)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    known = {f.name for f in fields(Profile)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown profile setting(s) {sorted(unknown)}; valid: {sorted(known)}")
    return replace(PROFILES[name], **overrides)


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu. An explicit 'cuda' without a GPU raises."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no GPU "
                           f"(torch {torch.__version__}); use device='auto' or 'cpu'")
    return torch.device(device)


def seed_everything(seed: int, threads: Optional[int] = None, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; fix the thread count; deterministic kernels where torch allows."""
    random.seed(seed)
    try:
        import numpy as np
        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


DEFAULT_SEED = Profile.seed   # the seed the stored chapter outputs were made with


def run_seed(seed: Optional[int] = None) -> int:
    """The seed of a run: `seed` when given, else $GPTBOOK_SEED, else DEFAULT_SEED.

    Every chapter's parameters cell has `seed = None`, so `GPTBOOK_SEED=1338 make test` re-runs the
    whole book (and nbval) on another seed: the test that results hold beyond one machine's digits."""
    if seed is not None:
        return int(seed)
    raw = os.environ.get("GPTBOOK_SEED", "").strip()
    if not raw:
        return DEFAULT_SEED
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"GPTBOOK_SEED={raw!r} is not a whole number; set it to one "
                         f"(e.g. GPTBOOK_SEED=1338) or unset it for the default {DEFAULT_SEED}") from None


def setup(profile: str = "quick", seed: Optional[int] = None, **overrides) -> Profile:
    """One call at the top of every chapter: profile, seed (see run_seed), threads."""
    cfg = get_profile(profile, seed=run_seed(seed), **overrides)
    if cfg.weights == SHIPPED and cfg.model_config() != PROFILES["quick"].model_config():
        # the shipped model has the quick profile's sizes; a larger profile trains its own (chapter 03)
        print(f"[weights='book-broad' is the quick profile's model; profile {cfg.name!r} uses chapter 03's model "
              f"of its own size, weights='book']")
        cfg = replace(cfg, weights="book")
    seed_everything(cfg.seed, cfg.threads)
    return cfg


def claim(cfg: Profile, holds, message: str = "") -> bool:
    """A conclusion a chapter draws from a measurement. A chapter's claims were measured on its default
    weights (cfg.claims_on: "book" or "book-broad"), so with those a claim is asserted (`assert holds,
    message`); with other weights (the other book model, GPT-2, a folder) it is checked and reported,
    not enforced: the prose beside it describes the default model, and whether it also holds for these
    weights is the finding. Returns whether it holds."""
    holds = bool(holds)
    if cfg.weights == cfg.claims_on:
        assert holds, message
    elif not holds:
        if not message:   # name the claim by its line in the chapter
            import inspect
            caller = inspect.stack(context=1)[1]
            message = (caller.code_context or ["?"])[0].strip()
        print(f"[claim measured on weights={cfg.claims_on!r}; it does not hold with weights={cfg.weights!r}] {message}")
    return holds


def progress_enabled(requested: bool = True) -> bool:
    """Progress bars on, unless GPTBOOK_NO_PROGRESS=1: set while outputs are stored (`gptbook run
    --refresh`) and checked (nbval), so a stored notebook does not depend on whether a cached model
    was loaded or trained."""
    return bool(requested) and os.environ.get("GPTBOOK_NO_PROGRESS", "") not in ("1", "true", "yes")


def env_report() -> dict:
    """Versions and device, for the top of a chapter (values that nbval sanitises)."""
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": str(pick_device()),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
