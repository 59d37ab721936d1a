"""Export the GPT to ONNX, quantise the graph to int8 with onnxruntime, and run it with onnxruntime.

Two graphs:
  export(model, path)              idx (B, T) -> logits (B, T, V): one forward pass, no cache
  export(model, path, cache=True)  idx (B, T), past_{i}_key/value (B, nh, P, hs) for every layer i
                                   -> logits, present_{i}_key/value (B, nh, P+T, hs): the KV cache
                                   as inputs and outputs, as Hugging Face Optimum exports decoders
quantize_int8(src, dst)    onnxruntime.quantization.quantize_dynamic: MatMul weights and the
                           embedding tables (Gather) stored as int8, activations quantised at run time
OnnxGPT(path, config)      the cached graph behind the GPT's interface, so gptbook.generate.generate,
                           bench.perplexity and serve.create_app run on onnxruntime unchanged
backend(model, kind, dir)  the model to serve for `python -m gptbook serve --backend KIND`
"""
import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model import GPT, IGNORE_INDEX, GPTOutput, count_params

BACKENDS = ("torch", "onnx", "onnx-int8")   # what `python -m gptbook serve --backend` accepts
# ONNX opset 23 has an Attention operator: the exporter maps scaled_dot_product_attention onto it,
# and onnxruntime runs it as one fused kernel instead of MatMul, Where, Softmax, MatMul (opset 18
# graphs were about 10-15 % slower on the chapter's CPU)
OPSET = 23


class LogitsOnly(nn.Module):
    """idx (B, T) -> logits (B, T, V): the part of GPT.forward the plain graph holds (no cache)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx):
        return self.model(idx).logits


class WithCache(nn.Module):
    """(idx (B, T), past [(k, v)] * n_layer) -> (logits, presents): GPT.forward with its KV cache.
    An empty past (P = 0) is the prompt's first pass; every later step feeds one token."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx, past):
        out = self.model(idx, past_key_values=past)
        return out.logits, out.past_key_values


def cache_names(n_layer: int, prefix: str) -> list:
    """["{prefix}_0_key", "{prefix}_0_value", "{prefix}_1_key", ...]: one name per cache tensor."""
    return [f"{prefix}_{i}_{kv}" for i in range(n_layer) for kv in ("key", "value")]


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Library logging below ERROR, the exporter's warnings and printed steps, silenced. (The model
    needs nothing: GPT.forward leaves out its token-value check while torch.export traces it.)"""
    logs = [logging.getLogger(n) for n in loggers]
    levels = [lg.level for lg in logs]
    try:
        for lg in logs:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            # torch-internal deprecation inside the exporter (not our code)
            warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec", category=FutureWarning)
            # dynamic axes shared by several inputs (the batch of idx and of every cache tensor)
            warnings.filterwarnings("ignore", message=r".*axis name: .* will not be used", category=UserWarning)
            with contextlib.redirect_stdout(io.StringIO()):   # the exporter prints its steps
                yield
    finally:
        for lg, lv in zip(logs, levels):
            lg.setLevel(lv)


def _quiet_export():
    return _quiet("torch.onnx", "torch.export", "torch.fx")


def save_single_file(path) -> Path:
    """Rewrite an ONNX model as one file without the exporter's per-node metadata (source stack
    traces with file paths): the file is then the weights plus the graph, the artefact one ships,
    and its size no longer depends on where the code lives. Removes an external `.data` file."""
    import onnx as onnx_pkg
    path = Path(path)
    proto = onnx_pkg.load(str(path), load_external_data=True)
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for data in path.parent.glob(path.name + ".data"):
        data.unlink()
    onnx_pkg.save(proto, str(path))
    return path


def export(model: nn.Module, path, example_len: int = 16, cache: bool = False) -> Path:
    """Write model's forward as one ONNX file (dynamo exporter) with dynamic batch and sequence
    axes; cache=True adds the KV cache (see the module's docstring), with a dynamic past length."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    cfg = model.config
    batch = torch.export.Dim("batch", max=1024)
    seq = torch.export.Dim("seq", max=cfg.block_size)
    if not cache:
        example = (torch.zeros(2, min(example_len, cfg.block_size), dtype=torch.long),)
        module, dims = LogitsOnly(model), {"idx": {0: batch, 1: seq}}
        inputs, outputs = ["idx"], ["logits"]
    else:
        hs = cfg.n_embd // cfg.n_head
        T, P = 3, 5    # example lengths: different, so that the exporter keeps them apart
        past = [(torch.zeros(2, cfg.n_head, P, hs), torch.zeros(2, cfg.n_head, P, hs))
                for _ in range(cfg.n_layer)]
        example = (torch.zeros(2, T, dtype=torch.long), past)
        past_len = torch.export.Dim("past", min=0, max=cfg.block_size)
        axes = {0: batch, 2: past_len}
        module = WithCache(model)
        dims = {"idx": {0: batch, 1: seq}, "past": [(axes, axes) for _ in range(cfg.n_layer)]}
        inputs = ["idx"] + cache_names(cfg.n_layer, "past")
        outputs = ["logits"] + cache_names(cfg.n_layer, "present")
    with _quiet_export():
        torch.onnx.export(module.eval(), example, str(path), dynamo=True, dynamic_shapes=dims,
                          opset_version=OPSET, input_names=inputs, output_names=outputs, verbose=False)
    return save_single_file(path)


def quantize_int8(src, dst, int8_head: bool = True) -> Path:
    """onnxruntime's dynamic int8 quantisation of an exported graph: every MatMul with a weight
    (int8 per output column, MatMulInteger on int8 activations quantised per call) and the token and
    position embedding tables (Gather on uint8 rows, dequantised after the lookup).

    The LM head shares the token table. quantize_dynamic keeps one (uint8) copy of it and gives the
    head the table dequantised to fp32, so the head (a third of a small GPT's work) would stay fp32;
    int8_head=True rewrites it as an int8 product on the same table (int8_lm_head)."""
    import onnx as onnx_pkg
    from onnxruntime.quantization import QuantType, quantize_dynamic
    dst = Path(dst)
    with _quiet("root"):   # "Please consider to run pre-processing": shape inference, not needed here
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul", "Gather"],
                         weight_type=QuantType.QInt8, per_channel=True)
    if int8_head:
        proto = onnx_pkg.load(str(dst))
        int8_lm_head(proto)
        onnx_pkg.save(proto, str(dst))
    return save_single_file(dst)


