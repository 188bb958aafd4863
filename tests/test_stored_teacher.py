"""FKD stored teacher views (kdlab.teacher.stored): a student trained from the store equals, bit for bit, the student
whose teacher ran live on the same stored views; top-k rebuilding; the store on disk; kdlab cache-teacher fills it."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from kdlab.config import load_recipe
from kdlab.errors import KdlabError
from kdlab.teacher.stored import StoredTeacherViews
from kdlab.train.engine import prepare, train
from kdlab.train.precompute_teacher import precompute


@pytest.fixture(scope="module")
def teacher(cifar_subset, tmp_path_factory):
    out = tmp_path_factory.mktemp("rrc-teacher") / "run"
    train(load_recipe(raw={"data": {"source": "folder", "path": str(cifar_subset), "val_size": 20, "flip": True,
                                    "random_resized_crop": {"size": 24, "scale": [0.3, 1.0]}},
                           "model": {"name": "cnn_small8"}, "train": {"epochs": 1, "batch_size": 64},
                           "runtime": {"progress": False, "threads": 1}}), out, quiet=True)
    return out


def kd_recipe(cifar_subset, teacher, cache_dir, mode, precision="fp32", top_k=None, epochs=2):
    runtime = {"teacher_cache": mode, "precision": precision, "threads": 1, "progress": False, "teacher_batch": 32}
    if top_k is not None:
        runtime["teacher_top_k"] = top_k
    return load_recipe(raw={
        "data": {"source": "folder", "path": str(cifar_subset), "val_size": 20, "flip": True, "cache_dir": str(cache_dir),
                 "random_resized_crop": {"size": 24, "scale": [0.3, 1.0], "stored_views": 3, "views_seed": 7}},
        "model": {"name": "cnn_small8"}, "method": {"name": "kd", "teacher": str(teacher)},
        "train": {"epochs": epochs, "batch_size": 64}, "runtime": runtime})


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_student_from_stored_views_equals_the_live_teacher_bit_for_bit(cifar_subset, teacher, tmp_path, precision):
    # With runtime.teacher_batch a view's logits do not depend on the batch it is computed in (what makes the
    # store exact): the store is filled in source order, the live teacher sees shuffled batches.
    prepared = prepare(kd_recipe(cifar_subset, teacher, tmp_path, "off", precision))
    loader, net = prepared.train_loader, prepared.teachers.primary
    with torch.inference_mode(), prepared.runtime.autocast():
        x, _ = next(iter(loader.batches(0)))
        assert torch.equal(net(x)[5:10], net(x[5:10])) and torch.equal(net(x)[3:40], net(x[3:40]))
    precompute(kd_recipe(cifar_subset, teacher, tmp_path, "stored", precision), quiet=True)
    stored = train(kd_recipe(cifar_subset, teacher, tmp_path, "stored", precision), tmp_path / "stored", quiet=True)
    live = train(kd_recipe(cifar_subset, teacher, tmp_path, "off", precision), tmp_path / "live", quiet=True)
    record = stored["teacher_cache"]
    assert record["mode"] == "stored" and record["exact"] and record["misses"] == 0
    assert record["coverage"] == pytest.approx(280 / 300)  # every training image; the 20 val ones are not trained on
    assert live["teacher_cache"] is None
    assert stored["final"] == live["final"]
    weights = [load_file(str(tmp_path / run / "checkpoint" / "model.safetensors")) for run in ("stored", "live")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert stored["data"]["augment"]["train"] == {"kind": "stored_views", "count": 3, "seed": 7, "crop": {
        "kind": "random_resized_crop", "size": 24, "scale": [0.3, 1.0], "ratio": [0.75, 4 / 3], "flip": True}}


def test_top_k_rebuilds_the_teacher_softmax_on_its_k_classes():
    logits = torch.randn(6, 10) * 3
    boxes = torch.zeros(6, 1, 5, dtype=torch.int32)
    store = StoredTeacherViews(boxes, 10, torch.float32, "key", top_k=4)
    sample, view = torch.arange(6), torch.zeros(6, dtype=torch.long)
    got = store.logits(lambda x: x, logits, (sample, view))
    p, q = logits.softmax(1), got.softmax(1)
    top = logits.topk(4, dim=1).indices
    torch.testing.assert_close(q.gather(1, top), p.gather(1, top))  # the k kept probabilities, unchanged
    rest = 1 - p.gather(1, top).sum(1, keepdim=True)
    mask = torch.ones_like(p, dtype=torch.bool).scatter_(1, top, False)
    torch.testing.assert_close(q[mask].view(6, 6), (rest / 6).expand(6, 6))  # the rest spread evenly
    assert not store.exact and store.record()["exact"] is False
    exact = StoredTeacherViews(boxes, 10, torch.float32, "key")
    assert torch.equal(exact.logits(lambda x: x, logits, (sample, view)), logits) and exact.exact


def test_the_store_round_trips_on_disk_and_refuses_other_boxes(tmp_path):
    boxes = torch.randint(0, 30, (8, 2, 5), dtype=torch.int32)
    store = StoredTeacherViews(boxes, 5, torch.bfloat16, "k1", top_k=2, folder=tmp_path)
    logits = torch.randn(8, 5).bfloat16()
    store.logits(lambda x: x, logits, (torch.arange(8), torch.ones(8, dtype=torch.long)))
    assert store.save()
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["top_k"] == 2 and meta["shape"] == [8, 2, 2] and meta["filled"] == 8 and meta["dtype"] == "torch.bfloat16"
    again = StoredTeacherViews(boxes, 5, torch.bfloat16, "k1", top_k=2, folder=tmp_path)
    calls = []
    got = again.logits(lambda x: calls.append(x) or x, logits, (torch.arange(8), torch.ones(8, dtype=torch.long)))
    assert not calls and torch.equal(got, store.logits(None, logits, (torch.arange(8), torch.ones(8, dtype=torch.long))))
    with pytest.raises(KdlabError, match="stored crop boxes differ"):
        StoredTeacherViews(boxes + 1, 5, torch.bfloat16, "k1", top_k=2, folder=tmp_path)
    with pytest.raises(KdlabError, match="teacher_top_k must lie in 1..5"):
        StoredTeacherViews(boxes, 5, torch.bfloat16, "k1", top_k=6)


def _filled_store(folder, top_k=2):
    boxes = torch.arange(8 * 2 * 5, dtype=torch.int32).reshape(8, 2, 5)
    store = StoredTeacherViews(boxes, 5, torch.bfloat16, "k1", top_k=top_k, folder=folder)
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(0)).bfloat16()
    store.logits(lambda x: x, logits, (torch.arange(8), torch.zeros(8, dtype=torch.long)))
    assert store.save()
    return boxes, logits


def _truncate(folder):
    data = next(folder.glob("logits-*.safetensors"))
    os.truncate(data, data.stat().st_size // 2)


def _flip_last_byte(folder):
    data = next(folder.glob("logits-*.safetensors"))
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF
    data.write_bytes(bytes(raw))


def _format_1(folder):
    """The layout before checksums: views.safetensors and a meta.json of format 1."""
    next(folder.glob("logits-*.safetensors")).rename(folder / "views.safetensors")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "format": 1, "file": None, "sha256": None}))


@pytest.mark.parametrize("damage", [_truncate, _flip_last_byte, _format_1], ids=["truncated", "flipped", "format 1"])
def test_a_damaged_store_is_reported_once_and_never_used(damage, tmp_path, capsys):
    boxes, logits = _filled_store(tmp_path)
    damage(tmp_path)
    again = StoredTeacherViews(boxes, 5, torch.bfloat16, "k1", top_k=2, folder=tmp_path)
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "is damaged (" in warning[0] and "rebuilding it" in warning[0]
    assert not again.filled.any(), "nothing of a damaged store is used"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"], "its files are gone, to be rebuilt"
    calls = []
    again.logits(lambda x: calls.append(x) or x, logits, (torch.arange(8), torch.zeros(8, dtype=torch.long)))
    assert calls and again.save()
    rebuilt = StoredTeacherViews(boxes, 5, torch.bfloat16, "k1", top_k=2, folder=tmp_path)
    assert int(rebuilt.filled.sum()) == 8 and not capsys.readouterr().err


def test_two_stores_saving_into_one_folder_end_with_the_union(tmp_path):
    boxes = torch.zeros(8, 2, 5, dtype=torch.int32)
    first, second = (StoredTeacherViews(boxes, 5, torch.float32, "k1", top_k=3, folder=tmp_path) for _ in range(2))
    logits = torch.randn(8, 5)
    first.logits(lambda x: x, logits[:4], (torch.arange(4), torch.zeros(4, dtype=torch.long)))
    second.logits(lambda x: x, logits[4:], (torch.arange(4, 8), torch.ones(4, dtype=torch.long)))
    assert first.save() and second.save()
    union = StoredTeacherViews(boxes, 5, torch.float32, "k1", top_k=3, folder=tmp_path)
    assert int(union.filled.sum()) == 8 and union.filled[:4, 0].all() and union.filled[4:, 1].all()
    got = union.logits(None, logits, (torch.arange(8), torch.tensor([0] * 4 + [1] * 4)))
    assert torch.equal(got.topk(3, dim=1).values, logits.topk(3, dim=1).values)
