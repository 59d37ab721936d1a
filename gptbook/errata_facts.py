"""Further errata found by reading the documents: objectives, formulas, facts and history
(chapters 01, 02, 04, 05), each demonstrated by code. Registered into `gptbook.errata.REGISTRY`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errata import erratum, quiet, seeded, small, tiny_gpt
from .model import PUBLISHED, count_params

# arXiv identifiers encode the month of first submission (YYMM.NNNNN)
ARXIV = {"Transformer (Vaswani et al.)": "1706.03762", "ULMFiT (Howard & Ruder)": "1801.06146",
         "BERT (Devlin et al.)": "1810.04805", "GPT-3 (Brown et al.)": "2005.14165"}


def arxiv_month(arxiv_id: str) -> str:
    """'1810.04805' -> '2018-10' (new-style arXiv ids start with the year and month)."""
    yymm = arxiv_id.split(".")[0]
    if len(yymm) != 4 or not yymm.isdigit():
        raise ValueError(f"not a new-style arXiv id: {arxiv_id!r}")
    return f"20{yymm[:2]}-{yymm[2:]}"


@erratum("E18", "000", "§1.2, §3.2.1", "02",
         "即在输入文本中保留后文，通过预测后文来训练模型 … "
         "对于每个词 $x_i$，模型需要预测其后文 $x_{i+1}, x_{i+2}, \\ldots, x_n$",
         "The AR objective HIDES the text that follows (causal mask) and, at each position i, predicts "
         "only the next token x_{i+1}: loss = mean_i -log p(x_{i+1} | x_<=i). Training on the whole "
         "sequence at once gives every position its own next-token target.")
def _e18():
    with seeded(0):
        m = tiny_gpt()
        x = torch.randint(0, 64, (2, 9))
        with torch.no_grad():
            out = m(x[:, :-1], targets=x[:, 1:])           # inputs x_1..x_{n-1}, targets x_2..x_n
            manual = torch.stack([F.cross_entropy(out.logits[:, i], x[:, i + 1]) for i in range(8)]).mean()
    diff = abs(out.loss.item() - manual.item())
    assert diff < 1e-5
    return (f"the model's loss {out.loss.item():.4f} equals the mean over positions of -log p(next token) "
            f"{manual.item():.4f} (diff {small(diff)}): one target per position, the next token only")


@erratum("E24", "001", "§1.1, §3.3", "04",
         "在多种下游任务中表现出惊人的零샷(Zero-Shot)和少샷(Few-Shot)学习能力",
         "'샷' is a Korean (Hangul) syllable, not Chinese: the terms are 零样本 (zero-shot) and 少样本 "
         "(few-shot), as document 004 writes 零样本学习.")
def _e24():
    import unicodedata
    names = {unicodedata.name(c) for c in "零샷少샷" if not "\u4e00" <= c <= "\u9fff"}
    assert names == {"HANGUL SYLLABLE SYAS"}
    return f"non-Chinese characters in 零샷/少샷: {sorted(names)} (Korean 'shot'); Chinese: 零样本/少样本"


@erratum("E26", "001", "§1.2", "01",
         "GPT-3.5是OpenAI最新发布的大型语言模型",
         "GPT-3.5 (2022) is no longer OpenAI's latest model: GPT-4 followed in March 2023 (document 004 is "
         "about it) and later GPT-4o and GPT-4.1; OpenAI's own tokenizer library maps all of them.")
def _e26():
    import tiktoken.model as tm
    later = sorted(k for k in tm.MODEL_TO_ENCODING if k.startswith("gpt-4"))
    assert "gpt-4" in later and tm.MODEL_TO_ENCODING.get("gpt-3.5-turbo") == "cl100k_base"
    return (f"tiktoken (OpenAI) knows gpt-3.5-turbo -> {tm.MODEL_TO_ENCODING['gpt-3.5-turbo']} and the "
            f"later models {later}")


@erratum("E31", "003", "§4.2", "02",
         "4. **计算多头注意力输出**：$V_j = \\sum_{i=1}^n a_{ij}V_i$，通过注意力权重和值向量 $V_i$ "
         "计算多头注意力输出 $V_j$。",
         "The output of query i is a weighted average over the keys: out_i = sum_j a_ij V_j, where row i "
         "of A sums to 1. Summing over the first index (sum_i a_ij V_i, i.e. A^T V) weights by columns, "
         "which do not sum to 1.")
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


@erratum("E33", "004", "§1.1", "01",
         "自2012年BERT的问世以来，预训练语言模型（Pre-trained Language Models, PLMs）在自然语言处理",
         "BERT appeared in October 2018 (arXiv 1810.04805), after the Transformer it is built on (June "
         "2017) and after GPT-1 (June 2018).")
def _e33():
    bert, tr = arxiv_month(ARXIV["BERT (Devlin et al.)"]), arxiv_month(ARXIV["Transformer (Vaswani et al.)"])
    from transformers.models.bert import modeling_bert
    assert bert == "2018-10" and tr < bert and hasattr(modeling_bert, "BertSelfAttention")
    return (f"BERT: arXiv {ARXIV['BERT (Devlin et al.)']} = {bert}; it is a stack of Transformer encoder "
            f"layers (transformers' BertSelfAttention), and the Transformer is arXiv "
            f"{ARXIV['Transformer (Vaswani et al.)']} = {tr}")


@erratum("E34", "004", "§2.1", "02",
         "**自回归模型(Autoregressive Models)**：利用当前输入的文本序列预测下一个单词，如GPT、BERT等。",
         "BERT is not autoregressive: it is a bidirectional encoder trained with masked-LM, so every "
         "position sees the tokens to its right. GPT is the autoregressive one.")
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


@erratum("E38", "000", "§9 Q5 (also 003 §9 Q5)", "05",
         "1. 模型裁剪：去除不必要的层和参数，减小模型尺寸，加快推理速度",
         "Only structured pruning (removing whole layers, heads or neurons) makes a model smaller and "
         "faster. Zeroing individual weights (torch.nn.utils.prune) keeps every dense tensor: the saved "
         "model does not shrink and a dense matmul does not get faster.")
def _e38():
    import io

    import torch.nn as nn
    import torch.nn.utils.prune as prune

    def nbytes(module):
        buf = io.BytesIO()
        torch.save(module.state_dict(), buf)
        return buf.tell()
    with seeded(0):
        lin = nn.Linear(256, 256)
        dense = nbytes(lin)
        prune.l1_unstructured(lin, "weight", amount=0.5)
        masked = nbytes(lin)                       # weight_orig + weight_mask
        prune.remove(lin, "weight")
        zeros = (lin.weight == 0).float().mean().item()
        after = nbytes(lin)
        small = nbytes(nn.Linear(256, 128))        # structured: half the output neurons removed
    assert masked > dense and abs(after - dense) < 64 and small < 0.6 * dense
    return (f"Linear(256,256): {dense / 1e3:.0f} kB; 50% unstructured pruning: {masked / 1e3:.0f} kB with "
            f"its mask, {after / 1e3:.0f} kB after prune.remove ({zeros:.0%} zeros, same dense shape); "
            f"removing half the neurons (structured): {small / 1e3:.0f} kB")


@erratum("E36", "004", "§7.3", "01",
         "Universal Language Model Fine-tuning for Text Classification：提出微调BERT模型，用于文本分类任务",
         "ULMFiT (Howard and Ruder, January 2018) fine-tunes an AWD-LSTM language model; it appeared nine "
         "months before BERT and does not use BERT.")
def _e36():
    ulm = arxiv_month(ARXIV["ULMFiT (Howard & Ruder)"])
    bert = arxiv_month(ARXIV["BERT (Devlin et al.)"])
    assert ulm < bert
    return f"ULMFiT: arXiv 1801.06146 = {ulm}; BERT: arXiv 1810.04805 = {bert} (later)"


@erratum("E25", "001", "§3.2.1", "03",
         "5. **重复训练**:重复上述步骤,对训练语料中的所有序列进行一次完整的遍历,即完成一个epoch。"
         "通常需要训练数百个epoch,以充分学习语料中的知识。",
         "GPT-scale pre-training sees most of its data less than once: GPT-3 trained on 300B tokens drawn "
         "from a ~499B-token mix (Common Crawl 0.44 epochs, Wikipedia 3.4). The compute 6*N*D for 300B "
         "tokens already matches the paper's 3.14e23 FLOPs; hundreds of epochs would need hundreds of "
         "times more compute.")
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


@erratum("E19", "000", "§5.2", "03",
         "下面我们以情感分析任务为例，给出使用Transformers库对GPT-3.5模型进行微调的PyTorch代码实现。 … "
         "tokenizer = GPT2Tokenizer.from_pretrained('gpt2')",
         "The code loads GPT-2 small ('gpt2', 124M parameters) and its tokenizer, not GPT-3.5, whose "
         "weights are not public; GPT-3.5 also uses a different tokenizer (cl100k_base).")
def _e19():
    from .errata import gpt2_tok
    from .tokenizer import tiktoken_encoding
    sizes = _hf_sizes()
    s = "这部电影非常好看"
    n2, n35 = len(gpt2_tok()(s)["input_ids"]), len(tiktoken_encoding("cl100k_base").encode(s))
    assert sizes["GPT-2 small"] < 0.2e9 and n2 != n35
    return (f"'gpt2' = GPT-2 small, {sizes['GPT-2 small'] / 1e6:.1f}M params (GPT-3: "
            f"{sizes['GPT-3 175B'] / 1e9:.0f}B); 「{s}」 is {n2} GPT-2 tokens but {n35} cl100k_base "
            f"(GPT-3.5) tokens")


@erratum("E20", "002", "§5.2", "03",
         "model = GPT2ForCausalLM.from_pretrained('gpt2-medium') … "
         "以上就是使用PyTorch对GPT-3.5进行文本生成任务微调的完整代码实现。",
         "'gpt2-medium' is GPT-2 medium (355M parameters), not GPT-3.5; GPT-3.5's weights were never "
         "released, so no local fine-tuning code can load it.")
def _e20():
    sizes = _hf_sizes()
    ratio = sizes["GPT-3 175B"] / sizes["GPT-2 medium"]
    assert ratio > 400
    return (f"gpt2-medium computed from its configuration: {sizes['GPT-2 medium'] / 1e6:.0f}M parameters, "
            f"{ratio:.0f}x fewer than GPT-3's {sizes['GPT-3 175B'] / 1e9:.0f}B")


@erratum("E39", "003", "§3.4, §6.4", "04",
         "**视觉理解**：图像分类、目标检测、图像生成等。 … "
         "在智慧城市治理中，GPT-3的图像理解、智能调度、应急指挥等应用",
         "GPT-3 is a text-only model: its only input is a sequence of token ids. Image input came later, "
         "with separate vision-language models (e.g. CLIP) and GPT-4's vision version; GPT-3-style "
         "applications work on text only.")
def _e39():
    import inspect

    from transformers import CLIPModel, GPT2LMHeadModel
    gpt = set(inspect.signature(GPT2LMHeadModel.forward).parameters)
    clip = set(inspect.signature(CLIPModel.forward).parameters)
    vision = sorted(p for p in gpt if "pixel" in p or "image" in p)
    assert not vision and "pixel_values" in clip and "input_ids" in gpt
    return (f"inputs a GPT-2/GPT-3-style model accepts that carry images: {vision} (it reads input_ids); "
            f"a vision-language model such as CLIP takes pixel_values")


@erratum("E43", "000", "§7.1", "01",
         "《Natural Language Processing with Transformers》书籍：GPT-3.5模型的原作者所著",
         "The book is by Hugging Face engineers (Tunstall, von Werra, Wolf) about their transformers "
         "library, as documents 002 and 003 say (Transformers库的作者所著); GPT-3.5 is OpenAI's.")
def _e43():
    from importlib.metadata import metadata
    hf = metadata("transformers")["Author"].split(" (")[0]
    oa = (metadata("tiktoken").get("Author-email") or "").split("@")[-1]
    assert "Hugging Face" in hf and oa == "openai.com"
    return (f"package metadata: transformers is by '{hf}'; OpenAI's own tokenizer library tiktoken is "
            f"by @{oa}: two different organisations")
