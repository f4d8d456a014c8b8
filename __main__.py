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


if __name__ == "__main__":
    sys.exit(main())
