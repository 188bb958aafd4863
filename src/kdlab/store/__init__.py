"""How runs live on disk: the run directory's layout (:mod:`kdlab.store.rundir`) and its atomic safetensors
checkpoints (:mod:`kdlab.store.checkpoint`), below everything that trains, reads or reports runs."""
