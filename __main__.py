"""``unclip`` and ``python -m unclip_nodes``: the command line, started so that a Ctrl-C while
torch and the pack still import ends quietly (exit 130) instead of in a traceback.

Inside a ComfyUI installation the pack is a folder, not an installed package: ``python
custom_nodes/unclip-nodes ARGS`` (ComfyUI's own Python) runs the same command line, and
``python custom_nodes/unclip-nodes tiny DIR`` (or ``tiny-kandinsky``, ``tiny-stable-unclip``)
writes a tiny random checkpoint, as ``python -m unclip_nodes.nodes.tiny DIR`` does where the
package is installed."""
import signal
import sys

TOOLS = {"tiny": "nodes.tiny", "tiny-kandinsky": "nodes.tiny_kandinsky",
         "tiny-stable-unclip": "nodes.tiny_stable_unclip"}
"""Commands that run one of the pack's own scripts (the tiny-checkpoint builders)."""


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in TOOLS:
        import importlib
        tool = importlib.import_module(f"{__package__ or 'unclip_nodes'}.{TOOLS[args[0]]}")
        return tool.main(args[1:])
    pressed = []

    def on_ctrl_c(signum, frame):
        pressed.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        from .graph.cli import main as cli_main
    except KeyboardInterrupt:
        pressed.append(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:  # also when a library's import swallowed the KeyboardInterrupt
        print("interrupted", file=sys.stderr)
        return 130
    try:
        try:
            return cli_main(argv)
        finally:  # the command is over: a Ctrl-C from now on must not end the process by the
            _quiet()  # signal (Python re-raises an uncaught one as a death by SIGINT)
    except KeyboardInterrupt:  # one that came before the line above took effect
        _quiet()
        print("interrupted", file=sys.stderr)
        return 130


def _quiet() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _as_package() -> None:
    """Run as ``python <pack folder>``: import the folder as the package ``unclip_nodes`` (its
    modules import one another relatively), then run its command line."""
    import importlib.util
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("unclip_nodes", os.path.join(here, "__init__.py"),
                                                  submodule_search_locations=[here])
    package = importlib.util.module_from_spec(spec)
    sys.modules["unclip_nodes"] = package
    spec.loader.exec_module(package)
    from unclip_nodes.__main__ import main as package_main
    sys.exit(package_main())


if __name__ == "__main__":
    if not __package__:
        _as_package()
    sys.exit(main())
