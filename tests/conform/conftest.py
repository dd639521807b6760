import warnings

import numpy as np
import pytest

from fp8port.conform import export, read_bundle


@pytest.fixture(scope="session")
def kit(tmp_path_factory):
    """One small export shared by the tests: three element formats, two presets."""
    d = tmp_path_factory.mktemp("kit")
    export(d, formats=["float8_e4m3fn", "float8_e5m2", "float4_e2m1fn"], presets=["mxfp8", "deepseek-v3.1"])
    return d


@pytest.fixture(scope="session")
def inputs(kit):
    return read_bundle(kit / "inputs.npz")


@pytest.fixture(scope="session")
def to_mx():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor")
        from torchao.prototype.mx_formats.config import ScaleCalculationMode
    import torch

    def run(inputs, prefix, mode, block):
        out = {}
        for k, x in inputs.items():
            if k.startswith(prefix) and x.shape[-1] % block == 0:
                s, c = mod.to_mx(torch.from_numpy(x), torch.float8_e4m3fn, block, getattr(ScaleCalculationMode, mode))
                out[f"{k}/codes"] = c.view(torch.uint8).numpy()
                out[f"{k}/scales"] = s.view(torch.uint8).numpy()
        return out

    return run


def np_save_dir(root, arrays):
    """Write arrays as a tree of .npy files: <case>/codes.npy."""
    for k, a in arrays.items():
        f = root / (k + ".npy")
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f, a)
