"""The one writer of what a user names as output (`lab report --csv/--html`, `lab gate
--markdown`; stdout is lab.cli's).

A user's path may be a new name, a regular file, a link, a folder, a character device
(/dev/null, /dev/stdout) or a pipe. A new name or a regular file is written beside and renamed
into place (a reader never sees half a report); a link is followed and its target written, the
link kept; a device, a pipe or a file reached through a descriptor link (/dev/stdout) is opened
and written, never renamed over: a rename would put a regular file where /dev/null was, or
discard what the shell's `>>` kept. Anything else is refused. Nothing is written inside a
stored run (a folder holding results.json or fingerprint.json, at any depth): a report written
over results.json would destroy what was measured. Every refusal and every OSError is one line
(OutputError: exit 2).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lab.core.errors import UsageError
from lab.store import folders as store
from lab.store.reader import RESULTS

RUN_FILES = (RESULTS, store.FINGERPRINT)  # a folder holding either is a stored run


class OutputError(UsageError):
    """An output that may not or cannot be written; the message is one line."""


def stored_run_around(path: Path) -> Path | None:
    """The stored run folder that `path` lies in, at any depth, or None."""
    for folder in Path(path).parents:
        if any(os.path.isfile(folder / name) for name in RUN_FILES):
            return folder
    return None


def _through_descriptor(text: str) -> bool:
    """Whether `text` reaches its file through a descriptor link (/dev/stdout, /dev/fd/N,
    /proc/self/fd/N): a file the shell opened for this process, to be written where the
    shell's descriptor points, not replaced."""
    path = os.path.abspath(text)
    for _ in range(40):  # the kernel's own bound on links followed
        parent = os.path.realpath(os.path.dirname(path))
        if parent == "/proc" or parent.startswith("/proc/"):
            return True
        path = os.path.join(parent, os.path.basename(path))
        if not os.path.islink(path):
            return False
        path = os.path.join(parent, os.readlink(path))
    return False


def _refuse_run(text: str, flag: str, real: Path) -> None:
    run = stored_run_around(real)
    if run is not None:
        shown = os.path.relpath(run)
        raise OutputError(f"{flag} {text}: that is inside the stored run "
                          f"{run if shown.startswith('..') else shown}; outputs are never "
                          f"written into a run folder")


def target(path, flag: str, *, folder_file: str | None = None) -> tuple[str, Path]:
    """Where writing the user's `path` puts bytes, and how: ("replace", file) for a new name or
    a regular file (links followed), ("open", path) for a character device, a pipe or a file
    behind a descriptor link. `folder_file`: the name of the file a folder gets (an existing
    folder, or a name ending in /); without it a folder is refused."""
    text = str(path)
    if folder_file and (text.endswith(os.sep) or os.path.isdir(text)):
        return target(os.path.join(os.path.realpath(text), folder_file), flag)
    if text.endswith(os.sep):
        raise OutputError(f"{flag} {text}: names a folder; give a file name")
    real = Path(os.path.realpath(text))
    _refuse_run(text, flag, real)
    try:
        mode = os.stat(text).st_mode
    except FileNotFoundError:
        return "replace", real  # a new name, or a link to one: its target is created
    except OSError as exc:
        raise OutputError(f"cannot write {text} ({flag}): {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise OutputError(f"{flag} {text}: is a folder; give a file name")
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return "open", Path(text)
    if stat.S_ISREG(mode):
        return ("open", Path(text)) if _through_descriptor(text) else ("replace", real)
    raise OutputError(f"{flag} {text}: not a regular file, a character device or a pipe")


def folder(path, flag: str) -> Path:
    """The folder the user's `path` names for an output of several files (created when
    missing): a folder or a new name, outside every stored run."""
    text = str(path)
    real = Path(os.path.realpath(text))
    if os.path.exists(text) and not os.path.isdir(text):
        raise OutputError(f"{flag} {text}: not a folder; this output is a folder of pages")
    _refuse_run(text, flag, real / RESULTS)  # the folder itself may not be a run either
    try:
        real.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {text} ({flag}): {exc.strerror or exc}") from None
    return real


def write(path, data: str | bytes, flag: str, *, append: bool = False,
          folder_file: str | None = None, mode: int | None = None) -> Path:
    """Write (or with `append`, append) `data` to the user's `path` as `target` decides;
    returns the file written. `mode`: the permissions of a regular file written (default: an
    existing file keeps its own, a new one gets 0666 less the umask)."""
    how, file = target(path, flag, folder_file=folder_file)
    data = data.encode() if isinstance(data, str) else data
    try:
        if how == "open" or append:
            # append: a device ignores it, and a file behind /dev/stdout keeps what `>>` kept
            with open(file, "ab") as f:
                f.write(data)
        else:
            if mode is None and file.is_file():
                mode = stat.S_IMODE(file.stat().st_mode)
            store.atomic_write_bytes(file, data, mode=mode)
    except BrokenPipeError:  # a reader that stopped early (`| head`): no error, as for stdout
        pass
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({flag}): {exc.strerror or exc}") from None
    return file
