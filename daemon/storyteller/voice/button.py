"""The push button: one GPIO input line, debounced, calling back once per press.

    line = open_line("gpiochip0", 14)      # libgpiod v2 (the gpiod package), else sysfs
    button = Button(line, on_press)        # a thread polls it; button.close() ends it

The line is read every POLL_S; a press counts once the line has read "pressed" for
DEBOUNCE_S in a row (contact bounce is shorter), and the next one only after it has read
"released" as long. Polling costs a read of one value 50 times a second and works the same
on a gpiochip device and on /sys/class/gpio, which images without the character device have.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from storyteller.errors import StorytellerError

POLL_S = 0.02
DEBOUNCE_S = 0.05
SYSFS = Path("/sys/class/gpio")


class ButtonError(StorytellerError):
    """No such GPIO line, or it cannot be read."""


class Line(Protocol):
    def pressed(self) -> bool: ...

    def close(self) -> None: ...


class GpiodLine:
    """A line requested through libgpiod v2: input, pull-up, active low (a button to ground)."""

    def __init__(self, chip: str, offset: int) -> None:
        try:
            import gpiod  # type: ignore[import-untyped, import-not-found, unused-ignore]
            from gpiod.line import Bias, Direction, Value  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError:
            raise ButtonError("the GPIO button needs gpiod (pip install gpiod)") from None
        path = chip if chip.startswith("/") else f"/dev/{chip}"
        settings = gpiod.LineSettings(direction=Direction.INPUT, bias=Bias.PULL_UP, active_low=True)
        try:
            self._request: Any = gpiod.request_lines(path, consumer="storyteller", config={offset: settings})
        except (OSError, ValueError) as e:
            raise ButtonError(f"cannot request GPIO line {offset} of {path}: {e}") from None
        self._offset, self._active = offset, Value.ACTIVE

    def pressed(self) -> bool:
        try:
            return bool(self._request.get_value(self._offset) == self._active)
        except OSError as e:
            raise ButtonError(f"GPIO line {self._offset}: {e}") from None

    def close(self) -> None:
        self._request.release()


class SysfsLine:
    """/sys/class/gpio/gpioN (exported here when it is not yet), active low."""

    def __init__(self, number: int, root: Path = SYSFS) -> None:
        self._dir = root / f"gpio{number}"
        try:
            if not self._dir.is_dir():
                (root / "export").write_text(f"{number}\n")
            (self._dir / "direction").write_text("in\n")
            self._value = open(self._dir / "value", "rb", buffering=0)  # closed by close()
        except OSError as e:
            raise ButtonError(f"cannot use GPIO {number} through {root}: {e.strerror or e}") from None

    def pressed(self) -> bool:
        try:
            self._value.seek(0)
            return self._value.read(1) == b"0"
        except OSError as e:
            raise ButtonError(f"{self._dir}: {e.strerror or e}") from None

    def close(self) -> None:
        self._value.close()


def open_line(chip: str, offset: int, sysfs_number: int | None = None, sysfs_root: Path = SYSFS) -> Line:
    """The line through libgpiod when the chip device exists, else through sysfs (its global
    number: sysfs_number, default the chip's base + offset is not known here, so offset)."""
    path = Path(chip if chip.startswith("/") else f"/dev/{chip}")
    if path.exists():
        return GpiodLine(str(path), offset)
    if sysfs_root.is_dir():
        return SysfsLine(offset if sysfs_number is None else sysfs_number, sysfs_root)
    raise ButtonError(f"no GPIO here: neither {path} nor {sysfs_root}")


class Button:
    """Calls on_press() (in its own thread) once per debounced press of `line`."""

    def __init__(self, line: Line, on_press: Callable[[], None], poll_s: float = POLL_S,
                 debounce_s: float = DEBOUNCE_S, on_error: Callable[[Exception], None] | None = None) -> None:
        self._line, self._on_press, self._on_error = line, on_press, on_error
        self._poll, self._debounce = poll_s, debounce_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storyteller-button", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        state = False  # debounced: pressed or not
        since = time.monotonic()  # when the raw reading last differed from `state`
        try:
            while not self._stop.wait(self._poll):
                now = time.monotonic()
                if self._line.pressed() == state:
                    since = now
                elif now - since >= self._debounce:
                    state = not state
                    since = now
                    if state:
                        self._on_press()
        except ButtonError as e:
            if self._on_error is not None:
                self._on_error(e)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._line.close()
