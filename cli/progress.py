"""A progress bar on the terminal (stderr), or one line per tenth when stderr is not a terminal."""
import sys
from typing import TextIO

_WIDTH = 30


class ProgressBar:
    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self.live = stream.isatty()
        self.text = ""
        self.last_tenth = -1

    def __call__(self, fraction: float, text: str = "") -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        self.text = text or self.text
        if self.live:
            filled = round(fraction * _WIDTH)
            self.stream.write(f"\r[{'#' * filled}{'-' * (_WIDTH - filled)}] {100 * fraction:5.1f} % {self.text:<40}")
            self.stream.flush()
        elif int(fraction * 10) > self.last_tenth:  # a log file gets a line per tenth, not a line per tile
            self.last_tenth = int(fraction * 10)
            self.stream.write(f"{100 * fraction:5.1f} % {self.text}\n")

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
