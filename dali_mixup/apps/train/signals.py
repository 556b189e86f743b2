"""Stopping on a signal: SIGINT (Ctrl-C) or SIGTERM asks the run to stop after the current step and save a
checkpoint that resumes mid-epoch; all processes stop at the same step."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Optional

from .processes import Context, all_sum


class Interrupted(Exception):
    """The run stopped on SIGINT/SIGTERM after saving a checkpoint; the message says how to resume. The command
    line exits with 128 + the signal's number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + signum


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM ask the run to stop after the current step and save a checkpoint; a second
    signal stops it at once (KeyboardInterrupt). Installed only in the main thread; ``restore`` puts the previous
    handlers back. Under torchrun every rank gets the signal; ``agreed`` makes all ranks stop at the same step."""

    POLL_STEPS = 20  # several processes: they agree on stopping every this many steps (one all_reduce)

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step to save a checkpoint (send it again to "
              "stop at once, without saving)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def agreed(self, ctx: Context, step: Optional[int] = None) -> bool:
        """Whether to stop now: this process's request alone, or (several processes) any rank's, checked every
        ``POLL_STEPS`` steps and at epoch ends (``step`` None), so all ranks stop together."""
        if ctx.world == 1:
            return self.signum is not None
        if step is not None and step % self.POLL_STEPS:
            return False
        flag = all_sum([float(self.signum if self.signum is not None else 0)], ctx.device)[0]
        if flag and self.signum is None:
            self.signum = signal.SIGTERM
        return bool(flag)

