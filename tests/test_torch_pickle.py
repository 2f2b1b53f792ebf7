"""Tests for elm_jax.checkpoints.torch_pickle: reading torch.save zip-pickles without torch."""

from __future__ import annotations

import importlib
import importlib.util
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _import_torch_pickle():
    """The module under test; by file path if the `elm_jax` package cannot be imported."""
    try:
        return importlib.import_module("elm_jax.checkpoints.torch_pickle")
    except Exception:  # a broken or half-written parent package must not hide this module
        path = REPO / "elm_jax" / "checkpoints" / "torch_pickle.py"
        spec = importlib.util.spec_from_file_location("_elm_jax_torch_pickle", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look the module up while executing it
        spec.loader.exec_module(module)
        return module


tp = _import_torch_pickle()
read_torch_state_dict = tp.read_torch_state_dict


def require_reference(*parts: str) -> Path:
    """Path under ../shared/reference, found by the shared locator `helpers.require_shared`
    (honours ELM_JAX_SHARED; skips when absent, fails when CI=true).

    Imported here, not at module level: `helpers` imports `elm_jax`, and a broken parent
    package must fail only the tests that need it, not hide the synthetic ones above.
    """
    from helpers import require_shared

    return require_shared("reference", *parts)


# --------------------------------------------------------------------------------------
# A hand-written pickle writer (protocol 2 opcodes), so the tests need no torch.
# --------------------------------------------------------------------------------------
def _p_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _p_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _p_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _p_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _p_ordered_dict() -> bytes:
    return _p_global("collections", "OrderedDict") + b")R"


def _p_tensor(storage_type: str, key: str, numel: int, offset: int, size, stride,
              location: str = "cuda:0", parameter: bool = False) -> bytes:
    """`_rebuild_tensor_v2(('storage', torch.<type>, key, location, numel), ...)`."""
    pid = _p_tuple(_p_str("storage"), _p_global("torch", storage_type), _p_str(key),
                   _p_str(location), _p_int(numel))
    args = _p_tuple(pid + b"Q", _p_int(offset), _p_tuple(*map(_p_int, size)),
                    _p_tuple(*map(_p_int, stride)), b"\x89", _p_ordered_dict())
    tensor = _p_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"
    if parameter:
        tensor = (_p_global("torch._utils", "_rebuild_parameter")
                  + _p_tuple(tensor, b"\x88", _p_ordered_dict()) + b"R")
    return tensor


def _p_state_dict(entries: dict[str, bytes], metadata: bool = True) -> bytes:
    """An OrderedDict of tensors, with a `_metadata` attribute set by BUILD like torch's."""
    body = b"\x80\x02" + _p_ordered_dict() + b"("
    for key, tensor in entries.items():
        body += _p_str(key) + tensor
    body += b"u"
    if metadata:
        inner = _p_ordered_dict() + b"(" + _p_str("") + b"}" + _p_str("version") + _p_int(1) \
            + b"s" + b"u"
        body += b"}" + _p_str("_metadata") + inner + b"s" + b"b"
    return body + b"."


def _write_zip(path: Path, top: str, pickled: bytes, storages: dict[str, bytes],
               byteorder: str | None = "little") -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{top}/data.pkl", pickled)
        if byteorder is not None:
            archive.writestr(f"{top}/byteorder", byteorder)
        for key, raw in storages.items():
            archive.writestr(f"{top}/data/{key}", raw)
        archive.writestr(f"{top}/version", "3\n")
    return path


def _synthetic(tmp_path: Path, name: str = "synthetic.pt", byteorder: str = "little"):
    """A checkpoint with strided views, shared storage, several dtypes; and its expected dict."""
    order = "<" if byteorder == "little" else ">"
    base = np.arange(10, dtype=np.float32) * 1.5 - 3.0
    longs = np.array([7, -2, 2**40, 0, 5], dtype=np.int64)
    bools = np.array([True, False, False, True], dtype=bool)
    halves = np.array([0.5, -1.25, 65504.0], dtype=np.float16)
    storages = {
        "0": base.astype(order + "f4").tobytes(),
        "1": longs.astype(order + "i8").tobytes(),
        "2": bools.tobytes(),
        "3": halves.astype(order + "f2").tobytes(),
    }
    entries = {
        # (3, 2) view with strides (1, 3) (a transpose) starting at element 2.
        "strided": _p_tensor("FloatStorage", "0", 10, 2, (3, 2), (1, 3)),
        # The same storage again, as a contiguous (2, 2) block at offset 5, as a Parameter.
        "shared": _p_tensor("FloatStorage", "0", 10, 5, (2, 2), (2, 1), parameter=True),
        "longs": _p_tensor("LongStorage", "1", 5, 1, (2,), (2,), location="cpu"),
        "mask": _p_tensor("BoolStorage", "2", 4, 0, (4,), (1,)),
        "half": _p_tensor("HalfStorage", "3", 3, 0, (3,), (1,)),
        "scalar": _p_tensor("FloatStorage", "0", 10, 9, (), ()),
        "empty": _p_tensor("FloatStorage", "0", 10, 0, (0, 4), (4, 1)),
        "broadcast": _p_tensor("LongStorage", "1", 5, 4, (3,), (0,)),
    }
    expected = {
        "strided": np.array([[base[2 + i + 3 * j] for j in range(2)] for i in range(3)],
                            dtype=np.float32),
        "shared": base[5:9].reshape(2, 2),
        "longs": longs[[1, 3]],
        "mask": bools,
        "half": halves,
        "scalar": np.array(base[9], dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "broadcast": np.array([5, 5, 5], dtype=np.int64),
    }
    path = _write_zip(tmp_path / name, "some_top_folder", _p_state_dict(entries), storages,
                      byteorder=byteorder)
    return path, expected


def _assert_same(got: dict, expected: dict):
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert isinstance(got[key], np.ndarray), key
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)


# --------------------------------------------------------------------------------------
# Synthetic files (run everywhere, no torch, no ../shared)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_synthetic_round_trip(tmp_path, byteorder):
    path, expected = _synthetic(tmp_path, byteorder=byteorder)
    got = read_torch_state_dict(path)
    assert type(got) is dict
    _assert_same(got, expected)
    for value in got.values():
        assert value.flags.c_contiguous and value.flags.writeable and value.flags.owndata
    # Arrays that shared a storage are independent copies.
    got["shared"][0, 0] = 123.0
    assert got["strided"].max() < 100


def test_synthetic_without_byteorder_member_and_str_path(tmp_path):
    path, expected = _synthetic(tmp_path)
    with zipfile.ZipFile(path) as src:
        members = {n: src.read(n) for n in src.namelist() if not n.endswith("/byteorder")}
    legacy = tmp_path / "old_style.pt"
    with zipfile.ZipFile(legacy, "w") as dst:
        for name, raw in members.items():
            dst.writestr(name, raw)
    _assert_same(read_torch_state_dict(str(legacy)), expected)


def test_synthetic_bfloat16_widens_to_float32(tmp_path):
    values = np.array([1.5, -2.25, 1.5 * 2.0**127, 2.0**-130], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")  # exact: low mantissa bits are 0
    pickled = _p_state_dict({"b": _p_tensor("BFloat16Storage", "0", 4, 0, (4,), (1,))})
    path = _write_zip(tmp_path / "bf16.pt", "bf16", pickled, {"0": bits.tobytes()})
    got = read_torch_state_dict(path)["b"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_torch_state_dict(tmp_path / "nope.pt")


def test_random_bytes(tmp_path):
    path = tmp_path / "random_bytes.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="random_bytes.pt") as info:
        read_torch_state_dict(path)
    assert "only the zip" in str(info.value) and "1.6" in str(info.value)


def test_legacy_format_is_named(tmp_path):
    # What the legacy format begins with: PROTO 2 then LONG1 of the torch magic number.
    path = tmp_path / "legacy.pt"
    magic = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
    path.write_bytes(b"\x80\x02\x8a\x0a" + magic + b".\x80\x02M\xe9\x03.")
    with pytest.raises(ValueError, match="legacy.pt") as info:
        read_torch_state_dict(path)
    assert "legacy" in str(info.value) and "torch >= 1.6" in str(info.value)


def _truncate(src: Path, dst: Path) -> Path:
    raw = src.read_bytes()
    dst.write_bytes(raw[: len(raw) // 2])
    return dst


def test_truncated_synthetic(tmp_path):
    path, _ = _synthetic(tmp_path)
    cut = _truncate(path, tmp_path / "cut_in_half.pt")
    with pytest.raises(ValueError, match="cut_in_half.pt") as info:
        read_torch_state_dict(cut)
    assert "truncated or corrupt" in str(info.value)


def test_truncated_reference(tmp_path):
    src = require_reference("num_memory_15", "neuronio_best_model_state.pt")
    cut = _truncate(src, tmp_path / "half_num_memory_15.pt")
    with pytest.raises(ValueError, match="half_num_memory_15.pt") as info:
        read_torch_state_dict(cut)
    assert "truncated or corrupt" in str(info.value)


def test_corrupt_storage_bytes(tmp_path):
    path, _ = _synthetic(tmp_path, name="flipped.pt")
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("some_top_folder/data/1")
    # Local header: 30 bytes + name + extra, then the stored data.
    data_start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[data_start + 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="flipped.pt") as err:
        read_torch_state_dict(path)
    assert "corrupt" in str(err.value)


def test_forbidden_global_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    pickled = (b"\x80\x02" + _p_global("os", "system")
               + _p_tuple(_p_str(f"touch {marker}")) + b"R.")
    path = _write_zip(tmp_path / "evil.pt", "evil", pickled, {})
    with pytest.raises(ValueError, match="evil.pt") as info:
        read_torch_state_dict(path)
    assert "os.system" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("torch", "load"),
                                         ("torch._utils", "_rebuild_qtensor"),
                                         ("numpy", "ndarray"), ("torch", "float8_e4m3fn")])
def test_other_globals_refused(tmp_path, module, name):
    path = _write_zip(tmp_path / "bad_global.pt", "g",
                      b"\x80\x02" + _p_global(module, name) + b".", {})
    with pytest.raises(ValueError, match=rf"bad_global\.pt.*{module}\.{name}"):
        read_torch_state_dict(path)


def test_stack_global_refused(tmp_path):
    # Protocol 4 STACK_GLOBAL goes through the same allowlist.
    pickled = b"\x80\x04" + _p_str("os") + _p_str("system") + b"\x93."
    path = _write_zip(tmp_path / "stack_global.pt", "g", pickled, {})
    with pytest.raises(ValueError, match=r"stack_global\.pt.*os\.system"):
        read_torch_state_dict(path)


def test_missing_data_pkl(tmp_path):
    path = tmp_path / "no_pickle.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("top/data/0", b"\0" * 4)
        archive.writestr("top/version", "3\n")
    with pytest.raises(ValueError, match=r"no_pickle\.pt.*data\.pkl"):
        read_torch_state_dict(path)


def test_missing_storage_member(tmp_path):
    pickled = _p_state_dict({"w": _p_tensor("FloatStorage", "7", 4, 0, (4,), (1,))})
    path = _write_zip(tmp_path / "no_storage.pt", "top", pickled, {"0": b"\0" * 16})
    with pytest.raises(ValueError, match=r"no_storage\.pt.*top/data/7.*missing"):
        read_torch_state_dict(path)


def test_storage_shorter_than_declared(tmp_path):
    pickled = _p_state_dict({"w": _p_tensor("FloatStorage", "0", 4, 0, (4,), (1,))})
    path = _write_zip(tmp_path / "short_storage.pt", "top", pickled, {"0": b"\0" * 12})
    with pytest.raises(ValueError, match=r"short_storage\.pt.*12 bytes"):
        read_torch_state_dict(path)


def test_tensor_beyond_storage(tmp_path):
    # The storage is as long as declared, but the view's offset/size/stride run past its end.
    pickled = _p_state_dict({"w": _p_tensor("FloatStorage", "0", 4, 1, (2, 2), (2, 1))})
    path = _write_zip(tmp_path / "view_too_big.pt", "top", pickled, {"0": b"\0" * 16})
    with pytest.raises(ValueError, match=r"view_too_big\.pt.*holds 4 elements.*needs 5"):
        read_torch_state_dict(path)


def test_not_a_dict(tmp_path):
    pickled = b"\x80\x02]" + b"(" + _p_tensor("FloatStorage", "0", 1, 0, (1,), (1,)) + b"e."
    path = _write_zip(tmp_path / "a_list.pt", "top", pickled, {"0": b"\0" * 4})
    with pytest.raises(ValueError, match=r"a_list\.pt.*list, not a dict of tensors"):
        read_torch_state_dict(path)


def test_dict_with_non_tensor_value(tmp_path):
    pickled = (b"\x80\x02}" + _p_str("model") + _p_ordered_dict() + b"s" + _p_str("epoch")
               + _p_int(3) + b"s.")
    path = _write_zip(tmp_path / "nested.pt", "top", pickled, {})
    with pytest.raises(ValueError, match=r"nested\.pt.*'model'.*not a tensor"):
        read_torch_state_dict(path)


def test_garbage_pickle(tmp_path):
    path = _write_zip(tmp_path / "garbage_pickle.pt", "top", b"\x80\x02(X\xff\xff", {})
    with pytest.raises(ValueError, match=r"garbage_pickle\.pt.*data\.pkl"):
        read_torch_state_dict(path)


def test_build_on_tensor_refused(tmp_path):
    tensor = _p_tensor("FloatStorage", "0", 1, 0, (1,), (1,))
    pickled = b"\x80\x02}" + _p_str("w") + tensor + _p_tuple(_p_int(1)) + b"bs."
    path = _write_zip(tmp_path / "build.pt", "top", pickled, {"0": b"\0" * 4})
    with pytest.raises(ValueError, match=r"build\.pt"):
        read_torch_state_dict(path)


# --------------------------------------------------------------------------------------
# The reference checkpoints in ../shared/reference
# --------------------------------------------------------------------------------------
NEURONIO_KEYS = ["_proto_w_s", "tau_s", "_proto_tau_m", "input_to_synapse_indices",
                 "valid_indices_mask", "mlp.network.0.weight", "mlp.network.0.bias",
                 "mlp.network.2.weight", "mlp.network.2.bias", "w_y.weight", "w_y.bias"]


@pytest.mark.parametrize("folder,d_m,parameters", [("num_memory_15", 15, 6827),
                                                   ("best_elm_neuron", 100, 54002)])
def test_reference_neuronio_checkpoints(folder, d_m, parameters):
    state = read_torch_state_dict(require_reference(folder, "neuronio_best_model_state.pt"))
    assert list(state) == NEURONIO_KEYS
    hidden, branches, synapses = 2 * d_m, 45, 4500
    shapes = {
        "_proto_w_s": (synapses,), "tau_s": (synapses,), "_proto_tau_m": (d_m,),
        "input_to_synapse_indices": (synapses,), "valid_indices_mask": (synapses,),
        "mlp.network.0.weight": (hidden, branches + d_m), "mlp.network.0.bias": (hidden,),
        "mlp.network.2.weight": (d_m, hidden), "mlp.network.2.bias": (d_m,),
        "w_y.weight": (2, d_m), "w_y.bias": (2,),
    }
    assert {k: v.shape for k, v in state.items()} == shapes
    for key, value in state.items():
        expected = {"input_to_synapse_indices": np.int64,
                    "valid_indices_mask": np.bool_}.get(key, np.float32)
        assert value.dtype == expected, key
        assert np.all(np.isfinite(value)) if value.dtype == np.float32 else True
    assert np.all(state["tau_s"] == 5.0)
    # 45 windows of 100 over 1278 inputs with stride 29: the last four overhang by
    # 11, 40, 69 and 98 slots, which are masked out.
    mask = state["valid_indices_mask"]
    assert int(mask.sum()) == 4500 - (11 + 40 + 69 + 98) == 4282
    assert np.all(mask.reshape(45, 100)[:41])
    indices = state["input_to_synapse_indices"]
    assert indices[mask].min() == 0 and indices[mask].max() == 1277
    trainable = sum(state[k].size for k in state
                    if k == "_proto_w_s" or k.startswith(("mlp.", "w_y.")))
    assert trainable == parameters


def test_reference_random_routing_checkpoint():
    folder = require_reference("elm_v1_random_routing")
    state = read_torch_state_dict(folder / "state.pt")
    assert list(state) == ["_proto_w_s", "tau_s", "_proto_tau_m", "input_to_synapse_indices",
                           "valid_indices_mask", "mlp.network.0.weight", "mlp.network.0.bias",
                           "mlp.network.2.weight", "mlp.network.2.bias",
                           "mlp.network.4.weight", "mlp.network.4.bias", "w_y.weight",
                           "w_y.bias"]
    assert state["_proto_w_s"].shape == (80,) and state["_proto_tau_m"].shape == (12,)
    assert state["mlp.network.0.weight"].shape == (20, 8 + 12)
    assert state["mlp.network.4.weight"].shape == (12, 20)
    assert state["w_y.weight"].shape == (3, 12) and state["w_y.bias"].shape == (3,)
    assert np.all(state["tau_s"] == 5.0)
    w_s = state["_proto_w_s"]
    assert w_s.dtype == np.float32 and w_s.min() >= 0.0 and w_s.max() <= 1.0
    # Unlike the released models, this file stores the mask as int64 (all ones).
    assert state["valid_indices_mask"].dtype == np.int64
    assert np.all(state["valid_indices_mask"] == 1)
    routing = np.load(folder / "reference_io.npz")["routing"]
    assert state["input_to_synapse_indices"].dtype == np.int64
    np.testing.assert_array_equal(state["input_to_synapse_indices"], routing)


# --------------------------------------------------------------------------------------
# Against torch itself (only where torch is installed; it is not a dependency)
# --------------------------------------------------------------------------------------
def _torch_to_numpy(torch, tensor):
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.float().numpy()
    return tensor.numpy()


def _compare_with_torch(torch, path: Path, weights_only: bool = True):
    ours = read_torch_state_dict(path)
    theirs = torch.load(path, map_location="cpu", weights_only=weights_only)
    assert list(ours) == list(theirs)
    for key, tensor in theirs.items():
        expected = _torch_to_numpy(torch, tensor)
        assert ours[key].dtype == expected.dtype, key
        assert ours[key].shape == expected.shape, key
        np.testing.assert_array_equal(ours[key], expected, err_msg=key)
    return ours


@pytest.mark.parametrize("relative", ["best_elm_neuron/neuronio_best_model_state.pt",
                                      "num_memory_15/neuronio_best_model_state.pt",
                                      "elm_v1_random_routing/state.pt"])
def test_reference_matches_torch_load(relative):
    torch = pytest.importorskip("torch")
    _compare_with_torch(torch, require_reference(*relative.split("/")))


def test_torch_saved_state_dicts(tmp_path):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 7, generator=gen)
    shared = torch.arange(20, dtype=torch.float32)
    state = {
        "float16": torch.randn(3, 4, generator=gen).half(),
        "bfloat16": torch.randn(5, generator=gen).bfloat16(),
        "float64": torch.randn(2, 3, generator=gen, dtype=torch.float64),
        "int64": torch.tensor([[1, -2, 3], [2**50, 0, -(2**40)]], dtype=torch.int64),
        "int32": torch.tensor([1, -7], dtype=torch.int32),
        "int16": torch.tensor([-3, 300], dtype=torch.int16),
        "int8": torch.tensor([-128, 127], dtype=torch.int8),
        "uint8": torch.tensor([0, 255], dtype=torch.uint8),
        "uint16": torch.tensor([1, 65535], dtype=torch.uint16),
        "uint32": torch.tensor([1, 2**32 - 1], dtype=torch.uint32),
        "bool": torch.tensor([True, False, True]),
        "complex64": torch.tensor([1 + 2j, -3j], dtype=torch.complex64),
        "transposed": base.t(),
        "offset_view": base[2:5, 1::2],
        "shared_a": shared[3:9],
        "shared_b": shared.view(4, 5)[:, 1],
        "expanded": torch.tensor([2.5]).expand(4, 3),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(torch.randn(3, generator=gen)),
    }
    for protocol in (2, 4):
        path = tmp_path / f"mixed_p{protocol}.pt"
        torch.save(state, path, pickle_protocol=protocol)
        # torch's own weights-only unpickler rejects protocol 4 (FRAME); the file is ours.
        _compare_with_torch(torch, path, weights_only=protocol == 2)

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(),
                                torch.nn.BatchNorm1d(3))
    for keep_vars in (False, True):
        path = tmp_path / f"module_keep_vars_{keep_vars}.pt"
        torch.save(model.state_dict(keep_vars=keep_vars), path)
        ours = _compare_with_torch(torch, path)
        assert ours["2.num_batches_tracked"].dtype == np.int64

    if torch.cuda.is_available():
        path = tmp_path / "cuda.pt"
        torch.save({k: v.cuda() for k, v in state.items() if k != "parameter"}, path)
        _compare_with_torch(torch, path)

    legacy = tmp_path / "legacy_format.pt"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"legacy_format\.pt.*legacy"):
        read_torch_state_dict(legacy)
