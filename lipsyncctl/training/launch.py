"""``lipsyncctl train --gpus N``: start N training processes on this machine through torch's elastic
launcher (``torch.distributed.run``, what ``torchrun`` and ``accelerate launch`` use), one per GPU, or N
gloo processes on the CPU (``--nproc N --device cpu``: tests and laptops). Each process runs
``lipsyncctl train`` with the same arguments; accelerate reads the launcher's environment (RANK,
WORLD_SIZE, MASTER_ADDR...) and wraps the model in DDP. Several machines: use ``accelerate launch`` or
``torchrun`` with their multi-node options and ``-m lipsyncctl train ...`` directly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(argv: list[str], processes: int, *, port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(processes),
            "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "lipsyncctl", "train", *argv]


def launch(argv: list[str], processes: int, *, cpu: bool = False) -> int:
    """Run the group and return its exit status (the first failing rank's, as torch's launcher reports)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["LIPSYNCCTL_LAUNCHED"] = "1"
    return subprocess.call(launch_command(argv, processes, port=free_port()), env=env)
