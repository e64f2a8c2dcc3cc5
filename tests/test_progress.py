"""stemsift.progress: a bar on a real terminal (a pseudo-terminal here), a few plain lines in a log."""
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

from stemsift.progress import progress


def run(code: str, tty: bool, **env) -> str:
    """Run `code` in a fresh Python whose stderr is a pseudo-terminal (tty) or a pipe; return what it wrote there."""
    e = {k: v for k, v in os.environ.items() if k not in ("CI", "STEMSIFT_PROGRESS")} | env
    prog = [sys.executable, "-c", "from stemsift import progress as P\n" + code]
    if not tty:
        return subprocess.run(prog, env=e, stderr=subprocess.PIPE, text=True, check=True, timeout=60).stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal has a size
    proc = subprocess.Popen(prog, env=e, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return out.decode(errors="replace")


LOOP = "import time\nP.PLAIN_MIN_SECONDS = 0.2\nfor _ in P.progress(range(200), desc='work', unit='songs'): time.sleep(0.003)\n"


def test_a_terminal_gets_a_bar():
    out = run(LOOP, tty=True)
    assert "work:" in out and "200/200" in out and "100%|" in out
    assert "\r" in out  # redrawn in place, not line after line


def test_ci_or_a_log_gets_plain_lines_only():
    for out in (run(LOOP, tty=True, CI="true").replace("\r\n", "\n"), run(LOOP, tty=False)):  # a tty ends lines \r\n
        assert "\r" not in out and "|" not in out
        assert out.splitlines() == [line for line in out.splitlines() if line.startswith("work: ")]
        assert "200/200 songs done" in out


def test_a_long_loop_prints_at_most_ten_lines():
    # no time floor between lines: the tenths alone bound the count, however long the loop
    out = run("P.PLAIN_MIN_SECONDS = 0\nfor _ in P.progress(range(100_000), desc='long'): pass\n", tty=False)
    lines = out.splitlines()
    assert 2 <= len(lines) <= 10, lines
    assert lines[0].startswith("long: 10000/100000 it (10%)") and lines[-1].startswith("long: 100000/100000 it done")
    # and with the default floor a loop faster than it says nothing (a stage's one-line error stays one line)
    assert run("for _ in P.progress(range(100_000), desc='fast'): pass\n", tty=False) == ""


def test_an_early_stop_and_an_unknown_length_are_reported():
    out = run("P.PLAIN_MIN_SECONDS = 0\nfor i in P.progress(range(50), desc='s'):\n    if i == 9: break\n", tty=False)
    assert out.splitlines()[-1].startswith("s: stopped at 10/50 it")
    assert run("P.PLAIN_MIN_SECONDS = 0\nlist(P.progress((i for i in range(7)), desc='g'))\n", tty=False).startswith("g: 7 it done")
    assert run("list(P.progress(range(7), desc='o'))\n", tty=False, STEMSIFT_PROGRESS="off") == ""


def test_items_pass_through_unchanged_and_lazily():
    drawn = []

    def gen():
        for i in range(5):
            drawn.append(i)
            yield i * i

    it = progress(gen(), total=5, desc="x")
    assert next(it) == 0 and drawn == [0]  # nothing is read ahead (a generator's RNG order stays the caller's)
    assert list(it) == [1, 4, 9, 16]
