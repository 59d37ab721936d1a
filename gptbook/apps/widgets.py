"""ipywidgets front ends for chapter 04 (a chat box, a sampling panel). Headless (papermill, nbval,
a script) they print a fixed demonstration instead, so stored notebook outputs stay deterministic.

interactive=None (the chapters' default) means: widgets when a person runs the notebook in Jupyter,
a fixed printout under papermill, nbval or a script. A kernel that JupyterLab or Notebook started
has JPY_SESSION_NAME in its environment (jupyter_server sets it to the notebook's path); papermill
and nbval start kernels without it. GPTBOOK_INTERACTIVE=1 or 0 overrides the guess; an explicit
True/False argument overrides both.

Callbacks never print. A `print` inside `with output_widget:` is redirected by the *front end*
(the kernel only tells it which message to capture), and JupyterLab sends whatever it does not
capture in time to its log console (the orange badge). So the widgets run the user's function with
stdout, stderr and warnings captured in the kernel, and put the text into the widget's state
(`Output.append_stdout`, `HTML.value`), which reaches the page as a widget update, never as output.
"""
from __future__ import annotations

import contextlib
import html
import io
import os
import re
import traceback
import warnings
from typing import Callable, Optional, Sequence

ENGLISH_ONLY = ("this assistant answers English questions only: it searches the English FAQ, so a "
                "question in Chinese (or any other language) is handed to a human")
_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff00-\uffef]")
DESCRIPTION = {"description_width": "initial"}     # a slider's label at its full width, never cut


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


def has_cjk(text: str) -> bool:
    """Whether `text` holds Chinese, Japanese or Korean characters (or full-width punctuation)."""
    return bool(_CJK.search(text))


def quietly(fn: Callable, *args, **kwargs):
    """(fn(*args, **kwargs), captured) with everything fn prints or warns captured as text, never
    reaching sys.stdout/sys.stderr; an exception becomes (None, its traceback) instead of escaping a
    widget callback (where Jupyter would log it to the console)."""
    buf = io.StringIO()
    result = None
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - shown in the widget, not raised into the event loop
            buf.write(traceback.format_exc())
    for wm in caught:
        buf.write(warnings.formatwarning(wm.message, wm.category, wm.filename, wm.lineno, None))
    return result, buf.getvalue()


def chat_box(respond: Callable[[str], str], demo: Sequence[str] = (), interactive: Optional[bool] = None,
             title: str = "Ask the assistant", english_only: bool = False):
    """A text box + send button that appends `respond(question)` to a transcript.
    Headless: prints the transcript of the `demo` questions and returns it as a list of (q, a).
    english_only=True says so under the title, and adds the notice to the answer of a question
    written in Chinese (or Japanese, Korean) characters."""
    def answer(q):
        a = respond(q)
        return f"{a}\n      ({ENGLISH_ONLY})" if english_only and has_cjk(q) else a

    if not use_widgets(interactive):
        log = [(q, answer(q)) for q in demo]
        for q, a in log:
            print(f"user: {q}\nbot:  {a}\n")
        return log
    import ipywidgets as w
    box = w.Text(placeholder="type a question and press Enter", continuous_update=False,
                 layout=w.Layout(width="70%"))
    send = w.Button(description="Send")
    out = w.Output(layout=w.Layout(border="1px solid #ccc", min_height="120px"))
    note = (f' <span style="color:#666">({html.escape(ENGLISH_ONLY)})</span>' if english_only else "")

    def on_send(_=None):
        q = box.value.strip()
        if not q:
            return
        box.value = ""                           # fires on_send again, which returns at once
        a, noise = quietly(answer, q)
        out.append_stdout(f"user: {q}\nbot:  {a}\n\n")
        if noise:
            out.append_stderr(noise)
    send.on_click(on_send)
    box.observe(on_send, names="value")       # fires on Enter (continuous_update=False)
    return w.VBox([w.HTML(f"<b>{html.escape(title)}</b>{note}"), w.HBox([box, send]), out])


def render_sample(prompt: str, continuation: str) -> str:
    """HTML of a sample: the prompt in bold blue with each newline drawn as ↵ (and kept), then the
    model's continuation in plain text."""
    shown = html.escape(prompt).replace("\n", '<span style="color:#888">↵</span>\n')
    return ('<pre style="white-space:pre-wrap;margin:0;line-height:1.3">'
            f'<b style="color:#1a5fb4">{shown}</b>{html.escape(continuation)}</pre>')


def sampling_panel(sample: Callable[..., str], prompt: str = "", defaults: Optional[dict] = None,
                   interactive: Optional[bool] = None):
    """Sliders for temperature, top-k, top-p and repetition penalty and a Generate button that shows
    the prompt (bold, newlines drawn) followed by `sample(prompt, **settings)`, its continuation.
    Headless: prints one sample with `defaults` after its prompt and returns the continuation."""
    d = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "repetition_penalty": 1.0, **(defaults or {})}
    if not use_widgets(interactive):
        text = sample(prompt, **d)
        print(f"settings: {d}\nprompt: {prompt!r}\n---\n{prompt}{text}")
        return text
    import ipywidgets as w
    wide = w.Layout(width="480px")
    controls = {
        "prompt": w.Textarea(value=prompt, description="prompt", rows=2, style=DESCRIPTION, layout=wide),
        "temperature": w.FloatSlider(value=d["temperature"], min=0.0, max=2.0, step=0.1,
                                     description="temperature", style=DESCRIPTION, layout=wide),
        "top_k": w.IntSlider(value=d["top_k"] or 0, min=0, max=200, description="top_k (0 = off)",
                             style=DESCRIPTION, layout=wide),
        "top_p": w.FloatSlider(value=d["top_p"] or 1.0, min=0.05, max=1.0, step=0.05,
                               description="top_p", style=DESCRIPTION, layout=wide),
        "repetition_penalty": w.FloatSlider(value=d["repetition_penalty"], min=1.0, max=2.0, step=0.05,
                                            description="repetition_penalty", style=DESCRIPTION,
                                            layout=wide),
    }
    button = w.Button(description="Generate", button_style="primary")
    shown = w.HTML('<i style="color:#666">press Generate: your prompt in <b style="color:#1a5fb4">'
                   'bold blue</b> (↵ marks a newline), then the model\'s continuation</i>')

    def generate(_=None):
        p = controls["prompt"].value
        settings = dict(temperature=controls["temperature"].value, top_k=controls["top_k"].value or None,
                        top_p=controls["top_p"].value,
                        repetition_penalty=controls["repetition_penalty"].value)
        text, noise = quietly(sample, p, **settings)
        shown.value = render_sample(p, text if text is not None else "") + (
            f'<pre style="color:#a51d2d;margin:0">{html.escape(noise)}</pre>' if noise else "")
    button.on_click(generate)
    panel = w.VBox([*controls.values(), button, shown])
    panel.controls, panel.button, panel.output = controls, button, shown   # for tests and readers
    return panel
