"""A memory cgroup to hold a run's processes to a limit, as a container's would.

For the benchmarks and tests that check what a run does at a memory limit: the 7-day run's
peak (``benchmarks/week.py --limit``) and a kernel that the out-of-memory killer ends. Needs
root and a memory controller (cgroup v2, else v1's); :meth:`MemoryCgroup.create` says why
not otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


class MemoryCgroup:
    """A cgroup of its own under the memory controller, held to ``limit_mb`` (without swap).

    ``inside(argv)`` is a command that runs ``argv`` in it, with all it starts; ``remove``
    when they have ended.
    """

    def __init__(self, path: Path, *, unified: bool) -> None:
        self.path, self.unified = path, unified

    @classmethod
    def create(cls, name: str, limit_mb: int) -> MemoryCgroup:
        """Raise OSError, saying why, where this process may not make one."""
        unified = "memory" in _read(ROOT / "cgroup.controllers").split()
        parent = ROOT if unified else ROOT / "memory"
        if not unified and not parent.is_dir():
            raise OSError(f"no memory controller under {ROOT}")
        cgroup = cls(parent / f"{name}-{os.getpid()}", unified=unified)
        cgroup.path.mkdir()
        try:
            limit = str(limit_mb * 1_000_000)
            if unified:
                (cgroup.path / "memory.max").write_text(limit, encoding="ascii")
                _write_if_there(cgroup.path / "memory.swap.max", "0")
            else:
                (cgroup.path / "memory.limit_in_bytes").write_text(limit, encoding="ascii")
                _write_if_there(cgroup.path / "memory.memsw.limit_in_bytes", limit)
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def inside(self, argv: list[str]) -> list[str]:
        """``argv`` run in this cgroup: a shell moves itself in, then execs it. (Not a
        ``preexec_fn``, which is unsafe in a process with threads, as pytest's workers are.)"""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *argv]

    def peak_mb(self) -> float:
        """The most memory the cgroup was charged: its processes' own pages and page cache
        (the files they wrote or were first to read), which the kernel reclaims at the limit
        before it kills anything."""
        name = "memory.peak" if self.unified else "memory.max_usage_in_bytes"
        return int(_read(self.path / name) or 0) / 1e6

    def oom_kills(self) -> int:
        """How many of its processes the out-of-memory killer ended (v1: kernels from 4.13)."""
        events = "memory.events" if self.unified else "memory.oom_control"
        for line in _read(self.path / events).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        self.path.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _write_if_there(path: Path, value: str) -> None:
    if path.exists():  # no swap accounting on this kernel: nothing to hold
        path.write_text(value, encoding="ascii")
