"""The console scripts: `otseg-segment` (`segment`), `otseg-export` (`export`), `otseg-convert-reference`, and the
flags the training scripts share (`arguments`)."""
