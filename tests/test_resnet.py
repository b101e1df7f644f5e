"""ResNet-50: torchvision's parameter count without torchvision, Keras's own count, the
analytic flops, and the JAX network computing the torch network's numbers."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from numerics import assert_close_scaled

from lab.workloads import get, resnet

torch = pytest.importorskip("torch")

TORCHVISION_RESNET50_PARAMS = 25_557_032  # torchvision.models.resnet50(), 1000 classes
# keras.applications.ResNet50(weights=None).count_params(): + 26,560 conv biases + 53,120
# BatchNorm moving statistics (Keras counts them; torch keeps them as buffers)
KERAS_RESNET50_PARAMS = 25_636_712
KERAS_RESNET50_TRAINABLE = TORCHVISION_RESNET50_PARAMS + 26_560
SMALL = {"batch": 2, "image_size": 32}


@pytest.fixture(scope="module")
def torch_model():
    torch.manual_seed(0)
    return resnet.torch_resnet50()


def test_torch_resnet50_matches_torchvision_parameter_count(torch_model):
    assert sum(p.numel() for p in torch_model.parameters()) == TORCHVISION_RESNET50_PARAMS
    # v1.5: the stride-2 of a stage's first block is on its 3x3 conv, not its first 1x1
    block = torch_model.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert block.downsample[0].stride == (2, 2)


def test_layer_table_names_every_torch_tensor(torch_model):
    """The table that drives the JAX network and the flop count has exactly torch's tensors
    (names and shapes), so the three cannot drift apart."""
    torch_shapes = {n: tuple(t.shape) for n, t in
                    [*torch_model.named_parameters(), *torch_model.named_buffers()]
                    if t.is_floating_point()}
    table = {n: tuple(spec[0]) for n, spec in resnet._param_specs(SMALL).items()}
    assert table == torch_shapes


def test_flops_match_the_known_4_1_gmac_per_image():
    macs = resnet.flops({"batch": 1, "image_size": 224}, "infer") / 2
    assert macs == pytest.approx(4.09e9, rel=0.01)
    assert resnet.flops({"batch": 4, "image_size": 224}, "train") == pytest.approx(
        3 * 4 * 2 * macs)


@pytest.mark.slow
def test_keras_resnet50_parameter_count():
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow not installed")
    from xla_cases import tf_results  # TensorFlow runs in a child process (see there)

    assert int(tf_results()["keras_resnet50_params"]) == KERAS_RESNET50_PARAMS
    assert int(tf_results()["keras_resnet50_trainable"]) == KERAS_RESNET50_TRAINABLE


@pytest.fixture(scope="module")
def jax_side():
    pytest.importorskip("jax")
    from lab.compile.jax import JaxSide

    def make(mode: str):
        task = get("resnet50").build("jax", SMALL, mode, "cpu", "float32", 0)
        return task, JaxSide(task, mode, jit=False)

    return make


def test_jax_resnet50_has_the_same_parameters(jax_side):
    task, _ = jax_side("infer")
    assert sum(int(np.prod(v.shape)) for v in task.params.values()) == \
        TORCHVISION_RESNET50_PARAMS


@pytest.mark.slow
def test_torch_and_jax_resnet50_agree():
    """Same weights and images: logits with running statistics (infer), logits with batch
    statistics and the updated running statistics (train), in float64 so that a difference in
    any layer shows far above rounding. Gradients follow by autodiff of this same forward.
    Image 64, not 32: at 32 the last stage sees 1x1 maps, and batch statistics over two
    values amplify rounding a billionfold."""
    jax = pytest.importorskip("jax")
    from lab.compile.jax import _x64

    shape = {"batch": 2, "image_size": 64}
    ref = resnet.build_torch(shape, "train", "cpu", "float64", 0)
    with torch.no_grad():
        ref.model.eval()
        want_infer = ref.model(*ref.inputs).numpy()
        ref.model.train()
        want_train = ref.model(*ref.inputs).numpy()
    want_state = {n: b.numpy() for n, b in ref.model.named_buffers() if b.is_floating_point()}

    task = get("resnet50").build("jax", shape, "train", "cpu", "float32", 0)
    with _x64(jax):
        def up(tree):
            return jax.tree_util.tree_map(lambda x: np.asarray(x).astype(np.float64), tree)

        @jax.jit
        def both(params, state, x):
            return task.apply(params, state, x, train=False)[0], task.apply(params, state, x,
                                                                             train=True)

        infer, (train, state) = both(up(task.params), up(task.state), up(task.inputs[0]))
    chain = _resnet50_reduction_chain(shape)
    assert_close_scaled(infer, want_infer, dtype="float64", reduction_len=chain,
                        what="logits, running statistics")
    assert_close_scaled(train, want_train, dtype="float64", reduction_len=chain,
                        what="logits, batch statistics")
    assert sorted(state) == sorted(want_state)
    for name, value in state.items():
        assert_close_scaled(value, want_state[name], dtype="float64", reduction_len=chain,
                            what=name)


def _resnet50_reduction_chain(shape: dict) -> int:
    """The reduction lengths along ResNet-50's longest chain, summed (tests/numerics.py): the
    stem's 7x7x3 convolution and its batch norm, then 16 bottlenecks, each a 1x1, a 3x3 and a
    1x1 convolution over their input channels and three batch norms over batch x H x W, the
    average pool and the 2048-wide FC: 61,919 at image 64 and batch 2, 1.4e-11 of the scale
    in float64, far below what a wrong layer (padding, stride, a batch norm's eps) changes."""
    side = shape["image_size"] // 4  # stride-2 stem and max pool
    total = 7 * 7 * 3 + shape["batch"] * (2 * side) ** 2
    channels = 64
    for i, (mid, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)]):
        side = side // 2 if i else side
        for _ in range(blocks):
            total += channels + 9 * mid + mid + 3 * shape["batch"] * side ** 2
            channels = 4 * mid
    return total + side ** 2 + channels


