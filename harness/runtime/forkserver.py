"""Stage processes forked from one interpreter that has imported torch and the stage code once.

Every stage process used to start its own interpreter and import torch: ~150 MB of private
pages each, which capped this 24 GiB machine at ~95 training stages. Here the launcher starts
one **fork server** (``python -m harness.runtime.forkserver``, under the stage workers'
malloc), which imports torch and both runtimes' stage modules, freezes its objects for the
garbage collector (``gc.freeze``: the children do not dirty them by collecting) and then, per
stage, forks a child that enters its stage's network namespace (``setns``) before it touches
the network and runs the stage worker. Copy-on-write keeps the import's pages shared.

Forking after ``import torch`` is safe only while the server has one thread: no OpenMP or
intra-op pool may have started. Importing torch starts one unless ``OMP_NUM_THREADS=1`` (the
launcher sets it for the server; each child then sets its own count, ``compute.threads``,
with ``torch.set_num_threads``), the server's torch work is its rehearsal (one tiny training
step, one message through the run's codecs) on that one thread, and it starts no thread of
its own. It checks ``/proc/self/task`` before every fork and refuses to fork with more
than one thread (a test checks it has one).

Protocol (JSON lines): the server says ``{"ready": true}`` once imported and rehearsed (bounded
by ``STARTUP_S``: seconds here, minutes in the user-mode Linux guest, where the first stage's
start once ran past a bound meant for one fork); the launcher sends ``{"stage", "netns", "module",
"run_dir", "meta"}``; the server answers ``{"stage", "pid"}`` when the child exists, ``{"stage", "line"}`` for each
line the child prints (stdout and stderr), and ``{"stage", "exit"}`` (as ``Popen.returncode``:
negative for a signal) when it ends. The server exits when its input closes and every child has
exited, or with its parent (``PR_SET_PDEATHSIG``; its children likewise).
Docker stages keep one ``docker exec`` per stage: a container's process cannot be forked from
the host's.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
from typing import Any

PR_SET_PDEATHSIG = 1
STARTUP_S = 600.0  # the server's imports and rehearsal step: ~3 s on this machine, ~2 min in the guest
FORK_S = 60.0  # one fork, once the server is ready


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux/glibc: the launcher still kills what it started


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


# ---------------------------------------------------------------- the server (one process per run)


def serve_forever(module: str, codecs: str | None = None) -> None:
    """``module``: the stage module the children run (its imports, and torch's, done here once);
    ``codecs``: JSON ``{"fwd", "bwd", "shape"}``, the run's boundary codecs and message shape,
    rehearsed here too (see :func:`_rehearse_codecs`)."""
    import gc
    import importlib

    import torch  # noqa: F401  (the import every child shares)

    import testbed.nsenter  # noqa: F401  (setns in the children)

    importlib.import_module(module)
    _rehearse()
    if codecs:
        _rehearse_codecs(json.loads(codecs))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle
    _die_with_parent()
    gc.freeze()  # imported objects move to a permanent generation: children's collections leave them be
    out = sys.stdout
    _say(out, {"ready": True})
    children: dict[int, tuple[int, int]] = {}  # pid -> (stage, read end of its output)
    buffers: dict[int, bytes] = {}
    stdin_open = True
    while stdin_open or children:
        readable = [sys.stdin] if stdin_open else []
        readable += [fd for _, fd in children.values()]
        ready, _, _ = select.select(readable, [], [], 0.2)
        for r in ready:
            if r is sys.stdin:
                line = sys.stdin.readline()
                if not line:
                    stdin_open = False
                    continue
                cmd = json.loads(line)
                try:
                    pid, stage, fd = _fork_stage(cmd)
                except Exception as exc:  # said as the stage's last words, then its failure
                    _say(out, {"stage": cmd["stage"], "line": f"the fork server could not start it: {exc}"})
                    _say(out, {"stage": cmd["stage"], "exit": 1})
                    continue
                children[pid] = (stage, fd)
                _say(out, {"stage": stage, "pid": pid})
            else:
                stage = next(s for s, fd in children.values() if fd == r)
                _relay(out, stage, r, buffers)
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                stage, fd = children.pop(pid)
                while _relay(out, stage, fd, buffers):  # what it printed last
                    pass
                os.close(fd)
                _say(out, {"stage": stage, "exit": os.waitstatus_to_exitcode(status)})


def _rehearse() -> None:
    """One tiny training step (forward, backward, clip, AdamW) before any fork: what torch imports
    and initialises lazily on a first step (~800 modules, ~90 MiB: the optimizer's and autograd's
    machinery) is then the children's shared memory, not each training stage's own."""
    import torch

    from harness.config.schema import build_spec
    from harness.model.stages import build_stages
    from harness.runtime.training import grad_sq_norm, lm_loss, make_optimizer, optimizer_step

    spec = build_spec(
        {
            "topology": "(rehearsal)",
            "model": {"d_model": 8, "n_layers": 1, "n_heads": 2, "ctx": 4},
            "train": {"steps": 1, "batch": 1, "micro_batches": 1, "warmup": 0},
        }
    )
    stage = build_stages(spec.model, [1], 0)[0]
    opt = make_optimizer(stage, spec)
    x = torch.zeros(1, 4, dtype=torch.long)
    lm_loss(stage(x), x).backward()
    optimizer_step(stage, opt, 0, spec, grad_sq_norm(stage))


def _rehearse_codecs(run: dict) -> None:
    """One forward and backward message through the run's codecs, at its boundary shape: what a
    codec compiles or loads on first use (quantize's numba kernels: numba and LLVM, ~130 MiB)
    is then shared by every stage instead of paid by each. Compiling starts no thread here
    (one OpenMP thread, set by the launcher); the server checks that before each fork."""
    import torch

    from harness.compressors import Context, build
    from harness.compressors.base import ForwardRecord

    try:
        fwd, bwd = build(run["fwd"], "compression.fwd"), build(run["bwd"], "compression.bwd")
        x = torch.randn(run["shape"], generator=torch.Generator().manual_seed(0))
        fctx = Context(direction="forward")
        p = fwd.encode(x, fctx)
        fwd.decode(p, Context(direction="forward"))
        bctx = Context(direction="backward", forward=ForwardRecord(fwd, p, fctx))
        bwd.decode(bwd.encode(x, bctx), bctx)
    except Exception:  # a codec that fails here fails in its stages too, which say so and are named
        pass


def _say(out: Any, msg: dict) -> None:
    out.write(json.dumps(msg) + "\n")
    out.flush()


def _relay(out: Any, stage: int, fd: int, buffers: dict[int, bytes]) -> bool:
    """Forward a child's complete output lines; False at its end of output (or nothing there)."""
    r, _, _ = select.select([fd], [], [], 0)
    if not r:
        return False
    chunk = os.read(fd, 65536)
    data = buffers.pop(fd, b"") + chunk
    *lines, rest = data.split(b"\n")
    if rest and chunk:
        buffers[fd] = rest
    elif rest:
        lines.append(rest)
    for line in lines:
        _say(out, {"stage": stage, "line": line.decode(errors="replace")})
    return bool(chunk)


def _fork_stage(cmd: dict) -> tuple[int, int, int]:
    if threads() != 1:
        raise RuntimeError(f"the fork server has {threads()} threads: forking would copy a half-held lock")
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        return pid, cmd["stage"], r
    code = 1
    try:
        os.close(r)
        os.dup2(w, 1)
        os.dup2(w, 2)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") < 1 << 16 else 1 << 16)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        sys.stdin = open(os.devnull)
        _die_with_parent()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        from testbed.nsenter import enter

        enter(cmd["netns"])  # into the stage's host before anything touches the network
        code = _run_stage(cmd)
    except BaseException:  # the stage's traceback, then its exit status, as a process of its own
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run_stage(cmd: dict) -> int:
    import importlib

    importlib.import_module(cmd["module"]).main_with_meta(cmd["run_dir"], cmd["stage"], cmd["meta"])
    return 0


# ---------------------------------------------------------------- the launcher's side


class ForkedStage:
    """One forked stage as the launcher follows it: the part of ``subprocess.Popen`` it uses."""

    def __init__(self, stage: int, server: ForkServer) -> None:
        self.stage, self.server = stage, server
        self.pid: int = 0
        self.returncode: int | None = None
        self.stdout = _Lines()  # what the stage prints, line by line

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None and self.pid:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        self.server.wait_for(self, timeout)
        return self.returncode if self.returncode is not None else -signal.SIGKILL


class _Lines:
    """An iterable of a stage's output lines (ends when the stage has exited)."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()

    def __iter__(self):
        while (line := self.q.get()) is not None:
            yield line + "\n"


class ForkServer:
    """The launcher's handle on the fork server process of one run."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.stages: dict[int, ForkedStage] = {}
        self.ready = self.gone = False
        self._exited = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(
        self, stage: int, netns: str, module: str, run_dir: str, meta: dict, timeout: float = FORK_S
    ) -> ForkedStage:
        """Fork stage ``stage`` into ``netns``; returns once its pid is known."""
        with self._exited:
            if not self._exited.wait_for(lambda: self.ready or self.gone, STARTUP_S):
                raise RuntimeError(f"the fork server did not import torch and rehearse a step within {STARTUP_S:g} s")
        if not self.ready:
            try:
                status = self.proc.wait(timeout=5)  # its output has closed: it has exited or is exiting
            except subprocess.TimeoutExpired:
                status = "unknown"
            raise RuntimeError(f"the fork server exited before it was ready (exit status {status})")
        fs = ForkedStage(stage, self)
        self.stages[stage] = fs
        cmd = {"stage": stage, "netns": netns, "module": module, "run_dir": run_dir, "meta": meta}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        with self._exited:
            if not self._exited.wait_for(lambda: fs.pid or fs.returncode is not None, timeout):
                raise RuntimeError(f"the fork server did not start stage {stage} within {timeout:g} s")
        return fs

    def _read(self) -> None:
        for raw in self.proc.stdout:
            msg = json.loads(raw)
            if "ready" in msg:
                with self._exited:
                    self.ready = True
                    self._exited.notify_all()
                continue
            fs = self.stages.get(msg["stage"])
            if fs is None:
                continue
            if "pid" in msg:
                with self._exited:
                    fs.pid = msg["pid"]
                    self._exited.notify_all()
            elif "line" in msg:
                fs.stdout.q.put(msg["line"])
            elif "exit" in msg:
                with self._exited:
                    fs.returncode = msg["exit"]
                    fs.stdout.q.put(None)
                    self._exited.notify_all()
        with self._exited:  # the server is gone: so are its children (they die with it)
            self.gone = True
            for fs in self.stages.values():
                if fs.returncode is None:
                    fs.returncode = -signal.SIGKILL
                    fs.stdout.q.put(None)
            self._exited.notify_all()

    def wait_for(self, fs: ForkedStage, timeout: float | None) -> None:
        with self._exited:
            self._exited.wait_for(lambda: fs.returncode is not None, timeout)

    def close(self) -> None:
        """No more stages; the server exits once its children have."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    serve_forever(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
