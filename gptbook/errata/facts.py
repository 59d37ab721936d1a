"""Further errata found by reading the documents: objectives, formulas, facts and history
(chapters 01 to 05), each demonstrated by code. Registered into `gptbook.errata.REGISTRY`.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from .helpers import quiet, seeded, small, tiny_forward, tiny_gpt
from .registry import erratum
from ..model import PUBLISHED, count_params

# arXiv identifiers encode the month of first submission (YYMM.NNNNN)
ARXIV = {"Transformer (Vaswani et al.)": "1706.03762", "ULMFiT (Howard & Ruder)": "1801.06146",
         "BERT (Devlin et al.)": "1810.04805", "GPT-3 (Brown et al.)": "2005.14165",
         "COCO (Lin et al., Microsoft)": "1405.0312", "LoRA (Hu et al.)": "2106.09685",
         "AdaLoRA (Zhang et al.)": "2303.10512"}


def arxiv_month(arxiv_id: str) -> str:
    """'1810.04805' -> '2018-10' (new-style arXiv ids start with the year and month)."""
    yymm = arxiv_id.split(".")[0]
    if len(yymm) != 4 or not yymm.isdigit():
        raise ValueError(f"not a new-style arXiv id: {arxiv_id!r}")
    return f"20{yymm[:2]}-{yymm[2:]}"


@erratum("E18")
def _e18():
    m, x, out = tiny_forward((2, 9), next_token=True)  # inputs x_1..x_{n-1}, targets x_2..x_n
    manual = torch.stack([F.cross_entropy(out.logits[:, i], x[:, i + 1]) for i in range(8)]).mean()
    diff = abs(out.loss.item() - manual.item())
    # the experiment: replace every token after position i; if the model kept the text that follows
    # (「保留后文」), its prediction at i would move. The causal mask hides it, so nothing moves.
    moved = []
    with torch.no_grad():
        for i in range(7):
            y = x[:, :-1].clone()
            y[:, i + 1:] = (y[:, i + 1:] + 1 + torch.arange(7 - i)) % 64
            moved.append((m(y).logits[:, :i + 1] - out.logits[:, :i + 1]).abs().max().item())
    assert diff < 1e-5 and max(moved) < 1e-5
    return (f"changing every later token moves the predictions at earlier positions by at most "
            f"{small(max(moved))} (the text that follows is hidden); the loss {out.loss.item():.4f} equals "
            f"the mean over positions of -log p(next token) {manual.item():.4f} (diff {small(diff)}): "
            f"one target per position, the next token only")


@erratum("E24")
def _e24():
    import unicodedata
    names = {unicodedata.name(c) for c in "零샷少샷" if not "\u4e00" <= c <= "\u9fff"}
    assert names == {"HANGUL SYLLABLE SYAS"}
    return f"non-Chinese characters in 零샷/少샷: {sorted(names)} (Korean 'shot'); Chinese: 零样本/少样本"


@erratum("E31")
def _e31():
    with seeded(0):
        Q, K, V = (torch.randn(1, 1, 5, 8) for _ in range(3))
    A = F.softmax(Q @ K.transpose(-2, -1) / 8 ** 0.5, dim=-1)[0, 0]   # a_ij, rows sum to 1
    right = A @ V[0, 0]
    doc = A.T @ V[0, 0]                                                  # V_j = sum_i a_ij V_i
    lib = F.scaled_dot_product_attention(Q, K, V)[0, 0]
    ok, bad = (right - lib).abs().max().item(), (doc - lib).abs().max().item()
    cols = A.sum(0)
    assert ok < 1e-5 and bad > 0.1 and (cols - 1).abs().max() > 0.05
    return (f"sum_j a_ij V_j matches torch's scaled_dot_product_attention (max diff {small(ok)}); the "
            f"document's sum_i a_ij V_i misses it by {bad:.2f}; its weights (columns of A) sum to "
            f"{[round(c, 2) for c in cols.tolist()]}, not 1")


@erratum("E33")
def _e33():
    bert, tr = arxiv_month(ARXIV["BERT (Devlin et al.)"]), arxiv_month(ARXIV["Transformer (Vaswani et al.)"])
    from transformers.models.bert import modeling_bert
    assert bert == "2018-10" and tr < bert and hasattr(modeling_bert, "BertSelfAttention")
    return (f"BERT: arXiv {ARXIV['BERT (Devlin et al.)']} = {bert}; it is a stack of Transformer encoder "
            f"layers (transformers' BertSelfAttention), and the Transformer is arXiv "
            f"{ARXIV['Transformer (Vaswani et al.)']} = {tr}")


@erratum("E34")
def _e34():
    from transformers import BertConfig, BertForMaskedLM
    with seeded(0), quiet():
        bert = BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32,
                                          max_position_embeddings=32, initializer_range=0.2)).eval()
        gpt = tiny_gpt()
        x = torch.randint(2, 64, (1, 8))
        y = x.clone()
        y[0, -1] = (y[0, -1] + 1) % 64                    # change only the LAST token
        with torch.no_grad():
            db = (bert(x).logits[0, 0] - bert(y).logits[0, 0]).abs().max().item()
            dg = (gpt(x).logits[0, 0] - gpt(y).logits[0, 0]).abs().max().item()
    assert db > 1e-3 and dg == 0.0 and not bert.config.is_decoder
    return (f"changing the last token moves BERT's prediction at position 0 by {db:.3f} (it reads the "
            f"right context) and GPT's by {dg:.1f}; BertConfig.is_decoder={bert.config.is_decoder}")


@erratum("E36")
def _e36():
    ulm, bert = (arxiv_month(ARXIV[paper]) for paper in ("ULMFiT (Howard & Ruder)", "BERT (Devlin et al.)"))
    assert ulm < bert
    return f"ULMFiT: arXiv 1801.06146 = {ulm}; BERT: arXiv 1810.04805 = {bert} (later)"


@erratum("E25")
def _e25():
    n = count_params(PUBLISHED["GPT-3 175B"], include_embeddings=False)
    tokens = 300e9                                     # GPT-3 paper, §2.2
    mix = {"Common Crawl": 410e9, "WebText2": 19e9, "Books1": 12e9, "Books2": 55e9, "Wikipedia": 3e9}
    flops = 6 * n * tokens
    epochs = tokens / sum(mix.values())
    assert 2.9e23 < flops < 3.3e23 and epochs < 1
    return (f"6 x {n / 1e9:.0f}B non-embedding params x 300B tokens = {flops:.2e} FLOPs (paper: 3.14e23), "
            f"i.e. {epochs:.2f} passes over the {sum(mix.values()) / 1e9:.0f}B-token mix; 300 epochs would "
            f"be {flops * 300 / epochs:.1e} FLOPs")


def _hf_sizes():
    """Book GPT configs of the checkpoints the documents load, with their computed sizes."""
    return {k: count_params(PUBLISHED[k]) for k in ("GPT-2 small", "GPT-2 medium", "GPT-3 175B")}


@erratum("E19")
def _e19():
    from .helpers import gpt2_tok
    from ..tokenizer import tiktoken_encoding
    sizes = _hf_sizes()
    s = "这部电影非常好看"
    n2, n35 = len(gpt2_tok()(s)["input_ids"]), len(tiktoken_encoding("cl100k_base").encode(s))
    assert sizes["GPT-2 small"] < 0.2e9 and n2 != n35
    return (f"'gpt2' = GPT-2 small, {sizes['GPT-2 small'] / 1e6:.1f}M params (GPT-3: "
            f"{sizes['GPT-3 175B'] / 1e9:.0f}B); 「{s}」 is {n2} GPT-2 tokens but {n35} cl100k_base "
            f"(GPT-3.5) tokens")


@erratum("E20")
def _e20():
    sizes = _hf_sizes()
    ratio = sizes["GPT-3 175B"] / sizes["GPT-2 medium"]
    assert ratio > 400
    return (f"gpt2-medium computed from its configuration: {sizes['GPT-2 medium'] / 1e6:.0f}M parameters, "
            f"{ratio:.0f}x fewer than GPT-3's {sizes['GPT-3 175B'] / 1e9:.0f}B")


@erratum("E39")
def _e39():
    import inspect

    from transformers import CLIPModel, GPT2LMHeadModel
    gpt = set(inspect.signature(GPT2LMHeadModel.forward).parameters)
    clip = set(inspect.signature(CLIPModel.forward).parameters)
    vision = sorted(p for p in gpt if "pixel" in p or "image" in p)
    assert not vision and "pixel_values" in clip and "input_ids" in gpt
    return (f"inputs a GPT-2/GPT-3-style model accepts that carry images: {vision} (it reads input_ids); "
            f"a vision-language model such as CLIP takes pixel_values")


@erratum("E43")
def _e43():
    from importlib.metadata import metadata
    hf = metadata("transformers")["Author"].split(" (")[0]
    oa = (metadata("tiktoken").get("Author-email") or "").split("@")[-1]
    assert "Hugging Face" in hf and oa == "openai.com"
    return (f"package metadata: transformers is by '{hf}'; OpenAI's own tokenizer library tiktoken is "
            f"by @{oa}: two different organisations")


@erratum("E45")
def _e45():
    coco = arxiv_month(ARXIV["COCO (Lin et al., Microsoft)"])
    imagenet = "2009-06"            # Deng et al., "ImageNet: A large-scale hierarchical image database", CVPR 2009
    openai = "2015-12"              # OpenAI's founding announcement, 11 December 2015
    assert coco < openai and imagenet < openai
    return (f"COCO: arXiv {ARXIV['COCO (Lin et al., Microsoft)']} = {coco}; ImageNet: CVPR {imagenet[:4]}; "
            f"OpenAI founded {openai}: both datasets are older than OpenAI, and both are images, not text")


@erratum("E49")
def _e49():
    from peft import AdaLoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel

    from .helpers import tiny_hf_config
    init_r, target_r, steps = 4, 2, 12
    with seeded(0), quiet():
        base = GPT2LMHeadModel(tiny_hf_config(n_layer=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
        cfg = AdaLoraConfig(task_type="CAUSAL_LM", target_modules=["c_attn", "c_fc"], init_r=init_r,
                            target_r=target_r, tinit=2, tfinal=2, deltaT=1, total_step=steps, lora_alpha=8)
        m = get_peft_model(base, cfg)
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        for step in range(steps):
            x = torch.randint(0, 64, (4, 16))
            m(input_ids=x, labels=x).loss.backward()
            m.base_model.update_and_allocate(step)       # AdaLoRA's budget allocation, after backward
            opt.step()
            opt.zero_grad()
    pattern = m.peft_config["default"].rank_pattern      # per matrix: which singular values survive
    ranks = {re.sub(r".*h\.(\d+)\.\w+\.(\w+)\.lora_E.*", r"h.\1.\2", k): sum(v) for k, v in pattern.items()}
    shapes = {n.split(".lora_")[1].split(".")[0]: tuple(p.shape) for n, p in m.named_parameters()
              if "h.0.attn.c_attn.lora_" in n}
    budget = target_r * len(ranks)
    assert sum(ranks.values()) == budget and len(set(ranks.values())) > 1 and len(shapes) == 3
    return (f"peft's AdaLoRA (arXiv {ARXIV['AdaLoRA (Zhang et al.)']} = "
            f"{arxiv_month(ARXIV['AdaLoRA (Zhang et al.)'])}) on a tiny GPT-2: each update is P Λ Q "
            f"(A {shapes['A']}, singular values E {shapes['E']}, B {shapes['B']}); after {steps} steps the "
            f"budget of {target_r} x {len(ranks)} = {budget} singular values is shared unequally between "
            f"the matrices (which gets how many depends on float rounding, so it is not printed), not "
            f"{target_r} each")


@erratum("E50")
def _e50():
    from transformers import OpenAIGPTConfig, OpenAIGPTDoubleHeadsModel
    with seeded(0), quiet():
        m = OpenAIGPTDoubleHeadsModel(OpenAIGPTConfig(vocab_size=64, n_positions=16, n_embd=16, n_layer=1,
                                                      n_head=2)).eval()
        x = torch.randint(0, 64, (1, 2, 6))              # one question, two candidate answers
        last = torch.tensor([[5, 5]])                     # the task head reads each candidate's last token
        with torch.no_grad():
            out = m(x, mc_token_ids=last, labels=x, mc_labels=torch.tensor([1]))
    assert out.mc_logits.shape == (1, 2) and out.loss is not None and out.mc_loss is not None
    return (f"transformers' GPT-1 (model type '{m.config.model_type}'), OpenAIGPTDoubleHeadsModel, is the "
            f"paper's fine-tuning set-up: the LM head (logits {tuple(out.logits.shape)}) and a task head "
            f"scoring each candidate answer (mc_logits {tuple(out.mc_logits.shape)}), trained together "
            f"(LM loss {out.loss.item():.2f}, task loss {out.mc_loss.item():.2f}): a model fine-tuned for "
            f"understanding tasks, as its title 'Improving Language Understanding by Generative "
            f"Pre-Training' says")