def test_image_size_flag_reaches_the_resnet_shape():
    from lab.cli import build_parser
    from lab.commands.run import selection
    from lab.running.loop import plan

    args = build_parser().parse_args(["run", "--workload", "resnet50", "--backend", "jax-jit",
                                      "--device", "cpu", "--batch", "3", "--image-size", "48"])
    cells, _ = plan(selection(args))
    assert [c.spec.shape for c in cells] == [{"batch": 3, "image_size": 48}]
    assert get("resnet50").throughput_unit == "images/s"


def test_throughput_table_lists_measured_and_failed_cells_in_run_order():
    from lab.cli import main
    from lab.reports.markdown import markdown_table

    measured = {"name": "resnet50[tf-xla|train]", "extra_info": {
        "workload": "resnet50", "framework": "tf", "backend": "tf-xla", "mode": "train",
        "status": "ok", "throughput": 12.5, "throughput_ci95": (11.0, 13.0), "median_s": 0.32,
        "throughput_unit": "images/s", "speedup": 3.0, "speedup_ci95": (2.8, 3.1),
        "compile_s_cold": 15.7, "compile_s_warm": 8.2, "noisy": False}}
    failed = {"name": "resnet50[jax-jit|train]", "extra_info": {
        "workload": "resnet50", "framework": "jax", "backend": "jax-jit", "mode": "train",
        "status": "fail_accuracy", "reason": "compiled output differs | from eager"}}
    doc = {"benchmarks": [measured], "lab": {"unmeasured": [failed],
                                             "order": [failed["name"], measured["name"]]}}
    lines = markdown_table(doc, "resnet50").splitlines()
    assert "images/s" in lines[0] and len(lines) == 4
    assert lines[2].startswith("| jax | jax-jit | train | - |") and "fail_accuracy" in lines[2]
    assert lines[2].count("|") == lines[0].count("|")  # a '|' in a reason cannot add a column
    assert lines[3] == ("| tf | tf-xla | train | 12.5 | [11.0, 13.0] | 320 | "
                        "3.00x [2.80, 3.10] | 15.7 / 8.2 | - | ok |")
    assert main(["report", "/nonexistent/run"]) == 2
