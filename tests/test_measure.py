"""The sampling logic, with fake steps and a fake CUDA module (no device needed)."""

import itertools

import pytest

from lab.cell import measure


def test_abba_order_and_sample_counts():
    calls = []
    sides = [measure.Side(n, (lambda n=n: calls.append(n))) for n in ("A", "B")]
    measure.sample_interleaved(measure.HostTimer(), sides, repeats=4, inner=2)
    rounds = ["".join(calls[i:i + 4]) for i in range(0, len(calls), 4)]
    assert rounds == ["AABB", "BBAA", "AABB", "BBAA"]
    assert [len(s.samples_s) for s in sides] == [4, 4]
    assert all(v >= 0 for s in sides for v in s.samples_s)


def test_host_timer_completes_work_before_reading_the_clock():
    completed = []
    side = measure.Side("A", lambda: "handle", sync=lambda h: completed.append(h))
    measure.HostTimer().time(side, 3)
    assert completed == ["handle"]  # one sync after the inner steps, on the last handle


def test_calibrate_inner_reaches_min_sample_time(monkeypatch):
    clock = itertools.count(step=0.001)  # each perf_counter read advances 1 ms
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(clock))
    side = measure.Side("A", lambda: None)
    assert measure.calibrate_inner(measure.HostTimer(), side, min_sample_s=0.010) == 10


def test_warm_up_waits_for_steady_state(monkeypatch):
    # the step takes 10-30 ms, erratically, for its first 30 calls (a compiler's background
    # work competing for the cores), then a steady 1 ms
    now = [0.0]
    durations = iter([0.010, 0.030, 0.015] * 10 + [0.001] * 1000)
    monkeypatch.setattr(measure.time, "perf_counter", lambda: now[0])

    def step():
        now[0] += next(durations)

    info = measure.warm_up(measure.HostTimer(), [measure.Side("A", step)], min_steps=3,
                           min_seconds=0.0, max_seconds=100, window=5)
    assert info["converged"] and 35 <= info["steps"] <= 45  # not before the drop at 30


def test_warm_up_gives_up_after_max_seconds(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(measure.time, "perf_counter", lambda: now[0])
    durations = itertools.cycle([0.001, 0.010])  # never steady

    def step():
        now[0] += next(durations) * (1 + (now[0] % 0.7))

    info = measure.warm_up(measure.HostTimer(), [measure.Side("A", step)], max_seconds=1.0,
                           window=3, tolerance=0.01)
    assert not info["converged"] and info["seconds"] >= 1.0


def test_l2_flush_is_twice_the_l2():
    assert measure.l2_flush_bytes(50 << 20) == 100 << 20  # an H100 reports 50 MiB
    assert measure.l2_flush_bytes(0) == 8 << 20


class _FakeEvent:
    """Records the fake device clock; `log` keeps the order of everything put on the stream."""

    clock = 0.0
    log: list = []

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        self.t = _FakeEvent.clock
        _FakeEvent.log.append("record")

    def synchronize(self):
        pass

    def elapsed_time(self, other):  # milliseconds, like torch.cuda.Event
        return (other.t - self.t) * 1e3


class _FakeCuda:
    Event = _FakeEvent

    def __init__(self):
        self.flushes = 0

    def current_device(self):
        return 0

    def get_device_properties(self, index):
        return type("Props", (), {"L2_cache_size": 50 << 20})()


class _FakeBuffer:
    FLUSH_S = 0.005  # the flush takes device time too: it must not show in any sample

    def __init__(self, cuda):
        self.cuda = cuda

    def zero_(self):
        self.cuda.flushes += 1
        _FakeEvent.clock += self.FLUSH_S
        _FakeEvent.log.append("flush")


class _FakeTorch:
    uint8 = "uint8"

    def __init__(self):
        self.cuda = _FakeCuda()
        self.allocated = None

    def empty(self, nbytes, dtype, device):
        self.allocated = (nbytes, device)
        return _FakeBuffer(self.cuda)


@pytest.fixture
def fake_stream():
    _FakeEvent.clock, _FakeEvent.log = 0.0, []
    return _FakeEvent.log


def _step(seconds_per_call):
    """A step whose successive calls take the given device times, cycling."""
    durations = itertools.cycle(seconds_per_call)

    def step():
        _FakeEvent.clock += next(durations)
        _FakeEvent.log.append("step")

    return step


def test_cold_l2_flushes_before_every_timed_step_outside_its_events(fake_stream):
    torch = _FakeTorch()
    timer = measure.CudaEventTimer(torch, cold_l2=True)
    assert torch.allocated == (100 << 20, "cuda")
    sides = [measure.Side("A", _step([0.002])), measure.Side("B", _step([0.003]))]
    measure.sample_interleaved(timer, sides, repeats=3, inner=4)
    assert torch.cuda.flushes == 3 * 4 * 2  # every timed step of every sample of both sides
    assert fake_stream[:8] == ["flush", "record", "step", "record"] * 2  # own pair per step
    assert [len(s.samples_s) for s in sides] == [3, 3]
    # a 5 ms flush before each 2 ms / 3 ms step, and not a microsecond of it in the samples
    assert all(v == pytest.approx(0.002) for v in sides[0].samples_s)
    assert all(v == pytest.approx(0.003) for v in sides[1].samples_s)


def test_cold_l2_sample_is_the_mean_of_its_steps(fake_stream):
    timer = measure.CudaEventTimer(_FakeTorch(), cold_l2=True)
    side = measure.Side("A", _step([0.001, 0.002, 0.006]))  # a cold first step, then others
    timer.time(side, 3)
    timer.time(side, 3)
    timer.flush()
    assert side.samples_s == [pytest.approx(0.003), pytest.approx(0.003)]


def test_warm_l2_keeps_one_event_pair_per_sample_and_no_flush(fake_stream):
    torch = _FakeTorch()
    timer = measure.CudaEventTimer(torch, cold_l2=False)
    assert torch.allocated is None
    side = measure.Side("A", _step([0.001, 0.003]))
    timer.time(side, 4)
    timer.flush()
    assert torch.cuda.flushes == 0
    assert fake_stream == ["record"] + ["step"] * 4 + ["record"]
    assert side.samples_s == [pytest.approx(0.002)]


def test_calibrate_and_warm_up_read_cold_steps_through_the_same_timer(fake_stream):
    timer = measure.CudaEventTimer(_FakeTorch(), cold_l2=True)
    side = measure.Side("A", _step([0.0005]))
    assert measure.calibrate_inner(timer, side, min_sample_s=0.002) == 4  # flush not counted
    assert side.samples_s == []  # calibration leaves no sample behind


def test_a_deadline_cuts_sampling_to_what_fits_but_never_below_the_minimum():
    import time

    def slow():
        time.sleep(0.01)

    sides = [measure.Side("A", slow), measure.Side("B", lambda: None)]
    start = time.perf_counter()
    rounds = measure.sample_interleaved(measure.HostTimer(), sides, repeats=1000, inner=1,
                                        deadline=start + 0.15)
    assert measure.MIN_ROUNDS <= rounds < 1000
    assert len(sides[0].samples_s) == len(sides[1].samples_s) == rounds
    past = [measure.Side("A", lambda: None)]
    assert measure.sample_interleaved(measure.HostTimer(), past, repeats=50, inner=1,
                                      deadline=start - 1) == measure.MIN_ROUNDS
    assert measure.sample_interleaved(measure.HostTimer(), [measure.Side("A", lambda: None)],
                                      repeats=7, inner=1) == 7
