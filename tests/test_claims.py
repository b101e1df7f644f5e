"""Claim files: the seed's claims parse; malformed files name the line and the reason."""

import pytest
from conftest import ROOT
from verdict_helpers import run_lab_main as run_lab

from lab.judge import claims

GOOD = """\
[[claim]]
id = "mine"
quote = "compile makes my model 20% faster"
metric = "speedup"
backend = "torch-compile"
workload = "mlp"
expect = "at_least"
value = 1.2
"""


def test_seed_claims_parse_with_their_rules():
    parsed = {c.id: c for c in claims.load(ROOT / "claims" / "seed.toml")}
    assert set(parsed) == {"compile-up-to-2x", "compile-llm-training-30-50",
                           "gpt-fast-decode-4x", "xla-similar-to-compile",
                           "resnet50-training-parity", "memory-similar-with-optimization",
                           "memory-efficiency-similar", "inference-latency-torchscript",
                           "inference-latency-tensorrt", "inference-latency-tf-optimized",
                           "inference-latency-tf-over-pytorch", "distributed-training-pytorch",
                           "distributed-training-tensorflow", "distributed-training-alike"}
    two_x = parsed["compile-up-to-2x"]
    assert two_x.expect == "up_to" and two_x.aggregate == "best" and two_x.low == 1.5
    assert parsed["resnet50-training-parity"].device == "cuda"
    llm = parsed["compile-llm-training-30-50"]
    assert llm.low == pytest.approx(1.3 / 1.05) and llm.high == pytest.approx(1.5 * 1.05)
    assert all(c.quote and c.line > 0 for c in parsed.values())


def test_a_users_claim_parses():
    (claim,) = claims.parse(GOOD)
    assert claim.workloads == ("mlp",) and claim.modes == ("infer",) and claim.line == 1
    assert (claim.low, claim.high) == (1.2, float("inf"))


@pytest.mark.parametrize("edit, line, words", [
    (lambda t: t.replace('value = 1.2', 'value = 1.2\nspeed = 3'), 9, "unknown key 'speed'"),
    (lambda t: t.replace('"torch-compile"', '"torch-compyle"'), 5, "unknown backend"),
    (lambda t: t.replace('expect = "at_least"', 'expect = "more"'), 7, "unknown expect"),
    (lambda t: t.replace('value = 1.2', 'value = -1'), 8, "positive number"),
    (lambda t: t.replace('value = 1.2', ''), 7, "needs value"),
    (lambda t: t.replace('quote = ', 'quote = \n'), 3, "not valid TOML"),
    (lambda t: t + "\n" + t, 10, "repeats"),
    (lambda t: t.replace('backend = "torch-compile"', 'backend = "torch-eager"'), 5,
     "compiling backend"),
])
def test_malformed_claims_name_line_and_reason(edit, line, words):
    with pytest.raises(claims.ClaimError) as err:
        claims.parse(edit(GOOD), "mine.toml")
    message = str(err.value)
    assert message.startswith(f"mine.toml:{line}:") and words in message
    assert "\n" not in message


def test_lab_check_exits_2_on_a_malformed_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('metric = "speedup"', 'metric = "speed"'))
    result = run_lab("check", str(bad), "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"lab: error: {bad}:4: claim mine: unknown metric 'speed'; "
                                     f"valid: speedup, throughput, time, memory, latency, scaling")
    missing = run_lab("check", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "no such claim file" in missing.stderr
