"""--device: a name torch does not know, or a device this build cannot use, is one clear error
(regression: `generate --device cuda` on the CPU wheel and `--device foo` gave tracebacks)."""
import pytest
import torch

import blinkgen
from blinkgen.checks import check_device
from blinkgen.errors import UserInputError
from conftest import run_cli


def test_cpu_is_accepted():
    assert check_device("cpu") == "cpu"


@pytest.mark.parametrize("bad,match", [("foo", "unknown device 'foo'"), ("meta", "runs on cpu, cuda or mps"),
                                       ("", "unknown device")])
def test_unknown_devices_are_refused(bad, match):
    with pytest.raises(UserInputError, match=match):
        check_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line_and_load_refuses_it_before_reading_weights():
    with pytest.raises(UserInputError, match="cannot use CUDA"):
        blinkgen.load("no-such-model", device="cuda")  # the device is checked first
    r = run_cli("generate", "red heart", "--device", "cuda", "-o", "/nonexistent/x.png", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "cannot use CUDA" in r.stderr
