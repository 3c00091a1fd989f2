"""A Linux guest that has netem, for hosts whose kernel lacks it: ``pipenem guest -- ARGS…``.

This project's host kernel shapes with tbf and htb but has no netem, fq or sfq, so delay,
jitter and loss cannot run on it. Debian's ``user-mode-linux`` package is a 6.1 Linux kernel
built as an ordinary host program, with sch_netem, sch_fq and veth among its modules. It
boots in about two seconds with the *host's* root filesystem as its root (hostfs, read-write),
so the guest runs the host's own interpreter and pipenem unchanged:

- ``run(argv)`` boots a guest whose init is a small script in a scratch folder: it mounts a
  private tmpfs on ``/run`` (``ip netns add`` would otherwise write into the host's
  ``/run/netns``, and pipenem's run records live there) and ``/dev/shm``, puts the UML
  modules where modprobe finds them (inside the private ``/run``), loads netem, tbf, htb, fq
  and veth, and runs the command with the host's interpreter in the host's current folder, so
  ``--out`` lands on the host. Its stdout and stderr stream through, its exit status is
  returned, and the guest is always shut down (also on Ctrl-C or a timeout: the UML process
  group is killed) and its scratch folder removed: nothing stays on the host.

What a guest cannot do: it has one CPU (UML runs the guest's processes one at a time on
ptrace), so no compute-heavy trials — modeled compute, probes and small pipelines only; its
timing is the guest's (its clock is the host's, but its scheduler, network stack and shaping
are its own: the host's shaping measurements do not carry over); system calls are several
times slower than on the host; and it has no network to the outside (namespaces inside it).

On hosts whose CPU has a large XSAVE area (Intel AMX), this 6.1 UML kernel dies at its first
user process ("ptrace set fp regs failed, errno = 14"); ``available()`` boots a guest once and
reports that rather than failing later.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TextIO

from basics.errors import UnsupportedError

UML = "linux.uml"  # Debian's user-mode-linux package
UML_MODULES = Path("/usr/lib/uml/modules")
GUEST_MODULES = ("veth", "sch_netem", "sch_tbf", "sch_htb", "sch_fq", "sch_ingress", "cls_u32", "cls_matchall")
BOOT_TIMEOUT_S = 60.0  # from the UML start to the command's first sign of life (measured: ~2 s)
MEMORY_MB = 3072  # enough for torch and a few stage processes
INSTALL_HINT = "apt-get install --no-install-recommends user-mode-linux kmod"
FP_REGS_FAILURE = "ptrace set fp regs failed"  # UML 6.1 on a CPU with a large XSAVE area


@dataclass
class GuestRun:
    rc: int
    boot_s: float  # UML start -> the command started
    wall_s: float


def missing() -> list[str]:
    """What this host lacks to run a guest (empty: it can), each with how to get it."""
    out = []
    if shutil.which(UML) is None:
        out.append(f"{UML}: {INSTALL_HINT}")
    elif not _release():
        out.append(f"UML kernel modules under {UML_MODULES}: {INSTALL_HINT}")
    if shutil.which("modprobe") is None:
        out.append("modprobe: apt-get install kmod")
    return out


def _release() -> str | None:
    try:
        found = sorted(p.name for p in UML_MODULES.iterdir() if (p / "modules.dep").exists())
    except OSError:
        return None
    return found[-1] if found else None


@cache
def available() -> tuple[bool, str]:
    """(whether a guest runs here, what it is / why not): boots one to be sure (~2 s)."""
    lack = missing()
    if lack:
        return False, "missing " + "; ".join(lack)
    try:
        with open(os.devnull, "w") as sink:
            res = run(
                ["/bin/sh", "-c", "tc qdisc add dev lo root netem delay 1ms"], stdout=sink, stderr=sink, timeout_s=60
            )
    except UnsupportedError as exc:
        return False, exc.message
    if res.rc != 0:
        return False, f"the guest boots but netem does not load (exit {res.rc})"
    return True, f"user-mode Linux {_release()} with netem, 1 CPU (boot {res.boot_s:.1f} s)"


BOOT = """#!/bin/sh
# pipenem guest: init of a user-mode Linux guest, on the host's root
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
S={scratch}
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs -o mode=755 run /run
mkdir -p /run/tmp /run/pipenem /run/netns
mount -t tmpfs shm /dev/shm 2>/dev/null || {{ mkdir -p /dev/shm && mount -t tmpfs shm /dev/shm; }}
mkdir -p /run/lib && ln -s {modules} /run/lib/modules  # the host may have no /lib/modules
for m in {guest_modules}; do modprobe -d /run "$m" 2>>$S/modprobe.log; done
ip link set lo up 2>/dev/null
: > $S/booted
cd {cwd} && env {env} {argv} > $S/stdout 2> $S/stderr < /dev/null
echo $? > $S/rc.tmp && mv $S/rc.tmp $S/rc
sync
echo o > /proc/sysrq-trigger
while :; do sleep 60; done
"""


def run(
    argv: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    memory_mb: int = MEMORY_MB,
    timeout_s: float | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> GuestRun:
    """Run ``argv`` (a command line on the host's root) in a fresh guest; stream its output to
    ``stdout``/``stderr`` (default: ours) and return its exit status. Always shuts it down."""
    lack = missing()
    if lack:
        raise UnsupportedError("guest", "a guest cannot run here: missing " + "; ".join(lack))
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    scratch = Path(tempfile.mkdtemp(prefix="pipenem-guest-"))
    guest_env = {
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONUNBUFFERED": "1",
        **{k: v for k, v in os.environ.items() if k.startswith(("PIPENEM_", "PYTHON")) or k in ("VIRTUAL_ENV", "PATH")},
        "PIPENEM_STATE_DIR": "/run/pipenem",  # the guest's private /run, never the host's
        "TMPDIR": "/run/tmp",
        "PIPENEM_IN_GUEST": "1",
        **(env or {}),
    }
    boot = scratch / "boot.sh"
    boot.write_text(
        BOOT.format(
            scratch=shlex.quote(str(scratch)),
            modules=shlex.quote(str(UML_MODULES)),
            guest_modules=" ".join(GUEST_MODULES),
            cwd=shlex.quote(str(cwd or Path.cwd())),
            env=" ".join(f"{k}={shlex.quote(v)}" for k, v in guest_env.items()),
            argv=shlex.join(argv),
        )
    )
    boot.chmod(0o755)
    cmd = [
        UML,
        f"mem={memory_mb}M",
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        f"init={boot}",
        "con=null",
        "con0=fd:0,fd:1",
        "quiet",
    ]
    console = (scratch / "console.log").open("wb")
    t0 = time.monotonic()
    # its own session: the whole UML process tree (kernel + one host process per guest
    # process) is killed as one group, and a Ctrl-C at the terminal reaches only us
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "TMPDIR": tempfile.gettempdir()},
    )
    booted = None
    tails = [(scratch / "stdout", stdout), (scratch / "stderr", stderr)]
    pos = [0, 0]
    try:
        while True:
            done = proc.poll() is not None or (scratch / "rc").exists()
            if booted is None and (scratch / "booted").exists():
                booted = time.monotonic() - t0
            for i, (path, sink) in enumerate(tails):
                pos[i] = _copy_new(path, sink, pos[i])
            if done:
                break
            now = time.monotonic() - t0
            if booted is None and _console_has(scratch, FP_REGS_FAILURE):
                raise UnsupportedError(
                    "guest",
                    "user-mode Linux cannot run processes on this host's CPU: its saved CPU state "
                    "(XSAVE, e.g. Intel AMX tiles) is larger than this 6.1 UML kernel handles "
                    f"('{FP_REGS_FAILURE}'); use a kernel with netem instead",
                )
            if booted is None and now > BOOT_TIMEOUT_S:
                raise UnsupportedError(
                    "guest", f"the guest did not start the command in {BOOT_TIMEOUT_S:.0f} s" + _console_tail(scratch)
                )
            if timeout_s is not None and now > timeout_s:
                raise TimeoutError(f"the guest command ran past {timeout_s:.0f} s; the guest was stopped")
            time.sleep(0.05)
        rc_file = scratch / "rc"
        if not rc_file.exists():
            raise UnsupportedError(
                "guest",
                f"the guest stopped before the command finished (UML exit {proc.returncode})" + _console_tail(scratch),
            )
        return GuestRun(int(rc_file.read_text().strip() or 1), booted or 0.0, time.monotonic() - t0)
    finally:
        _stop(proc)
        console.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    """The guest's power-off is asked for by its init; whatever still runs is killed, and we
    return once every process of the guest's group is gone (bounded: 10 s)."""
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # UML's helper processes too, even after the kernel exited
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


def _copy_new(path: Path, sink: TextIO, pos: int) -> int:
    try:
        with path.open("rb") as f:
            f.seek(pos)
            data = f.read()
    except FileNotFoundError:
        return pos
    if data:
        sink.write(data.decode(errors="replace"))
        sink.flush()
    return pos + len(data)


def _console_has(scratch: Path, text: str) -> bool:
    try:
        return text in (scratch / "console.log").read_text(errors="replace")
    except OSError:
        return False


def _console_tail(scratch: Path, lines: int = 12) -> str:
    try:
        text = (scratch / "console.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return ("\nguest console (last lines):\n  " + "\n  ".join(text[-lines:])) if text else ""


def pipenem_argv(args: list[str]) -> list[str]:
    """``python -m pipenem ARGS`` with this very interpreter (the venv's, not the guest's default)."""
    return [sys.executable, "-m", "pipenem", *args]


def run_pipenem(args: list[str], say: Callable[[str], None] | None = None, **kw) -> GuestRun:
    """``pipenem ARGS`` inside a guest (see :func:`run`)."""
    if say:
        say(f"pipenem guest: user-mode Linux {_release()}, 1 CPU; running pipenem {shlex.join(args)}")
    return run(pipenem_argv(args), **kw)


def main(argv: list[str] | None = None) -> int:
    """``python -m testbed.guest [--timeout S] -- CMD ARGS…``: any host command in a guest
    (``tox -e netem`` runs its pytest this way); its output and exit status pass through."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.guest")
    ap.add_argument("--timeout", type=float, default=None, help="stop the guest after this many seconds")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS…")
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("name a command: python -m testbed.guest -- CMD ARGS…")
    try:
        res = run(cmd, timeout_s=a.timeout)
    except UnsupportedError as exc:
        print(f"pipenem guest: {exc.message}", file=sys.stderr)
        return 2
    except TimeoutError as exc:
        print(f"pipenem guest: {exc}", file=sys.stderr)
        return 124
    print(f"pipenem guest: exit {res.rc} (boot {res.boot_s:.1f} s, {res.wall_s:.1f} s in all)", file=sys.stderr)
    return res.rc


if __name__ == "__main__":
    sys.exit(main())
