"""Every output a user names, tried through the real command line (docs/contract.md): pointed at
a character device, a link, a pipe, a folder or a stored run's results.json, the target is
never replaced by a regular file, a stored run never changes, and what cannot be written is one
line and exit 2. The runs are copies in a temporary folder: a writer that failed these tests
must not damage the project's own profiles/."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_lab

ROOT = Path(__file__).resolve().parent.parent
MACHINE = "amd-epyc-2c"
CPU_RUN = ROOT / "profiles" / MACHINE / "20261124-212813-cpu"
CHECK_RUN = ROOT / "profiles" / MACHINE / "20261124-214437-check-cpu"
SEED = ROOT / "claims/seed.toml"


@dataclass
class Runs:
    root: Path  # a folder of stored runs (profiles/)
    cpu: Path
    check: Path


@pytest.fixture
def runs(tmp_path) -> Runs:
    root = tmp_path / "profiles"
    for run in (CPU_RUN, CHECK_RUN):
        shutil.copytree(run, root / MACHINE / run.name)
    return Runs(root, root / MACHINE / CPU_RUN.name, root / MACHINE / CHECK_RUN.name)


def digest(folder: Path) -> str:
    """Every file under `folder`: its path, bytes, mode and inode."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        h.update(f"{path.relative_to(folder)} {st.st_mode} {st.st_ino}\n".encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: error: "), proc.stderr
    return lines[0]


def char_device(tmp_path: Path) -> Path:
    """A character device to write to. As root a rename over /dev/null would succeed (the
    defect this file guards against), so root gets a twin of /dev/null in tmp_path; anyone else
    cannot replace /dev/null and gets it."""
    if os.geteuid() != 0:
        return Path(os.devnull)
    twin = tmp_path / "null"
    try:
        os.mknod(twin, stat.S_IFCHR | 0o666, os.stat(os.devnull).st_rdev)
        with open(twin, "ab"):
            pass
    except OSError as exc:  # a container without CAP_MKNOD, a nodev mount
        pytest.skip(f"cannot make a character device here: {exc}")
    return twin


