"""Configuration parts shared by OTSeg and ZegOT: the default backbone and vocabulary, the zero-shot label setting
(seen classes, transductive) and the checks of the fields both models have.

Imports only transformers' config classes, so it travels with either configuration as Hub remote code.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

# `log_sinkhorn` grad modes a model may train with (all exact; "detach" would cut the gradient)
SINKHORN_GRAD_MODES = ("recompute", "checkpoint", "unrolled")
VOC_CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
VOC_UNSEEN_LABEL_IDS = (15, 16, 17, 18, 19)


def default_clip_config() -> CLIPConfig:
    """CLIP ViT-B/16 at 512 pixels with a 512-d joint space: the OTSeg and ZegOT backbone."""
    return CLIPConfig(
        text_config=CLIPTextConfig().to_dict(),
        vision_config=CLIPVisionConfig(patch_size=16, image_size=512).to_dict(),
        projection_dim=512,
    )


def resolve_clip_config(clip_config: CLIPConfig | dict | None) -> CLIPConfig:
    """`None` -> [`default_clip_config`], a dict -> `CLIPConfig`; anything else but a `CLIPConfig` is an error."""
    if clip_config is None:
        return default_clip_config()
    if isinstance(clip_config, dict):
        return CLIPConfig(**clip_config)
    if not isinstance(clip_config, CLIPConfig):
        raise ValueError(f"clip_config must be a CLIPConfig or a dict, got {type(clip_config).__name__}")
    return clip_config


def resolve_vocabulary(kwargs: dict, seen_label_ids: list[int] | None | str) -> list[int] | None:
    """Fill `kwargs["id2label"]` / `kwargs["label2id"]` (checked) and return the seen class ids.

    Without `id2label` the vocabulary is PASCAL VOC's 20 classes, and `seen_label_ids="voc_default"` (the
    constructors' default) means VOC's seen classes 0-14; with any other vocabulary it means fully supervised.
    `num_labels` cannot stand in for `id2label` (the models need class names), and must agree with it when both
    are given.
    """
    id2label, num_labels = kwargs.get("id2label"), kwargs.pop("num_labels", None)
    voc_vocabulary = id2label is None
    if voc_vocabulary:
        if num_labels is not None:
            raise ValueError(
                f"num_labels={num_labels} without id2label: the model needs class names, so give the vocabulary "
                "as id2label={0: 'name', 1: ...} (num_labels follows from it); give neither for the 20 PASCAL VOC "
                "classes"
            )
        if kwargs.get("label2id") is not None:
            raise ValueError("label2id without id2label: give the vocabulary as id2label={0: 'name', 1: ...}")
        id2label = dict(enumerate(VOC_CLASS_NAMES))
    kwargs["id2label"], kwargs["label2id"] = check_vocabulary(id2label, kwargs.get("label2id"))
    if num_labels is not None and int(num_labels) != len(kwargs["id2label"]):
        raise ValueError(
            f"num_labels={num_labels} does not match the {len(kwargs['id2label'])} classes of id2label; "
            "leave num_labels out"
        )
    if isinstance(seen_label_ids, str):
        if seen_label_ids != "voc_default":
            raise ValueError(f"seen_label_ids must be a list of class ids or None, got {seen_label_ids!r}")
        if not voc_vocabulary:
            return None
        return [i for i in range(len(VOC_CLASS_NAMES)) if i not in VOC_UNSEEN_LABEL_IDS]
    return None if seen_label_ids is None else [int(i) for i in seen_label_ids]


def check_class_names(class_names) -> list[str]:
    """A vocabulary as a list of distinct, non-empty names; raise `ValueError` naming what is wrong."""
    names = [class_names] if isinstance(class_names, str) else class_names
    if names is None or isinstance(names, (bytes, dict)) or not isinstance(names, Sequence):
        raise ValueError(f"class names must be a list of strings, got {type(class_names).__name__}")
    names = list(names)
    if not names:
        raise ValueError("the list of class names is empty: give at least one class name")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"class names must be non-empty strings, got {name!r}")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"class names must be distinct; duplicated class names: {duplicated}")
    return names


def check_prompt_templates(templates) -> None:
    """Raise `ValueError` unless `templates` holds at least one string with exactly one `{}`."""
    if not templates:
        raise ValueError("prompt_templates must hold at least one template")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(f"each prompt template needs exactly one '{{}}', got {template!r}")


def check_vocabulary(id2label: dict, label2id: dict | None) -> tuple[dict[int, str], dict[str, int]]:
    """Normalise id2label/label2id and check they describe K distinct, non-empty class names 0..K-1."""
    if not isinstance(id2label, dict) or not id2label:
        raise ValueError("id2label must be a non-empty dict {id: class name}")
    id2label = {int(k): v for k, v in id2label.items()}
    if sorted(id2label) != list(range(len(id2label))):
        raise ValueError(f"id2label keys must be 0..{len(id2label) - 1}, got {sorted(id2label)}")
    names = check_class_names([id2label[i] for i in range(len(id2label))])
    derived = {name: i for i, name in enumerate(names)}
    if label2id is not None and {str(k): int(v) for k, v in label2id.items()} != derived:
        raise ValueError("label2id does not match id2label")
    return id2label, derived


def check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class ZeroShotSegmentationConfigMixin:
    """The label setting and the checks shared by `OTSegConfig` and `ZegOTConfig`. Both hold `clip_config`,
    `id2label`, `seen_label_ids`, `transductive` and the Sinkhorn, loss and sliding-window fields.

    A saved folder's config.json names its pipeline code in `custom_pipelines`, which transformers' `pipeline()`
    runs only with `trust_remote_code=True`. `import otseg_hf` registers the installed pipelines and sets
    `pipelines_installed` on the installed classes, which then leave that entry out: with otseg_hf imported a folder
    loads like a native transformers model, while the copies loaded as remote code keep the entry.
    """

    pipelines_installed = False  # True on the classes of an imported otseg_hf, never on remote-code copies

    def __init__(self, **kwargs):
        if self.pipelines_installed:
            kwargs.pop("custom_pipelines", None)
        super().__init__(**kwargs)

    @property
    def class_names(self) -> list[str]:
        """Class names in id order."""
        return [self.id2label[i] for i in range(len(self.id2label))]

    @property
    def unseen_label_ids(self) -> list[int]:
        """Ids of the classes not seen in training (empty when fully supervised)."""
        if self.seen_label_ids is None:
            return []
        seen = set(self.seen_label_ids)
        return [i for i in range(len(self.id2label)) if i not in seen]

    @property
    def setting(self) -> str:
        """`"fully_supervised"`, `"inductive"` or `"transductive"`."""
        if self.seen_label_ids is None:
            return "fully_supervised"
        return "transductive" if self.transductive else "inductive"

    @property
    def projection_dim(self) -> int:
        """D, the size of CLIP's joint embedding space."""
        return self.clip_config.projection_dim

    def check_label_setting(self) -> None:
        """Seen ids within the vocabulary and distinct; transductive needs an unseen class."""
        num_classes = len(self.id2label)
        if self.seen_label_ids is not None:
            bad = [i for i in self.seen_label_ids if not 0 <= i < num_classes]
            if bad:
                raise ValueError(f"seen_label_ids {bad} are out of range for {num_classes} classes")
            if len(set(self.seen_label_ids)) != len(self.seen_label_ids):
                raise ValueError(f"seen_label_ids has duplicates: {self.seen_label_ids}")
        if self.transductive and not self.unseen_label_ids:
            raise ValueError(
                "transductive=True needs unseen classes: set seen_label_ids to the seen classes only"
            )

    def check_solver_loss_and_inference(self) -> None:
        """The Sinkhorn, loss, ignore-index and sliding-window fields, and the backbone's patch grid."""
        vision = self.clip_config.vision_config
        num_classes = len(self.id2label)
        check_int("sinkhorn_max_iter", self.sinkhorn_max_iter, 1)
        for name in ("sinkhorn_epsilon", "sinkhorn_tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.sinkhorn_grad_mode not in SINKHORN_GRAD_MODES:
            raise ValueError(
                f"sinkhorn_grad_mode must be one of {SINKHORN_GRAD_MODES}, got {self.sinkhorn_grad_mode!r}"
            )
        for name in ("focal_loss_weight", "dice_loss_weight", "focal_gamma", "seen_class_penalty"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"focal_alpha must be in [0, 1], got {self.focal_alpha}")
        if 0 <= self.ignore_index < num_classes:
            raise ValueError(
                f"ignore_index ({self.ignore_index}) collides with a class id (0..{num_classes - 1})"
            )
        check_int("inference_window_size", self.inference_window_size, vision.patch_size)
        check_int("inference_window_stride", self.inference_window_stride, 1)
        if self.inference_window_size % vision.patch_size:
            raise ValueError(
                f"inference_window_size ({self.inference_window_size}) must be a multiple of the patch size "
                f"({vision.patch_size})"
            )
        if vision.image_size % vision.patch_size:
            raise ValueError(
                f"clip_config.vision_config.image_size ({vision.image_size}) must be a multiple of the patch size "
                f"({vision.patch_size})"
            )
