"""A teacher always sees inputs normalised with its own training statistics, whatever the student's are."""

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