class Reader(threading.Thread):
    """Reads a FIFO to its end, as a consumer of the output would."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.data = path, None
        self.start()

    def run(self):
        with open(self.path, "rb") as f:  # blocks until a writer opens the FIFO
            self.data = f.read()

    def finish(self) -> bytes | None:
        if self.is_alive():  # nothing opened it: let the reader's open return
            os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
        self.join(timeout=30)
        return self.data


WRITERS = {  # each output option a user can point at a path
    "report --csv": lambda r, t: ["report", r.cpu, "--csv", t],
    "report --html": lambda r, t: ["report", r.cpu, "--html", t],
    "report TREE --html": lambda r, t: ["report", r.root, "--html", t],
    "gate --markdown": lambda r, t: ["gate", r.check, r.cpu, "--markdown", t],
}
WRITTEN = {  # what each writes, to recognise it in the target
    "report --csv": b"run_id,name,", "report --html": b"<!DOCTYPE html>",
    "report TREE --html": b"<!DOCTYPE html>", "gate --markdown": b"## lab gate:",
}
OK_EXITS = {"gate --markdown": (0, 1)}  # the gate's own verdict


def lab(writer: str, runs: Runs, target) -> object:
    return run_lab(*map(str, WRITERS[writer](runs, target)), timeout=300)


def identity(path: Path) -> tuple:
    st = path.lstat()
    return (stat.S_IFMT(st.st_mode), st.st_ino, st.st_rdev,
            os.readlink(path) if path.is_symlink() else None)


def assert_ok(writer: str, proc) -> None:
    assert proc.returncode in OK_EXITS.get(writer, (0,)), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("writer", WRITERS)
def test_a_character_device_is_written_as_such(writer, runs, tmp_path):
    device, before = char_device(tmp_path), digest(runs.root)
    was = identity(device)
    proc = lab(writer, runs, device)
    if writer == "report TREE --html":  # a folder of pages cannot go into a device
        assert "not a folder" in one_line_error(proc)
    else:
        assert_ok(writer, proc)
    assert identity(device) == was and stat.S_ISCHR(device.lstat().st_mode)
    assert digest(runs.root) == before


@pytest.mark.parametrize("writer", WRITERS)
def test_a_link_is_followed_and_kept(writer, runs, tmp_path):
    real = tmp_path / "real.out"
    real.write_text("earlier\n")
    link = tmp_path / "link.out"
    link.symlink_to(real)
    before = digest(runs.root)
    proc = lab(writer, runs, link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    if writer == "report TREE --html":
        assert "not a folder" in one_line_error(proc)
        assert real.read_text() == "earlier\n"
    else:
        assert_ok(writer, proc)
        assert WRITTEN[writer] in real.read_bytes()
        # the markdown summary is appended; the other outputs replace the file's content
        assert real.read_text().startswith("earlier\n") == (writer == "gate --markdown")
    assert digest(runs.root) == before


@pytest.mark.parametrize("writer", WRITERS)
def test_a_pipe_is_written_as_such(writer, runs, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    was, before = identity(fifo), digest(runs.root)
    reader = Reader(fifo)
    proc = lab(writer, runs, fifo)
    data = reader.finish()
    if writer == "report TREE --html":
        assert "not a folder" in one_line_error(proc)
        assert not data
    else:
        assert_ok(writer, proc)
        assert data and WRITTEN[writer] in data
    assert identity(fifo) == was and stat.S_ISFIFO(fifo.lstat().st_mode)
    assert digest(runs.root) == before


def test_a_pipe_whose_reader_stops_early_is_no_error(runs, tmp_path):
    """As for stdout (`| head`): the page is 4.9 MB, far more than a pipe holds."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def head():
        with open(fifo, "rb") as f:
            f.read(10)

    reader = threading.Thread(target=head, daemon=True)
    reader.start()
    proc = lab("report --html", runs, fifo)
    reader.join(timeout=30)
    assert_ok("report --html", proc)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.parametrize("writer", WRITERS)
def test_an_existing_folder_gets_an_index_page_or_is_refused(writer, runs, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    was, before = identity(folder), digest(runs.root)
    proc = lab(writer, runs, folder)
    if "--html" in writer:  # a folder named for a page gets it as its index.html
        assert_ok(writer, proc)
        assert WRITTEN[writer] in (folder / "index.html").read_bytes()
    else:
        assert "is a folder" in one_line_error(proc)
        assert not list(folder.iterdir())
    assert identity(folder) == was
    assert digest(runs.root) == before


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("inside", ["results.json", "fingerprint.json", "traces/new.out", "."])
def test_nothing_is_written_into_a_stored_run(writer, inside, runs):
    target = runs.cpu / inside
    before = digest(runs.root)
    message = one_line_error(lab(writer, runs, target))
    assert any(why in message for why in ("inside the stored run", "not a folder",
                                          "is a folder")), message
    assert digest(runs.root) == before
    assert not (runs.cpu / "traces").exists() and not (runs.cpu / "index.html").exists()


@pytest.mark.parametrize("writer", ["report --csv", "gate --markdown"])
def test_a_socket_is_refused(writer, runs, tmp_path):
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        was = identity(path)
        assert "not a regular file, a character device or a pipe" in one_line_error(
            lab(writer, runs, path))
        assert identity(path) == was


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
@pytest.mark.parametrize("argv", [
    ["report", "{cpu}"], ["report", "{cpu}", "--csv", "-"], ["show", "{cpu}"],
    ["gate", "{check}", "{cpu}", "--json"],
    ["check", str(SEED), "--run", "{check}", "--stored-only", "--json"],
    ["history", "--machine", MACHINE, "--out", "{root}", "--json"],
])
def test_stdout_that_cannot_be_written_is_one_line_and_exit_2(argv, runs):
    argv = [a.format(cpu=runs.cpu, check=runs.check, root=runs.root) for a in argv]
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "lab.cli", *argv], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=300, cwd=ROOT)
    proc.stdout = ""
    assert one_line_error(proc) == "lab: error: cannot write to stdout: No space left on device"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_a_run_whose_stdout_is_full_stores_every_cell_then_exits_2(tmp_path):
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "lab.cli", "run", "--workload", "mlp", "--backend",
             "torch-eager", "--batch", "2", "--repeats", "3", "--device", "cpu", "--threads",
             "1", "--out", str(tmp_path)], stdout=full, stderr=subprocess.PIPE, text=True,
            timeout=300, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == \
        "lab: error: cannot write to stdout: No space left on device"
    assert "Traceback" not in proc.stderr
    [stored] = tmp_path.glob("*/*/results.json")
    doc = json.loads(stored.read_text())
    assert doc["lab"]["complete"] and len(doc["benchmarks"]) == 1


