"""The restricted unpickler loads plain data and never executes a pickle's globals."""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from monai_mammo.data.safe_pickle import restricted_load
from monai_mammo.exceptions import MammoDataError


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",))


class _SubprocessPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_containers_round_trip(tmp_path: Path, protocol: int) -> None:
    data = [
        {
            "horizontal_flip": "NO",
            "L-CC": ["0_L_CC"],
            "window": (1, 2, 3, 4),
            "set": {1, 2},
            "frozen": frozenset({"a"}),
            "ordered": collections.OrderedDict(b=2, a=1),
            "scalars": [1.5, True, None, 3j, b"raw", bytearray(b"x"), -7],
        }
    ]
    path = tmp_path / "exams.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    assert restricted_load(path) == data
    with open(path, "rb") as stream:
        assert restricted_load(stream) == data


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_only_when_allowed(tmp_path: Path, protocol: int) -> None:
    data = {"array": np.arange(6, dtype=np.int16).reshape(2, 3), "scalar": np.int64(7), "f": np.float32(0.5)}
    path = tmp_path / "np.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    with pytest.raises(MammoDataError, match="forbidden global numpy"):
        restricted_load(path)
    loaded = restricted_load(path, allow_numpy=True)
    np.testing.assert_array_equal(loaded["array"], data["array"])
    assert loaded["scalar"] == 7 and loaded["f"] == np.float32(0.5)


@pytest.mark.parametrize(
    ("payload", "global_name"),
    [(_SystemPayload, "system"), (_EvalPayload, "builtins.eval"), (_SubprocessPayload, "subprocess.call")],
)
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_malicious_pickle_is_not_executed(tmp_path: Path, payload, global_name: str, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([{"L-CC": ["x"]}, payload(marker)], protocol=protocol))
    for allow_numpy in (False, True):
        with pytest.raises(MammoDataError, match=f"forbidden global .*{global_name}") as info:
            restricted_load(path, allow_numpy=allow_numpy)
        assert str(path) in str(info.value)
        assert not marker.exists()


def test_forbidden_global_names_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # a hand-written protocol-0 pickle: the module is spelled as a user would read it
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    with pytest.raises(MammoDataError, match="forbidden global os.system"):
        restricted_load(io.BytesIO(evil))
    assert not marker.exists()


def test_extra_allowed_global(tmp_path: Path) -> None:
    path = tmp_path / "range.pkl"
    path.write_bytes(pickle.dumps(range(3)))
    with pytest.raises(MammoDataError, match="forbidden global builtins.range"):
        restricted_load(path)
    assert restricted_load(path, allowed=[("builtins", "range")]) == range(3)


@pytest.mark.parametrize("cut", [1, 10, -2])
def test_truncated_pickle(tmp_path: Path, cut: int) -> None:
    good = pickle.dumps([{"horizontal_flip": "NO", "L-CC": ["a", "b"]}] * 3, protocol=4)
    path = tmp_path / "cut.pkl"
    path.write_bytes(good[:cut])
    with pytest.raises(MammoDataError, match="cut.pkl: corrupt or truncated pickle"):
        restricted_load(path)


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pkl"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes())
    with pytest.raises(MammoDataError, match="garbage.pkl"):
        restricted_load(path)
    with pytest.raises(MammoDataError, match="missing.pkl: cannot read pickle"):
        restricted_load(tmp_path / "missing.pkl")
