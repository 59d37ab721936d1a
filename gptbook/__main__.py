"""`python -m gptbook COMMAND ...`: run chapters, fetch data, check the setup, grade, serve."""
import importlib
import sys

COMMANDS = {
    "run": ("gptbook.cli.run", "execute chapters headless with papermill"),
    "data": ("gptbook.cli.bundle", "fetch / verify the offline data bundle"),
    "doctor": ("gptbook.cli.doctor", "check this machine's setup and print fixes"),
    "pretrain": ("gptbook.cli.pretrain", "pre-train the book's GPT (one process, or data-parallel under torchrun)"),
    "exercises": ("gptbook.exercises.cli", "release or grade the exercise notebooks"),
    "serve": ("gptbook.deploy.serve", "serve the book's model over HTTP"),
    "compare": ("gptbook.cli.reference", "check a run of the book against the reference (exact outputs and bands)"),
    "bands": ("gptbook.cli.reference:main_measure", "measure the reference bands from runs on several seeds"),
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = "\n".join(f"  {k:10s} {v[1]}" for k, v in COMMANDS.items())
        msg = f"usage: python -m gptbook COMMAND [ARGS]\n\ncommands:\n{lines}"
        if argv and argv[0] not in ("-h", "--help"):
            sys.exit(f"unknown command {argv[0]!r}\n\n{msg}")
        print(msg)
        return 0
    module, _, func = COMMANDS[argv[0]][0].partition(":")
    from .data import SetupError
    try:
        return getattr(importlib.import_module(module), func or "main")(argv[1:])
    except SetupError as e:
        # a problem of this machine (cache folder, cached file, data source): its message is the
        # cause and the fix, so print that line, not a traceback into gptbook's code
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
