"""Plain-line progress for long work run without a terminal (nohup, batch jobs)."""

import io

from landscape.progress import LineProgress, make_progress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_lines_every_interval_and_at_the_end_with_an_honest_estimate():
    clock, out = FakeClock(), io.StringIO()
    bar = LineProgress("blocks", interval=30, stream=out, clock=clock)
    with bar:
        task = bar.add_task("dense curvature", total=12, completed=2)  # resumed: 2 blocks done before
        clock.now = 10
        bar.update(task, advance=1)
        assert out.getvalue() == ""  # nothing before the interval
        clock.now = 60
        bar.update(task, advance=2)
        lines = out.getvalue().splitlines()
        assert len(lines) == 1
        # 3 blocks in 60 s in this process (the 2 resumed ones do not count): 7 left -> 140 s
        assert "dense curvature: 5/12 blocks (42%), 0:01:00 elapsed, about 0:02:20 left" in lines[0]
        clock.now = 70
        bar.update(task, completed=12)  # finishing prints at once
        lines = out.getvalue().splitlines()
        assert len(lines) == 2 and "12/12 blocks (100%), 0:01:10 elapsed" in lines[1] and "left" not in lines[1]
        clock.now = 200
        bar.update(task, advance=0)  # a finished task is reported once, then only every interval
        assert len(out.getvalue().splitlines()) == 3


def test_tasks_without_a_total_and_status_fields():
    clock, out = FakeClock(), io.StringIO()
    bar = LineProgress("steps", interval=5, stream=out, clock=clock)
    task = bar.add_task("train", total=None, status="")
    clock.now = 6
    bar.update(task, advance=4, status="loss 0.1234")
    assert out.getvalue().rstrip().endswith("train: 4 steps, 0:00:06 elapsed, loss 0.1234")
    bar.remove_task(task)


def test_make_progress_writes_lines_when_stderr_is_not_a_terminal(capsys):
    bar = make_progress(True, "blocks", interval=0)
    assert isinstance(bar, LineProgress)  # pytest's captured stderr is not a terminal
    with bar:
        task = bar.add_task("work", total=2)
        bar.update(task, advance=2)
    assert "work: 2/2 blocks (100%)" in capsys.readouterr().err
    quiet = make_progress(False, "blocks")
    with quiet:
        quiet.update(quiet.add_task("work", total=1), advance=1)
    assert capsys.readouterr().err == ""


def test_throttled_log_is_silent_for_short_steps_and_alive_in_long_ones():
    from landscape.progress import Throttled

    now = [0.0]
    seen = []
    log = Throttled(seen.append, 10.0, clock=lambda: now[0])
    for t in (1.0, 5.0, 9.9):
        now[0] = t
        log(f"at {t}")
    assert seen == []
    for t in (10.0, 15.0, 20.5, 31.0):
        now[0] = t
        log(f"at {t}")
    assert seen == ["at 10.0", "at 20.5", "at 31.0"]
