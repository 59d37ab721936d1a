"""ipywidgets front ends for chapter 04 (a chat box, a sampling panel). Headless (papermill, nbval,
a script) they print a fixed demonstration instead, so stored notebook outputs stay deterministic.

interactive=None (the chapters' default) means: widgets when a person runs the notebook in Jupyter,
a fixed printout under papermill, nbval or a script. A kernel that JupyterLab or Notebook started
has JPY_SESSION_NAME in its environment (jupyter_server sets it to the notebook's path); papermill
and nbval start kernels without it. GPTBOOK_INTERACTIVE=1 or 0 overrides the guess; an explicit
True/False argument overrides both.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence


def use_widgets(interactive: Optional[bool] = None) -> bool:
    """Whether to build widgets: the explicit flag, else GPTBOOK_INTERACTIVE, else whether a Jupyter
    front end started this kernel (JPY_SESSION_NAME set)."""
    if interactive is None:
        flag = os.environ.get("GPTBOOK_INTERACTIVE", "").strip().lower()
        if flag:
            interactive = flag in ("1", "true", "yes")
        else:
            interactive = bool(os.environ.get("JPY_SESSION_NAME"))
    if interactive:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            return False
    return bool(interactive)


def chat_box(respond: Callable[[str], str], demo: Sequence[str] = (), interactive: Optional[bool] = None,
             title: str = "Ask the assistant"):
    """A text box + send button that appends `respond(question)` to a transcript.
    Headless: prints the transcript of the `demo` questions and returns it as a list of (q, a)."""
    if not use_widgets(interactive):
        log = [(q, respond(q)) for q in demo]
        for q, a in log:
            print(f"user: {q}\nbot:  {a}\n")
        return log
    import ipywidgets as w
    box = w.Text(placeholder="type a question and press Enter", continuous_update=False,
                 layout=w.Layout(width="70%"))
    send = w.Button(description="Send")
    out = w.Output(layout=w.Layout(border="1px solid #ccc", min_height="120px"))

    def on_send(_=None):
        q = box.value.strip()
        if not q:
            return
        with out:
            print(f"user: {q}\nbot:  {respond(q)}\n")
        box.value = ""
    send.on_click(on_send)
    box.observe(on_send, names="value")       # fires on Enter (continuous_update=False)
    return w.VBox([w.HTML(f"<b>{title}</b>"), w.HBox([box, send]), out])


def sampling_panel(sample: Callable[..., str], prompt: str = "", defaults: Optional[dict] = None,
                   interactive: Optional[bool] = None):
    """Sliders for temperature, top-k, top-p and repetition penalty; `sample(prompt, **settings)`
    runs on each change. Headless: prints one sample with `defaults` and returns it."""
    d = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "repetition_penalty": 1.0, **(defaults or {})}
    if not use_widgets(interactive):
        text = sample(prompt, **d)
        print(f"settings: {d}\n---\n{text}")
        return text
    import ipywidgets as w
    controls = {
        "prompt": w.Text(value=prompt, description="prompt"),
        "temperature": w.FloatSlider(value=d["temperature"], min=0.0, max=2.0, step=0.1),
        "top_k": w.IntSlider(value=d["top_k"] or 0, min=0, max=200, description="top_k (0=off)"),
        "top_p": w.FloatSlider(value=d["top_p"] or 1.0, min=0.05, max=1.0, step=0.05),
        "repetition_penalty": w.FloatSlider(value=d["repetition_penalty"], min=1.0, max=2.0, step=0.05),
    }

    def show(prompt, temperature, top_k, top_p, repetition_penalty):
        print(sample(prompt, temperature=temperature, top_k=top_k or None, top_p=top_p,
                     repetition_penalty=repetition_penalty))
    return w.interactive(show, {"manual": True, "manual_name": "Generate"}, **controls)
