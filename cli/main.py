"""``python -m modalseg <command>``: the parser of every command and the exit codes."""
import argparse
import sys
from typing import List, Optional

from . import evaluate, listing, segment

# Exit codes: 0 done, 1 the run failed (bad input, failed model: the message says why), 2 wrong
# command-line usage (argparse's own), 130 cancelled with Ctrl-C (the shell's code for SIGINT).
FAILED, CANCELLED = 1, 130
COMMANDS = (segment, listing, evaluate)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m modalseg",
        description="ModalSeg without QGIS: multimodal semantic segmentation of remote-sensing rasters with "
                    "the plugin's model packages, on this machine or on a Dask cluster.")
    commands = top.add_subparsers(dest="command", required=True, metavar="command")
    for command in COMMANDS:
        command.add_parser(commands)
    return top


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    from ..engine import Cancelled, EngineError, PackageError  # after parsing: --help needs no numpy or GDAL

    try:
        return args.run(args)
    except Cancelled:
        print("modalseg: cancelled; no output was written", file=sys.stderr)
        return CANCELLED
    except (EngineError, PackageError) as exc:
        message = str(exc)
        print(f"modalseg: {message[0].upper()}{message[1:]}", file=sys.stderr)
        return FAILED
