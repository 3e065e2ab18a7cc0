"""The offline zero-shot world: a generator of labelled scenes (`shapes`), its tiny CLIP (`clip`), the dataset
splits and shipped checkpoints (`splits`), and the README's main job (`demo`)."""
