"""Interruption, determinism and hostile bytes: nothing finished is lost, reruns reproduce."""
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import SLICE, invoke
from stackae import data as D
from stackae.interrupt import deferred_interrupts, stop_point


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_idx_reader_arbitrary_bytes(tmp_path, raw):
    p = tmp_path / "f"
    p.write_bytes(raw)
    try:
        arr = D.read_idx(p)
    except D.DataError as e:
        assert str(p) in str(e)
    else:
        assert isinstance(arr, np.ndarray)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]), st.lists(st.integers(0, 5), min_size=1,
       max_size=3), st.integers(-8, 8), st.booleans())
def test_idx_reader_near_valid_files(tmp_path, code, shape, delta, gz):
    import gzip
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}[code]
    header = bytes([0, 0, code, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
    need = int(np.prod(shape)) * itemsize
    body = b"\x01" * max(0, need + delta)
    p = tmp_path / "f"
    raw = header + body
    p.write_bytes(gzip.compress(raw) if gz else raw)
    if len(body) == need:
        assert D.read_idx(p).shape == tuple(shape)
    else:
        with pytest.raises(D.DataError, match="truncated|longer than its header"):
            D.read_idx(p)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.booleans())
def test_npz_reader_arbitrary_bytes(tmp_path, raw, as_zip):
    p = tmp_path / "d.npz"
    if as_zip:  # a real zip whose members are garbage, which reaches numpy's own parser
        with zipfile.ZipFile(p, "w") as z:
            for k in ("x_train", "y_train", "x_test", "y_test"):
                z.writestr(f"{k}.npy", raw)
    else:
        p.write_bytes(raw)
    try:
        D.read_user_data(p)
    except D.DataError as e:
        assert str(p) in str(e)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["u1", "i8", "f4", "f8", "bool"]), st.integers(0, 4), st.integers(1, 5),
       st.floats(allow_nan=True, allow_infinity=True, width=32))
def test_npz_reader_arbitrary_arrays(tmp_path, dtype, n, width, fill):
    p = tmp_path / "d.npz"
    x = np.full((n, width), fill if dtype.startswith("f") else 1).astype(dtype)
    np.savez(p, x_train=x, y_train=np.arange(n) % 2, x_test=x, y_test=np.arange(n) % 2)
    try:
        out = D.read_user_data(p)
    except D.DataError:
        return
    assert out[0].dtype == np.float32 and np.all((out[0] >= 0) & (out[0] <= 1))


def _stack(path):
    return [(l["weight"], l["bias"]) for l in torch.load(path, weights_only=True)["layers"]]


def test_sigkill_during_layer_two_then_resume_is_bitwise_identical(tmp_path):
    args = [*SLICE, "--layers", "48,24", "--epochs", "1,20", "--batch-size", "10", "-q"]
    env = {**os.environ}
    r = invoke("pretrain", *args, "--out", tmp_path / "full")
    assert r.exit_code == 0, r.output
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "stackae", "pretrain", *args, "--out", str(cut)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (cut / "layer1.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # well into layer 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (cut / "layer1.pt").exists() and not (cut / "stack.pt").exists(), "kill came too late"
    r = invoke("pretrain", *args, "--out", cut, "--resume")
    assert r.exit_code == 0, r.output
    for a, b in zip(_stack(tmp_path / "full" / "stack.pt"), _stack(cut / "stack.pt")):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_resume_refuses_a_different_config(tmp_path):
    out = tmp_path / "r"
    assert invoke("pretrain", *SLICE, "--layers", "16", "--epochs", "1", "-q", "--out", out).exit_code == 0
    r = invoke("pretrain", *SLICE, "--layers", "32", "--epochs", "1", "-q", "--out", out, "--resume")
    assert r.exit_code == 2 and "differs from the run being resumed" in r.output


def test_finetune_is_deterministic(tmp_path):
    import json
    res = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        r = invoke("finetune", *SLICE, "--layers", "32", "--epochs", "2", "--seed", seed, "-q",
                   "--out", tmp_path / name)
        assert r.exit_code == 0, r.output
        res.append(json.loads((tmp_path / name / "result.json").read_text()))
        res[-1]["state"] = torch.load(tmp_path / name / "model.pt", weights_only=True)["state"]
    assert res[0]["curves"] == res[1]["curves"]
    assert all(torch.equal(res[0]["state"][k], res[1]["state"][k]) for k in res[0]["state"])
    assert not torch.equal(res[0]["state"]["0.weight"], res[2]["state"]["0.weight"])


def test_unwritable_output_folder_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = subprocess.run([sys.executable, "-m", "stackae", "pretrain", *SLICE, "--epochs", "1",
                        "--layers", "8", "-q", "--out", str(blocker / "run")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("Error:") and len(r.stderr.strip().splitlines()) == 1
    assert str(blocker / "run") in r.stderr


ABLATE_TINY = ["--inits", "denoising,random", "--seeds", "0,1", "--labels", "20,all",
               "--layers", "16", "--train-size", "300", "--val-size", "200", "--device", "cpu",
               "--pretrain-epochs", "2", "--finetune-epochs", "6", "--min-epoch-examples", "300",
               "-q"]


def _cells(folder):
    import json
    out = {}
    for f in sorted((folder / "runs" / "finetune").glob("*/result.json")):
        r = json.loads(f.read_text())
        state = torch.load(f.parent / "model.pt", weights_only=True)["state"]
        out[f.parent.name] = (r["test_error"], r["curves"], state)
    return out


def test_sigkill_mid_grid_then_resume_matches_an_uninterrupted_grid(tmp_path):
    r = invoke("ablate", *ABLATE_TINY, "--out", tmp_path / "full")
    assert r.exit_code == 0, r.output
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "stackae", "ablate", *ABLATE_TINY, "--out",
                             str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    results = cut / "results.jsonl"
    while time.time() < deadline and proc.poll() is None and not (
            results.exists() and len(results.read_text().splitlines()) >= 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(results.read_text().splitlines())
    assert 3 <= done < 8, f"kill came too late ({done} of 8 cells finished)"
    assert not (cut / "REPORT.md").exists()
    r = invoke("ablate", *ABLATE_TINY, "--out", cut, "--resume")
    assert r.exit_code == 0, r.output
    full, resumed = _cells(tmp_path / "full"), _cells(cut)
    assert sorted(full) == sorted(resumed) and len(full) == 8
    for cid in full:
        assert full[cid][0] == resumed[cid][0] and full[cid][1] == resumed[cid][1], cid
        assert all(torch.equal(full[cid][2][k], resumed[cid][2][k]) for k in full[cid][2]), cid
    assert len((cut / "results.jsonl").read_text().splitlines()) == 8
    assert (cut / "REPORT.md").exists()


def test_a_first_ctrl_c_waits_for_a_stop_point_and_a_second_interrupts_at_once():
    before = signal.getsignal(signal.SIGINT)
    with deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # delivered: the handler ran and raised nothing
        with pytest.raises(KeyboardInterrupt):
            stop_point()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    stop_point()  # leaving the block clears the flag and restores the handler
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    args = [*SLICE, "--layers", "48,24", "--epochs", "1,50", "--batch-size", "10", "-q"]
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "stackae", "pretrain", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "layer1.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 1 and "Traceback" not in err, (proc.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0], err
    assert (out / "layer1.pt").exists() and not (out / "stack.pt").exists()
    r = invoke("pretrain", *args, "--out", out, "--resume")
    assert r.exit_code == 0 and (out / "stack.pt").exists(), r.output
