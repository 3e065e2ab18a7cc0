"""How separable are the world CLIP's frozen patch features? A patch-level linear probe, fully supervised.

    python benchmarks/world_linear_probe.py                  # 512 training images, 200 validation images
    python benchmarks/world_linear_probe.py --clip FOLDER    # another world CLIP (e.g. a longer pretraining)

The features are the frozen CLIP's patch embeddings exactly as the frozen-CLIP baseline reads them
(`otseg_hf.evaluation.baseline.FrozenCLIPSegmenter`: post-layernorm + visual projection, L2-normalised). Each
8x8 patch's target is its true class fractions; a softmax-regression probe (standardised features, Adam, full
batch) is trained on the world's training images (seed 0) and scored on the validation images (seed 1) at
patch level: the predicted class of a patch against its majority class, IoU per class. Patch level, so the
numbers are not the pixel mIoU of the world table, but they bound what any head on these features can do
for a class: a class the probe cannot find in the features is one no head over the frozen features finds
either, unless the visual prompts change the features themselves.

Printed: the probe's patch IoU of every class and the zero-shot patch IoU of the same features against the
class text (the baseline's argmax), side by side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from otseg_hf.evaluation.baseline import FrozenCLIPSegmenter  # noqa: E402
from otseg_hf.hub.folders import default_image_processor  # noqa: E402
from otseg_hf.world.splits import GENERATED_SPLIT_SEEDS, WORLD, WORLD_CLIP_DIR, generated_dataset  # noqa: E402


def patch_features(segmenter: FrozenCLIPSegmenter, split: str, count: int):
    """(patches, D) features, (patches, K) class fractions, (patches, K) zero-shot cosines."""
    rows = generated_dataset(WORLD.name, count, seed=GENERATED_SPLIT_SEEDS[split])
    clip = segmenter.clip
    patch = clip.config.vision_config.patch_size
    processor = default_image_processor(segmenter.config)
    num_classes = len(WORLD.class_names)
    features, fractions = [], []
    with torch.no_grad():
        for start in range(0, count, 64):
            batch = rows.select(range(start, min(start + 64, count)))
            pixel_values = processor(list(batch["image"]), return_tensors="pt", do_resize=False)["pixel_values"]
            hidden = clip.vision_model(pixel_values=pixel_values).last_hidden_state
            tokens = clip.visual_projection(clip.vision_model.post_layernorm(hidden[:, 1:]))
            features.append(F.normalize(tokens, dim=-1))
            labels = torch.from_numpy(np.stack([np.asarray(x) for x in batch["label"]]).astype(np.int64))
            onehot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()
            fractions.append(F.avg_pool2d(onehot, patch).flatten(2).transpose(1, 2))
    features = torch.cat(features).flatten(0, 1)
    return features, torch.cat(fractions).flatten(0, 1), features @ segmenter.class_embeds.t()


def patch_ious(prediction: torch.Tensor, truth: torch.Tensor, num_classes: int) -> list[float]:
    ious = []
    for c in range(num_classes):
        union = ((prediction == c) | (truth == c)).sum().item()
        ious.append(100.0 * ((prediction == c) & (truth == c)).sum().item() / union if union else float("nan"))
    return ious


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=WORLD_CLIP_DIR, help="world CLIP folder")
    parser.add_argument("--num-train-images", type=int, default=512, help="training images (seed 0)")
    parser.add_argument("--num-eval-images", type=int, default=200, help="validation images (seed 1)")
    parser.add_argument("--steps", type=int, default=500, help="full-batch Adam steps of the probe")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    segmenter = FrozenCLIPSegmenter.from_pretrained(args.clip, WORLD.class_names, WORLD.prompt_templates,
                                                    WORLD.unseen_label_ids)  # fmt: skip
    train_x, train_y, _ = patch_features(segmenter, "train", args.num_train_images)
    eval_x, eval_y, eval_zero_shot = patch_features(segmenter, "validation", args.num_eval_images)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    num_classes = len(WORLD.class_names)
    weight = torch.zeros(train_x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    for _ in range(args.steps):
        loss = -(train_y * F.log_softmax((train_x - mean) / std @ weight + bias, -1)).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    truth = eval_y.argmax(-1)
    with torch.no_grad():
        probe = patch_ious(((eval_x - mean) / std @ weight + bias).argmax(-1), truth, num_classes)
    zero_shot = patch_ious(eval_zero_shot.argmax(-1), truth, num_classes)
    print(f"patch-level IoU on {args.num_eval_images} validation images (seed {GENERATED_SPLIT_SEEDS['validation']}), "
          f"probe trained on {args.num_train_images} training images\n")  # fmt: skip
    print("| class | split | zero-shot (frozen CLIP) | linear probe (fully supervised) |\n|---|---|---|---|")
    unseen = set(WORLD.unseen_label_ids)
    for index, name in enumerate(WORLD.class_names):
        print(f"| {name} | {'unseen' if index in unseen else 'seen'} | {zero_shot[index]:.1f} | {probe[index]:.1f} |")
    print(f"| **mean** | | {np.nanmean(zero_shot):.1f} | {np.nanmean(probe):.1f} |")
    return {"zero_shot": zero_shot, "probe": probe}


if __name__ == "__main__":
    main()
