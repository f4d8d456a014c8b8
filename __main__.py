"""``unclip`` and ``python -m unclip_nodes``: the command line, started so that a Ctrl-C while
torch and the pack still import ends quietly (exit 130) instead of in a traceback."""
import signal
import sys


def main(argv=None) -> int:
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
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
