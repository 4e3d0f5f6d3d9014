import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    # These tensors are tiny: on a busy 2-core machine, waking a second OpenMP thread for every
    # elementwise op costs milliseconds and makes the suite several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
