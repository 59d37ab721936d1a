"""Export the GPT's forward pass (token ids -> logits) to ONNX and run it with onnxruntime."""
import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
import torch.nn as nn


class LogitsOnly(nn.Module):
    """idx (B, T) -> logits (B, T, V): the part of GPT.forward an ONNX graph holds (no cache)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx):
        return self.model(idx).logits


@contextlib.contextmanager
def _quiet_export(model):
    """GPT._check_input looks at token VALUES (idx.min() < 0), which torch.export cannot trace;
    the exported graph keeps only the math, so the check is switched off while tracing."""
    model._check_input = lambda idx, past_len: None
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch.fx")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            # torch-internal deprecation inside the exporter (not our code)
            warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec", category=FutureWarning)
            with contextlib.redirect_stdout(io.StringIO()):   # the exporter prints its steps
                yield
    finally:
        del model._check_input
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def export(model: nn.Module, path, example_len: int = 16) -> Path:
    """Write model's forward as ONNX (dynamo exporter) with dynamic batch and sequence axes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    block = model.config.block_size
    example = torch.zeros(2, min(example_len, block), dtype=torch.long)
    dims = {"idx": {0: torch.export.Dim("batch", max=1024), 1: torch.export.Dim("seq", max=block)}}
    with _quiet_export(model):
        torch.onnx.export(LogitsOnly(model).eval(), (example,), str(path), dynamo=True,
                          dynamic_shapes=dims, input_names=["idx"], output_names=["logits"],
                          verbose=False)
    return path


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


def ort_logits(sess, idx: torch.Tensor) -> torch.Tensor:
    """Run the ONNX graph. idx: (B, T) int64 -> logits (B, T, V) float32 tensor."""
    if idx.dim() != 2:
        raise ValueError(f"idx must have shape (B, T), got {tuple(idx.shape)}")
    return torch.from_numpy(sess.run(["logits"], {"idx": idx.cpu().long().numpy()})[0])


def weight_bytes(path) -> int:
    """Bytes of the weights (initializers) an ONNX file holds, wherever they are stored.

    The graph part of the file also carries exporter metadata (source stack traces with file
    paths), so the file's own size changes with where the code lives; the weights do not."""
    import onnx as onnx_pkg
    from onnx import numpy_helper
    graph = onnx_pkg.load(str(path), load_external_data=True).graph
    return sum(numpy_helper.to_array(t).nbytes for t in graph.initializer)
