"""Configuration parts shared by OTSeg and ZegOT: the default backbone and vocabulary, the zero-shot label setting
(seen classes, transductive) and the checks of the fields both models have.

Imports only transformers' config classes, so it travels with either configuration as Hub remote code.
"""

from __future__ import annotations

import math
import operator
import string
import warnings
from collections.abc import Sequence

from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig, PretrainedConfig

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
    `num_labels` alone gives transformers' placeholder names `LABEL_i` (and a warning: the model segments by class
    names); given with `id2label`, it must agree with it.
    """
    id2label, num_labels = kwargs.get("id2label"), kwargs.pop("num_labels", None)
    voc_vocabulary = id2label is None and num_labels is None
    if id2label is None:
        if kwargs.get("label2id") is not None:
            raise ValueError("label2id without id2label: give the vocabulary as id2label={0: 'name', 1: ...}")
        if num_labels is not None:
            check_int("num_labels", num_labels, 1)
            id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
            warnings.warn(
                f"num_labels={num_labels} without id2label: the classes are named LABEL_0..LABEL_{num_labels - 1}. "
                "The model segments by class names: call model.set_class_names(names, tokenizer) with the real "
                "names before segmenting, or give id2label={0: 'name', 1: ...}",
                UserWarning,
                stacklevel=3,
            )
        else:
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
    return None if seen_label_ids is None else check_label_ids_list("seen_label_ids", seen_label_ids)


def check_label_ids_list(name: str, ids) -> list[int]:
    """`ids` as a list of Python ints; floats (0.9), strings and booleans raise `ValueError` instead of being
    truncated or read as characters."""
    if isinstance(ids, (str, bytes, dict)) or not isinstance(ids, Sequence):
        raise ValueError(f"{name} must be a list of class ids (integers) or None, got {ids!r}")
    checked = []
    for value in ids:
        try:
            if isinstance(value, bool):
                raise TypeError
            checked.append(operator.index(value))
        except TypeError:
            raise ValueError(f"{name} must hold integer class ids, got {value!r} in {list(ids)!r}") from None
    return checked


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


def check_template(name: str, template) -> None:
    """Raise `ValueError` unless `template` is a string whose only replacement field is one `{}` (literal braces
    are written `{{` / `}}`): `'{0} x {}'`, `'a {name}'` or `'{} {}'` would fail or misplace the class name."""
    if not isinstance(template, str):
        raise ValueError(f"{name}: a template must be a string with one '{{}}', got {template!r}")
    try:
        fields = [(field, spec, conversion) for _, field, spec, conversion in string.Formatter().parse(template)
                  if field is not None]  # fmt: skip
    except ValueError as error:
        raise ValueError(f"{name}: {template!r} is not a valid template ({error})") from None
    if fields != [("", "", None)]:
        raise ValueError(
            f"{name}: each template needs exactly one '{{}}' and no other replacement field, got {template!r}"
        )


def check_prompt_templates(templates) -> None:
    """Raise `ValueError` unless `templates` is a list of at least one template with exactly one `{}`."""
    if isinstance(templates, str) or not templates:
        raise ValueError(f"prompt_templates must be a list of at least one template, got {templates!r}")
    for template in templates:
        check_template("prompt_templates", template)


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


def check_int(name: str, value, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")


def check_number(name: str, value, low: float | None = None, high: float | None = None, open_low=False) -> None:
    """`ValueError` unless `value` is a finite real number (not a bool or a string) in [low, high]
    (`open_low`: low excluded)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if open_low else value < low):
        raise ValueError(f"{name} must be {'>' if open_low else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")


