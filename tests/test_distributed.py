"""Two CPU ranks with gloo: the all-reduced Fisher equals one process's, and a torchrun run works."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lifelong.data import BatchLoader, TaskData, load_digits
from lifelong.importance import fisher_diagonal
from lifelong.models import MLP


def _rank_fisher(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = MLP(64, (32,), 10)
    train, _ = load_digits()
    shard = BatchLoader([TaskData(train, 0)], 64 * world, shuffle=True,
                        generator=torch.Generator().manual_seed(1), shard=(rank, world))
    fisher = fisher_diagonal(model, shard)
    if rank == 0:
        torch.save(fisher, out)
    # both ranks leave together: a rank tearing gloo down while its peer is still connected can abort
    # the peer ("terminate called without an active exception", seen once in CI)
    dist.barrier()
    dist.destroy_process_group()


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_all_reduced_fisher_equals_the_single_process_fisher(tmp_path):
    out = tmp_path / "fisher.pt"
    # gloo's teardown can still abort a rank on a heavily loaded machine (SIGABRT, "terminate called
    # without an active exception", twice in CI at load 7 on 2 cores) after the work is done: a second
    # try on a fresh port; the comparison below is exact either way
    for attempt in range(2):
        try:
            mp.spawn(_rank_fisher, args=(2, _free_port(), str(out)), nprocs=2, join=True)
            break
        except mp.ProcessExitedException as e:
            if attempt == 1 or e.signal_name != "SIGABRT":
                raise
    distributed = torch.load(out)
    torch.manual_seed(0)
    model = MLP(64, (32,), 10)
    train, _ = load_digits()
    whole = BatchLoader([TaskData(train, 0)], 128, shuffle=True, generator=torch.Generator().manual_seed(1))
    n = (whole.num_samples // 2) * 2  # the shards cover the same samples (an even count)
    single = fisher_diagonal(model, whole, max_samples=n)
    for k in single:
        torch.testing.assert_close(distributed[k], single[k], rtol=1e-6, atol=1e-9)


def _torchrun(strategy, *extra, ok=True):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "lifelong", "run",
           "--benchmark", "permuted-digits", "--tasks", "2", "--epochs", "10", "--hidden", "128", "--threads", "1",
           "--strategy", strategy, *extra, "--distributed", "--json", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if not ok:
        return proc
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_two_ranks_ddp_and_fsdp_give_the_same_matrix_and_ewc_keeps_more_than_naive():
    runs = {(name, mode): _torchrun(name, *flags, *mode_flags)
            for name, flags in (("naive", ()), ("ewc", ("--lambda", "1000")))
            for mode, mode_flags in (("ddp", ()), ("fsdp", ("--fsdp",)))}
    for name in ("naive", "ewc"):  # sharding changes where parameters live, not what is learned
        ddp, fsdp = runs[name, "ddp"]["accuracy_matrix"], runs[name, "fsdp"]["accuracy_matrix"]
        assert max(abs(a - b) for ra, rb in zip(ddp, fsdp, strict=True) for a, b in zip(ra, rb, strict=True)) <= 0.01
    ewc = runs["ewc", "fsdp"]
    assert ewc["local_parameters"] * 2 == ewc["parameters"]  # each of the 2 ranks holds half
    assert ewc["consolidation_bytes"] == 2 * 4 * ewc["local_parameters"]  # two floats per local parameter
    for mode in ("ddp", "fsdp"):
        assert runs["ewc", mode]["accuracy_matrix"][1][0] > runs["naive", mode]["accuracy_matrix"][1][0] + 0.1


def test_strategies_with_forward_passes_of_their_own_are_refused_under_distributed():
    from lifelong.learner import _check_distributable
    from lifelong.strategies import build_strategy

    for name in ("der", "der++", "agem", "lwf", "icarl", "ewc+der++"):
        with pytest.raises(ValueError, match="only forward pass is the learner's"):
            _check_distributable(build_strategy(name))
    for name in ("naive", "ewc", "replay", "ewc+replay", "si", "mas", "online-ewc"):
        _check_distributable(build_strategy(name))
    proc = _torchrun("der", "--memory", "50", ok=False)
    assert proc.returncode == 1 and "der run their own" in proc.stderr
