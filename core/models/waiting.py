"""How torch's OpenMP threads wait on a busy machine, decided before torch loads (no torch import here).

torch's OpenMP (libgomp) threads spin for a while at the end of every parallel region, waiting for the others.
With another CPU-heavy process running, a spinning thread burns the time slice its partner needed to finish: a
tiny-model run of 11 files took 18 s with torch's default against 5.6 s with `OMP_WAIT_POLICY=PASSIVE` (threads
sleep at once) on a machine already busy, 38 s against 15 s with two more CPU burners (README: the numbers and
the CPU). On an idle machine spinning is what makes small parallel regions fast, so nothing is changed there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping, Sequence

# Set by the user, these say how OpenMP should run; the policy is then theirs.
USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "KMP_BLOCKTIME")


def busy_machine(load: float, cores: int) -> bool:
    """Whether other processes hold at least a core (the 1-minute load average, our own process not yet running):
    then our threads can't all run at once, and a spinning one keeps its partner off the CPU."""
    return cores > 0 and load >= 1.0


def wait_policy(environ: Mapping[str, str], argv: Sequence[str], load: float, cores: int) -> str | None:
    """The OMP_WAIT_POLICY to set: PASSIVE on a busy machine, None (torch's default) on an idle one, or where the
    user chose the threads or the waiting (`--threads`, OMP_WAIT_POLICY, OMP_NUM_THREADS, GOMP_SPINCOUNT)."""
    chose = any(name in environ for name in USER_SETTINGS)
    chose = chose or any(arg == "--threads" or arg.startswith("--threads=") for arg in argv)
    return None if chose or not busy_machine(load, cores) else "PASSIVE"


def wait_passively_when_busy(environ: MutableMapping[str, str] | None = None, argv: Sequence[str] = ()) -> None:
    """Set OMP_WAIT_POLICY=PASSIVE in this process's environment when the machine is busy (see `wait_policy`).
    It must run before torch is imported: OpenMP reads it once, as it starts."""
    environ = os.environ if environ is None else environ
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this system
        return
    policy = wait_policy(environ, argv, load, os.cpu_count() or 1)
    if policy is not None:
        environ["OMP_WAIT_POLICY"] = policy