def test_a_file_behind_dev_stdout_is_appended_to_not_replaced(runs, tmp_path):
    """`lab report RUN --csv /dev/stdout >> log`: the shell's file keeps what it held."""
    if not os.path.exists("/dev/stdout"):
        pytest.skip("no /dev/stdout on this system")
    log = tmp_path / "log"
    log.write_text("earlier\n")
    was = identity(log)
    with open(log, "a") as out:
        proc = subprocess.run([sys.executable, "-m", "lab.cli", "report", str(runs.cpu),
                               "--csv", "/dev/stdout"], stdout=out, stderr=subprocess.PIPE,
                              text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert identity(log) == was
    text = log.read_text()
    assert text.startswith("earlier\nrun_id,name,") and text.count("run_id,name,") == 1


@pytest.mark.parametrize("flag", ["--csv", "--html"])
def test_an_output_that_cannot_be_written_is_one_line_and_exit_2(flag, runs, tmp_path):
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc on this system")
    assert "cannot write /proc/lab-report.out" in one_line_error(
        run_lab("report", str(runs.cpu), flag, "/proc/lab-report.out"))
    if os.path.exists("/dev/full"):
        assert "No space left on device" in one_line_error(
            run_lab("report", str(runs.cpu), flag, "/dev/full"))


def test_a_name_ending_in_a_slash_is_a_folder(runs, tmp_path):
    proc = run_lab("report", str(runs.cpu), "--html", f"{tmp_path}/site/")
    assert proc.returncode == 0, proc.stderr
    assert b"<!DOCTYPE html>" in (tmp_path / "site" / "index.html").read_bytes()
    assert "names a folder" in one_line_error(
        run_lab("report", str(runs.cpu), "--csv", f"{tmp_path}/table/"))
    assert not (tmp_path / "table").exists()


def test_a_refused_output_stops_the_report_before_anything_is_written(runs, tmp_path):
    page = tmp_path / "r.html"
    one_line_error(run_lab("report", str(runs.cpu), "--html", str(page), "--csv",
                           str(runs.cpu / "results.json")))
    assert not page.exists()


def test_an_index_says_which_runs_it_skipped(runs, tmp_path):
    broken = runs.root / MACHINE / "20261124-000000-cpu"
    broken.mkdir()
    (broken / "results.json").write_text('{"machine_info": {"x": "cut')
    proc = run_lab("report", str(runs.root), "--html", str(tmp_path / "site"))
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("lab: skipped")]
    assert len(skipped) == 1 and str(broken) in skipped[0], proc.stderr


def test_invalid_json_says_where(runs, tmp_path):
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "results.json").write_text('{"machine_info": {"x": "cut')
    message = one_line_error(run_lab("show", str(cut)))
    assert message.endswith("not valid JSON (truncated?): Unterminated string starting at: "
                            "line 1 column 24"), message
