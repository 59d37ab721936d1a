"""Deployment: measure what makes a GPT cheaper to run and serve it over HTTP.

The KV cache is not here: `gptbook.model.GPT.forward` takes and returns past keys/values and
`gptbook.generate.generate(use_cache=True)` uses them. This package only transforms and MEASURES:
  quantize  dynamic int8 Linear layers (weights int8 per channel, activations int8 per row), written
            out by hand and with torchao; the tied embedding reads the head's int8 table
  prune     global magnitude (L1) pruning with torch.nn.utils.prune, sparsity
  onnx      export to ONNX (with or without the KV cache), int8 with onnxruntime's quantiser, and
            OnnxGPT: the graph behind the GPT's interface (generate, perplexity, serve --backend)
  bench     timing, perplexity, memory, load tests
  serve     the FastAPI app (`python -m gptbook serve`)
"""
