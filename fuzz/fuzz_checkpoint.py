"""Long-running coverage-guided fuzzing of the checkpoint readers (atheris / libFuzzer).

    pip install atheris
    python fuzz/fuzz_checkpoint.py -max_total_time=28800 fuzz/corpus   # an overnight run

Each input is split into a safetensors file and an index; the property is that fp8port reads
them or raises one of its typed errors (Fp8portError). Any other exception is a crash that
libFuzzer saves as crash-<hash> to replay with `python fuzz/fuzz_checkpoint.py crash-<hash>`.
The CI runs the same property with hypothesis (tests/checkpoint/test_fuzz.py).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from fp8port.checkpoint.folder import Checkpoint
    from fp8port.errors import Fp8portError

WORK = Path(tempfile.mkdtemp(prefix="fp8port-fuzz-"))


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    shard = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    index = fdp.ConsumeUnicodeNoSurrogates(512)
    (WORK / "model-00001-of-00001.safetensors").write_bytes(shard)
    (WORK / "model.safetensors.index.json").write_text(
        index if index.strip() else json.dumps({"weight_map": {"t": "model-00001-of-00001.safetensors"}})
    )
    try:
        ck = Checkpoint.open(WORK)
        for name in ck.tensors:
            ck.read(name)
    except Fp8portError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
