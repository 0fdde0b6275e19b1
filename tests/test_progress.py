"""facenet_tf.common.progress: log lines when there is no terminal, a bar when asked to draw one."""

import logging

from facenet_tf.common.progress import progress


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_without_a_terminal_each_report_is_one_plain_log_line():
    logger = logging.getLogger("test_progress")
    logger.setLevel(logging.INFO)
    handler = _Records()
    logger.addHandler(handler)
    try:
        bar = progress(total=10, desc="embedding", unit="images", interactive=False,
                       log_every_s=0.0, logger=logger)
        for _ in range(10):
            bar.update(1)
        bar.close()
    finally:
        logger.removeHandler(handler)
    assert handler.lines, "no progress reported"
    assert all("\r" not in line and "\n" not in line for line in handler.lines)
    assert "10/10" in handler.lines[-1] and "embedding" in handler.lines[-1]


def test_no_report_at_all_when_asked_for_none(capsys):
    bar = progress(range(3), total=3, log_every_s=None)
    assert list(bar) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_interactive_draws_a_bar_on_stderr(capsys):
    for _ in progress(range(5), total=5, desc="aligning", interactive=True):
        pass
    err = capsys.readouterr().err
    assert "aligning" in err and "5/5" in err
