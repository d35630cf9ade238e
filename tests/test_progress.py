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


def test_on_a_terminal_one_line_redrawn_in_place_then_cleared():
    clock, out = FakeClock(), Terminal()
    p = Progress(10, "epoch 1/1", every_s=60, stream=out, clock=clock, redraw_s=0.5)
    for step, t in ((1, 0.2), (2, 0.5), (3, 0.6), (10, 1.5)):
        clock.now = 100.0 + t
        p.update(step)
    drawn = out.getvalue()
    assert "\n" not in drawn and drawn.split("\r")[1:] == ["epoch 1/1: step 2/10 (20%), 0 s",
                                                          "epoch 1/1: step 10/10 (100%), 2 s"]
    p.close()
    assert out.getvalue().endswith("\r" + " " * len("epoch 1/1: step 10/10 (100%), 2 s") + "\r")


def test_a_quiet_run_shows_nothing():
    clock, out = FakeClock(), Terminal()
    p = Progress(10, "epoch 1/1", stream=out, clock=clock, enabled=False)
    clock.now += 100
    p.update(5)
    p.close()
    assert out.getvalue() == ""
