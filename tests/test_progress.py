"""Progress lines inside an epoch when stdout is a log, timed by a fake clock."""
import io

from bench.core.progress import Progress


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_line_every_interval_and_none_between():
    clock, out = FakeClock(), io.StringIO()
    p = Progress(390, "epoch 1/8", every_s=60, stream=out, clock=clock)
    assert p.enabled  # a StringIO is not a terminal
    for step, t in ((1, 10), (2, 59.9), (3, 60), (4, 61), (5, 119.9), (6, 121)):
        clock.now = 100.0 + t
        p.update(step)
    assert out.getvalue().splitlines() == ["epoch 1/8: step 3/390 (1%), 60 s", "epoch 1/8: step 6/390 (2%), 121 s"]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_silent_on_a_terminal_where_the_bar_is_drawn():
    clock, out = FakeClock(), Terminal()
    p = Progress(10, "epoch 1/1", every_s=1, stream=out, clock=clock)
    clock.now += 100
    p.update(5)
    assert not p.enabled and out.getvalue() == ""