def int8_lm_head(proto) -> bool:
    """Rewrite logits = x @ Transpose(DequantizeLinear(W_q, s, zp)) as the int8 product
    DynamicQuantizeLinear(x) -> MatMulInteger(x_q, Transpose(W_q)) -> float * (s_x * s), reading the
    uint8 table W_q the embedding lookup uses (onnxruntime folds the constant Transpose when the
    session loads). Changes `proto` in place; False when the graph has no such head."""
    from onnx import TensorProto, helper
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name for i in g.initializer}
    head = next((n for n in g.node if n.op_type == "MatMul" and "logits" in n.output), None)
    tr = producer.get(head.input[1]) if head is not None else None
    dq = producer.get(tr.input[0]) if tr is not None and tr.op_type == "Transpose" else None
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
        return False
    x, (w_q, w_s, w_zp) = head.input[0], dq.input
    new = [
        helper.make_node("DynamicQuantizeLinear", [x], ["head_x_q", "head_x_scale", "head_x_zp"]),
        helper.make_node("Transpose", [w_q], ["head_w_q_t"], perm=[1, 0]),
        helper.make_node("MatMulInteger", ["head_x_q", "head_w_q_t", "head_x_zp", w_zp], ["head_acc"]),
        helper.make_node("Cast", ["head_acc"], ["head_acc_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["head_x_scale", w_s], ["head_scale"]),
        helper.make_node("Mul", ["head_acc_f", "head_scale"], list(head.output)),
    ]
    for n in (head, tr):
        g.node.remove(n)
    if not any(dq.output[0] in n.input for n in g.node):
        g.node.remove(dq)
    g.node.extend(new)   # at the end: their inputs are made earlier, and only the output reads logits
    return True


def session(path, threads: int = 0):
    """An onnxruntime CPU InferenceSession (threads=0: onnxruntime's default)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # onnxruntime's worker threads spin after each run by default; on a small CPU that steals the
    # cores from whatever runs next (PyTorch, in the chapter's side-by-side timings)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _empty_past(sess, batch: int) -> dict:
    """Zero-length cache inputs (P = 0) for every past_* input of a cached graph."""
    feed = {}
    for i in sess.get_inputs():
        if i.name.startswith("past_"):
            _, heads, _, hs = i.shape
            feed[i.name] = np.zeros((batch, heads, 0, hs), dtype=np.float32)
    return feed


def ort_logits(sess, idx: torch.Tensor) -> torch.Tensor:
    """Run an ONNX graph (plain or cached, with an empty cache) on idx (B, T) int64 -> logits
    (B, T, V) float32 tensor."""
    if idx.dim() != 2:
        raise ValueError(f"idx must have shape (B, T), got {tuple(idx.shape)}")
    feed = {"idx": idx.cpu().long().numpy(), **_empty_past(sess, idx.size(0))}
    return torch.from_numpy(sess.run(["logits"], feed)[0])


def weight_bytes(path) -> int:
    """Bytes of the weights (initializers) an ONNX file holds, wherever they are stored."""
    import onnx as onnx_pkg
    from onnx import numpy_helper
    graph = onnx_pkg.load(str(path), load_external_data=True).graph
    return sum(numpy_helper.to_array(t).nbytes for t in graph.initializer)


def op_counts(path) -> dict:
    """{operator type: how many nodes} of an ONNX file's graph (what an export or a quantiser made)."""
    import onnx as onnx_pkg
    from collections import Counter
    return dict(Counter(n.op_type for n in onnx_pkg.load(str(path), load_external_data=False).graph.node))


def file_bytes(path) -> int:
    """Size of the ONNX file(s) on disk: the model file plus an external `.data` file if any."""
    path = Path(path)
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + ".data")) if p.exists())


