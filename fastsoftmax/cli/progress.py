"""A one-line progress report for a terminal: percent done, rows/s and GB/s."""

import time

# Redraw at most this often: fast enough to look live, rare enough to cost nothing.
REDRAW_SECONDS = 0.1


class Progress:
    """Redraws one status line with carriage returns; draws nothing when disabled.

    Parameters
    ----------
    label : str
        What is running, shown first on the line.
    total_rows : int
        Rows to process.
    bytes_per_row : int
        Bytes read plus bytes written per row, for the GB/s figure.
    stream : file
        Where to draw (stderr).
    enabled : bool
        Draw at all; callers pass ``stream.isatty() and not quiet``.
    """

    def __init__(self, label, total_rows, bytes_per_row, stream, enabled):
        self.label = label
        self.total_rows = total_rows
        self.bytes_per_row = bytes_per_row
        self.stream = stream
        self.enabled = enabled
        self._start = time.perf_counter()
        self._last_draw = -REDRAW_SECONDS
        self._width = 0

    def update(self, rows_done):
        """Record that `rows_done` rows are finished; redraw if it is time to."""
        now = time.perf_counter()
        if self.enabled and now - self._last_draw >= REDRAW_SECONDS:
            self._last_draw = now
            percent = 100.0 * rows_done / self.total_rows if self.total_rows else 100.0
            self._draw(f"{percent:5.1f}% {rows_done:,}/{self.total_rows:,} rows", rows_done, now)

    def finish(self, rows_done):
        """Replace the status line by a summary that stays on screen."""
        if self.enabled:
            self._draw(f"{rows_done:,} rows", rows_done, time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False

    def abandon(self):
        """End the status line so that an error message starts on a line of its own."""
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False

    def _draw(self, done, rows_done, now):
        elapsed = max(now - self._start, 1e-9)
        line = (
            f"{self.label}: {done} in {elapsed:.1f} s, "
            f"{rows_done / elapsed:,.0f} rows/s, "
            f"{rows_done * self.bytes_per_row / elapsed / 1e9:.2f} GB/s"
        )
        # Pad over the remains of a longer previous line.
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)
