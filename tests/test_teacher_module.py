"""The Teacher module: a frozen network that sees inputs normalised with its own training statistics, whatever the
student's are, and serves its logits from a cache where it can."""

import pytest
import torch

from kdlab.teacher import Renormalise


def test_renormalise_maps_student_inputs_to_teacher_inputs():
    torch.manual_seed(0)
    raw = torch.rand(4, 3, 5, 5)  # images on [0, 1]
    ms, ss = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    mt, st = [0.45, 0.41, 0.2], [0.22, 0.2, 0.35]
    view = lambda v: torch.tensor(v).view(1, -1, 1, 1)
    student_input = (raw - view(ms)) / view(ss)
    teacher_input = (raw - view(mt)) / view(st)
    seen = []
    adapter = Renormalise(lambda x, **kw: seen.append(x) or x.sum(), ms, ss, mt, st)
    adapter(student_input)
    torch.testing.assert_close(seen[0], teacher_input, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ the Teacher module


def _network(seed=0):
    from kdlab import models

    torch.manual_seed(seed)
    return models.create("cnn_small8", 10, in_channels=1)


def test_teacher_is_frozen_constant_and_keeps_its_own_network():
    from kdlab.teacher import Teacher

    network = _network()
    teacher = Teacher(network)
    teacher.train()
    assert not teacher.training and not network.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert teacher.network is network and teacher.graph is network and teacher.state == "eager"
    x = torch.randn(5, 1, 8, 8)
    out = teacher(x)
    assert not out.is_inference() and not out.requires_grad  # an ordinary constant tensor
    with torch.no_grad():
        assert torch.equal(out, network(x))
    assert teacher.cache_record() is None


def test_teacher_renormalises_only_when_the_statistics_differ():
    from kdlab.teacher import Teacher

    network = _network()
    same = Teacher(network, renormalise=([0.3], [0.4], [0.3], [0.4]))
    assert same.graph is network
    other = Teacher(network, renormalise=([0.3], [0.4], [0.5], [0.2]))
    assert isinstance(other.graph, Renormalise) and other.network is network
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        expected = network((x * 0.4 + 0.3 - 0.5) / 0.2)
    torch.testing.assert_close(other(x), expected, rtol=1e-5, atol=1e-5)


def test_teacher_serves_keyed_inputs_from_its_cache_and_runs_unkeyed_ones():
    from kdlab.teacher import Teacher
    from kdlab.teacher.cache import TeacherLogitCache

    network = _network()
    calls = []
    network.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    cache = TeacherLogitCache(num_samples=6, num_views=2, num_classes=10, dtype=torch.float32, device="cpu", key="k")
    teacher = Teacher(network, cache=cache)
    x = torch.randn(4, 1, 8, 8)
    keys = (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 1]))
    first = teacher(x, keys)
    assert calls == [4] and cache.misses == 4
    again = teacher(x, keys)  # every (sample, view) is cached now: the network does not run
    assert calls == [4] and cache.hits == 4 and torch.equal(first, again)
    teacher(x)  # no keys: the network runs, the cache is not touched
    assert calls == [4, 4] and cache.hits == 4
    assert teacher.cache_record()["mode"] == "memory"


def test_a_method_leaves_its_teacher_out_of_its_checkpoint(tmp_path):
    from kdlab import methods, models
    from kdlab.data import load_dataset
    from kdlab.methods import MethodContext
    from kdlab.teacher import Teacher

    dataset = load_dataset("digits", cache_dir=tmp_path)
    cls = methods.get("tfkd_self")
    torch.manual_seed(0)
    student = models.create("cnn_small8", 10, in_channels=1)
    context = MethodContext(dataset, load_teacher=lambda run_dir, checkpoint: Teacher(_network(1)))
    method = cls(student, cls.Params(teacher="/t"), context)
    assert set(method.state_dict()) == {f"model.{k}" for k in student.state_dict()}
    wrong = MethodContext(dataset, load_teacher=lambda run_dir, checkpoint: Teacher(models.create("resnet8", 10, 1)))
    from kdlab.errors import KdlabError

    with pytest.raises(KdlabError, match="own architecture"):
        cls(student, cls.Params(teacher="/t"), wrong)