def check_bool(name: str, value) -> None:
    """Booleans only: `"false"` or `0` in a hand-edited config.json would otherwise read as True / False."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false (a JSON boolean), got {value!r}")


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
        check_bool("transductive", self.transductive)
        if self.seen_label_ids is not None:
            self.seen_label_ids = check_label_ids_list("seen_label_ids", self.seen_label_ids)
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
        check_number("sinkhorn_epsilon", self.sinkhorn_epsilon, 0, open_low=True)
        check_number("sinkhorn_tol", self.sinkhorn_tol, 0)  # 0: no convergence test, exactly sinkhorn_max_iter
        if self.sinkhorn_grad_mode not in SINKHORN_GRAD_MODES:
            raise ValueError(
                f"sinkhorn_grad_mode must be one of {SINKHORN_GRAD_MODES}, got {self.sinkhorn_grad_mode!r}"
            )
        for name in ("focal_loss_weight", "dice_loss_weight", "focal_gamma"):
            check_number(name, getattr(self, name), 0)
        # a probability offset: negative values favour the seen classes (where training left them underconfident)
        check_number("seen_class_penalty", self.seen_class_penalty, -1, 1)
        check_number("focal_alpha", self.focal_alpha, 0, 1)
        check_number("initializer_range", self.initializer_range, 0)
        check_int("ignore_index", self.ignore_index, None)
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
        if self.inference_window_stride > self.inference_window_size:
            raise ValueError(
                f"inference_window_stride ({self.inference_window_stride}) must be at most inference_window_size "
                f"({self.inference_window_size}): with a larger stride, pixels between windows get no prediction"
            )
        if vision.image_size % vision.patch_size:
            raise ValueError(
                f"clip_config.vision_config.image_size ({vision.image_size}) must be a multiple of the patch size "
                f"({vision.patch_size})"
            )


class ZeroShotSegmentationConfig(ZeroShotSegmentationConfigMixin, PretrainedConfig):
    r"""
    The fields `OTSegConfig` and `ZegOTConfig` share, declared and documented once here; each model's config adds
    its own. Every `ZeroShotSegmentationConfig` takes:

    Args:
        clip_config (`CLIPConfig` or `dict`, *optional*):
            The wrapped, frozen CLIP. Defaults to ViT-B/16 at image size 512 with projection 512 (not transformers'
            default CLIP, which is ViT-B/32 at 224).
        id2label (`dict[int, str]`, *optional*):
            Class names of the vocabulary, ids 0..K-1. Defaults to the 20 PASCAL VOC classes. Given with
            `id2label`, `num_labels` must equal its length.
        num_labels (`int`, *optional*):
            Without `id2label`, as in transformers: K placeholder classes `LABEL_0..LABEL_{K-1}` (fully supervised
            unless `seen_label_ids` says otherwise), with a warning: the model segments by class *names*, so set
            real names with `model.set_class_names(names, tokenizer)` before segmenting.
        label2id (`dict[str, int]`, *optional*):
            Inverse of `id2label`; derived when not given.
        seen_label_ids (`list[int]`, *optional*):
            Ids of the classes seen in training. `None` means fully supervised (every class seen). When not
            given: VOC's seen classes 0-14 for the default VOC vocabulary, `None` for any other vocabulary.
        transductive (`bool`, *optional*, defaults to `False`):
            Whether the model is trained transductively (self-training on unseen pixels with pseudo labels; no
            seen-class penalty at inference). Needs at least one unseen class.
        seen_class_penalty (`float`, *optional*):
            Subtracted from the probabilities of seen classes at inference by the post-processing of inductive
            models, in [-1, 1] (a negative value adds to them: a world recipe chose one on its validation images,
            where training left the seen classes less confident than the untrained unseen ones). Defaults to the model's `default_seen_class_penalty`: 0.1 for OTSeg (the reference's
            calibration), 0.0 for ZegOT.
        sinkhorn_epsilon (`float`, *optional*, defaults to 0.05):
            Entropic regularisation of every Sinkhorn problem.
        sinkhorn_max_iter (`int`, *optional*, defaults to 100):
            Most Sinkhorn iterations.
        sinkhorn_tol (`float`, *optional*, defaults to 1e-6):
            Sinkhorn stopping tolerance on mean |u - u_prev| (over the batch in training, over each image's
            problems at inference). `0` is the opt-in fixed iteration count: no convergence test, every call
            runs exactly `sinkhorn_max_iter` iterations and reads nothing back to the host (no synchronisation
            with a GPU, compiled or not; no data-dependent control flow in an exported graph). It changes the
            numbers wherever the default would have stopped early.
        sinkhorn_grad_mode (`str`, *optional*, defaults to `"recompute"`):
            How training backpropagates through the Sinkhorn iterations, always exactly: `"recompute"` keeps the
            potentials of every iteration, `"checkpoint"` those of every sqrt(max_iter)-th only (the same
            gradient to the bit, less memory, a slower backward), `"unrolled"` lets autograd record every
            iteration (most memory; for double backward). See `otseg_hf.model.sinkhorn.log_sinkhorn`.
        focal_loss_weight (`float`, *optional*, defaults to 100.0):
            Weight of the sigmoid focal loss of each map.
        dice_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the dice loss of each map.
        focal_alpha (`float`, *optional*, defaults to 0.25):
            Focal loss alpha.
        focal_gamma (`float`, *optional*, defaults to 2.0):
            Focal loss gamma.
        ignore_index (`int`, *optional*, defaults to 255):
            Label value of pixels without a class.
        inference_window_size (`int`, *optional*, defaults to 512):
            Sliding-window size used by the image processor and evaluation.
        inference_window_stride (`int`, *optional*, defaults to 426):
            Sliding-window stride.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal init of the model's own linear layers.
    """

    sub_configs = {"clip_config": CLIPConfig}
    default_seen_class_penalty = 0.0

    def __init__(
        self,
        clip_config: CLIPConfig | dict | None = None,
        seen_label_ids: list[int] | None | str = "voc_default",
        transductive: bool = False,
        seen_class_penalty: float | None = None,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_max_iter: int = 100,
        sinkhorn_tol: float = 1e-6,
        sinkhorn_grad_mode: str = "recompute",
        focal_loss_weight: float = 100.0,
        dice_loss_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        ignore_index: int = 255,
        inference_window_size: int = 512,
        inference_window_stride: int = 426,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.clip_config = resolve_clip_config(clip_config)
        self.seen_label_ids = resolve_vocabulary(kwargs, seen_label_ids)
        self.transductive = transductive  # checked in validate: "false" would be True
        self.seen_class_penalty = (
            self.default_seen_class_penalty if seen_class_penalty is None else seen_class_penalty
        )
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_max_iter = sinkhorn_max_iter
        self.sinkhorn_tol = sinkhorn_tol
        self.sinkhorn_grad_mode = sinkhorn_grad_mode
        self.focal_loss_weight = focal_loss_weight
        self.dice_loss_weight = dice_loss_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.ignore_index = ignore_index
        self.inference_window_size = inference_window_size
        self.inference_window_stride = inference_window_stride
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        self.validate()

    def validate(self):
        """Raise `ValueError` naming the first invalid field; subclasses check their own fields first."""
        self.check_label_setting()
        self.check_solver_loss_and_inference()
