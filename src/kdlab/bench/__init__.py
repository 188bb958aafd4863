"""``kdlab bench``: kdlab's engine timed side by side against the standard KD loop it is compared with.

* :mod:`kdlab.bench.reference_loop`: the standard loop (DataLoader over PIL images, per-sample transforms, fp32).
* :mod:`kdlab.bench.configurations`: what trains, with which settings; untrained teacher runs.
* :mod:`kdlab.bench.harness`: the alternating timed blocks and the whole-epoch check.
* :mod:`kdlab.bench.command`: the command's options and its table.
"""
