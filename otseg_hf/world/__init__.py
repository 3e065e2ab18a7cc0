"""The offline zero-shot world: world v2's labelled scenes, things on stuff with every pixel a class (`scenes`),
the first world's shapes (`shapes`), the tiny world CLIP (`clip`) and its caption data (`captions`), the dataset
splits and shipped checkpoints (`splits`), contact sheets (`contact_sheet`) and the README's main job (`demo`)."""
