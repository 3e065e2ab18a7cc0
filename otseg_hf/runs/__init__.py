"""Training runs on disk: atomic writes (`atomic`), checkpoints in safetensors + JSON that load without unpickling
(`checkpoints`), and the run folder's rules — newest complete checkpoint, refused non-empty output folders, the step
log (`folder`)."""
