"""Checkpoints: round trip, atomic publication, refusal of foreign or corrupt files, no pickle anywhere."""

import json

import pytest
import torch

from kdlab.errors import KdlabError
from kdlab.store import checkpoint


def make(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model, optimizer = make()
    torch.manual_seed(123)
    checkpoint.save_checkpoint(tmp_path, 3, model, optimizer, {"history": [{"epoch": 3}], "best": None})
    expected_draw = torch.rand(3)
    other, other_opt = make(seed=1)
    state = checkpoint.restore_checkpoint(tmp_path, other, other_opt)
    assert state["epoch"] == 3 and state["history"] == [{"epoch": 3}]
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key])
    buffers = [other_opt.state[p]["momentum_buffer"] for p in other.parameters()]
    assert all(torch.equal(a, optimizer.state[p]["momentum_buffer"]) for a, p in zip(buffers, model.parameters()))
    assert other_opt.param_groups[0]["nesterov"] is True
    assert torch.equal(torch.rand(3), expected_draw)


def test_new_checkpoint_replaces_old_files_only_after_publication(tmp_path):
    model, optimizer = make()
    checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, {})
    checkpoint.save_checkpoint(tmp_path, 2, model, optimizer, {})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["method-0002.safetensors", "optimizer-0002.safetensors", "state.json"]


def test_corrupt_tensor_file_is_detected(tmp_path):
    model, optimizer = make()
    checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, {})
    target = tmp_path / "method-0001.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(KdlabError, match="corrupt"):
        checkpoint.restore_checkpoint(tmp_path, *make())


def test_checkpoint_of_another_model_is_refused(tmp_path):
    model, optimizer = make()
    checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, {})
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 5))
    with pytest.raises(KdlabError, match="does not fit this model"):
        checkpoint.restore_checkpoint(tmp_path, other, torch.optim.SGD(other.parameters(), lr=0.1))


def test_missing_or_garbled_state_is_a_clear_error(tmp_path):
    with pytest.raises(KdlabError, match="no checkpoint"):
        checkpoint.read_state(tmp_path)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(KdlabError, match="unreadable"):
        checkpoint.read_state(tmp_path)


def test_files_are_safetensors_and_json_not_pickle(tmp_path):
    model, optimizer = make()
    checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, {})
    json.loads((tmp_path / "state.json").read_text())
    for path in tmp_path.glob("*.safetensors"):
        header_len = int.from_bytes(path.read_bytes()[:8], "little")
        json.loads(path.read_bytes()[8 : 8 + header_len])  # a safetensors header is JSON
