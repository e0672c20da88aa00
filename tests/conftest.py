import pytest
import torch
from preflight import pytest_runtest_makereport, pytest_sessionstart  # noqa: F401  (CI: no silent skips)

from lifelong.data import load_digits, permuted, split


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # stable timings and results on small CI machines
    yield


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def split_digits(digits):
    return split(*digits, num_tasks=5, scenario="task")


@pytest.fixture(scope="session")
def permuted_digits(digits):
    return permuted(*digits, num_tasks=3, seed=0)
