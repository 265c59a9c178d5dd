"""brain_tf.progress: a line rewritten in place on a terminal, plain lines in a log."""

import io

from brain_tf.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_one_line_rewritten_in_place():
    stream = _Terminal()
    bar = Progress(3, "subject", stream=stream)
    for _ in range(3):
        bar.add()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert text.split("\r")[-1].startswith("3/3 subjects, ")


def test_a_log_gets_a_plain_line_per_tenth_and_the_last():
    stream = io.StringIO()
    bar = Progress(25, "subject", stream=stream)
    for _ in range(25):
        bar.add()
    lines = stream.getvalue().splitlines()
    assert [line.split(" ")[0] for line in lines] == [
        "1/25", "3/25", "5/25", "7/25", "9/25", "11/25", "13/25", "15/25", "17/25", "19/25",
        "21/25", "23/25", "25/25"]
    assert not any(c in stream.getvalue() for c in "\r\b\x1b")
