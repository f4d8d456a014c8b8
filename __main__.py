"""``unclip`` and ``python -m unclip_nodes``: the command line, started so that a Ctrl-C while
torch and the pack still import ends quietly (exit 130) instead of in a traceback."""
import sys


def main(argv=None) -> int:
    try:
        from .graph.cli import main as cli_main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
