"""Stopping what a test started: one way for every child process."""

import os
import signal
import subprocess


def stop_process(proc, timeout=30, group=False):
    """SIGTERM, up to `timeout` seconds for a clean exit, then SIGKILL. `group`: signal the
    process group (a process started with start_new_session=True and its children). Returns
    the exit status; a process that has already exited is only reaped."""
    if proc is None:
        return None

    def send(sig):
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass

    if proc.poll() is None:
        send(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        return proc.wait()
