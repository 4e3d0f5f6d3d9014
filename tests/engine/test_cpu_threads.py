"""The CPU thread count: the CPUs a process may use (affinity, cgroup quota) and its adaptation to contention."""

import os

import pytest

from yoloq.engine import cpu_threads
from yoloq.engine.cpu_threads import CpuThreads, _cgroup_cpu_limit, _waiting_seconds


class FakeMachine:
    """A clock, the scheduler's waiting total, and the thread count set, all under the test's control."""

    def __init__(self):
        self.now, self.waited, self.threads, self.busy = 0.0, 0.0, None, 0.0

    def step(self, seconds: float = 0.5) -> None:
        """One training step: while busy, `busy` of our threads wait for a CPU, if we run more than one."""
        self.now += seconds
        if self.threads and self.threads > 1:
            self.waited += self.busy * seconds

    def controller(self, target: int = 2, **kw) -> CpuThreads:
        return CpuThreads(target, clock=lambda: self.now, waiting=lambda: self.waited,
                          set_threads=lambda n: setattr(self, "threads", n), **kw)


def run(machine: FakeMachine, threads: CpuThreads, seconds: float) -> list[int]:
    counts = []
    end = machine.now + seconds
    while machine.now < end:
        machine.step()
        threads.tick()
        counts.append(threads.current)
    return counts


def test_quiet_machine_keeps_every_thread():
    m = FakeMachine()
    t = m.controller(4)
    t.start()
    assert m.threads == 4
    assert set(run(m, t, 60)) == {4} and t.changes == 0


def test_contention_drops_threads_then_probes_with_backoff_and_recovers():
    m = FakeMachine()
    t = m.controller(2, window_s=1.0, probe_s=10.0, max_probe_s=40.0)
    t.start()
    m.busy = 0.9
    counts = run(m, t, 2.0)
    assert counts[-1] == 1 and m.threads == 1  # dropped after the first window
    # While the contention lasts, the full count is tried again after 10, then 20, then 40, 40 s.
    counts = run(m, t, 200.0)
    probes = sum(1 for a, b in zip(counts, counts[1:]) if a == 1 and b == 2)
    assert 3 <= probes <= 7
    assert counts.count(2) / len(counts) < 0.1  # little time spent at the contended count
    m.busy = 0.0
    counts = run(m, t, 60.0)
    assert counts[-1] == 2 and set(counts[-10:]) == {2}  # a probe found the cores free and kept them


def test_many_cores_drop_only_what_is_taken():
    m = FakeMachine()
    t = m.controller(16)
    t.start()
    m.busy = 1.0  # one competitor: one thread-equivalent of ours waits
    run(m, t, 1.5)
    assert m.threads == 15


def test_fixed_count_never_changes():
    m = FakeMachine()
    t = m.controller(2, adapt=False)
    t.start()
    m.busy = 0.9
    assert set(run(m, t, 30)) == {2}


def test_no_schedstat_means_no_adaptation():
    m = FakeMachine()
    t = CpuThreads(2, clock=lambda: m.now, waiting=lambda: None, set_threads=lambda n: setattr(m, "threads", n))
    t.start()
    m.busy = 0.9
    assert set(run(m, t, 10)) == {2}


def test_bad_thread_count_is_refused():
    with pytest.raises(ValueError, match="positive integer"):
        CpuThreads(0)


def test_waiting_seconds_reads_this_process():
    waited = _waiting_seconds()
    assert waited is None or waited >= 0.0


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_the_process_and_its_ancestors(tmp_path):
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/job/step\n")
    root = tmp_path / "cg"
    _write(root / "job" / "step" / "cpu.max", "max 100000\n")
    _write(root / "job" / "cpu.max", "250000 100000\n")  # --cpus=2.5 on the job
    assert _cgroup_cpu_limit(root, proc) == pytest.approx(2.5)
    _write(root / "job" / "cpu.max", "max 100000\n")
    assert _cgroup_cpu_limit(root, proc) is None


def test_cgroup_v1_quota(tmp_path):
    proc = tmp_path / "proc_cgroup"
    proc.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    root = tmp_path / "cg"
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "400000\n")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert _cgroup_cpu_limit(root, proc) == pytest.approx(4.0)
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "-1\n")
    assert _cgroup_cpu_limit(root, proc) is None


def test_usable_cpus_is_capped_by_the_quota_and_split_among_local_ranks(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(cpu_threads, "_cgroup_cpu_limit", lambda: 4.5)
    assert cpu_threads.usable_cpus() == 4
    monkeypatch.setattr(cpu_threads, "_cgroup_cpu_limit", lambda: None)
    assert cpu_threads.usable_cpus() == 64
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert cpu_threads.default_threads() == 8
    monkeypatch.setattr(cpu_threads, "_cgroup_cpu_limit", lambda: 0.5)  # less than a CPU is still one thread
    assert cpu_threads.default_threads() == 1
