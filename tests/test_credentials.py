"""No credential is ever stored in a run folder: run folders are committed and shared.

The fingerprint keeps only the environment variables that change performance (an explicit
list, lab.store.provenance.ENV_NAMES), never one whose name says credential, and redacts a
credential found in a stored value or in the command line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from lab.store import folders as store
from lab.store import provenance

ROOT = Path(__file__).resolve().parent.parent

# names a prefix rule (TF_, NVIDIA_) once let through, and the usual ones
PLANTED = {
    "TF_TOKEN_app_terraform_io": "tfplanted0token0value1",
    "NVIDIA_API_KEY": "nvapi-planted0value0two",
    "HF_TOKEN": "hf_plantedvalue0three0abc",
    "AWS_SECRET_ACCESS_KEY": "planted0aws0secret0four",
    "TORCHINDUCTOR_AUTH_TOKEN": "planted0inductor0five",
}
# an allowed, performance-relevant name whose value carries a credential
ALLOWED_WITH_SECRET = ("XLA_FLAGS", "--xla_dump_to=https://me:planted0six0pw@dumps.example")
SECRETS = [*PLANTED.values(), "hf_plantedvalue0three0abc", "planted0six0pw"]

# an environment variable's name, as a JSON key or value (names are upper case: `new_tokens`,
# a shape parameter, is none)
CREDENTIAL_NAME = re.compile(
    r'"[A-Z0-9_]*(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIAL)[A-Z0-9_]*"')


def test_a_real_run_stores_none_of_the_planted_credentials(tmp_path):
    env = {**os.environ, **PLANTED, ALLOWED_WITH_SECRET[0]: ALLOWED_WITH_SECRET[1],
           "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(
        [sys.executable, "-m", "lab.cli", "run", "--workload", "mlp", "--backend", "torch-eager",
         "--mode", "infer", "--batch", "2", "--repeats", "3", "--device", "cpu",
         "--threads", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == store.FINGERPRINT for p in files)
    for path in files:
        text = path.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in text, f"{secret} stored in {path.name}"
        for name in PLANTED:
            assert name not in text, f"{name} stored in {path.name}"
    [fp_path] = tmp_path.glob(f"*/*/{store.FINGERPRINT}")
    stored_env = json.loads(fp_path.read_text())["env"]
    # what changes performance is still there; the credential in a value is marked, not kept
    assert stored_env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert stored_env["XLA_FLAGS"] == f"--xla_dump_to=https://{provenance.REDACTED}@dumps.example"


def test_only_listed_variables_are_kept_and_never_credential_names():
    env = {"OMP_NUM_THREADS": "2", "TF_TOKEN_x": "t", "NVIDIA_API_KEY": "k", "HOME": "/h",
           "CUDA_VISIBLE_DEVICES": "0", "TF_CLI_CONFIG_FILE": "/h/.terraformrc"}
    assert provenance.performance_env(env) == {"CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "2"}
    assert not [name for name in provenance.ENV_NAMES if provenance.CREDENTIAL_NAME.search(name)]


def test_a_cluster_address_with_a_password_is_redacted():
    assert provenance.redact("ray://alice:s3cretpw@head:10001") == \
        f"ray://{provenance.REDACTED}@head:10001"
    assert provenance.redact("ray://head:10001") == "ray://head:10001"
    assert provenance.redact("ghp_abcdefghijklmnopqrstuvwx") == provenance.REDACTED


def test_the_stored_runs_hold_no_credential():
    """profiles/ is committed: a credential-like name or a well-known token in any stored file
    fails here, before it is pushed."""
    found = []
    for path in (ROOT / "profiles").rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            for pattern in (CREDENTIAL_NAME, provenance.CREDENTIAL_VALUE):
                match = pattern.search(text)
                if match:
                    found.append(f"{path.relative_to(ROOT)}: {match.group(0)[:40]}")
    assert not found, found