class OnnxGPT(nn.Module):
    """A cached ONNX graph (export(..., cache=True), fp32 or int8) behind the GPT's interface:
    model(idx, targets, past_key_values) -> GPTOutput, .config, .num_params(), .deadline(at), and
    forward pre-hooks. gptbook.generate.generate, bench.perplexity (train.stream_loss) and
    serve.create_app use it as they use a GPT; the cache tensors travel as CPU tensors.

    No attention mask: prompts in one batch must have one length (a mask of all ones is accepted)."""

    _check_input = GPT._check_input   # the GPT's own input checks and messages
    deadline = GPT.deadline           # the same per-thread deadline (a forward pre-hook)

    def __init__(self, path, config, threads: int = 0, name: str = "onnx"):
        super().__init__()
        self.config, self.path, self.name = config, Path(path), name
        self.session = session(path, threads)
        names = [i.name for i in self.session.get_inputs()]
        self.past_names = cache_names(config.n_layer, "past")
        if names != ["idx"] + self.past_names:
            raise ValueError(f"{path} has inputs {names}: OnnxGPT needs a graph with a KV cache "
                             f"(onnx.export(model, path, cache=True))")
        # an empty parameter: code that asks a model for its device (next(model.parameters()))
        # finds the CPU, where onnxruntime runs
        self.device_probe = nn.Parameter(torch.empty(0), requires_grad=False)
        self.eval()

    def num_params(self, include_embeddings: bool = True) -> int:
        """The exported GPT's parameter count (from its configuration; int8 or fp32 alike)."""
        return count_params(self.config, include_embeddings)

    def forward(self, idx, targets=None, past_key_values=None, attention_mask=None,
                position_ids=None) -> GPTOutput:
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        self._check_input(idx, past_len)
        if position_ids is not None:
            raise ValueError("the ONNX graph numbers positions itself; position_ids are not supported")
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("the ONNX graph has no attention mask: batch prompts of one length only")
        feed = {"idx": idx.detach().cpu().long().numpy()}
        if past_key_values is None:
            feed.update(_empty_past(self.session, idx.size(0)))
        else:
            for name, t in zip(self.past_names, (t for kv in past_key_values for t in kv)):
                feed[name] = t.detach().cpu().numpy()
        outs = self.session.run(None, feed)
        logits = torch.from_numpy(outs[0])
        presents = tuple((torch.from_numpy(outs[1 + 2 * i]), torch.from_numpy(outs[2 + 2 * i]))
                         for i in range(self.config.n_layer))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return GPTOutput(logits, loss, presents, None)

    def extra_repr(self):
        return f"{self.name}: {self.path.name}"


def backend(model: nn.Module, kind: str, directory, threads: int = 0) -> nn.Module:
    """The model to generate with for `kind` in BACKENDS: "torch" is `model` itself; "onnx" and
    "onnx-int8" export it with its KV cache into `directory` (int8: quantize_int8) and return OnnxGPT."""
    if kind not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {kind!r}")
    if kind == "torch":
        return model
    directory = Path(directory)
    path = export(model, directory / "gpt-kv.onnx", cache=True)
    if kind == "onnx-int8":
        path = quantize_int8(path, directory / "gpt-kv-int8.onnx")
    return OnnxGPT(path, model.config, threads, name=kind)
