"""Bring a lease home: what it wrote, packed into a few files, laid back into profiles/.

A lease's machine goes away with everything on it, and what comes back is a handful of files
(the lease is lent with a small limit on how many). `pack` writes at most MAX_FILES: one
tarball per run folder the lease wrote or extended (the campaign run, a profile run), one of
the lease's own folder (logs, summary, kernel benchmark JSON) with the campaign state, and the
summary as plain JSON to read without unpacking. `unpack` checks every tarball before it
writes anything: paths stay inside their machine folder (no absolute path, no `..`, no link or
device), each run folder carries its fingerprint and that fingerprint's machine id names the
folder it goes to, and a run folder already stored is only overwritten by the same run (same
run id and start: a later lease extended it), the campaign state only by one that extends it.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from lab.campaign import stored
from lab.core.errors import UsageError
from lab.store import folders as store
from lab.store import provenance

MAX_FILES = 8


def _lease_start(state: dict) -> float:
    stamp = state["leases"][-1]["stamp"]
    return _dt.datetime.strptime(stamp, "%Y%m%d-%H%M%S").timestamp()


def _touched_since(folder: Path, since: float) -> bool:
    return any(p.stat().st_mtime >= since for p in folder.rglob("*") if p.is_file())


def _tar(dest: Path, out: Path, folders: list[Path], extra: list[Path] = ()) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for folder in folders:
            tar.add(folder, arcname=folder.relative_to(out).as_posix())
        for path in extra:
            tar.add(path, arcname=path.relative_to(out).as_posix())
    return dest


def pack(out: Path, machine_id: str, state: dict, dest: Path) -> list[Path]:
    """The lease's run folders, logs and state as at most MAX_FILES files in `dest`."""
    folder = out / machine_id
    lease = folder / state["leases"][-1]["folder"]
    since = _lease_start(state) - 1  # the stamp has whole seconds
    runs = [p for p in sorted(folder.iterdir())
            if p.is_dir() and p != lease and (p / "results.json").is_file()
            and (p.name == state.get("run") or _touched_since(p, since))]
    dest.mkdir(parents=True, exist_ok=True)
    files = [dest / "summary.json"]
    shutil.copyfile(lease / stored.SUMMARY, files[0])
    files.append(_tar(dest / f"{machine_id}--{lease.name}.tar.gz", out, [lease],
                      [folder / stored.STATE]))
    room = MAX_FILES - len(files)
    singles, rest = (runs[:room], []) if len(runs) <= room else (runs[:room - 1],
                                                                   runs[room - 1:])
    for run in singles:
        files.append(_tar(dest / f"{machine_id}--{run.name}.tar.gz", out, [run]))
    if rest:
        files.append(_tar(dest / f"{machine_id}--more-runs.tar.gz", out, rest))
    return files


def _member_path(member: tarfile.TarInfo, name: str) -> PurePosixPath:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise UsageError(f"{name}: {member.name!r} escapes the folder it unpacks into")
    if not (member.isfile() or member.isdir()):
        raise UsageError(f"{name}: {member.name!r} is not a plain file or folder")
    if len(path.parts) < 2 and member.isfile():
        raise UsageError(f"{name}: {member.name!r} lies outside a machine folder")
    return path


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    return tar.extractfile(member).read()


def _same_run(old: Path, new: bytes) -> bool:
    try:
        a = json.loads(old.read_text()).get("lab") or {}
        b = json.loads(new).get("lab") or {}
    except (OSError, ValueError):
        return False
    return (a.get("run_id"), a.get("started")) == (b.get("run_id"), b.get("started"))


def _extends(old: Path, new: bytes) -> bool:
    try:
        a, b = json.loads(old.read_text()), json.loads(new)
    except (OSError, ValueError):
        return False
    leases = a.get("leases") or []
    return a.get("run") in (None, b.get("run")) and (b.get("leases") or [])[:len(leases)] \
        == leases


def _check(tar: tarfile.TarFile, name: str, out: Path) -> dict[PurePosixPath, bytes]:
    """The tarball's files, path -> bytes, once every rule holds (UsageError otherwise)."""
    files = {}
    for member in tar.getmembers():
        path = _member_path(member, name)
        if member.isfile():
            files[path] = _read(tar, member)
    folders = {p.parts[:2] for p in files if len(p.parts) > 2}
    for machine, run in sorted(folders):
        fp = files.get(PurePosixPath(machine, run, store.FINGERPRINT))
        if fp is None:
            raise UsageError(f"{name}: {machine}/{run} has no {store.FINGERPRINT}")
        try:
            hw = json.loads(fp)["hardware"]
            found = provenance.machine_id(hw)
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"{name}: {machine}/{run}/{store.FINGERPRINT} unreadable") from None
        if found != machine:
            raise UsageError(f"{name}: {machine}/{run} was measured on {found}, not {machine}")
        old = out / machine / run / "results.json"
        new = files.get(PurePosixPath(machine, run, "results.json"))
        if old.is_file() and (new is None or not _same_run(old, new)):
            raise UsageError(f"{name}: {out / machine / run} holds a different run; "
                             f"nothing unpacked")
    for path, data in files.items():
        if path.name == stored.STATE and len(path.parts) == 2:
            old = out / path
            if old.is_file() and old.read_bytes() != data and not _extends(old, data):
                raise UsageError(f"{name}: {old} holds another campaign; nothing unpacked")
        elif len(path.parts) < 3:
            raise UsageError(f"{name}: {path} lies outside a run folder")
    return files


def unpack(paths: list[Path], out: Path) -> list[str]:
    """Lay the tarballs into `out`; every one is checked before anything is written."""
    checked, said = [], []
    for path in paths:
        if not path.name.endswith((".tar.gz", ".tgz", ".tar")):
            said.append(f"{path.name}: not a tarball, left as it is")
            continue
        try:
            with tarfile.open(path) as tar:
                checked.append((path, _check(tar, path.name, out)))
        except (OSError, tarfile.TarError) as exc:
            raise UsageError(f"{path}: cannot read it as a tarball ({exc})") from None
    for path, files in checked:
        for rel, data in sorted(files.items()):
            target = out.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            store.atomic_write_bytes(target, data)
        runs = sorted({"/".join(p.parts[:2]) for p in files if len(p.parts) > 2})
        said.append(f"{path.name}: {len(files)} file(s) into {out}: {', '.join(runs)}")
    return said
