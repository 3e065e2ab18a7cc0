"""World v2's CLIP pretraining data (captioned scenes, no mask) and its zero-shot evaluations.

The tiny world CLIP (`otseg_hf.world`: tokenizer, config, losses) pretrains on `SceneCaptions`: scene i
of a seed with a caption (`caption_world_scene`) that names its visible things and its main stuff,
unseen classes included, as a web caption would. The patch-phrase loss reads the attributes of what
the caption names (`scene_attributes`), never a mask or a label map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import CLIPModel, CLIPTokenizer

from .clip import image_and_patch_embeddings, pixel_values_from_images, text_embeddings
from .scenes import WorldScenes, caption_world_scene, scene_attributes

Attributes = tuple[str | None, str | None, str | None]


def scene_descriptions(attributes: Attributes) -> list[Attributes]:
    """The phrases true of a thing (texture, colour, shape), from the full one to single words:
    (t, c, s), (t, c, -) (its class name), (-, c, s), (-, c, -), (-, -, s), (t, -, -); of stuff
    (-, -, name) only."""
    texture, colour, shape = attributes
    if texture is None and colour is None:
        return [attributes]
    forms = [
        (texture, colour, shape),
        (texture, colour, None),
        (None, colour, shape),
        (None, colour, None),
        (None, None, shape),
        (texture, None, None),
    ]
    return list(dict.fromkeys(forms))


class SceneCaptions(Dataset):
    """Scene-caption pairs of world v2: item i is scene i of `seed` of `worlds[i % len(worlds)]`.

    Items are dicts: `image` (H, W, 3) uint8, `caption` str and `objects`, the attributes of what the
    caption may name (`scene_attributes`), for `WorldCollator(tokenizer, scene_descriptions)`.
    """

    def __init__(
        self,
        worlds: WorldScenes | Sequence[WorldScenes],
        num_items: int,
        seed: int,
        label_ids: Sequence[int] | None = None,
    ):
        if num_items < 1:
            raise ValueError(f"num_items must be positive, got {num_items}")
        self.worlds = [worlds] if isinstance(worlds, WorldScenes) else list(worlds)
        if not self.worlds:
            raise ValueError("worlds must hold at least one generator")
        self.num_items, self.seed, self.label_ids = num_items, seed, label_ids

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> dict:
        scene = self.worlds[index % len(self.worlds)].generate_scene(index, self.seed, self.label_ids)
        caption = caption_world_scene(scene, np.random.default_rng([self.seed, index, 1]))
        return {"image": scene.image, "caption": caption, "objects": scene_attributes(scene)}


def patch_labels(label: np.ndarray, patch_size: int) -> np.ndarray:
    """(h w,) the class covering at least half of each patch's pixels, -1 where none does."""
    height, width = label.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"label size {(height, width)} is not a multiple of patch_size {patch_size}")
    grid = label.reshape(height // patch_size, patch_size, width // patch_size, patch_size)
    grid = grid.transpose(0, 2, 1, 3).reshape(-1, patch_size * patch_size).astype(np.int64)
    counts = np.stack([np.bincount(row, minlength=256) for row in grid])
    best = counts.argmax(-1)
    return np.where(counts.max(-1) * 2 >= patch_size * patch_size, best, -1)


@torch.no_grad()
def patch_zero_shot_accuracy(
    clip: CLIPModel,
    tokenizer: CLIPTokenizer,
    world: WorldScenes,
    num_images: int = 300,
    seed: int = 1500,
    template: str = "a photo of a {}.",
    batch_size: int = 100,
) -> dict[str, float]:
    """Zero-shot patch classification among all of `world.class_names`: each patch that one class covers
    at least half of, by its patch embedding against the class prompts. Class-averaged accuracies (0..1):
    `patch_seen`, `patch_unseen`, `patch_all`, and `patch_things`, `patch_stuff`."""
    was_training = clip.training
    clip.eval()
    device = clip.logit_scale.device
    tokens = tokenizer([template.format(n) for n in world.class_names], padding=True, return_tensors="pt")
    class_embeds = text_embeddings(clip, tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
    patch_size = clip.config.vision_config.patch_size
    num_classes = len(world.class_names)
    correct, total = np.zeros(num_classes), np.zeros(num_classes)
    for start in range(0, num_images, batch_size):
        scenes = [world.generate_scene(i, seed) for i in range(start, min(start + batch_size, num_images))]
        pixels = pixel_values_from_images(np.stack([scene.image for scene in scenes])).to(device)
        _, patch_embeds = image_and_patch_embeddings(clip, pixels)
        truth = np.stack([patch_labels(scene.label, patch_size) for scene in scenes]).ravel()
        predicted = (patch_embeds @ class_embeds.t()).argmax(-1).cpu().numpy().ravel()
        predicted, truth = predicted[truth >= 0], truth[truth >= 0]
        np.add.at(total, truth, 1)
        np.add.at(correct, truth, predicted == truth)
    clip.train(was_training)
    groups = {
        "seen": world.seen_label_ids,
        "unseen": world.unseen_label_ids,
        "all": list(range(num_classes)),
        "things": list(range(world.num_things)),
        "stuff": list(range(world.num_things, num_classes)),
    }
    results = {}
    for name, ids in groups.items():
        ids = [i for i in ids if total[i] > 0]
        results[f"patch_{name}"] = float(np.mean(correct[ids] / total[ids])) if ids else float("nan")
    return results


__all__ = ["SceneCaptions", "patch_labels", "patch_zero_shot_accuracy", "scene_descriptions"]
